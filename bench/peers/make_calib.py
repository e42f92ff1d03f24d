"""Writes a calibration token file for run_peer.py: torch.save of a LongTensor [n_samples, seq_len].

The text is tokenized once without BOS and cut into n_samples consecutive, non-overlapping windows
from the start, so every implementation sees exactly the same tokens.

    python3 make_calib.py --model /work/bench_models/smollm2-135m --n 32 --seq-len 512 --out calib.pt
"""
import argparse

import torch
from transformers import AutoTokenizer

p = argparse.ArgumentParser()
p.add_argument("--model", required=True, help="HF directory with the tokenizer")
p.add_argument("--text", default="/work/shared/data/text/wikitext2_raw_valid.txt")
p.add_argument("--n", type=int, default=32)
p.add_argument("--seq-len", type=int, default=512)
p.add_argument("--out", required=True)
a = p.parse_args()

tok = AutoTokenizer.from_pretrained(a.model, local_files_only=True)
ids = tok(open(a.text, encoding="utf-8").read(), add_special_tokens=False)["input_ids"]
need = a.n * a.seq_len
if len(ids) < need:
    raise SystemExit(f"{a.text} has {len(ids)} tokens, {need} needed")
calib = torch.tensor(ids[:need], dtype=torch.long).view(a.n, a.seq_len)
torch.save(calib, a.out)
print(f"{a.out}: {tuple(calib.shape)} tokens from {a.text}")
