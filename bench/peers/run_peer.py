#!/usr/bin/env python3
"""Quantizes an HF model with a peer library and writes its fake-quantized float32 weights.

Runs inside a peer venv (see setup_peers.sh), one (impl, method) per process:

    python run_peer.py --impl llmcompressor --method gptq --model HF_DIR --calib calib.pt \
        --bits 4 --group-size 128 [--act-order [desc|static|gar]] [--sym|--asym] \
        [--alpha 0.5] [--damp 0.01] --out result.safetensors --json result.json

calib.pt is a LongTensor [n_samples, seq_len] (torch.save); every peer gets exactly these rows,
one sample per forward batch, with an all-ones attention mask and nothing else.

result.safetensors holds the full state dict under the original HF names, float32, with every
quantized Linear replaced by the weight the peer's own forward uses (dequantized with the peer's
code) and every tensor the peer changed (smoothing / AWQ scales folded into norms) as the peer
left it. Before writing, the file is checked: the original HF model with these weights loaded
must reproduce the peer model's logits; the difference goes into result.json ("check").
"""
from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import sys
import time

# GPTQModel sizes its CPU thread pool as (cores+1)//2 but asks for 2 loader workers, so on a
# 2-core machine it fails ("Virtual pool 'model_loader:cpu' requests 2 workers ..."). Must be
# set before gptqmodel is imported.
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, ((os.cpu_count() or 1) + 1) // 2)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local; never reach for the hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", required=True, choices=["llmcompressor", "gptqmodel", "autogptq", "autoawq"])
    p.add_argument("--method", required=True, choices=["gptq", "awq", "smoothquant"])
    p.add_argument("--model", required=True, help="HF model directory")
    p.add_argument("--calib", required=True, help="torch.save'd LongTensor [n_samples, seq_len]")
    p.add_argument("--bits", type=int, default=4, help="weight bits (smoothquant: always 8)")
    p.add_argument("--group-size", type=int, default=128, help="-1: per output channel")
    p.add_argument("--act-order", nargs="?", const="auto", default=None,
                   choices=["auto", "desc", "static", "gar"],
                   help="GPTQ column order. desc: desc_act (groups follow the permuted order, "
                        "g_idx); static: permuted processing, original groups (llm-compressor "
                        "'static', AutoGPTQ desc_act+static_groups); gar: GPTQModel's group-aware "
                        "reordering. auto: desc, or static for llm-compressor (its only mode)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--sym", dest="sym", action="store_true", default=None)
    g.add_argument("--asym", dest="sym", action="store_false")
    p.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant migration strength")
    p.add_argument("--damp", type=float, default=0.01, help="GPTQ damping, fraction of mean diag(H)")
    p.add_argument("--w8-solver", choices=["rtn", "gptq"], default="rtn",
                   help="smoothquant: how the int8 weights are found after smoothing")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--check-tokens", type=int, default=64, help="tokens of calib[0] for the check")
    p.add_argument("--out", required=True)
    p.add_argument("--json", required=True)
    a = p.parse_args(argv)
    if a.sym is None:  # GPTQ is usually run symmetric, AWQ asymmetric (the papers' settings)
        a.sym = a.method != "awq"
    if a.method == "smoothquant":
        a.bits, a.group_size, a.sym = 8, -1, True
    return a


def load_hf(path, device="cpu"):
    # transformers 4.x (the AutoGPTQ/AutoAWQ venv) calls the dtype argument torch_dtype.
    key = "dtype" if int(version("transformers").split(".")[0]) >= 5 else "torch_dtype"
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **{key: torch.float32}).to(device).eval()


def placeholder_tokenizer(model_dir):
    """None where the model directory has a tokenizer; otherwise (stories260K, whose tokenizer is
    llama2.c's) a one-word tokenizer: oneshot insists on a processor even for a DataLoader of
    token ids, and never uses it then."""
    if any(os.path.exists(os.path.join(model_dir, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))


def version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


@torch.no_grad()
def probe_weight(module, in_features, device):
    """The weight a packed quantized Linear really multiplies by: its own forward on the identity.

    Each output element is one weight times 1.0 plus zeros, so this is exact and goes through
    the peer's dequantization code, whatever the packing.
    """
    eye = torch.eye(in_features, dtype=torch.float32, device=device)
    out = module(eye).float()
    bias = getattr(module, "bias", None)
    if bias is not None:
        out = out - bias.float()
    return out.t().contiguous()


# ---------------------------------------------------------------------------------------------
# llm-compressor (+ compressed-tensors)


def run_llmcompressor(a, calib):
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.lifecycle.forward import forward_quantize
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier, SmoothQuantModifier
    from torch.utils.data import DataLoader

    notes = []
    model = load_hf(a.model, a.device)
    strategy = "group" if a.group_size > 0 else "channel"
    weights = QuantizationArgs(num_bits=a.bits, type="int", symmetric=a.sym, strategy=strategy,
                               group_size=a.group_size if a.group_size > 0 else None)
    act_scheme = None
    if a.method == "smoothquant":
        # The "W8A8" preset: int8 per-channel symmetric weights, dynamic per-token symmetric int8
        # activations.
        quant_kw = dict(scheme="W8A8", targets=["Linear"], ignore=["lm_head"])
        act_scheme = "int8 symmetric, per token, dynamic (llm-compressor preset W8A8)"
        recipe = [SmoothQuantModifier(smoothing_strength=a.alpha)]
        recipe.append(GPTQModifier(**quant_kw, dampening_frac=a.damp, actorder=None)
                      if a.w8_solver == "gptq" else QuantizationModifier(**quant_kw))
    else:
        scheme = QuantizationScheme(targets=["Linear"], weights=weights)
        quant_kw = dict(config_groups={"group_0": scheme}, ignore=["lm_head"])
        if a.method == "gptq":
            order = {None: None, "auto": "static", "static": "static"}.get(a.act_order, "unsupported")
            if order == "unsupported":
                raise SystemExit(f"llm-compressor GPTQ supports act-order static only (not {a.act_order})")
            a.act_order = order
            recipe = [GPTQModifier(**quant_kw, dampening_frac=a.damp, actorder=order, block_size=128)]
        else:  # awq: the peer's defaults (duo_scaling=True, n_grid=20); it has no clip search
            recipe = [AWQModifier(), QuantizationModifier(**quant_kw)]
            notes.append("llm-compressor AWQ searches the smoothing scales only (no weight-clip search)")

    if a.method == "awq" and not torch.accelerator.is_available():
        # AWQModifier pins its cached activations (pin_memory) before each grid search, which on a
        # CPU-only torch raises "Cannot access accelerator device when none is available".
        # Pinning only speeds up host-to-device copies, so it is skipped here.
        from llmcompressor.pipelines.cache import IntermediatesCache
        IntermediatesCache.pin_memory = lambda self, *args, **kw: None
        notes.append("CPU shim: IntermediatesCache.pin_memory no-op")

    # One sample per batch, in file order: a DataLoader bypasses llm-compressor's own dataset
    # handling (shuffling, tokenization, truncation).
    rows = [{"input_ids": r.unsqueeze(0), "attention_mask": torch.ones(1, r.numel(), dtype=torch.long)}
            for r in calib]
    loader = DataLoader(rows, batch_size=None)
    t0 = time.perf_counter()
    oneshot(model=model, dataset=loader, recipe=recipe, num_calibration_samples=len(rows),
            max_seq_length=calib.shape[1], shuffle_calibration_samples=False,
            processor=placeholder_tokenizer(a.model))
    seconds = time.perf_counter() - t0

    # Dequantized weights exactly as the compressed-tensors forward computes them.
    quantized = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            scheme = getattr(m, "quantization_scheme", None)
            if scheme is not None and scheme.weights is not None and getattr(m, "quantization_enabled", True):
                quantized[name + ".weight"] = forward_quantize(m, m.weight.data, "weight", scheme.weights)

    def peer_logits(ids, with_act_quant=False):
        # The compressed-tensors forward; input activation quantization is switched off unless
        # asked for, so that it is comparable with the weight-only reload.
        saved = {}
        if not with_act_quant:
            for m in model.modules():
                s = getattr(m, "quantization_scheme", None)
                if s is not None and s.input_activations is not None:
                    saved[m] = s.input_activations
                    s.input_activations = None
        try:
            return model(ids.to(a.device)).logits.float().cpu()
        finally:
            for m, v in saved.items():
                m.quantization_scheme.input_activations = v

    return dict(model=model, quantized=quantized, seconds=seconds, peer_logits=peer_logits,
                version=version("llmcompressor"), extra_versions={"compressed-tensors": version("compressed-tensors")},
                notes=notes, act_scheme=act_scheme)


# ---------------------------------------------------------------------------------------------
# GPTQModel


def run_gptqmodel(a, calib):
    from gptqmodel import BACKEND, GPTQModel, QuantizeConfig

    notes = []
    if a.method == "smoothquant":
        raise SystemExit("gptqmodel: no SmoothQuant W8A8 path is benchmarked")
    kw = dict(bits=a.bits, group_size=a.group_size, sym=a.sym, device=a.device,
              offload_to_disk=False)  # keep layers in memory: no disk I/O inside the timing
    if a.method == "gptq":
        mode = {None: None, "auto": "desc"}.get(a.act_order, a.act_order)
        if mode == "static":
            raise SystemExit("gptqmodel: act-order static is not a GPTQModel mode (use desc or gar)")
        a.act_order = mode
        # GPTQModel's default is act_group_aware (GAR) on; plain GPTQ needs it off explicitly.
        kw.update(damp_percent=a.damp, desc_act=mode == "desc", act_group_aware=mode == "gar")
    else:
        kw.update(method="awq")
        notes.append("GPTQModel AWQ (method='awq', format GEMM)")
    qc = QuantizeConfig(**kw)
    # GPTQModel's AWQ packing kernels (AwqTorchLinear) accept only float16/bfloat16 models.
    dtype = torch.bfloat16 if a.method == "awq" else torch.float32
    if a.method == "awq":
        notes.append("model loaded in bfloat16 (AwqTorchLinear only supports float16/bfloat16)")
    m = GPTQModel.load(a.model, qc, dtype=dtype)
    rows = [{"input_ids": r.tolist(), "attention_mask": [1] * r.numel()} for r in calib]
    t0 = time.perf_counter()
    # AWQ defaults to the CUDA-only GEMM kernel for packing ("AWQ: CUDA is not available");
    # AWQ_TORCH packs the same GEMM format with torch code.
    backend = BACKEND.AWQ_TORCH if a.method == "awq" and a.device == "cpu" else BACKEND.AUTO
    m.quantize(rows, batch_size=1, calibration_sort=None, backend=backend)  # None: keep file order
    seconds = time.perf_counter() - t0
    model = m.model.eval()
    quantized = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "qweight"):
            quantized[name + ".weight"] = probe_weight(mod, mod.in_features, a.device)
    notes.append("scales are stored in float16 (GPTQ/AWQ checkpoint formats); weights are dequantized from the packed layers")

    def peer_logits(ids, with_act_quant=False):
        return model(ids.to(a.device)).logits.float().cpu()

    def peer_dequant(mod):
        w = mod.dequantize_weight() if hasattr(mod, "dequantize_weight") else None
        return None if w is None else w.float().t()

    return dict(model=model, quantized=quantized, seconds=seconds, peer_logits=peer_logits,
                peer_dequant=peer_dequant, version=version("gptqmodel"), notes=notes, act_scheme=None, config=str(qc))


# ---------------------------------------------------------------------------------------------
# AutoGPTQ


def run_autogptq(a, calib):
    import auto_gptq.modeling._base as agb
    from auto_gptq import BaseQuantizeConfig
    from auto_gptq.modeling.auto import GPTQ_CAUSAL_LM_MODEL_MAP

    if a.method != "gptq":
        raise SystemExit("autogptq implements GPTQ only")
    mode = {None: None, "auto": "desc"}.get(a.act_order, a.act_order)
    if mode == "gar":
        raise SystemExit("autogptq: no GAR mode")
    a.act_order = mode
    notes = []
    qc = BaseQuantizeConfig(bits=a.bits, group_size=a.group_size, desc_act=mode in ("desc", "static"),
                            static_groups=mode == "static", sym=a.sym, damp_percent=a.damp,
                            true_sequential=True)
    # AutoGPTQ 0.7.1 assumes CUDA in three places, none of which touches the numbers:
    # from_pretrained raises "Load pretrained model to do quantization requires CUDA available.",
    # quantize() moves each layer to the constant CUDA_0, and GPTQ.fasterquant() calls
    # torch.cuda.synchronize(). So the model is wrapped as from_pretrained would (without its
    # guard), CUDA_0 is pointed at the requested device and, on CPU, synchronize is a no-op.
    hf = load_hf(a.model)
    hf.seqlen = hf.config.max_position_embeddings  # what from_pretrained sets
    m = GPTQ_CAUSAL_LM_MODEL_MAP[hf.config.model_type](hf, False, qc)
    agb.CUDA_0 = torch.device(a.device)
    if a.device == "cpu":
        torch.cuda.synchronize = lambda *args, **kw: None
        notes.append("CPU shim: CUDA_0=cpu, torch.cuda.synchronize no-op, from_pretrained CUDA guard skipped")
    rows = [{"input_ids": r.unsqueeze(0), "attention_mask": torch.ones(1, r.numel(), dtype=torch.long)}
            for r in calib]
    t0 = time.perf_counter()
    m.quantize(rows, batch_size=1, use_triton=False, use_cuda_fp16=False,
               cache_examples_on_gpu=a.device != "cpu")
    seconds = time.perf_counter() - t0
    model = m.model.eval()
    quantized = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "qweight"):
            quantized[name + ".weight"] = probe_weight(mod, mod.infeatures, a.device)
    notes.append("GPTQ checkpoint format stores scales in float16; weights are dequantized from the packed layers")

    def peer_logits(ids, with_act_quant=False):
        return model(ids.to(a.device)).logits.float().cpu()

    return dict(model=model, quantized=quantized, seconds=seconds, peer_logits=peer_logits,
                version=version("auto-gptq") or version("auto_gptq"), notes=notes, act_scheme=None)


# ---------------------------------------------------------------------------------------------
# AutoAWQ


def run_autoawq(a, calib):
    from awq import AutoAWQForCausalLM
    from awq.utils.packing_utils import dequantize_gemm

    if a.method != "awq":
        raise SystemExit("autoawq implements AWQ only")
    m = AutoAWQForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32, device_map=a.device,
                                           safetensors=True)
    tok = AutoTokenizer.from_pretrained(a.model, local_files_only=True)
    qc = {"w_bit": a.bits, "q_group_size": a.group_size, "zero_point": not a.sym, "version": "GEMM"}
    # A list of token-id lists is used as is (no tokenization); AutoAWQ concatenates the rows and
    # re-splits them into max_calib_seq_len pieces, which gives back the same rows here.
    t0 = time.perf_counter()
    m.quantize(tok, quant_config=qc, calib_data=[r.tolist() for r in calib],
               n_parallel_calib_samples=None, max_calib_samples=calib.shape[0],
               max_calib_seq_len=calib.shape[1])
    seconds = time.perf_counter() - t0
    model = m.model.eval()
    quantized = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "qweight"):
            quantized[name + ".weight"] = probe_weight(mod, mod.in_features, a.device)

    def peer_logits(ids, with_act_quant=False):
        return model(ids.to(a.device)).logits.float().cpu()

    def peer_dequant(mod):
        return dequantize_gemm(mod.qweight, mod.qzeros, mod.scales, mod.w_bit, mod.group_size).float().t()

    return dict(model=model, quantized=quantized, seconds=seconds, peer_logits=peer_logits,
                peer_dequant=peer_dequant, version=version("autoawq"),
                notes=["AutoAWQ defaults: scale search (duo scaling, n_grid 20) + clip search; the final "
                       "quantization runs on float16 weights, and WQLinear_GEMM computes in float16, so "
                       "its logits differ from the float32 reload by float16 rounding"],
                act_scheme=None)


RUNNERS = dict(llmcompressor=run_llmcompressor, gptqmodel=run_gptqmodel,
               autogptq=run_autogptq, autoawq=run_autoawq)


def collect_state(ref, peer_model, quantized):
    """The reference model's state dict names, filled from the peer model (float32, unshared)."""
    peer_sd = peer_model.state_dict()
    out = {}
    for name, ref_t in ref.state_dict().items():
        t = quantized.get(name)
        if t is None:
            t = peer_sd.get(name)
        if t is None:
            raise KeyError(f"the peer model has no tensor for {name}")
        if t.shape != ref_t.shape:
            raise ValueError(f"{name}: peer shape {tuple(t.shape)} != original {tuple(ref_t.shape)}")
        out[name] = t.detach().to("cpu", torch.float32).contiguous().clone()
    return out


def main(argv=None):
    a = parse_args(argv)
    torch.manual_seed(0)
    calib = torch.load(a.calib)
    if not (isinstance(calib, torch.Tensor) and calib.dtype == torch.long and calib.ndim == 2):
        raise SystemExit(f"{a.calib}: expected a LongTensor [n_samples, seq_len]")
    r = RUNNERS[a.impl](a, calib)

    ref = load_hf(a.model)
    state = collect_state(ref, r["model"], r["quantized"])
    n_changed = sum(not torch.equal(state[k], v.float()) for k, v in ref.state_dict().items())

    # The check: original architecture + written weights vs. the peer's own quantized forward.
    ids = calib[:1, : a.check_tokens]
    with torch.no_grad():
        peer = r["peer_logits"](ids)
        ref.load_state_dict(state, strict=True)
        mine = ref(ids).logits.float()
    diff = (mine - peer).abs()
    peer_dtype = next(r["model"].parameters()).dtype
    if peer_dtype != torch.float32:
        # A reduced-precision peer model: the reload run in that dtype must match it.
        with torch.no_grad():
            low = ref.to(peer_dtype)(ids).logits.float()
        ref.float()
        extra_check = {f"max_abs_logit_diff_reload_in_{str(peer_dtype)[6:]}": (low - peer).abs().max().item()}
    else:
        extra_check = {}
    check = dict(tokens=ids.shape[1], max_abs_logit_diff=diff.max().item(),
                 mean_abs_logit_diff=diff.mean().item(), max_abs_logit=peer.abs().max().item(),
                 argmax_agree=(mine.argmax(-1) == peer.argmax(-1)).float().mean().item(),
                 quantized_tensors=len(r["quantized"]), tensors_changed=n_changed, **extra_check)
    if r.get("peer_dequant"):
        # Packed peers: the identity probe vs. the peer's explicit dequantization function.
        mods = dict(r["model"].named_modules())
        worst = 0.0
        for name, w in r["quantized"].items():
            d = r["peer_dequant"](mods[name[: -len(".weight")]])
            if d is not None:
                worst = max(worst, (d.cpu() - w.cpu()).abs().max().item())
        check["max_abs_weight_diff_vs_peer_dequant"] = worst
    if r.get("act_scheme"):
        with torch.no_grad():
            full = r["peer_logits"](ids, with_act_quant=True)
        check["max_abs_logit_diff_vs_peer_with_act_quant"] = (mine - full).abs().max().item()

    save_file(state, a.out, metadata={"impl": a.impl, "method": a.method})
    info = dict(impl=a.impl, version=r["version"], method=a.method, bits=a.bits,
                group_size=a.group_size, act_order=a.act_order, sym=a.sym,
                seconds_quantize=round(r["seconds"], 3), notes="; ".join(r["notes"]),
                device=a.device, calib=dict(path=os.path.abspath(a.calib), shape=list(calib.shape)),
                damp=a.damp if a.method == "gptq" else None,
                alpha=a.alpha if a.method == "smoothquant" else None,
                activation_scheme=r.get("act_scheme"), check=check,
                torch=torch.__version__, transformers=version("transformers"))
    if r.get("extra_versions"):
        info["extra_versions"] = r["extra_versions"]
    if a.method == "smoothquant":
        info["w8_solver"] = a.w8_solver
    with open(a.json, "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
