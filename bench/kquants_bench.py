"""mpq's llama.cpp-format quantizers vs ggml's ggml_quantize_chunk (llama-cpp-python's build), in
one process, on the same float32 matrices: MB/s of input and the ratio mpq/ggml, medians of
repeated runs, single-threaded and with all threads. ggml's "all threads" splits the rows over
Python threads (ctypes releases the GIL), as llama-quantize splits a tensor over its workers.

    python bench/kquants_bench.py [--reps 3] [--shapes square|small|qwen3-4b|all] [--types ...]
                                  [--imatrix both|no|yes] [--threads 1,2] [--out results.json]

mpq's and ggml's runs alternate (mpq, ggml, mpq, ggml, ...), so that a noisy machine slows both
alike; each side's figure is the median of its runs.

The codebook types (iq1_s ... iq3_s) quantize at a few MB/s; --shapes small keeps their runs short.
ggml aborts on iq2_xxs, iq2_xs and iq1_s without an imatrix, so those rows are only run with one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
import mpq  # noqa: E402
from ggml_reference import TYPE_IDS, Ggml  # noqa: E402

TYPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs"]
IQ_TYPES = ["iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m"]
SHAPES = {
    "square": {"4096x4096": (4096, 4096)},
    "small": {"512x4096": (512, 4096)},
    # Qwen3-4B: hidden 2560, 32 query / 8 kv heads of 128, intermediate 9728 ([out, in]).
    "qwen3-4b": {"attn_q": (4096, 2560), "attn_k": (1024, 2560), "attn_output": (2560, 4096),
                 "ffn_up": (9728, 2560), "ffn_down": (2560, 9728)},
}


def ggml_threads(ggml: Ggml, x: np.ndarray, fmt: str, imp, threads: int) -> None:
    rows, n = x.shape
    out = np.empty((rows, ggml.row_size(fmt, n)), dtype=np.uint8)
    t = TYPE_IDS[fmt]
    imp_ptr = None if imp is None else imp.ctypes.data
    ggml.lib.ggml_quantize_init(t)
    bounds = np.linspace(0, rows, threads + 1).astype(int)

    def work(i):
        a, b = bounds[i], bounds[i + 1]
        ggml.lib.ggml_quantize_chunk(t, x.ctypes.data, out.ctypes.data, int(a) * n, int(b - a), n, imp_ptr)

    if threads == 1:
        work(0)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))


def median_times(fns, reps: int) -> list[float]:
    """The median time of each function over `reps` rounds, the functions taking turns."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(reps):
        for fn, t in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--shapes", choices=["square", "small", "qwen3-4b", "all"], default="square")
    ap.add_argument("--types", default=",".join(TYPES), help=f"comma-separated; also {','.join(IQ_TYPES)}")
    ap.add_argument("--imatrix", choices=["both", "no", "yes"], default="both")
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default: 1 and all)")
    ap.add_argument("--out", default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    ggml = Ggml()
    shapes = {**SHAPES["square"], **SHAPES["qwen3-4b"]} if args.shapes == "all" else SHAPES[args.shapes]
    max_threads = os.cpu_count() or 1
    thread_counts = sorted({1, max_threads}) if args.threads is None else [int(t) for t in args.threads.split(",")]
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'shape':12s} {'type':7s} {'imatrix':7s} {'thr':>3s} {'mpq MB/s':>9s} {'ggml MB/s':>9s} {'mpq/ggml':>8s}")
    for shape_name, (r, c) in shapes.items():
        x = rng.standard_normal((r, c)).astype(np.float32)
        xt = torch.from_numpy(x)
        imp_np = (rng.uniform(0, 2, c) ** 2).astype(np.float32)
        imp_t = torch.from_numpy(imp_np)
        mb = x.nbytes / 1e6
        for fmt in args.types.split(","):
            for weighted in {"both": (False, True), "no": (False,), "yes": (True,)}[args.imatrix]:
                if not weighted and ggml.requires_imatrix(fmt):
                    continue
                for threads in thread_counts:
                    torch.set_num_threads(threads)
                    t_mpq, t_ggml = median_times(
                        [lambda: mpq.quantize_ggml(xt, fmt, imp_t if weighted else None),
                         lambda: ggml_threads(ggml, x, fmt, imp_np if weighted else None, threads)], args.reps)
                    row = {"shape": shape_name, "rows": r, "cols": c, "type": fmt, "imatrix": weighted,
                           "threads": threads, "mpq_mb_s": mb / t_mpq, "ggml_mb_s": mb / t_ggml,
                           "ratio": t_ggml / t_mpq}
                    rows.append(row)
                    print(f"{shape_name:12s} {fmt:7s} {str(weighted):7s} {threads:3d} {row['mpq_mb_s']:9.1f} "
                          f"{row['ggml_mb_s']:9.1f} {row['ratio']:8.2f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"cpu_count": max_threads, "reps": args.reps, "rows": rows}, f, indent=1)
    print("\n| shape | type | imatrix | threads | mpq MB/s | ggml MB/s | mpq/ggml |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['shape']} | {r['type']} | {'yes' if r['imatrix'] else 'no'} | {r['threads']} | "
              f"{r['mpq_mb_s']:.0f} | {r['ggml_mb_s']:.0f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
