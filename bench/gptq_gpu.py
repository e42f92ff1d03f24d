"""GPTQ per layer: mpq vs llm-compressor's GPTQ core, on the same device, weights and Hessian.

Layers shaped like Qwen3-4B's (random weights; timing does not depend on their values), a
Hessian from 128 x 2048 synthetic calibration tokens with correlated channels and a few outlier
channels, W4 asymmetric with groups of 128, damping 0.01, blocks of 128. For each shape: the
median of `--reps` timed runs after a warm-up, and the output error tr(ΔW H ΔWᵀ) of both results
(llm-compressor fixes each group's scale from the original weights before the loop; mpq fits each
group when the loop reaches it, as the GPTQ paper does). mpq's and the peer's runs alternate, so
that both see the same GPU clocks and neighbours (the peer's median moved by 1.5× between
separate runs of the script).

The peer is llm-compressor's own `quantize_weight` (llmcompressor.modifiers.gptq.gptq_quantize),
which on CUDA runs its Triton block kernel. Its modules are loaded without llmcompressor's
package __init__, which would pull in datasets and accelerate that the GPU machine lacks.

    python bench/gptq_gpu.py --device cuda            # Qwen3-4B shapes
    python bench/gptq_gpu.py --device cpu --shapes small
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import types

import torch

import mpq

QWEN3_4B = {"attn_q": (4096, 2560), "attn_k/v": (1024, 2560), "attn_output": (2560, 4096),
            "ffn_gate/up": (9728, 2560), "ffn_down": (2560, 9728)}
SMALL = {"small_a": (256, 512), "small_b": (512, 1024)}


def load_llmcompressor_gptq():
    """llm-compressor's quantize_weight, imported without running llmcompressor/__init__.py."""
    spec = importlib.util.find_spec("compressed_tensors")
    if spec is None:
        raise ImportError("compressed-tensors is not installed")
    import compressed_tensors  # noqa: F401  (a light package)

    root = importlib.util.find_spec("llmcompressor")
    if root is None:
        raise ImportError("llmcompressor is not installed")
    base = root.submodule_search_locations[0]
    for name, path in (("llmcompressor", base), ("llmcompressor.modifiers", f"{base}/modifiers"),
                       ("llmcompressor.modifiers.gptq", f"{base}/modifiers/gptq")):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [path]
            sys.modules[name] = pkg
    from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.utils import calculate_qparams

    return quantize_weight, QuantizationArgs, calculate_qparams


def hessian(cols: int, tokens: int, device, seed: int = 0) -> torch.Tensor:
    """(2/N) Σ x xᵀ over `tokens` synthetic activations: shared low-rank factors, per-channel
    magnitudes spread over two decades, and 1% outlier channels."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    mag = torch.exp(torch.randn(cols, generator=g)).to(device)
    mag[torch.randperm(cols, generator=g)[:max(1, cols // 100)].to(device)] *= 20
    factors = (torch.randn(64, cols, generator=g) * 0.5).to(device)
    h = torch.zeros(cols, cols, device=device, dtype=torch.float64)
    chunk = 8192
    for start in range(0, tokens, chunk):
        n = min(chunk, tokens - start)
        x = torch.randn(n, cols, device=device) * mag + torch.randn(n, 64, device=device) @ factors
        h += (x.T @ x).double()
    return (h * (2.0 / tokens)).float()


def timed(fns: dict, reps: int, device) -> dict:
    """{name: (median seconds, last output)}, the functions called in turn `reps` times each after
    a warm-up call (compilation, caches)."""
    out = {name: fn() for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            out[name] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    return {name: (statistics.median(times[name]), out[name]) for name in fns}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", choices=("qwen3-4b", "small"), default="qwen3-4b")
    ap.add_argument("--tokens", type=int, default=128 * 2048)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--formats", default="int4_g128,q4_k", help="mpq formats to time")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    shapes = QWEN3_4B if args.shapes == "qwen3-4b" else SMALL
    try:
        quantize_weight, QuantizationArgs, calculate_qparams = load_llmcompressor_gptq()
        peer = True
    except ImportError as e:
        print(json.dumps({"peer": "llmcompressor unavailable", "reason": str(e)}))
        peer = False

    hessians = {}
    for name, (rows, cols) in shapes.items():
        if cols not in hessians:
            hessians[cols] = hessian(cols, args.tokens, device)
        h = hessians[cols]
        w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(rows + cols)).to(device) * 0.02
        row = {"layer": name, "shape": [rows, cols], "device": str(device)}
        fns = {f"mpq_{fmt}": (lambda fmt=fmt: mpq.gptq_quantize(w, h, fmt).quantized)
               for fmt in args.formats.split(",")}
        if peer:
            qargs = QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group",
                                     group_size=128)
            wg = w.view(rows, cols // 128, 128)
            scale, zp = calculate_qparams(wg.amin(-1), wg.amax(-1), qargs)

            fns["llmcompressor_int4_g128"] = lambda: quantize_weight(
                w.unsqueeze(0).clone(), h.unsqueeze(0).clone(), scale.unsqueeze(0),
                zp.unsqueeze(0), None, qargs, blocksize=128, percdamp=0.01)[0][0]
        for key, (secs, out) in timed(fns, args.reps, device).items():
            q = mpq.dequantize(out).float().to(device) if key.startswith("mpq") else out.float()
            row[f"{key}_s"] = round(secs, 4)
            row[f"{key}_err"] = mpq.output_error(w, q, h)
        if peer and "mpq_int4_g128_s" in row:
            row["speedup_vs_llmcompressor"] = round(row["llmcompressor_int4_g128_s"]
                                                    / row["mpq_int4_g128_s"], 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
