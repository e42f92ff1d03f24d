"""What the calibration pass costs against a plain forward pass of the same tokens (issue 18).

    python3 bench/calibration_cost.py [--batch 4] [--window 512] [--repeats 5] [--threads N]

One process, one model (the default: SmolLM2-135M-Instruct), the same batch of WikiText-2 windows
for every variant, timed alternately so that a busy machine slows them alike; medians of
`--repeats` runs after one warm-up each:

- forward: model(ids), the logits of every position, as perplexity needs them;
- calibration (main job): mpq.models.calibrate as quantize_mixed runs it: the decoder alone (the
  head's statistics come from its input), linears that read one input observed together, XᵀX,
  Σx² and the imatrix sums, no Σ|x| / max|x| (no table expert reads them);
- calibration (all statistics): the same with Σ|x| and max|x| (CalibratorOptions default);
- calibration (per-layer hooks, head run): what mpq did before issue 18: one observe() per linear
  on the full forward pass, every statistic.

Prints one JSON object: seconds per variant and each ratio to the forward pass.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import mpq
from mpq import _C, data, models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="default: mpq's default model")
    ap.add_argument("--batch", type=int, default=4, help="windows per pass")
    ap.add_argument("--window", type=int, default=512, help="tokens per window")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    lm = models.load_model(args.model)
    model = lm.model
    ids = data.tokenize_file(lm.tokenizer, data.data_dir() / "text" / "wikitext2_raw_valid.txt")
    batch = data.windows(ids, args.window, args.batch)
    layers = dict(models.linear_layers(model))
    layers["output"] = model.get_output_embeddings()

    def forward():
        with torch.no_grad():
            model(batch)

    def main_job():
        models.calibrate(model, [batch], layers=layers, progress=False,
                         calibrator=_C.Calibrator(_C.CalibratorOptions(collect_abs=False)))

    def all_stats():
        models.calibrate(model, [batch], layers=layers, progress=False)

    def per_layer():
        cal = _C.Calibrator()
        handles = [m.register_forward_pre_hook(lambda mod, a, n=n: cal.observe(n, a[0].detach()))
                   for n, m in layers.items()]
        try:
            forward()
        finally:
            for h in handles:
                h.remove()

    variants = {"forward": forward, "calibration (main job)": main_job,
                "calibration (all statistics)": all_stats,
                "calibration (per-layer hooks, head run)": per_layer}
    times = {k: [] for k in variants}
    for f in variants.values():
        f()  # warm-up
    for _ in range(args.repeats):
        for k, f in variants.items():
            start = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "model": lm.name, "tokens": int(batch.numel()), "batch": args.batch, "window": args.window,
        "threads": torch.get_num_threads(), "repeats": args.repeats, "mpq": mpq.__version__,
        "median_seconds": {k: round(v, 4) for k, v in med.items()},
        "ratio_to_forward": {k: round(v / med["forward"], 3) for k, v in med.items() if k != "forward"},
        "all_seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
