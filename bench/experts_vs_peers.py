"""mpq's experts against peer libraries' results on one model, under one protocol.

Every method gets the same calibration tokens (a torch.save'd LongTensor [n, seq]) and is scored
by the same code: perplexity on WikiText-2 raw test, non-overlapping windows (mpq.evaluate).
Peer results come from bench/peers/run_peer.py (run in the peer's own environment) as
fake-quantized state dicts, loaded into the same model.

    python bench/experts_vs_peers.py --model /path/to/hf_dir --calib calib.pt \\
        --mpq gptq:int4_g64_sym rtn:int4_g64_sym awq:int4_g64 \\
        --peer llmcompressor-gptq=/path/lc_gptq_w4g64.safetensors
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

import mpq
from mpq import data, evaluate
from mpq.model import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--calib", required=True, help="calibration token ids [n, seq] (torch.save)")
    ap.add_argument("--mpq", nargs="*", default=[], help="expert:format[:act_order]")
    ap.add_argument("--peer", nargs="*", default=[], help="label=state_dict.safetensors")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--windows", type=int, default=40, help="evaluation windows (0: all)")
    args = ap.parse_args()
    torch.manual_seed(0)

    base = load_model(args.model)
    test = data.tokenize_file(base.tokenizer, data.data_dir() / "text" / "wikitext2_raw_test.txt")
    calib = torch.load(args.calib)
    batches = [calib[i:i + 4] for i in range(0, calib.size(0), 4)]

    def score(model):
        return evaluate.perplexity(model, test, window=args.window,
                                   max_windows=args.windows or None, progress=False)["ppl"]

    rows = [{"method": "original (fp32)", "ppl": score(base.model), "seconds": None}]
    print(json.dumps(rows[-1]), flush=True)
    for spec in args.mpq:
        expert, fmt, *flags = spec.split(":")
        model = load_model(args.model).model
        experts = {"gptq": mpq.GptqExpert(mpq.GptqOptions(act_order="act_order" in flags))}
        t = time.perf_counter()
        mpq.quantize_sequential(model, batches, expert=expert, format=fmt, experts=experts,
                                progress=False)
        rows.append({"method": f"mpq {spec}", "ppl": score(model),
                     "seconds": round(time.perf_counter() - t, 1)})
        print(json.dumps(rows[-1]), flush=True)
    for spec in args.peer:
        label, path = spec.split("=", 1)
        from safetensors.torch import load_file

        model = load_model(args.model).model
        model.load_state_dict(load_file(path), strict=False)
        meta = os.path.splitext(path)[0] + ".json"
        secs = json.load(open(meta)).get("seconds_quantize") if os.path.exists(meta) else None
        rows.append({"method": label, "ppl": score(model), "seconds": secs})
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n| method | perplexity | quantization time (s) |\n|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['ppl']:.3f} | {r['seconds'] if r['seconds'] is not None else ''} |")


if __name__ == "__main__":
    main()
