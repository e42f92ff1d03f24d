"""mpq's experts against peer libraries' results on one model, under one protocol.

Every method gets the same calibration tokens (a torch.save'd LongTensor [n, seq]) and is scored
by the same code: perplexity on WikiText-2 raw test over non-overlapping windows (mpq.evaluate,
the GPTQ/AWQ papers' protocol) and the KL divergence of its next-token distribution from the
original model's on the same windows. Peer results come from bench/peers/run_peer.py (run in the
peer's own environment) as fake-quantized state dicts, loaded into the same model.

    python bench/experts_vs_peers.py --model HF_DIR --calib calib.pt [--device cuda] \\
        --mpq gptq:int4_g64_sym gptq:int4_g64_sym:act_order awq:int4_g64 smoothquant:int8:w8a8 \\
        --peer llmcompressor-gptq=lc_gptq_w4g64.safetensors llmcompressor-sq=lc_sq.safetensors:w8a8

mpq specs are expert:format[:flag...]; flags: act_order (GPTQ), static_groups (GPTQ), w8a8
(evaluate with per-token dynamic int8 activations on every quantized linear). A peer spec is
label=path[:w8a8]. `--windows 0` scores the whole test text.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time

import torch
import torch.nn.functional as F

import mpq
from mpq import data
from mpq.model import linear_layers, load_model


def _eval_windows(tokens: torch.Tensor, window: int, limit: int) -> torch.Tensor:
    return data.windows(tokens, window, limit or None)


@torch.no_grad()
def score(model, windows: torch.Tensor, ref_logprobs: list | None, batch: int, w8a8: bool,
          kl_windows: int) -> tuple[dict, list]:
    """Perplexity (every token after the first of each window) and mean KL(original || model) on
    the first `kl_windows` windows (the reference log-probabilities are kept in float32: a
    vocabulary of 50k makes them large, and bf16 would blur a KL of 0.01)."""
    device = next(model.parameters()).device
    nll, kl, count, kl_count = 0.0, 0.0, 0, 0
    logprobs = []
    # W8A8: per-token int8 activations into every decoder linear (lm_head stays float).
    with mpq.activation_quantization(linear_layers(model)) if w8a8 else contextlib.nullcontext():
        for i in range(0, windows.size(0), batch):
            ids = windows[i:i + batch].to(device)
            lp = F.log_softmax(model(ids).logits[:, :-1].float(), dim=-1)
            nll -= float(lp.gather(-1, ids[:, 1:, None]).double().sum())
            count += ids[:, 1:].numel()
            if i >= kl_windows:
                continue
            if ref_logprobs is None:
                logprobs.append(lp[:kl_windows - i])
            else:
                ref = ref_logprobs[i // batch]
                kl += float((ref.exp() * (ref - lp[:kl_windows - i])).sum(-1).double().sum())
                kl_count += ref.shape[0] * ref.shape[1]
    out = {"ppl": math.exp(nll / count), "kl": kl / max(kl_count, 1), "tokens_scored": count}
    return out, logprobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="Hugging Face model directory")
    ap.add_argument("--tokenizer", default=None, help="tokenizer file, if the model dir has none")
    ap.add_argument("--calib", required=True, help="calibration token ids [n, seq] (torch.save)")
    ap.add_argument("--mpq", nargs="*", default=[], help="expert:format[:flag...]")
    ap.add_argument("--peer", nargs="*", default=[], help="label=state_dict.safetensors[:w8a8]")
    ap.add_argument("--text", default=None, help="evaluation text (default WikiText-2 raw test)")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--windows", type=int, default=40, help="evaluation windows (0: all)")
    ap.add_argument("--kl-windows", type=int, default=16, help="windows scored for KL")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--calib-batch", type=int, default=4, help="calibration rows per forward")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)

    def fresh():
        return load_model(args.model, tokenizer=args.tokenizer).model.to(device).eval()

    base = load_model(args.model, tokenizer=args.tokenizer)
    text = args.text or data.data_dir() / "text" / "wikitext2_raw_test.txt"
    windows = _eval_windows(data.tokenize_file(base.tokenizer, text), args.window, args.windows)
    calib = torch.load(args.calib)
    batches = [calib[i:i + args.calib_batch] for i in range(0, calib.size(0), args.calib_batch)]
    meta = {"model": os.path.abspath(args.model), "calib": list(calib.shape),
            "eval": {"text": str(text), "window": args.window, "windows": int(windows.size(0))},
            "device": str(device), "torch": torch.__version__}

    kw = dict(batch=args.batch, kl_windows=args.kl_windows)
    orig, ref = score(base.model.to(device).eval(), windows, None, w8a8=False, **kw)
    rows = [{"method": "original (fp32)", **orig, "seconds": None}]
    print(json.dumps(rows[-1]), flush=True)
    del base

    for spec in args.mpq:
        expert, fmt, *flags = spec.split(":")
        model = fresh()
        experts = {"gptq": mpq.GptqExpert(mpq.GptqOptions(act_order="act_order" in flags,
                                                          static_groups="static_groups" in flags))}
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        mpq.quantize_sequential(model, batches, expert=expert, format=fmt, experts=experts,
                                progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        r, _ = score(model, windows, ref, w8a8="w8a8" in flags, **kw)
        rows.append({"method": f"mpq {spec}", **r, "seconds": round(seconds, 2)})
        print(json.dumps(rows[-1]), flush=True)
        del model

    from safetensors.torch import load_file

    for spec in args.peer:
        label, path = spec.split("=", 1)
        w8a8 = path.endswith(":w8a8")
        path = path.removesuffix(":w8a8")
        if not os.path.exists(path):
            rows.append({"method": label, "ppl": None, "kl": None, "seconds": None,
                         "note": f"no result ({os.path.basename(path)} missing: the peer failed)"})
            print(json.dumps(rows[-1]), flush=True)
            continue
        model = fresh()
        model.load_state_dict(load_file(path), strict=False)
        info_path = os.path.splitext(path)[0] + ".json"
        info = json.load(open(info_path)) if os.path.exists(info_path) else {}
        r, _ = score(model, windows, ref, w8a8=w8a8, **kw)
        rows.append({"method": label, **r, "seconds": info.get("seconds_quantize"),
                     "peer": {k: info.get(k) for k in ("impl", "version", "notes", "check")}})
        print(json.dumps(rows[-1]), flush=True)
        del model

    print("\n| method | perplexity | KL | quantization time (s) |\n|---|---|---|---|")
    for r in rows:
        ppl = f"{r['ppl']:.3f}" if r["ppl"] is not None else "failed"
        kl = f"{r['kl']:.4f}" if r["kl"] is not None else ""
        print(f"| {r['method']} | {ppl} | {kl} | {r['seconds'] if r['seconds'] is not None else ''} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
