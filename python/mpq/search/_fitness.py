"""Fitness of a mixed-precision plan measured on the assembled model: KL divergence from the
original model's next-token distribution on calibration tokens (EvoPress's fitness).

KlFitness is a callable for mpq.genetic_search(fitness=...): it receives genomes [n, tensors]
and a stage index; stage i scores `stages[i]` calibration sequences (multi-fidelity selection:
many offspring judged on few tokens, the survivors on more).
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .. import models as model_lib
from ..quant import llama_cpp_activations
from ._candidates import Candidates


class KlFitness:
    """Mean KL(original ‖ quantized) per token on calibration sequences.

    Args:
        model: the original model (its weights are swapped while judging and restored by
            restore() or on leaving a `with` block).
        candidates: the table and quantized tensors from build_candidates.
        sequences: token ids [n, seq]; stage i uses the first stages[i] rows.
        stages: sequences per fidelity stage, increasing (default: all, one stage).
        batch_size: sequences per forward pass.
        llama_cpp_activations: judge each plan with llama.cpp's rounding of the activations
            simulated (mpq.llama_cpp_activations, by each tensor's format in the plan), i.e. as
            llama.cpp will compute the exported file; the reference stays the float model.
    """

    def __init__(self, model: nn.Module, candidates: Candidates, sequences: torch.Tensor,
                 stages: list[int] | None = None, batch_size: int = 4,
                 llama_cpp_activations: bool = False):
        self.model, self.candidates = model, candidates
        self.llama_cpp_activations = llama_cpp_activations
        self.stages = list(stages or [sequences.size(0)])
        if any(b <= a for a, b in zip(self.stages, self.stages[1:])) or self.stages[0] < 1 \
                or self.stages[-1] > sequences.size(0):
            raise ValueError(f"stages {self.stages} must increase from 1 to at most the "
                             f"{sequences.size(0)} sequences given")
        self.device = next(model.parameters()).device
        self.batches = sequences[:self.stages[-1]].split(batch_size)
        self.batch_size = batch_size
        self.swap = model_lib.WeightSwap(model_lib.weight_tensors(model))
        self.names = [candidates.table.tensor_name(i) for i in range(candidates.table.num_tensors)]
        self.applied = [-1] * len(self.names)  # option index now in each tensor; -1: original
        # Filled chunk by chunk: the batch's logits and their log_softmax are never held whole.
        self.reference = [model_lib.log_probs(model, ids) for ids in self.batches]
        self.evaluations = 0
        self.seconds = 0.0

    def set_option(self, tensor: int, option: int) -> None:
        """Puts one tensor's quantized weights for `option` into the model (-1: the original)."""
        if self.applied[tensor] == option:
            return
        name = self.names[tensor]
        new = None if option < 0 else \
            self.candidates.dequantized(name, self.candidates.table.options[option], self.swap.original(name).device)
        self.swap.set(name, new)
        self.applied[tensor] = option

    def apply(self, genome) -> None:
        """Puts the genome's quantized weights into the model (only the tensors that change)."""
        for i, g in enumerate(np.asarray(genome).tolist()):
            self.set_option(i, g)

    def restore(self) -> None:
        self.swap.restore()
        self.applied = [-1] * len(self.names)

    def __enter__(self) -> "KlFitness":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

    def kl(self, genome, sequences: int | None = None) -> float:
        """Mean KL per token of one genome on the first `sequences` sequences (default all)."""
        self.apply(genome)
        if not self.llama_cpp_activations:
            return self.kl_current(sequences)
        formats = {name: label.split(":")[1] for name, label in self.candidates.plan(genome).items()}
        with llama_cpp_activations(self.model, formats):
            return self.kl_current(sequences)

    @torch.no_grad()
    def kl_current(self, sequences: int | None = None) -> float:
        """Mean KL per token of the model's weights as they are now."""
        n = sequences or self.stages[-1]
        total, count = 0.0, 0
        for ids, ref in zip(self.batches, self.reference):
            take = min(ids.size(0), n - count // ids.size(1))
            if take <= 0:
                break
            total += model_lib.kl_sum(self.model, ids[:take], ref[:take])
            count += take * ids.size(1)
        return total / count

    def __call__(self, genomes, stage: int) -> list[float]:
        start = time.perf_counter()
        out = [self.kl(g, self.stages[stage]) for g in np.asarray(genomes)]
        self.evaluations += len(out)
        self.seconds += time.perf_counter() - start
        return out


def measure_kl(candidates: Candidates, model: nn.Module, sequences: torch.Tensor, *,
               tensors: list[str] | None = None, progress: bool = True) -> None:
    """Fills the table's KL cells: the KL divergence of the model with only that tensor
    quantized with that option, on `sequences` (token ids [n, seq]). One forward pass per
    available cell, so `tensors` may restrict it (default: every tensor)."""
    from .._progress import progress_bar

    t = candidates.table
    rows = [t.tensor_index(n) for n in tensors] if tensors is not None else range(t.num_tensors)
    cells = [(i, o) for i in rows for o in range(t.num_options) if t.available(i, o)]
    with KlFitness(model, candidates, sequences) as judge:
        for i, o in progress_bar(cells, desc="KL per layer", unit="cell", disable=not progress):
            judge.set_option(i, o)
            t.set_kl(i, o, judge.kl_current())
            judge.set_option(i, -1)
