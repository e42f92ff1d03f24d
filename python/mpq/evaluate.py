"""Evaluation of a (quantized) model: perplexity under a stated protocol."""
from __future__ import annotations

import math
import time

import torch
from torch import nn

from .data import windows


@torch.no_grad()
def perplexity(model: nn.Module, tokens: torch.Tensor, *, window: int, batch_size: int = 8,
               max_windows: int | None = None, progress: bool = True, desc: str = "perplexity") -> dict:
    """Perplexity over non-overlapping windows of `window` tokens (the GPTQ/AWQ papers' protocol).

    Every window is scored independently; each token after the first of its window is predicted
    from the tokens before it in the window, i.e. window-1 scored tokens per window. The
    incomplete tail of the stream is dropped.

    Returns:
        dict with ppl, nll (mean negative log-likelihood, nats), tokens_scored, windows, seconds,
        and a protocol string.
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    w = windows(tokens, window, max_windows)
    total, count = 0.0, 0
    start = time.perf_counter()
    for i in tqdm(range(0, w.size(0), batch_size), desc=desc, unit="batch", disable=not progress):
        ids = w[i:i + batch_size].to(device)
        logits = model(ids).logits.float()
        nll = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                          ids[:, 1:].reshape(-1), reduction="none")
        total += float(nll.double().sum())  # float64 sum: float32 drifts over 10⁵+ tokens
        count += ids[:, 1:].numel()
    nll = total / count
    return {
        "ppl": math.exp(nll),
        "nll": nll,
        "tokens_scored": count,
        "windows": int(w.size(0)),
        "seconds": time.perf_counter() - start,
        "protocol": f"non-overlapping windows of {window} tokens, {window - 1} scored per window",
    }
