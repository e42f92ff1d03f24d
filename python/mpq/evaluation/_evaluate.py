"""Evaluation of a (quantized) model against its original: perplexity under a stated protocol,
KL divergence of the next-token distributions (MMLU and a GGUF file's speed are beside it in
mpq.evaluation).

Models are torch modules (a transformers causal LM, or anything whose forward(ids) returns an
object with .logits), GGUF files, or llama_cpp.Llama objects; the last two run in the real
llama.cpp through llama-cpp-python. Every comparison feeds the same token ids to both sides.

Perplexity protocols:

- "p1" (GPTQ/AWQ papers): the token stream cut into non-overlapping windows of `window` tokens;
  each window is scored independently and every token after its first is predicted from the
  tokens before it in the window: window - 1 scored tokens per window.
- "llama.cpp" (llama-perplexity, tools/perplexity/perplexity.cpp): the same non-overlapping
  chunks (512 tokens by default); when the vocabulary adds a BOS token the first token of every
  chunk is replaced by BOS; only the second half of each chunk is scored, so every scored token
  has at least window/2 tokens of context: window - 1 - window//2 scored tokens per chunk.

The incomplete tail of the stream is dropped under both protocols.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..data import windows
from ._logits import is_gguf_path, is_llama, llama_logit_chunks, open_gguf, torch_logit_chunks

PROTOCOLS = ("p1", "llama.cpp")
LLAMA_CPP_WINDOW = 512  # llama-perplexity's default context

class _Result:
    """Dict-style access (r["ppl"]) for callers written when results were plain dicts."""

    def __getitem__(self, key: str):
        return getattr(self, key)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Perplexity(_Result):
    ppl: float
    nll: float  # mean negative log-likelihood per scored token, nats
    tokens_scored: int
    windows: int
    window: int
    protocol: str  # "p1" or "llama.cpp"
    description: str
    seconds: float


@dataclass
class KLDivergence(_Result):
    """KL(reference || candidate) of the next-token distributions, per scored token, in nats;
    the statistics llama-perplexity --kl-divergence prints."""

    kl_mean: float
    kl_mean_stderr: float
    kl_median: float
    kl_p90: float
    kl_p99: float
    kl_p999: float
    kl_max: float
    same_top: float  # fraction of tokens where both models' most likely next token agree
    rms_dp: float  # RMS of p_candidate(token) - p_reference(token), the probability of the actual next token
    ppl_reference: float
    ppl_candidate: float
    ln_ppl_ratio: float  # ln(PPL(candidate) / PPL(reference))
    tokens_scored: int
    windows: int
    window: int
    protocol: str
    description: str
    seconds: float


def describe_protocol(protocol: str, window: int, bos_id: int | None = None) -> str:
    if protocol == "p1":
        return f"p1: non-overlapping windows of {window} tokens, {window - 1} scored per window"
    first = window // 2
    bos = "first token of each replaced by BOS" if bos_id is not None else "no BOS substitution"
    return (f"llama.cpp: non-overlapping chunks of {window} tokens ({bos}), the last "
            f"{window - 1 - first} of each scored")


def _check_protocol(protocol: str, window: int | None, bos_id: int | None, context: int | None) -> int:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown perplexity protocol '{protocol}' (expected one of {', '.join(PROTOCOLS)})")
    if protocol == "p1" and bos_id is not None:
        raise ValueError("bos_id applies to the llama.cpp protocol only; p1 scores the stream as it is")
    if window is None:
        if protocol == "llama.cpp":
            window = LLAMA_CPP_WINDOW
        elif context is not None:
            window = min(context, 2048)
        else:
            raise ValueError("protocol p1 needs window= (the model does not state its context)")
    if window < (4 if protocol == "llama.cpp" else 2):
        raise ValueError(f"window of {window} tokens is too short for protocol {protocol}")
    if context is not None and window > context:
        raise ValueError(f"window of {window} tokens exceeds the model's context of {context}")
    return window


def _scored_windows(tokens: torch.Tensor, protocol: str, window: int, bos_id: int | None,
                    max_windows: int | None) -> tuple[torch.Tensor, int]:
    """The windows [n, window] a protocol scores, and the position of the first logit it scores."""
    w = windows(tokens, window, max_windows)
    if protocol == "p1":
        return w, 0
    if bos_id is not None:
        w = w.clone()
        w[:, 0] = bos_id
    return w, window // 2


def _llama_window(model, protocol: str, window: int | None) -> int | None:
    """The context to open a GGUF file with: the protocol's window, which p1 needs stated."""
    if window is None and protocol == "p1" and not isinstance(model, nn.Module):
        raise ValueError("protocol p1 on a GGUF file or llama_cpp.Llama needs window=")
    return window or LLAMA_CPP_WINDOW


def _logit_source(model, window: int, n_gpu_layers: int, n_threads: int | None):
    """(LogitChunksFn, context or None, name) for a torch module, a GGUF path or a llama_cpp.Llama."""
    if isinstance(model, nn.Module):
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        return torch_logit_chunks(model), context, type(model).__name__
    if is_gguf_path(model):
        llm = open_gguf(model, n_ctx=window, n_gpu_layers=n_gpu_layers, n_threads=n_threads)
        return llama_logit_chunks(llm), llm.n_ctx(), os.path.basename(os.fspath(model))
    if is_llama(model):
        return llama_logit_chunks(model), model.n_ctx(), os.path.basename(model.model_path)
    raise TypeError(f"expected a torch model, a .gguf path or a llama_cpp.Llama, got {type(model).__name__}")


# --- perplexity ----------------------------------------------------------------------------------

def perplexity(model, tokens: torch.Tensor, *, protocol: str = "p1", window: int | None = None,
               bos_id: int | None = None, batch_size: int = 8, max_windows: int | None = None,
               chunk_tokens: int = 256, n_gpu_layers: int = 0, n_threads: int | None = None,
               progress: bool = True, desc: str = "perplexity") -> Perplexity:
    """Perplexity of a model on a token stream under a stated protocol (see the module docstring).

    Args:
        model: a torch causal LM, a GGUF file (run in llama.cpp) or a llama_cpp.Llama opened
            with logits_all=True.
        tokens: 1-D token ids, tokenized as the protocol's reference does (llama-perplexity
            tokenizes the whole text once, with BOS when the vocabulary adds one).
        protocol: "p1" or "llama.cpp".
        window: tokens per window; default 512 for llama.cpp, the model's context (at most 2048)
            for p1.
        bos_id: llama.cpp protocol: the BOS id that replaces the first token of every chunk, or
            None when the vocabulary adds no BOS (llama.cpp's add_bos flag; mpq tokenizers carry
            it as tokenizer.bos_id).
        batch_size: windows per forward pass (torch models).
        max_windows: cap on the number of windows (the first ones).
        chunk_tokens: scored positions per output-head call and cross-entropy: the logits held
            at once are chunk_tokens × vocab floats, whatever batch_size × window.
        n_gpu_layers, n_threads: for a GGUF file opened here.
        progress: show a progress bar.

    Returns:
        Perplexity: ppl, nll, tokens_scored, windows, window, protocol, description, seconds.
    """
    from .._progress import progress_bar

    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    start = time.perf_counter()
    fn, context, _ = _logit_source(model, _llama_window(model, protocol, window), n_gpu_layers, n_threads)
    window = _check_protocol(protocol, window, bos_id, context)
    w, first = _scored_windows(tokens, protocol, window, bos_id, max_windows)
    total, count = 0.0, 0
    for i in progress_bar(range(0, w.size(0), batch_size), desc=desc, unit="batch", disable=not progress):
        ids = w[i:i + batch_size]
        targets = ids[:, first + 1:].reshape(-1)
        row = 0
        for logits in fn(ids, first, chunk_tokens):
            t = targets[row:row + logits.size(0)].to(logits.device)
            nll = nn.functional.cross_entropy(logits, t, reduction="none")
            total += float(nll.double().sum())  # float64 sum: float32 drifts over 10⁵+ tokens
            row += logits.size(0)
        if row != targets.numel():
            raise AssertionError(f"{row} logits for {targets.numel()} scored tokens")  # a bug, not input
        count += targets.numel()
    nll = total / count
    return Perplexity(ppl=math.exp(nll), nll=nll, tokens_scored=count, windows=int(w.size(0)),
                      window=window, protocol=protocol,
                      description=describe_protocol(protocol, window, bos_id),
                      seconds=time.perf_counter() - start)


def gguf_perplexity(path: str | os.PathLike, text: str | os.PathLike | None = None, *,
                    tokens: torch.Tensor | None = None, protocol: str = "llama.cpp",
                    window: int = LLAMA_CPP_WINDOW, max_windows: int | None = None,
                    n_gpu_layers: int = 0, n_threads: int | None = None,
                    progress: bool = True) -> Perplexity:
    """Perplexity of a GGUF file in llama.cpp (llama-cpp-python), by default under
    llama-perplexity's protocol: `text` (a file) tokenized by the file's own tokenizer as
    llama-perplexity does (BOS in front when the vocabulary adds one), or explicit `tokens`."""
    import llama_cpp

    if (text is None) == (tokens is None):
        raise ValueError("give exactly one of text= (a text file) or tokens=")
    llm = open_gguf(path, n_ctx=window, n_gpu_layers=n_gpu_layers, n_threads=n_threads)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
    if tokens is None:
        with open(text, encoding="utf-8") as f:
            tokens = torch.tensor(llm.tokenize(f.read().encode("utf-8"), add_bos=True), dtype=torch.long)
    bos_id = llm.token_bos() if add_bos and protocol == "llama.cpp" else None
    return perplexity(llm, tokens, protocol=protocol, window=window, bos_id=bos_id,
                      max_windows=max_windows, progress=progress, desc="gguf perplexity")


# --- KL divergence -------------------------------------------------------------------------------

def _paired(a, b):
    """Blocks of rows of two logit streams, cut to the same rows (the two sources may chunk a
    batch differently: a torch model across windows, llama.cpp window by window)."""
    x = y = None
    while True:
        if x is None or x.size(0) == 0:
            x = next(a, None)
        if y is None or y.size(0) == 0:
            y = next(b, None)
        if x is None or y is None:
            if x is not None or y is not None:
                raise AssertionError("the two models gave logits for different numbers of tokens")
            return
        k = min(x.size(0), y.size(0))
        yield x[:k], y[:k]
        x, y = x[k:], y[k:]


def _percentile(sorted_values: np.ndarray, fraction: float) -> float:
    # Linear interpolation between order statistics, as llama-perplexity's percentile().
    return float(np.percentile(sorted_values, 100.0 * fraction, method="linear"))


def kl_divergence(reference, candidate, tokens: torch.Tensor, *, protocol: str = "llama.cpp",
                  window: int | None = None, bos_id: int | None = None, batch_size: int = 4,
                  max_windows: int | None = None, chunk_tokens: int = 256, n_gpu_layers: int = 0,
                  n_threads: int | None = None, progress: bool = True) -> KLDivergence:
    """KL divergence of a candidate (quantized) model's next-token distribution from the
    reference (original) model's, on the tokens a perplexity protocol scores.

    Streams: a batch of windows runs through both models, its statistics are accumulated in
    float64 (chunk_tokens positions at a time) and its logits dropped; only one float per scored
    token is kept, for the percentiles. Both models get exactly the same token ids, so a GGUF in
    llama.cpp can be compared with its torch original without tokenization mismatches.

    Unlike llama-perplexity, which stores the reference log-probabilities rounded to 16 bits and
    skips terms with p < e⁻¹⁶, the sum here is exact over the whole vocabulary.

    Args:
        reference, candidate: each a torch causal LM, a GGUF path or a llama_cpp.Llama (logits_all).
        tokens: 1-D token ids.
        protocol, window, bos_id, max_windows: as for perplexity(); default llama.cpp's protocol.
        batch_size: windows per forward pass.
        chunk_tokens: positions per output-head call and float64 softmax (memory: chunk_tokens ×
            vocab × 8 bytes × 4, whatever batch_size × window).

    Returns:
        KLDivergence (mean, its standard error, median, 90/99/99.9 percentiles, max, same-top
        fraction, RMS Δp, both perplexities, ...).
    """
    from .._progress import progress_bar

    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    start = time.perf_counter()
    ref_fn, ref_ctx, _ = _logit_source(reference, _llama_window(reference, protocol, window), n_gpu_layers, n_threads)
    cand_fn, cand_ctx, _ = _logit_source(candidate, _llama_window(candidate, protocol, window), n_gpu_layers, n_threads)
    contexts = [c for c in (ref_ctx, cand_ctx) if c is not None]
    window = _check_protocol(protocol, window, bos_id, min(contexts) if contexts else None)
    w, first = _scored_windows(tokens, protocol, window, bos_id, max_windows)

    kls: list[np.ndarray] = []
    nll_p = nll_q = sum_dp2 = 0.0
    same = 0
    for i in progress_bar(range(0, w.size(0), batch_size), desc="kl divergence", unit="batch",
                          disable=not progress):
        ids = w[i:i + batch_size]
        targets = ids[:, first + 1:].reshape(-1)
        row = 0
        for p_logits, q_logits in _paired(ref_fn(ids, first, chunk_tokens), cand_fn(ids, first, chunk_tokens)):
            if p_logits.size(-1) != q_logits.size(-1):
                raise ValueError(f"the models' vocabularies differ: reference {p_logits.size(-1)} tokens, "
                                 f"candidate {q_logits.size(-1)}")
            lp = torch.log_softmax(p_logits.double(), -1)
            lq = torch.log_softmax(q_logits.to(p_logits.device).double(), -1)
            t = targets[row:row + lp.size(0), None].to(lp.device)
            row += lp.size(0)
            kls.append((lp.exp() * (lp - lq)).sum(-1).cpu().numpy())
            tp, tq = lp.gather(1, t).squeeze(1), lq.gather(1, t).squeeze(1)
            nll_p -= float(tp.sum())
            nll_q -= float(tq.sum())
            sum_dp2 += float((tq.exp() - tp.exp()).square().sum())
            same += int((lp.argmax(-1) == lq.argmax(-1)).sum())
        if row != targets.numel():
            raise AssertionError(f"{row} logits for {targets.numel()} scored tokens")  # a bug, not input
    kl = np.sort(np.concatenate(kls))
    n = kl.size
    mean = float(kl.mean())
    stderr = float(kl.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return KLDivergence(
        kl_mean=mean, kl_mean_stderr=stderr, kl_median=float(np.median(kl)),
        kl_p90=_percentile(kl, 0.90), kl_p99=_percentile(kl, 0.99), kl_p999=_percentile(kl, 0.999),
        kl_max=float(kl[-1]), same_top=same / n, rms_dp=math.sqrt(sum_dp2 / n),
        ppl_reference=math.exp(nll_p / n), ppl_candidate=math.exp(nll_q / n),
        ln_ppl_ratio=(nll_q - nll_p) / n, tokens_scored=n, windows=int(w.size(0)), window=window,
        protocol=protocol, description=describe_protocol(protocol, window, bos_id),
        seconds=time.perf_counter() - start)
