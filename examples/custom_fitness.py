"""Your own fitness for the genetic search: any Python callable (genomes [n, tensors], stage) ->
one float per genome, lower is better. This one measures the assembled model directly: the
fraction of held-out calibration tokens whose top-1 prediction differs from the original model's,
on more tokens at each stage (multi-fidelity: many offspring on few tokens, survivors on more).
"""
import torch

import mpq
from mpq import data, fitness, sensitivity
from mpq import model as mm

lm = mm.load_model(data.stories260k_path())
ids = data.tokenize_file(lm.tokenizer, data.data_dir() / "text" / "tinystories_valid.txt", first=100)
w = data.windows(ids, 256, 24)
cands = mpq.build_candidates(lm.model, w[:16].split(4),
                             sensitivity.option_labels(["rtn"], ["int2_g32", "int4_g32", "int8"]),
                             progress=False)
held = w[16:]
stages = [2, 8]                                   # sequences judged at each stage
with torch.no_grad():
    reference = lm.model(held).logits.argmax(-1)


def top1_disagreement(genomes, stage):
    out = []
    with fitness.KlFitness(lm.model, cands, held[:1]) as swap:     # swaps the weights in and out
        for g in genomes:
            swap.apply(g)
            n = stages[stage]
            with torch.no_grad():
                pred = lm.model(held[:n]).logits.argmax(-1)
            out.append(float((pred != reference[:n]).float().mean()))
    return out


opts = mpq.GaOptions(population=10, generations=5)
opts.survivors = [10, 3]                          # stage 0 judges all 10 offspring, stage 1 the best 3
best = mpq.genetic_search(cands.table, mpq.Budget("bpw", 4.5), opts, fitness=top1_disagreement)
print(f"{best.bits_per_weight:.3f} bpw, top-1 disagreement {best.fitness:.4f}, "
      f"{best.evaluations} evaluations")
