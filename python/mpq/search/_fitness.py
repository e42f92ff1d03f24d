"""Fitness of a mixed-precision plan measured on the assembled model: KL divergence from the
original model's next-token distribution on calibration tokens (EvoPress's fitness).

KlFitness is a callable for mpq.genetic_search(fitness=...): it receives genomes [n, tensors]
and a stage index; stage i scores `stages[i]` calibration sequences (multi-fidelity selection:
many offspring judged on few tokens, the survivors on more).

Most of a judgement is the forward pass, and most of it is spent twice: an offspring differs from
its parents in a few tensors, a survivor judged again at the next stage on the sequences it was
already judged on. So the fitness keeps the hidden states at every block boundary of the plans it
judged last (_BlockStates) and runs a plan only from the first block in which it differs from the
closest of them; an identical plan on the same batch costs nothing. The result is the same KL as
a full forward pass: the same blocks run on the same inputs with the same weights.
"""
from __future__ import annotations

import re
import time
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from .. import models as model_lib
from ..quant import llama_cpp_activations
from ._candidates import Candidates


_BLOCK = re.compile(r"blk\.(\d+)\.")


class _BlockStates:
    """Hidden states at the block boundaries of recently judged plans, per batch.

    Boundary k is block k's input (0: the embeddings' output; L, the number of blocks: the last
    block's output). Changing a tensor of block i changes boundaries i+1 .. L, so a plan runs from
    block i on the states of a plan that agrees with it before block i; changing token_embd
    changes every boundary (and the head, when tied), changing output only the head. A plan's
    entry shares the tensors of the boundaries it took over, so relatives cost little memory.
    Least recently used entries go first once the states held exceed max_bytes.
    """

    def __init__(self, names: list[str], num_blocks: int, max_bytes: int):
        # Per tensor: the first block that must run again when it changes (-1: the embeddings).
        self.runs_from = np.array([int(m.group(1)) if (m := _BLOCK.match(n)) else
                                   (num_blocks if n == "output" else -1) for n in names])
        self.num_blocks, self.max_bytes = num_blocks, max_bytes
        self.entries: OrderedDict[tuple, dict] = OrderedDict()  # key -> {batch: (states, kl sum)}

    def closest(self, key: tuple, state: np.ndarray, batch: int) -> tuple[int, list, float | None]:
        """(first block to run, the states before it, the kl sum when nothing needs to run) from
        the entry closest to `state` on `batch`; (-1, [], None) when none has that batch."""
        best, best_key = (-1, [], None), None
        for other, entry in self.entries.items():
            if batch not in entry or other[0] != key[0]:
                continue
            states, kl = entry[batch]
            diff = np.asarray(other[1:]) != state
            if not diff.any():
                best, best_key = (self.num_blocks, states, kl), other
                break
            start = int(self.runs_from[diff].min())
            if start > best[0]:
                best, best_key = (start, states[:start + 1], None), other
        if best_key is not None:
            self.entries.move_to_end(best_key)  # a plan others start from stays
        return best

    def keep(self, key: tuple, batch: int, states: list, kl: float) -> None:
        self.entries.setdefault(key, {})[batch] = (states, kl)
        self.entries.move_to_end(key)
        while len(self.entries) > 1 and self._bytes() > self.max_bytes:
            self.entries.popitem(last=False)

    def _bytes(self) -> int:
        held = {id(t): t.numel() * t.element_size() for entry in self.entries.values()
                for states, _ in entry.values() for t in states}
        return sum(held.values())


class KlFitness:
    """Mean KL(original ‖ quantized) per token on calibration sequences.

    Args:
        model: the original model (its weights are swapped while judging and restored by
            restore() or on leaving a `with` block; change them only through this object while
            it is in use, since the states it keeps assume its own swaps).
        candidates: the table and quantized tensors from build_candidates.
        sequences: token ids [n, seq]; stage i uses the first stages[i] rows.
        stages: sequences per fidelity stage, increasing (default: all, one stage).
        batch_size: sequences per forward pass (a batch never straddles two stages).
        llama_cpp_activations: judge each plan with llama.cpp's rounding of the activations
            simulated (mpq.llama_cpp_activations, by each tensor's format in the plan), i.e. as
            llama.cpp will compute the exported file; the reference stays the float model.
        state_bytes: memory for the block-boundary states of recent plans (see the module
            docstring; on the model's device); 0 runs every plan through the whole model.
    """

    def __init__(self, model: nn.Module, candidates: Candidates, sequences: torch.Tensor,
                 stages: list[int] | None = None, batch_size: int = 4,
                 llama_cpp_activations: bool = False, state_bytes: int = 1 << 30):
        self.model, self.candidates = model, candidates
        self.llama_cpp_activations = llama_cpp_activations
        self.stages = list(stages or [sequences.size(0)])
        if any(b <= a for a, b in zip(self.stages, self.stages[1:])) or self.stages[0] < 1 \
                or self.stages[-1] > sequences.size(0):
            raise ValueError(f"stages {self.stages} must increase from 1 to at most the "
                             f"{sequences.size(0)} sequences given")
        self.device = next(model.parameters()).device
        bounds = [0] + self.stages
        self.batches = [b for lo, hi in zip(bounds, bounds[1:]) for b in sequences[lo:hi].split(batch_size)]
        self.batch_size = batch_size
        self.swap = model_lib.WeightSwap(model_lib.weight_tensors(model))
        self.names = [candidates.table.tensor_name(i) for i in range(candidates.table.num_tensors)]
        self.applied = [-1] * len(self.names)  # option index now in each tensor; -1: original
        # Filled chunk by chunk: the batch's logits and their log_softmax are never held whole.
        self.reference = [model_lib.log_probs(model, ids) for ids in self.batches]
        self.states = None
        norm = model_lib.final_norm(model)
        if state_bytes > 0 and norm is not None:
            self.layers, self.norm = model_lib.decoder_layers(model), norm
            self.head = model_lib.split_head(model)[1]
            self.block_kwargs = model_lib.block_inputs(model, self.batches, self.device)[1]
            self.states = _BlockStates(self.names, len(self.layers), state_bytes)
        self.evaluations = 0
        self.blocks_run = 0  # decoder blocks computed, batches counted (the cost the states save)
        self.seconds = 0.0
        self.apply_seconds = 0.0  # of `seconds`, spent putting plans' weights in (host time)

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
        start = time.perf_counter()
        self.apply(genome)
        self.apply_seconds += time.perf_counter() - start
        if not self.llama_cpp_activations:
            return self.kl_current(sequences)
        formats = {name: label.split(":")[1] for name, label in self.candidates.plan(genome).items()}
        with llama_cpp_activations(self.model, formats):
            return self._kl(sequences, simulated=True)

    def kl_current(self, sequences: int | None = None) -> float:
        """Mean KL per token of the model's weights as they are now."""
        return self._kl(sequences, simulated=False)

    @torch.no_grad()
    def _kl(self, sequences: int | None, simulated: bool) -> float:
        n = sequences or self.stages[-1]
        total, count = 0.0, 0
        for b, (ids, ref) in enumerate(zip(self.batches, self.reference)):
            take = min(ids.size(0), n - count // ids.size(1))
            if take <= 0:
                break
            if take < ids.size(0) or self.states is None:  # a batch cut short: no states of it
                total += model_lib.kl_sum(self.model, ids[:take], ref[:take])
                self.blocks_run += len(model_lib.decoder_layers(self.model))
            else:
                total += self._kl_sum_from_states(b, simulated)
            count += take * ids.size(1)
        return total / count

    def _kl_sum_from_states(self, batch: int, simulated: bool) -> float:
        """Batch `batch`'s KL sum under the applied weights, run from the first block where they
        differ from the closest plan judged before (_BlockStates)."""
        key = (simulated, *self.applied)
        state = np.asarray(self.applied)
        start, states, kl = self.states.closest(key, state, batch)
        if kl is not None:
            return kl
        if start < 0:
            start, states = 0, model_lib.block_inputs(self.model, [self.batches[batch]], self.device)[0]
        states = list(states)
        kwargs = [self.block_kwargs[batch]]
        for layer in self.layers[start:]:
            states.append(model_lib.run_block(layer, states[-1:], kwargs)[0])
        self.blocks_run += len(self.layers) - start
        chunks = model_lib.head_logits(self.head, self.norm(states[-1]), 0, None, model_lib.CHUNK_TOKENS)
        kl = model_lib.kl_sum_logits(chunks, self.reference[batch])
        self.states.keep(key, batch, states, kl)
        return kl

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
