"""The experts from Python: creating them with options, and simulating W8A8 inference.

The experts themselves live in libmpq (mpq.GptqExpert, mpq.AwqExpert, ...). A Python class that
subclasses mpq.Expert and implements name() and quantize(layers, stats, can_scale) is an expert
too; register_expert(name, factory) makes it available by name everywhere.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from .. import _C

# Registry names whose options can be given as keyword arguments.
_CONFIGURABLE = {
    "rtn": (_C.RtnExpert, _C.RtnOptions),
    "gptq": (_C.GptqExpert, _C.GptqOptions),
    "awq": (_C.AwqExpert, _C.AwqOptions),
    "smoothquant": (_C.SmoothQuantExpert, _C.SmoothQuantOptions),
}


def make_expert(name: str, **options) -> _C.Expert:
    """An expert by registry name, e.g. make_expert("gptq", act_order=True).

    Args:
        name: "rtn", "kquant", "kquant_imatrix", "gptq", "awq", "smoothquant" or a registered name.
        **options: fields of the expert's options struct (GptqOptions, AwqOptions, ...).
    """
    if not options:
        return _C.make_expert(name)
    if name not in _CONFIGURABLE:
        raise ValueError(f"expert '{name}' takes no options here (configurable: "
                         f"{', '.join(sorted(_CONFIGURABLE))}); construct it yourself")
    cls, opts = _CONFIGURABLE[name]
    return cls(opts(**options))


def fake_quantize_activations(x: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Per-token dynamic symmetric quantization, as W8A8 kernels do it: each token's (row's)
    values are scaled by max|x| / ((2^bits - 1) / 2), rounded, clamped to the signed range, and
    scaled back (the symmetric integer formats' definition, and compressed-tensors')."""
    qmax = 2 ** (bits - 1) - 1
    scale = x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(1e-8) / ((2 ** bits - 1) / 2)
    return (x / scale).round().clamp(-qmax - 1, qmax) * scale


@contextlib.contextmanager
def activation_quantization(layers: dict[str, nn.Linear], bits: int = 8) -> Iterator[None]:
    """Within the block, the inputs of `layers` (e.g. mpq.model.linear_layers(model)) are
    quantized per token on the fly: with int8 weights this simulates W8A8 inference."""
    handles = [m.register_forward_pre_hook(
        lambda mod, args: (fake_quantize_activations(args[0], bits),) + tuple(args[1:]))
        for m in layers.values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
