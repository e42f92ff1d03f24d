"""The output head applied a few positions at a time.

A causal LM's full-vocabulary logits are the largest tensor of its forward pass: 8 windows of
2048 tokens with SmolLM2's 49,152-token vocabulary are 3.2 GB of float32, twice that once
log_softmax has run. Whatever scores next-token distributions (perplexity, KL divergence, the
KL fitness of the search) runs the decoder once per batch and the head on `chunk` positions at a
time, so that peak memory does not grow with batch × window × vocabulary.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

# Positions per head call: 256 × 49,152 float32 logits are 50 MB.
CHUNK_TOKENS = 256

# transformers classes whose logits are exactly lm_head(model(...).last_hidden_state): no logit
# scaling or soft-capping after the head (Gemma 2's soft-capping, Granite's scaling would be lost).
_PLAIN_HEAD = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM")


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """(decoder, head) when the model's logits are head(decoder(ids).last_hidden_state), else None."""
    if type(model).__name__ not in _PLAIN_HEAD:
        return None
    decoder, head = getattr(model, "model", None), model.get_output_embeddings()
    if not isinstance(decoder, nn.Module) or not isinstance(head, nn.Linear):
        return None
    return decoder, head


@torch.no_grad()
def logit_chunks(model: nn.Module, ids: torch.Tensor, start: int = 0, stop: int | None = -1,
                 chunk: int = CHUNK_TOKENS) -> Iterator[torch.Tensor]:
    """The float32 logits at positions start:stop of every window of `ids` [b, n] (by default
    0 .. n-2, the predictions of tokens 1 .. n-1), window after window, as blocks of at most
    `chunk` rows [rows, vocab]: the rows of model(ids).logits[:, start:stop] flattened, in order.

    Models whose head cannot be split off (see split_head) compute their logits whole, one
    window at a time."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 position, got {chunk}")
    device = next(model.parameters()).device
    ids = ids.to(device)
    split = split_head(model)
    if split is None:
        for row in ids:
            logits = model(row[None]).logits[0, start:stop]
            yield from logits.float().split(chunk)
        return
    decoder, head = split
    yield from head_logits(head, decoder(input_ids=ids, use_cache=False).last_hidden_state,
                           start, stop, chunk)


def head_logits(head: nn.Module, hidden: torch.Tensor, start: int = 0, stop: int | None = -1,
                chunk: int = CHUNK_TOKENS) -> Iterator[torch.Tensor]:
    """head's float32 logits for the final hidden states [b, n, d] (the decoder's output, after
    its final norm) at positions start:stop, as logit_chunks gives them."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 position, got {chunk}")
    hidden = hidden[:, start:stop]
    for h in hidden.reshape(-1, hidden.size(-1)).split(chunk):
        yield head(h).float()


@torch.no_grad()
def log_probs(model: nn.Module, ids: torch.Tensor, chunk: int = CHUNK_TOKENS) -> torch.Tensor:
    """log_softmax of the float32 logits at every position of `ids` [b, n]: [b, n, vocab],
    filled chunk by chunk (the result is the only full-vocabulary tensor held)."""
    b, n = ids.shape
    out, row = None, 0
    for logits in logit_chunks(model, ids, 0, None, chunk):
        if out is None:
            out = torch.empty(b * n, logits.size(-1), dtype=torch.float32, device=logits.device)
        out[row:row + logits.size(0)] = F.log_softmax(logits, -1)
        row += logits.size(0)
    return out.view(b, n, -1)


@torch.no_grad()
def kl_sum(model: nn.Module, ids: torch.Tensor, reference: torch.Tensor,
           chunk: int = CHUNK_TOKENS) -> float:
    """Σ over every position of `ids` [b, n] of KL(reference ‖ model) of the next-token
    distributions, `reference` the log-probabilities [b, n, vocab] (log_probs of the original):
    each position's sum over the vocabulary in float32, the sum over positions in float64."""
    return kl_sum_logits(logit_chunks(model, ids, 0, None, chunk), reference)


def kl_sum_logits(chunks: Iterable[torch.Tensor], reference: torch.Tensor) -> float:
    """kl_sum of logits given as chunks of rows (logit_chunks or head_logits of every position)."""
    ref = reference.reshape(-1, reference.size(-1))
    total, row = 0.0, 0
    for logits in chunks:
        r = ref[row:row + logits.size(0)]
        lp = F.log_softmax(logits, -1)
        total += float((r.exp() * (r - lp)).sum(-1).double().sum())
        row += logits.size(0)
    return total
