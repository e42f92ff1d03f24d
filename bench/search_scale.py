"""How the sensitivity table and the search grow with the model: Qwen3-0.6B/1.7B/4B shapes.

Random weights in the real architecture and sizes (transformers' Qwen3 with each model's
published config: layers, widths, heads, vocabulary, tied embeddings), random calibration tokens.
Timing and memory only: the errors of random weights mean nothing. Per model: calibration, the
sensitivity table (every tensor × every llama.cpp format), the genetic search with the proxy
fitness, one KL-fitness evaluation of a genome (weights swapped in, one forward pass), and the
peak resident memory of the process.

    python bench/search_scale.py --models qwen3-0.6b qwen3-1.7b --device cpu
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

import mpq
from mpq import fitness, sensitivity

# Published configs (config.json of Qwen/Qwen3-0.6B, -1.7B, -4B).
CONFIGS = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
}
FORMATS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_0")


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: KiB


def run(name: str, device: str, windows: int, seq: int, generations: int) -> dict:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=151936, max_position_embeddings=40960, rms_norm_eps=1e-6,
                         rope_theta=1000000.0, **CONFIGS[name])
    model = Qwen3ForCausalLM(config).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, config.vocab_size, (windows + 1, seq))
    out = {"model": name, "device": device, "parameters": params, "tokens": windows * seq}
    t = time.perf_counter()
    cands = sensitivity.build_candidates(model, ids[:windows].split(1),
                                         sensitivity.option_labels(["kquant_imatrix"], FORMATS), progress=True)
    out["table_s"] = time.perf_counter() - t
    out["tensors"] = cands.table.num_tensors
    budget = mpq.Budget("bpw", 4.5)
    t = time.perf_counter()
    r = mpq.genetic_search(cands.table, budget, mpq.GaOptions(population=20, generations=generations))
    out["ga_proxy_s"] = time.perf_counter() - t
    out["ga_proxy_evaluations"] = r.evaluations
    with fitness.KlFitness(model, cands, ids[windows:]) as judge:
        judge.kl(np.asarray(r.best))  # first call: every tensor swapped in
        t = time.perf_counter()
        genome = np.asarray(r.best).copy()
        genome[: len(genome) // 10] = np.asarray(mpq.knapsack(cands.table, budget).genome)[: len(genome) // 10]
        judge.kl(genome)  # a typical offspring: a tenth of the tensors change
        out["kl_evaluation_s"] = time.perf_counter() - t
    out["peak_rss_gib"] = peak_rss_gib()
    if device.startswith("cuda"):
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["qwen3-0.6b"], choices=sorted(CONFIGS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--windows", type=int, default=4, help="calibration sequences")
    ap.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    ap.add_argument("--generations", type=int, default=12)
    args = ap.parse_args()
    rows = []
    for name in args.models:  # peak RSS is the process's: one model per run keeps it per model
        rows.append(run(name, args.device, args.windows, args.seq, args.generations))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| model | parameters | tensors | table s | GA (proxy) s | KL evaluation s | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['parameters'] / 1e9:.2f} B | {r['tensors']} | {r['table_s']:.1f} | "
              f"{r['ga_proxy_s']:.2f} | {r['kl_evaluation_s']:.2f} | {r['peak_rss_gib']:.1f} |")


if __name__ == "__main__":
    main()
