"""Does quantizing with an importance matrix lower the importance-weighted error? For every
quantizable weight of a model: Σ_j imp_j (W - Q(W))²_j with and without the imatrix, on
calibration activations (the imatrix is mpq's, from the Calibrator), per format.

    python bench/imatrix_effect.py [--model PATH] [--windows 16]
"""
from __future__ import annotations

import argparse

import torch

import mpq
from mpq import data, model as mm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="default: stories260K and SmolLM2-135M (if installed)")
    ap.add_argument("--windows", type=int, default=16)
    args = ap.parse_args()
    models = [args.model] if args.model else [str(data.stories260k_path())] + ([str(data.smollm2_path())] if data.smollm2_path() else [])
    print("| model | format | tensors | weighted error, no imatrix | with imatrix | change |")
    print("| --- | --- | --- | --- | --- | --- |")
    for path in models:
        lm = mm.load_model(path)
        tiny = path.endswith(".bin")
        text = data.data_dir() / "text" / ("tinystories_valid.txt" if tiny else "wikitext2_raw_valid.txt")
        ids = data.tokenize_file(lm.tokenizer, text, first=100 if tiny else None)
        cal = mm.calibrate(lm.model, data.windows(ids, 256, args.windows).split(4), progress=False)
        im = cal.imatrix(chunk_size=256)
        layers = mm.linear_layers(lm.model)
        for fmt in ("q2_k", "q3_k", "q4_k", "q4_0", "iq4_nl", "q5_0", "q8_0"):
            plain = weighted = 0.0
            count = 0
            for name, module in layers.items():
                w = module.weight.detach().float()
                if mpq.ggml_fallback(fmt, w.shape[1]).name != fmt:
                    continue  # this format does not fit the rows
                imp = im.importance(name + ".weight")
                for use, acc in ((None, "plain"), (imp, "weighted")):
                    d = mpq.dequantize_ggml(mpq.quantize_ggml(w, fmt, use), fmt, w.shape[1])
                    e = float(((d - w) ** 2 * imp).sum() / (w ** 2 * imp).sum())
                    if acc == "plain":
                        plain += e
                    else:
                        weighted += e
                count += 1
            if count:
                print(f"| {lm.name} | {fmt} | {count} | {plain / count:.4e} | {weighted / count:.4e} | "
                      f"{100 * (weighted / plain - 1):+.1f}% |", flush=True)


if __name__ == "__main__":
    main()
