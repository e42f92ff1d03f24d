"""The search at scale: sensitivity table and genetic search on models shaped like Qwen3-0.6B,
1.7B and 4B (random bf16 weights and random token ids: time and memory do not depend on the
values), on one device.

For one size, in this process: build the model on the device; calibrate on `--calib` windows;
build the table (every tensor × every option: quantize, dequantize, proxy error); the knapsack;
the genetic search with the proxy fitness (population 20, 12 generations: the defaults); and
the genetic search with the KL fitness for `--kl-generations` generations (multi-fidelity:
1 sequence for every offspring, 4 for the survivors). Prints one JSON line: weights, seconds of
each step, seconds per KL evaluation, peak device memory and peak host memory (VmHWM). Run one
size per process so that the peaks are that size's:

    for s in 0.6b 1.7b 4b; do python bench/search_scale.py --size $s --device cuda; done
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import mpq
from mpq import fitness, mixed, sensitivity
from mpq.model import weight_tensors

# Qwen3's published configurations (config.json of Qwen/Qwen3-0.6B, -1.7B, -4B); all tie the
# output to the embedding.
QWEN3 = {
    "0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16),
    "1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16),
    "4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32),
}
FORMATS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_0")


def qwen3(size: str, device: str, vocab: int, layers: int | None) -> torch.nn.Module:
    """transformers' Qwen3 with that size's shapes, initialised by transformers (normal, 0.02)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    shape = dict(QWEN3[size])
    if layers:
        shape["num_hidden_layers"] = layers
    cfg = Qwen3Config(vocab_size=vocab, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                      max_position_embeddings=4096, **shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(cfg)
    return model.to(torch.bfloat16).eval()


def host_peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(QWEN3), required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--calib", type=int, default=8, help="calibration windows of 512 tokens")
    ap.add_argument("--kl-generations", type=int, default=3)
    ap.add_argument("--bpw", type=float, default=4.5)
    ap.add_argument("--layers", type=int, default=None, help="fewer decoder layers (a quick check)")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    row: dict = {"size": args.size, "layers": args.layers or QWEN3[args.size]["num_hidden_layers"],
                 "device": args.device, "formats": list(FORMATS), "bpw": args.bpw}
    t = time.perf_counter()
    model = qwen3(args.size, args.device, args.vocab, args.layers)
    row["weights"] = sum(p.numel() for p in model.parameters())
    row["tensors"] = len(weight_tensors(model)) + 1  # + the tied output's own row in the table
    row["build_s"] = round(time.perf_counter() - t, 1)
    g = torch.Generator().manual_seed(1)
    calib = torch.randint(0, args.vocab, (args.calib, 512), generator=g)
    held = torch.randint(0, args.vocab, (4, 256), generator=g)

    def step(name: str, fn):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        row[f"{name}_s"] = round(time.perf_counter() - t, 2)
        return out

    cands = step("table", lambda: sensitivity.build_candidates(
        model, calib.split(4), sensitivity.option_labels(["kquant"], FORMATS), progress=False))
    table = cands.table
    row["options"] = table.num_options
    budget = mpq.Budget("bpw", args.bpw)
    k = step("knapsack", lambda: mpq.knapsack(table, budget))
    r = step("ga_proxy", lambda: mixed.search(cands, budget, progress=False))
    row["ga_proxy_evaluations"] = r.evaluations
    row["knapsack_bpw"] = round(table.bits_per_weight(np.asarray(k.genome)), 3)
    opts = mpq.GaOptions(population=20, generations=args.kl_generations)
    opts.survivors = [20, 5]
    with fitness.KlFitness(model, cands, held, stages=[1, 4], batch_size=4) as judge:
        r = step("ga_kl", lambda: mixed.search(cands, budget, fitness=judge, options=opts, progress=False))
        row["ga_kl_evaluations"] = judge.evaluations
        row["kl_eval_s"] = round(judge.seconds / max(1, judge.evaluations), 3)
    row["ga_kl_bpw"] = round(r.bits_per_weight, 3)
    if cuda:
        row["device_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    row["host_peak_gib"] = round(host_peak_bytes() / 2**30, 2)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
