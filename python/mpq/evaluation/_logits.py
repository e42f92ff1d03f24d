"""Where logits come from: a torch causal LM, or a GGUF file / llama_cpp.Llama run in the real
llama.cpp through llama-cpp-python. Every evaluation takes its logits through a LogitsFn."""
from __future__ import annotations

import inspect
import os
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..models import logit_chunks

# (windows [b, n], first) -> logits [b, n - 1 - first, vocab] at positions first .. n-2, the
# predictions of tokens first+1 .. n-1.
LogitsFn = Callable[[torch.Tensor, int], torch.Tensor]
# (windows [b, n], first, chunk) -> the same logits, float32, as blocks of at most `chunk` rows
# [rows, vocab], window after window: what the evaluations consume, so that no full-vocabulary
# tensor of a whole batch is ever held.
LogitChunksFn = Callable[[torch.Tensor, int, int], Iterator[torch.Tensor]]


def is_llama(obj) -> bool:
    return type(obj).__name__ == "Llama" and type(obj).__module__.startswith("llama_cpp")


def is_gguf_path(obj) -> bool:
    return isinstance(obj, (str, os.PathLike)) and os.fspath(obj).endswith(".gguf")


def forward_accepts(module: nn.Module, arg: str) -> bool:
    try:
        return arg in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def torch_logits(model: nn.Module) -> LogitsFn:
    """A LogitsFn for a torch causal LM. transformers models compute the output head only on the
    scored positions (logits_to_keep): the head of a 150k-token vocabulary costs as much as a
    few layers, and its output is the largest tensor of the forward pass."""
    device = next(model.parameters()).device
    keep = forward_accepts(model, "logits_to_keep")

    @torch.no_grad()
    def fn(ids: torch.Tensor, first: int) -> torch.Tensor:
        n = ids.size(1)
        ids = ids.to(device)
        if keep:
            logits = model(input_ids=ids, logits_to_keep=n - first, use_cache=False).logits
        else:
            logits = model(ids).logits
        return logits[:, logits.size(1) - (n - first):-1]

    return fn


def torch_logit_chunks(model: nn.Module) -> LogitChunksFn:
    """A LogitChunksFn for a torch causal LM: the decoder once per batch, the output head on
    `chunk` scored positions at a time (mpq.models.logit_chunks)."""
    return lambda ids, first, chunk: logit_chunks(model, ids, first, -1, chunk)


def llama_logit_chunks(llm) -> LogitChunksFn:
    """A LogitChunksFn for a llama_cpp.Llama opened with logits_all=True (one window at a time,
    as llama_logits), each window's scores handed out `chunk` rows at a time."""
    one = llama_logits(llm)

    def fn(ids: torch.Tensor, first: int, chunk: int) -> Iterator[torch.Tensor]:
        for row in ids:
            yield from one(row[None], first)[0].split(chunk)

    return fn


def open_gguf(path: str | os.PathLike, *, n_ctx: int, logits_all: bool = True, n_gpu_layers: int = 0,
              n_threads: int | None = None, **kwargs):
    """A GGUF file in llama.cpp (llama_cpp.Llama), quiet, with n_ctx tokens of context."""
    try:
        import llama_cpp
    except ImportError as e:
        raise ImportError("running a GGUF file needs llama-cpp-python (pip install llama-cpp-python)") from e
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"GGUF file {path} does not exist")
    n_batch = min(n_ctx, 2048)
    return llama_cpp.Llama(path, n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, logits_all=logits_all,
                           n_gpu_layers=n_gpu_layers, n_threads=n_threads or default_threads(),
                           verbose=False, **kwargs)


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def llama_logits(llm) -> LogitsFn:
    """A LogitsFn for a llama_cpp.Llama opened with logits_all=True: one window at a time, the KV
    cache cleared before each, as llama-perplexity does."""
    if not getattr(llm, "_logits_all", True):
        raise ValueError("the llama_cpp.Llama must be opened with logits_all=True")

    def fn(ids: torch.Tensor, first: int) -> torch.Tensor:
        n = ids.size(1)
        if n > llm.n_ctx():
            raise ValueError(f"window of {n} tokens exceeds the llama.cpp context of {llm.n_ctx()}")
        out = []
        for row in ids.tolist():
            llm.reset()
            llm.eval(row)
            out.append(torch.from_numpy(np.array(llm.scores[first:n - 1], dtype=np.float32)))
        return torch.stack(out)

    return fn
