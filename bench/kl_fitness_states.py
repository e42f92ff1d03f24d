"""The KL fitness run from saved block states against the full forward pass, in one run.

The genetic search with the KL fitness is run per repeat on the same table, budget and seed:
without the block-boundary states (state_bytes=0: every plan runs the whole model) and with them
under each memory limit of --state-mib (KlFitness's default is 1024). Every variant must find
the same plan with the same fitness (the KL values are equal to the bit, so the searches take the
same path); the ratio of the times, and of the decoder blocks run, is what the states save.
Prints one JSON line per repeat and the medians:

    python bench/kl_fitness_states.py                      # SmolLM2-135M, the default model
    python bench/kl_fitness_states.py --window 128 --population 8 --generations 3 --state-mib 64 256 1024
    python bench/kl_fitness_states.py --model ~/.cache/mpq/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import mpq
from mpq import data, search
from mpq.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model file (default: the main job's default)")
    ap.add_argument("--formats", nargs="+", default=["q4_0", "q5_0", "q8_0", "q2_k", "q3_k", "q4_k"])
    ap.add_argument("--bpw", type=float, default=5.0)
    ap.add_argument("--population", type=int, default=12)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--state-mib", type=int, nargs="+", default=[1024], help="state memory limits to try")
    args = ap.parse_args()
    torch.manual_seed(0)
    path = args.model or data.default_model_path()
    loaded = load_model(path, tokenizer=data.default_tokenizer_path() if path == data.stories260k_path() else None)
    ids = data.tokenize_file(loaded.tokenizer, data.data_dir() / "text" / "wikitext2_raw_valid.txt", first=400)
    wins = data.windows(ids, args.window, 12)
    cands = search.build_candidates(loaded.model, wins[:4].split(4), search.option_labels(["kquant"], args.formats),
                                    progress=False)
    budget = mpq.Budget("bpw", args.bpw)
    rows = []
    for rep in range(args.repeats):
        row = {"repeat": rep}
        variants = [("full", 0)] + [(f"states_{m}MiB", m << 20) for m in args.state_mib]
        for kind, state_bytes in variants:
            opts = mpq.GaOptions(population=args.population, generations=args.generations, seed=rep)
            opts.survivors = [args.population, max(2, args.population // 4)]
            with search.KlFitness(loaded.model, cands, wins[4:12], stages=[2, 8], batch_size=2,
                                  state_bytes=state_bytes) as judge:
                t = time.perf_counter()
                r = search.search(cands, budget, fitness=judge, options=opts, progress=False)
                row[f"{kind}_s"] = round(time.perf_counter() - t, 2)
                row[f"{kind}_blocks"] = judge.blocks_run
            row[f"{kind}_best"] = (np.asarray(r.best).tolist(), r.fitness)
        row["same_plan_and_fitness"] = all(row[f"{k}_best"] == row["full_best"] for k, _ in variants)
        for k, _ in variants:
            row.pop(f"{k}_best")
        for k, _ in variants[1:]:
            row[f"{k}_time_ratio"] = round(row["full_s"] / row[f"{k}_s"], 3)
            row[f"{k}_block_ratio"] = round(row["full_blocks"] / row[f"{k}_blocks"], 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(json.dumps({"model": str(args.model or "default"), "formats": args.formats, "bpw": args.bpw,
                      "population": args.population, "generations": args.generations,
                      "torch": torch.__version__, "threads": torch.get_num_threads(),
                      **{f"median_{k}_{m}": statistics.median(r[f"{k}_{m}"] for r in rows)
                         for k, _ in variants[1:] for m in ("time_ratio", "block_ratio")},
                      "all_same": all(r["same_plan_and_fitness"] for r in rows)}))


if __name__ == "__main__":
    main()
