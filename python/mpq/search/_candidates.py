"""Sensitivity analysis: what each (expert, format) option costs each tensor of a model.

build_candidates() quantizes every quantizable tensor (token_embd, the decoder linears, output)
with every allowed option and fills an mpq.CandidateTable with the bytes each option takes in the
GGUF file and its proxy error; measure_kl() adds the measured KL divergence of the model with only
that tensor quantized. The table feeds mpq.knapsack / mpq.genetic_search.

Proxy error = tr(ΔW H ΔWᵀ) with H = (2/N) Σ x xᵀ over the calibration tokens: twice the mean
squared perturbation of the layer's output per token. The token embedding has no input: its proxy
is 2 Σ_t f_t ‖ΔE_t‖² with f_t the token's frequency in the calibration text (the perturbation of
block 0's input), plus, when it is tied to the output head, the head's tr(ΔE H ΔEᵀ).
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import _C
from .. import models as model_lib
from ..quant import make_expert

# Experts that may quantize the token embedding (a lookup table: input transforms and GPTQ's
# column updates have no meaning for its rows).
_EMBEDDING_EXPERTS = ("rtn", "kquant", "kquant_imatrix")


@dataclass
class Candidates:
    """A CandidateTable with the quantized tensors behind its cells (so a chosen option is applied
    and exported as the very bytes that were measured)."""

    table: "_C.CandidateTable"
    quantized: dict = field(default_factory=dict)  # (tensor name, option label) -> QuantizedTensor
    seconds: float = 0.0

    def plan(self, genome) -> dict[str, str]:
        """tensor name -> option label ("expert:format") of a genome."""
        t = self.table
        return {t.tensor_name(i): t.options[int(g)] for i, g in enumerate(genome)}

    def dequantized(self, name: str, label: str, device) -> torch.Tensor:
        """Tensor `name`'s weight under option `label`, dequantized on `device` (the packed bytes
        are fewer to move than floats)."""
        return _C.dequantize(self.quantized[(name, label)].to(str(device)))

    def apply(self, model: nn.Module, genome) -> "model_lib.WeightSwap":
        """Puts the genome's quantized weights into `model`; the WeightSwap returned (a context
        manager) puts the originals back."""
        swap = model_lib.WeightSwap(model_lib.weight_tensors(model))
        try:
            for name, label in self.plan(genome).items():
                swap.set(name, self.dequantized(name, label, swap.original(name).device))
        except BaseException:
            swap.restore()
            raise
        return swap

    def save(self, folder: str | os.PathLike) -> None:
        """Writes the table (table.json) and the quantized tensors behind it (tensors.pt) into
        `folder`, each to a temporary name renamed when complete, so that a run stopped later
        starts again from them (Candidates.load) instead of quantizing every option again."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        packed = {f"{name}\t{label}": {"format": q.format, "codes": q.codes.cpu(), "rows": q.rows, "cols": q.cols,
                                       "scales": q.scales.cpu() if q.scales is not None else None,
                                       "zeros": q.zeros.cpu() if q.zeros is not None else None, "dtype": q.dtype}
                  for (name, label), q in self.quantized.items()}
        tmp = folder / "tensors.pt.tmp"
        torch.save({"options": list(self.table.options), "tensors": packed, "seconds": self.seconds}, tmp)
        self.table.save(os.fspath(folder / "table.json.tmp"))
        os.replace(folder / "table.json.tmp", folder / "table.json")
        os.replace(tmp, folder / "tensors.pt")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Candidates":
        """Candidates written by save()."""
        folder = Path(folder)
        table = _C.CandidateTable.load(os.fspath(folder / "table.json"))
        saved = torch.load(folder / "tensors.pt", weights_only=True)
        if saved["options"] != list(table.options):
            raise ValueError(f"{folder}: tensors.pt holds options {saved['options']}, table.json "
                             f"{list(table.options)}: the two files come from different runs")
        out = cls(table, seconds=saved["seconds"])
        for key, q in saved["tensors"].items():
            name, label = key.split("\t")
            out.quantized[(name, label)] = _C.QuantizedTensor(q["format"], q["codes"], q["scales"], q["zeros"],
                                                              q["rows"], q["cols"], q["dtype"])
        return out

    def tensors(self, genome) -> dict:
        """GGUF tensor name ("blk.0.attn_q.weight") -> QuantizedTensor of a genome."""
        return {f"{name}.weight": self.quantized[(name, label)]
                for name, label in self.plan(genome).items()}


def option_labels(experts, formats) -> list[str]:
    """Every (expert, format) pair as "expert:format"."""
    return [f"{e}:{f}" for e in experts for f in formats]


def _split(label: str) -> tuple[str, str]:
    expert, sep, fmt = label.partition(":")
    if not sep or not expert or not fmt:
        raise ValueError(f"option '{label}' is not of the form expert:format (e.g. kquant_imatrix:q4_k)")
    return expert, fmt


def _fits(fmt: "_C.Format", cols: int) -> bool:
    """A llama.cpp format stores whole blocks per row; integer groups may end short."""
    return fmt.family != _C.FormatFamily.GGML or cols % fmt.group_size == 0


def _fixed_tensors(model: nn.Module, quantizable: dict) -> tuple[int, int]:
    """Bytes and weights of the tensors a GGUF file holds outside the search (norms: f32)."""
    mine = {id(m.weight) for m in quantizable.values()}
    seen, nbytes, weights = set(), 0, 0
    for p in model.parameters():
        if id(p) in mine or id(p) in seen:
            continue
        seen.add(id(p))
        nbytes += p.numel() * 4
        weights += p.numel()
    return nbytes, weights


def _token_frequencies(batches, vocab: int) -> torch.Tensor:
    counts = torch.zeros(vocab, dtype=torch.float64)
    for ids in batches:
        counts += torch.bincount(ids.flatten().cpu(), minlength=vocab)[:vocab].double()
    return counts / counts.sum().clamp_min(1)


@torch.no_grad()
def build_candidates(model: nn.Module, batches, options: list[str], *,
                     calibrator: "_C.Calibrator | None" = None, progress: bool = True) -> Candidates:
    """Quantizes every tensor with every option and records bytes and proxy error.

    Args:
        model: a transformers Llama/Qwen2/Qwen3 causal LM (mpq.load_model(...).model).
        batches: calibration token ids, each [batch, seq].
        options: "expert:format" labels (see option_labels), e.g. ["kquant_imatrix:q4_k", ...].
            An option is unavailable for a tensor whose rows are not whole blocks of its format,
            and for token_embd unless its expert is one of rtn, kquant, kquant_imatrix.
        calibrator: statistics already gathered (must cover every linear and "output", the LM
            head's input); None: gathered here.
        progress: show a progress bar.

    Returns:
        Candidates (the table and the quantized tensors behind it).
    """
    from .._progress import progress_bar

    start = time.perf_counter()
    if not options:
        raise ValueError("no options: give at least one expert:format")
    parsed = [_split(o) for o in options]
    formats = {f: _C.find_format(f) for _, f in parsed}
    experts = {e: make_expert(e) for e, _ in parsed}
    for e, ex in experts.items():
        if ex.transforms_input():
            raise ValueError(f"expert '{e}' transforms its input, so its layers are coupled; "
                             "the per-tensor table supports experts without transforms "
                             "(rtn, kquant, kquant_imatrix, gptq)")
    batches = list(batches)
    tensors = model_lib.weight_tensors(model)
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is tensors["token_embd"].weight
    if calibrator is None:
        layers = dict(model_lib.linear_layers(model))
        layers["output"] = head
        # The experts of the table (no input transforms) read neither Σ|x| nor max|x|.
        calibrator = model_lib.calibrate(model, batches, layers=layers, progress=progress,
                                         calibrator=_C.Calibrator(_C.CalibratorOptions(collect_abs=False)))
    freq = _token_frequencies(batches, tensors["token_embd"].weight.shape[0])

    table = _C.CandidateTable(list(options))
    for name, module in tensors.items():
        table.add_tensor(name, module.weight.numel())
    table.set_fixed(*_fixed_tensors(model, tensors))
    out = Candidates(table)
    for ti, (name, module) in enumerate(progress_bar(list(tensors.items()), desc="sensitivity",
                                                     unit="tensor", disable=not progress)):
        weight = module.weight.data
        stats_name = "output" if name == "token_embd" and tied else name
        stats = calibrator.stats(stats_name) if stats_name in calibrator.layers() else None
        for oi, (e, f) in enumerate(parsed):
            fmt = formats[f]
            if not _fits(fmt, weight.shape[1]) or (name == "token_embd" and e not in _EMBEDDING_EXPERTS):
                table.set_unavailable(ti, oi)
                continue
            ex = experts[e]
            if stats is None and ex.needs_stats():
                # An untied embedding has no statistics (no matmul reads it): llama.cpp quantizes
                # it without an importance matrix, and so does kquant_imatrix here; the formats
                # that need one are no option for it (llama.cpp's IQ2 mixes give it Q2_K).
                if fmt.requires_importance:
                    table.set_unavailable(ti, oi)
                    continue
                ex = experts.setdefault("kquant", make_expert("kquant"))
            r = ex.quantize([_C.ExpertLayer(name, weight, fmt.name)], stats, False)[0]
            approx = _C.dequantize(r.quantized.to(str(weight.device))).to(torch.float32)
            if name == "token_embd":
                d = (approx - weight.float()).pow(2).sum(1).double().cpu()
                proxy = 2.0 * float((freq * d).sum())
                if tied and stats is not None:
                    proxy += _C.output_error(weight.float(), approx, stats.hessian())
            else:
                proxy = r.output_error
                if math.isnan(proxy) and stats is not None:
                    # An expert (a Python one, say) that leaves its error out gets it computed.
                    proxy = _C.output_error(weight.float(), approx, stats.hessian())
            if not math.isfinite(proxy):
                raise ValueError(f"{name}: option {options[oi]} gave a non-finite proxy error "
                                 f"({proxy}); are its calibration statistics missing?")
            table.set(ti, oi, r.quantized.nbytes, proxy, float("nan"))
            out.quantized[(name, options[oi])] = r.quantized
    out.seconds = time.perf_counter() - start
    return out


def ranking(candidates: Candidates, reference: str, *, use_kl: bool = False) -> list[dict]:
    """Tensors from most to least sensitive: the error each gets from the `reference` option
    (e.g. "kquant_imatrix:q2_k"), per weight, and a tier in the spirit of "sensitive layers get
    8 bits, normal 4, insensitive 2" (top and bottom quarter). With use_kl, only tensors whose
    KL was measured (measure_kl) are ranked."""
    t = candidates.table
    o = t.option_index(reference)
    rows = []
    for i in range(t.num_tensors):
        if not t.available(i, o):
            continue
        _, proxy, kl = t.cell(i, o)
        err = kl if use_kl else proxy / t.tensor_weights(i)
        if math.isnan(err):
            continue  # KL not measured for this tensor
        rows.append({"tensor": t.tensor_name(i), "error": err})
    rows.sort(key=lambda r: -r["error"])
    n = len(rows)
    for k, r in enumerate(rows):
        r["tier"] = "sensitive" if k < n / 4 else ("insensitive" if k >= 3 * n / 4 else "normal")
    return rows
