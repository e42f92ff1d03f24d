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
from collections import OrderedDict
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
    # Packed tensors kept on an accelerator, most recently used first, up to this many bytes
    # (None: a quarter of the device's free memory at first use): a search applies the same
    # options again and again, and without them every plan copies its tensors' bytes from the host.
    device_cache_bytes: int | None = None
    _on_device: OrderedDict = field(default_factory=OrderedDict, repr=False)

    def plan(self, genome) -> dict[str, str]:
        """tensor name -> option label ("expert:format") of a genome."""
        t = self.table
        return {t.tensor_name(i): t.options[int(g)] for i, g in enumerate(genome)}

    def dequantized(self, name: str, label: str, device) -> torch.Tensor:
        """Tensor `name`'s weight under option `label`, dequantized on `device` (the packed bytes
        are fewer to move than floats)."""
        q, device = self.quantized[(name, label)], torch.device(device)
        if device.type == "cpu":
            return _C.dequantize(q)
        key = (name, label, str(device))
        if key in self._on_device:
            self._on_device.move_to_end(key)
            return _C.dequantize(self._on_device[key])
        moved = q.to(str(device))
        if self.device_cache_bytes is None:
            free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 1 << 30
            self.device_cache_bytes = free // 4
        self._on_device[key] = moved
        held = sum(t.nbytes for t in self._on_device.values())
        while held > self.device_cache_bytes and len(self._on_device) > 1:
            held -= self._on_device.popitem(last=False)[1].nbytes
        return _C.dequantize(moved)

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
        """Writes the table (table.json) and the quantized tensors behind it (one file per tensor
        under tensors/, the layout build_candidates(folder=...) fills as it goes) into `folder`,
        each file under a temporary name renamed when complete."""
        folder = Path(folder)
        for ti in range(self.table.num_tensors):
            _save_row(folder, self.table, ti, self.quantized)
        _save_table(folder, self.table)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Candidates":
        """Candidates written by save() or by build_candidates(folder=...)."""
        folder = Path(folder)
        table = _C.CandidateTable.load(os.fspath(folder / "table.json"))
        options = list(table.options)
        out = cls(table)
        for ti in range(table.num_tensors):
            name = table.tensor_name(ti)
            row = _load_row(folder, name, options)
            if row is None:
                raise ValueError(f"{folder}: table.json lists tensor {name}, but {_row_path(folder, name)} "
                                 f"is missing or holds other options than {options}")
            cells, quantized = row
            for label in cells:
                out.quantized[(name, label)] = quantized[label]
        return out

    def tensors(self, genome) -> dict:
        """GGUF tensor name ("blk.0.attn_q.weight") -> QuantizedTensor of a genome."""
        return {f"{name}.weight": self.quantized[(name, label)]
                for name, label in self.plan(genome).items()}


def option_labels(experts, formats) -> list[str]:
    """Every (expert, format) pair as "expert:format"."""
    return [f"{e}:{f}" for e in experts for f in formats]


def _row_path(folder: Path, name: str) -> Path:
    return folder / "tensors" / f"{name}.pt"


def _save_row(folder: Path, table: "_C.CandidateTable", ti: int, quantized: dict) -> None:
    """Row `ti` of the table: (bytes, proxy) and the quantized tensor (from `quantized`, keyed by
    (name, label)) of every available option, written under a temporary name and renamed, so that
    a row on disk is always whole."""
    name, options = table.tensor_name(ti), list(table.options)
    cells = {options[oi]: table.cell(ti, oi)[:2] for oi in range(len(options)) if table.available(ti, oi)}
    path = _row_path(folder, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    packed = {}
    for label in cells:
        q = quantized[(name, label)]
        packed[label] = {"format": q.format, "codes": q.codes.cpu(), "rows": q.rows, "cols": q.cols,
                         "scales": q.scales.cpu() if q.scales is not None else None,
                         "zeros": q.zeros.cpu() if q.zeros is not None else None, "dtype": q.dtype}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"options": options, "cells": {k: [int(b), float(p)] for k, (b, p) in cells.items()},
                "tensors": packed}, tmp)
    os.replace(tmp, path)


def _load_row(folder: Path, name: str, options: list[str]):
    """(cells, quantized tensors) of a row _save_row wrote for the same options; None when there
    is none (a row of other options is stale and is quantized again)."""
    path = _row_path(folder, name)
    if not path.exists():
        return None
    # Memory-mapped: the codes stay in the file until they are read, so a table larger than the
    # memory (15 options of a 1.5B model: about 17 GB) is paged in as the search uses it.
    saved = torch.load(path, weights_only=True, mmap=True)
    if saved["options"] != options:
        return None
    quantized = {label: _C.QuantizedTensor(q["format"], q["codes"], q["scales"], q["zeros"], q["rows"],
                                           q["cols"], q["dtype"]) for label, q in saved["tensors"].items()}
    return {k: tuple(v) for k, v in saved["cells"].items()}, quantized


def _save_table(folder: Path, table: "_C.CandidateTable") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table.save(os.fspath(folder / "table.json.tmp"))
    os.replace(folder / "table.json.tmp", folder / "table.json")


def _split(label: str) -> tuple[str, str]:
    expert, sep, fmt = label.partition(":")
    if not sep or not expert or not fmt:
        raise ValueError(f"option '{label}' is not of the form expert:format (e.g. kquant_imatrix:q4_k)")
    return expert, fmt


def _fits(fmt: "_C.Format", cols: int) -> bool:
    """A llama.cpp format stores whole blocks per row; integer groups may end short."""
    return fmt.family != _C.FormatFamily.GGML or cols % fmt.group_size == 0


def _available(name: str, expert_name: str, expert, fmt: "_C.Format", cols: int, has_stats: bool) -> bool:
    """Whether an option can quantize tensor `name` (rows of `cols` weights)."""
    if not _fits(fmt, cols) or (name == "token_embd" and expert_name not in _EMBEDDING_EXPERTS):
        return False
    # Without statistics (an untied embedding: no matmul reads it) the formats that need an
    # importance matrix are no option (llama.cpp's IQ2 mixes give it Q2_K).
    return has_stats or not (expert.needs_stats() and fmt.requires_importance)


def reachable_bpw(model: nn.Module, options: list[str]) -> tuple[float, float]:
    """The smallest and the largest file `options` can make of `model`, in bits per weight with
    every tensor counted, from the formats' sizes alone: a budget is checked before any work.
    Raises ValueError naming a tensor that no option can quantize."""
    parsed = [_split(o) for o in options]
    experts = {e: make_expert(e) for e, _ in parsed}
    tensors = model_lib.weight_tensors(model)
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is tensors["token_embd"].weight
    low, weights = _fixed_tensors(model, tensors)
    high = low
    for name, module in tensors.items():
        rows, cols = module.weight.shape
        sizes = [_C.find_format(f).bytes(rows, cols) for e, f in parsed
                 if _available(name, e, experts[e], _C.find_format(f), cols, name != "token_embd" or tied)]
        if not sizes:
            raise ValueError(f"{name}: none of the options {list(options)} can quantize its "
                             f"[{rows}, {cols}] weight (rows of {cols} are no whole number of "
                             "their blocks); add a format such as f16")
        low, high, weights = low + min(sizes), high + max(sizes), weights + module.weight.numel()
    return 8.0 * low / weights, 8.0 * high / weights


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
                     calibrator: "_C.Calibrator | None" = None, folder: str | os.PathLike | None = None,
                     progress: bool = True) -> Candidates:
    """Quantizes every tensor with every option and records bytes and proxy error.

    Args:
        model: a transformers Llama/Qwen2/Qwen3 causal LM (mpq.load_model(...).model).
        batches: calibration token ids, each [batch, seq].
        options: "expert:format" labels (see option_labels), e.g. ["kquant_imatrix:q4_k", ...].
            An option is unavailable for a tensor whose rows are not whole blocks of its format,
            and for token_embd unless its expert is one of rtn, kquant, kquant_imatrix.
        calibrator: statistics already gathered (must cover every linear and "output", the LM
            head's input); None: gathered here (unless every row is already in `folder`).
        folder: where each tensor's row is written as soon as it is done (tensors/<name>.pt),
            and table.json at the end (Candidates.load reads the folder). Rows already there for
            the same options are read instead of quantized again, so a run stopped halfway goes
            on from the next tensor. The caller makes sure the folder belongs to this model and
            calibration (mpq's main job keys its work folder by both).
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
    folder = Path(folder) if folder is not None else None
    options = list(options)
    done = {name: _load_row(folder, name, options) for name in tensors} if folder is not None else {}
    if calibrator is None and not all(done.get(name) for name in tensors):
        layers = dict(model_lib.linear_layers(model))
        layers["output"] = head
        # The experts of the table (no input transforms) read neither Σ|x| nor max|x|.
        calibrator = model_lib.calibrate(model, batches, layers=layers, progress=progress,
                                         calibrator=_C.Calibrator(_C.CalibratorOptions(collect_abs=False)))
    freq = _token_frequencies(batches, tensors["token_embd"].weight.shape[0])

    table = _C.CandidateTable(options)
    for name, module in tensors.items():
        table.add_tensor(name, module.weight.numel())
    table.set_fixed(*_fixed_tensors(model, tensors))
    out = Candidates(table)
    for ti, (name, module) in enumerate(progress_bar(list(tensors.items()), desc="sensitivity",
                                                     unit="tensor", disable=not progress)):
        if done.get(name):
            cells, quantized = done[name]
            for oi, label in enumerate(options):
                if label in cells:
                    table.set(ti, oi, cells[label][0], cells[label][1], float("nan"))
                    out.quantized[(name, label)] = quantized[label]
                else:
                    table.set_unavailable(ti, oi)
            continue
        weight = module.weight.data
        stats_name = "output" if name == "token_embd" and tied else name
        stats = calibrator.stats(stats_name) if stats_name in calibrator.layers() else None
        for oi, (e, f) in enumerate(parsed):
            fmt, ex = formats[f], experts[e]
            if not _available(name, e, ex, fmt, weight.shape[1], stats is not None):
                table.set_unavailable(ti, oi)
                continue
            if stats is None and ex.needs_stats():
                # An untied embedding has no statistics (no matmul reads it): llama.cpp quantizes
                # it without an importance matrix, and so does kquant_imatrix here.
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
        if folder is not None:
            _save_row(folder, table, ti, out.quantized)
            out.quantized.update({(name, k): q for k, q in _load_row(folder, name, options)[1].items()})
    if folder is not None:
        _save_table(folder, table)
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
