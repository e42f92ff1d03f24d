"""Mixed precision under a size budget on stories260K: the sensitivity table, the knapsack on
the proxy, and the genetic search with KL fitness (the README's search quickstart, verbatim).
"""
import mpq
from mpq import model as mm, data, fitness, sensitivity

lm = mm.load_model(data.stories260k_path())
ids = data.tokenize_file(lm.tokenizer, data.data_dir() / "text" / "tinystories_valid.txt", first=100)
w = data.windows(ids, 256, 24)
options = sensitivity.option_labels(["rtn", "gptq"], ["int2_g32", "int4_g32", "int8"])
cands = mpq.build_candidates(lm.model, w[:16].split(4), options)   # bytes + proxy per cell
budget = mpq.Budget("bpw", 4.0)                                    # every tensor counted
baseline = mpq.knapsack(cands.table, budget)                       # best additive proxy
with fitness.KlFitness(lm.model, cands, w[16:], stages=[2, 8]) as kl:
    opts = mpq.GaOptions(population=12, generations=8)
    opts.survivors = [12, 3]                                       # 12 judged on 2 windows, 3 on 8
    best = mpq.genetic_search(cands.table, budget, opts, fitness=kl)
print(best.bits_per_weight, best.fitness, cands.plan(best.best)["blk.0.attn_q"])
