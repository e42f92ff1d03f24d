"""The decoder one block at a time: the input of block 0 (the embeddings, with the position
embeddings and mask every block call gets), one block run on saved hidden states, and the final
norm the head reads. Whatever re-runs part of the decoder uses these: block-by-block quantization
(each block's inputs come from the quantized blocks before it) and the KL fitness (an offspring
runs from its first changed block, on the states its closest judged relative left there).
"""
from __future__ import annotations

import torch
from torch import nn

from ._head import split_head


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Llama/Qwen-style model (model.model.layers)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__}: expected a Llama/Qwen-style model with "
                         "model.layers (decoder blocks)")
    return layers


class _Stop(Exception):
    pass


@torch.no_grad()
def block_inputs(model: nn.Module, batches: list[torch.Tensor], device) -> tuple[list, list]:
    """Runs the embeddings on every batch; returns block 0's hidden states and the keyword
    arguments (position embeddings, masks) each block call gets, one entry per batch."""
    layers = decoder_layers(model)
    hidden, kwargs_list = [], []

    def grab(module, args, kwargs):
        hidden.append(args[0] if args else kwargs.pop("hidden_states"))
        kwargs_list.append({k: v for k, v in kwargs.items() if k != "hidden_states"})
        raise _Stop

    handle = layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for ids in batches:
            try:
                model(ids.to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        handle.remove()
    return hidden, kwargs_list


@torch.no_grad()
def run_block(block: nn.Module, hidden: list, kwargs_list: list) -> list:
    """block applied to each batch's hidden states (with that batch's keyword arguments)."""
    out = []
    for h, kw in zip(hidden, kwargs_list):
        y = block(h, **kw)
        out.append(y[0] if isinstance(y, tuple) else y)
    return out


def final_norm(model: nn.Module) -> nn.Module | None:
    """The norm between the last block and the head when the model's logits are
    head(norm(last block's output)) (see split_head), else None: such a model cannot be run
    from saved block states."""
    split = split_head(model)
    norm = getattr(split[0], "norm", None) if split is not None else None
    return norm if isinstance(norm, nn.Module) else None
