"""The low-bit headline's pictures, from its rows and plans (bench/headline_lowbit.py's state):
bits per weight against llama.cpp's perplexity and mean KLD, one marker per method; and the
format of every tensor in GA-KL's files beside llama.cpp's mix of the same size (the mix's
plan is mpq's byte-exact reproduction of llama-quantize's rules, on the model's tensor list).

    python bench/headline_plots.py --state docs/results/headline_qwen --out docs/img
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import mpq
from mpq import _C, data
from mpq.jobs import _plots as plots

METHODS = {"mix-": "llama.cpp mix (imatrix)", "uniform-": "uniform (imatrix)", "knapsack-": "mpq knapsack (proxy)",
           "ga-kl-": "mpq GA (KL)"}


def method(tag: str) -> str | None:
    return next((m for prefix, m in METHODS.items() if tag.startswith(prefix)), None)


def spec_of(gguf_path: str) -> "_C.ModelSpec":
    """llama.cpp's mix rules need the tensor list and head counts, not the weights."""
    r = _C.gguf.Reader(gguf_path)
    arch = r.get("general.architecture")
    tensors = [_C.TensorSpec(t.name, [int(d) for d in t.shape]) for t in r.tensors]
    tied = not any(t.name == "output.weight" for t in r.tensors)
    return _C.ModelSpec(arch, int(r.get(f"{arch}.block_count")), int(r.get(f"{arch}.attention.head_count")),
                        int(r.get(f"{arch}.attention.head_count_kv")), tied, tensors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state", required=True)
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--model", default=None, help="the Q4_K_M GGUF (default: mpq.data.qwen_coder_path())")
    ap.add_argument("--pairs", nargs="+", default=["ga-kl-2.61:IQ2_XXS", "ga-kl-3.12:IQ2_M", "ga-kl-3.43:IQ3_XXS"],
                    help="GA tag:llama.cpp mix, drawn side by side")
    args = ap.parse_args()
    state, out = Path(args.state), Path(args.out)
    rows = [r for r in map(json.loads, (state / "rows.jsonl").read_text().splitlines()) if r and method(r["tag"])]
    rows = [r for r in rows if r["bpw"] < 4.5]
    for quality, log in (("ppl", False), ("kld", True)):
        # The mixes and uniform files by name; the searches' points are their bpw on the x axis.
        points = [{"label": r["tag"].split("-", 1)[1] if r["tag"].startswith(("mix-", "uniform-")) else None,
                   "method": method(r["tag"]), "bpw": r["bpw"], quality: r[quality]} for r in rows]
        print(plots.size_vs_quality(points, out / f"headline_qwen_{quality}.png", quality=quality, log=log,
                                    title=f"Qwen2.5-Coder-1.5B-Instruct: llama.cpp's {'perplexity' if quality == 'ppl' else 'mean KLD'} on WikiText-2 test"))
    spec = spec_of(args.model or os.fspath(data.qwen_coder_path(required=True)))
    files = {}
    for pair in args.pairs:
        tag, mix = pair.split(":")
        files[f"mpq {tag} ({next(r['bpw'] for r in rows if r['tag'] == tag):.2f} bpw)"] = \
            json.loads((state / "plans" / f"{tag}.json").read_text())
        plan = mpq.llama_cpp_mix(mix, spec, imatrix=True)
        files[f"llama.cpp {mix} ({next(r['bpw'] for r in rows if r['tag'] == 'mix-' + mix):.2f} bpw)"] = dict(plan.formats())
    print(plots.format_grid(files, out / "headline_qwen_formats.png",
                            title="Qwen2.5-Coder-1.5B-Instruct: the format of each tensor, mpq's GA-KL beside llama.cpp's mix"))


if __name__ == "__main__":
    main()
