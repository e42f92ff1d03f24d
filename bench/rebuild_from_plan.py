"""Rebuilds a searched GGUF from what a GPU run brings back (its plan and the imatrix) on this
CPU, and checks that it is the very file the run scored: same sha256 as its row in rows.jsonl.
Quantization is deterministic, so the plan and the imatrix are the whole file.

    python bench/rebuild_from_plan.py --state docs/results/headline_qwen \
        --imatrix docs/results/headline_qwen/imatrix.gguf --tag ga-kl-3.12 --out /tmp/rebuilt.gguf

The headline's files carry no quantize.imatrix.* keys (export_gguf was given the evaluated
tensors, not the imatrix), so the tensors are quantized here and handed over the same way.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import mpq
from mpq import _C, data, models
from mpq.export import export_gguf, model_tensors


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="the Q4_K_M GGUF (default: mpq.data.qwen_coder_path())")
    ap.add_argument("--state", required=True, help="folder with rows.jsonl and plans/<tag>.json")
    ap.add_argument("--imatrix", required=True, help="the run's imatrix.gguf")
    ap.add_argument("--tag", nargs="+", required=True)
    ap.add_argument("--out", default="/tmp/rebuilt.gguf")
    ap.add_argument("--name", default="model",
                    help="general.name of the run's files: the stem of the model path it loaded (/tmp/hl/model.gguf there)")
    args = ap.parse_args()
    state = Path(args.state)
    rows = {r["tag"]: r for r in map(json.loads, (state / "rows.jsonl").read_text().splitlines()) if r}
    t = time.perf_counter()
    loaded = models.load_model(args.model or os.fspath(data.qwen_coder_path(required=True)))
    loaded.name = args.name
    imatrix = _C.Imatrix.load(args.imatrix)
    weights = dict(model_tensors(loaded.model))
    print(f"loaded in {time.perf_counter() - t:.0f} s")
    results = []
    for tag in args.tag:
        plan = json.loads((state / "plans" / f"{tag}.json").read_text())
        t = time.perf_counter()
        quantized = {}
        for name, fmt in plan.items():
            w = weights[name].detach()
            final = _C.ggml_fallback(fmt, w.shape[-1]).name
            imp = imatrix.importance(name) if name in imatrix else None
            codes = _C.quantize_ggml(w, final, imp, name=name)
            quantized[name] = mpq.QuantizedTensor(final, codes, None, None, w.shape[0], w.shape[1])
        export_gguf(loaded, args.out, plan, quantized=quantized, progress=False)
        got, want = sha256(Path(args.out)), rows[tag]["sha256"]
        results.append({"tag": tag, "same_bytes": got == want, "sha256": got, "seconds": round(time.perf_counter() - t, 1)})
        print(json.dumps(results[-1]), flush=True)
    if not all(r["same_bytes"] for r in results):
        raise SystemExit("a rebuilt file differs from the one the run scored")


if __name__ == "__main__":
    main()
