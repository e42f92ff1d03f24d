"""llama.cpp's activation rounding, simulated in a torch model.

llama.cpp's CPU backend does not multiply a quantized weight by float32 activations: it first
rounds each row of activations to the weight type's "vec_dot_type" (ggml-cpu's type traits), then
takes exact integer dot products:

- Q8_K for the k-quants (Q2_K … Q6_K): blocks of 256, a float32 scale d = max / −127 where max is
  the entry of largest magnitude, codes nearest(−127 · x / max) capped at 127;
- Q8_0 for the 32-blocks (Q4_0, Q5_0, Q8_0, IQ4_NL; Q8_1 for Q4_1 and Q5_1, the same values):
  blocks of 32, an fp16 scale amax / 127, codes nearest(x · 127 / amax) (x86's vector path);
- fp16 for F16 weights, bf16 for BF16 ones; F32 weights see the activations as they are.

mpq's torch models multiply the dequantized weights by float32 activations, so a quantized model
scores a little better in torch than the same file does in llama.cpp (0.4–3% perplexity on
SmolLM2-135M, most of it this rounding; docs/BENCHMARKS.md). Within
`llama_cpp_activations(model, formats)` every quantized linear rounds its input as llama.cpp
would, so that torch measures what llama.cpp will compute.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch import nn

from .. import _C
from ..models import ggml_format, linear_layers

# Weight types whose dot products take Q8_K activations (ggml-cpu's type traits): the k-quants
# and every 256-block codebook type.
_K_QUANTS = {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs",
             "iq3_s", "iq1_s", "iq1_m"}
_BLOCKS_OF_32 = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl"}


def activation_type(fmt: str) -> str | None:
    """The activation format llama.cpp's CPU backend multiplies a weight of `fmt` by: "q8_k",
    "q8_0", "f16", "bf16", or None (float32, for F32 weights)."""
    fmt = fmt.lower()
    if fmt in _K_QUANTS:
        return "q8_k"
    if fmt in _BLOCKS_OF_32:
        return "q8_0"
    if fmt in ("f16", "bf16"):
        return fmt
    if fmt == "f32":
        return None
    raise ValueError(f"activation_type: {fmt!r} is not a GGUF weight format mpq writes "
                     f"({', '.join(sorted(_K_QUANTS | _BLOCKS_OF_32))}, f16, bf16, f32)")


_BLOCK = {"q8_0": 32, "q8_k": 256}


def _check_rows(n: int, size: int, what: str) -> None:
    if n % size:
        raise ValueError(f"{what}: rows of {n} activations are not a multiple of its block of {size}")


def _blocks(x: torch.Tensor, size: int, what: str) -> torch.Tensor:
    _check_rows(x.shape[-1], size, what)
    return x.float().reshape(-1, size)


def round_q8_0(x: torch.Tensor) -> torch.Tensor:
    """x (float, last dim a multiple of 32) rounded as ggml's quantize_row_q8_0 and read back."""
    b = _blocks(x, 32, "round_q8_0")
    amax = b.abs().amax(-1, keepdim=True)
    d = (amax / 127).half().float()
    # A tensor divided by a tensor: torch computes `127 / amax` as 127 · (1 / amax), which can be
    # an ulp away from ggml's 127.f / amax.
    inv = torch.where(amax > 0, torch.full_like(amax, 127.0) / amax, torch.zeros_like(amax))
    return (torch.round(b * inv) * d).reshape(x.shape).to(x.dtype)


def round_q8_k(x: torch.Tensor) -> torch.Tensor:
    """x (float, last dim a multiple of 256) rounded as ggml's quantize_row_q8_K and read back."""
    b = _blocks(x, 256, "round_q8_k")
    top = b.gather(-1, b.abs().argmax(-1, keepdim=True))  # the signed entry of largest magnitude
    iscale = torch.where(top != 0, torch.full_like(top, -127.0) / top, torch.zeros_like(top))
    d = torch.where(top != 0, torch.ones_like(top) / iscale, torch.zeros_like(top))
    return (torch.round(b * iscale).clamp_(max=127) * d).reshape(x.shape).to(x.dtype)


_ROUNDING = {"q8_0": round_q8_0, "q8_k": round_q8_k,
             "f16": lambda x: x.half().to(x.dtype), "bf16": lambda x: x.bfloat16().to(x.dtype)}


def gguf_formats(path: str | os.PathLike) -> dict[str, str]:
    """GGUF tensor name -> mpq format name, for every tensor of a GGUF file."""
    out = {}
    for info in _C.gguf.Reader(os.fspath(path)).tensors:
        try:
            out[info.name] = ggml_format(info.type)
        except ValueError as e:
            raise ValueError(f"{path}: tensor {info.name}: {e}") from None
    return out


@contextlib.contextmanager
def llama_cpp_activations(model: nn.Module, formats: dict[str, str]) -> Iterator[nn.Module]:
    """Within the block, each linear layer of `model` rounds its input as llama.cpp's CPU backend
    does for its weight's format.

    Args:
        model: a transformers Llama/Qwen2/Qwen3 causal LM carrying the dequantized weights.
        formats: GGUF tensor name (with or without ".weight") -> format, e.g. gguf_formats(path)
            or a plan's formats. A layer not named is left alone (float32). A tied output head
            takes token_embd's format, as llama.cpp multiplies by that tensor.
    """
    fmts = {name.removesuffix(".weight"): fmt for name, fmt in formats.items()}
    layers = linear_layers(model, include_output=True)
    head = model.get_output_embeddings()
    if "output" not in layers and isinstance(head, nn.Linear) and "token_embd" in fmts:
        layers["output"] = head
        fmts.setdefault("output", fmts["token_embd"])
    handles = []
    try:
        for name, module in layers.items():
            kind = activation_type(fmts[name]) if name in fmts else None
            if kind is None:
                continue
            if kind in _BLOCK:  # a clear error now rather than inside a forward pass
                _check_rows(module.in_features, _BLOCK[kind], f"{name} ({fmts[name]})")
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, rounding=_ROUNDING[kind]: (rounding(args[0]), *args[1:])))
        yield model
    finally:
        for h in handles:
            h.remove()
