"""Peak host memory of block-by-block quantization: the whole model in memory vs its blocks
streamed from the safetensors files (mpq.streaming.load_streamed).

Random weights with Qwen3-0.6B's widths (hidden 1024, MLP 3072, 16/8 heads of 128, vocabulary
151,936, tied embeddings) and a growing number of decoder blocks, saved in bf16. Each run is a
fresh process (its peak resident memory is the figure): load, quantize every block linear to
Q4_K (the k-quant expert, no calibration statistics needed, so the figure is the pipeline's own),
export the GGUF file. Resident memory after each step and the process's peak (VmHWM) are
reported; the two files must be identical.

    python bench/streaming_memory.py --layers 4 16
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile


def child(directory: str, mode: str, out: str) -> None:
    import torch

    import mpq
    from mpq import export, streaming
    from mpq import model as mm

    def gib() -> dict:
        # Resident now and this process's peak (Linux /proc: VmRSS, VmHWM). Not ru_maxrss: Linux
        # carries it over fork and exec, so a child reported the parent's peak (the parent holds
        # the whole model while writing it).
        kib = {line.split(":")[0]: int(line.split()[1]) for line in open("/proc/self/status")
               if line.startswith(("VmRSS:", "VmHWM:"))}
        return {"rss": kib["VmRSS"] / 2 ** 20, "peak": kib["VmHWM"] / 2 ** 20}

    lm = streaming.load_streamed(directory) if mode == "streamed" else mm.load_model(directory)
    loaded = gib()
    batches = torch.randint(0, 151936, (2, 128), generator=torch.Generator().manual_seed(0)).split(1)
    res = mpq.quantize_sequential(lm.model, batches, expert="kquant", format="q4_k", progress=False)
    quantized = gib()
    export.export_gguf(lm, out, {"token_embd.weight": "q6_k"}, quantized=res.quantized, progress=False)
    print(json.dumps({"loaded": loaded, "quantized": quantized, "exported": gib(), "seconds": res.seconds}))


def save_model(directory: str, layers: int) -> int:
    import torch
    import transformers

    cfg = transformers.Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                                   num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=8,
                                   head_dim=128, tie_word_embeddings=True, max_position_embeddings=4096)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16)
    model.save_pretrained(directory)
    # A byte-level BPE with the model's vocabulary size (the bytes, then placeholder tokens), so
    # that loading and GGUF export see a complete tokenizer.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    vocab.update({f"<tok{i}>": i for i in range(len(vocab), cfg.vocab_size)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<tok300>",
                                         eos_token="<tok301>").save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--child", nargs=3, metavar=("DIR", "MODE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    rows = []
    for n in args.layers:
        with tempfile.TemporaryDirectory() as tmp:
            params = save_model(os.path.join(tmp, "hf"), n)
            row = {"layers": n, "parameters": params,
                   "safetensors_gib": sum(os.path.getsize(os.path.join(tmp, "hf", f))
                                          for f in os.listdir(os.path.join(tmp, "hf"))
                                          if f.endswith(".safetensors")) / 2 ** 30}
            for mode in ("memory", "streamed"):
                r = subprocess.run([sys.executable, __file__, "--child", os.path.join(tmp, "hf"), mode,
                                    os.path.join(tmp, f"{mode}.gguf")], capture_output=True, text=True, check=True)
                row[mode] = json.loads(r.stdout.strip().splitlines()[-1])
            row["identical_gguf"] = filecmp.cmp(os.path.join(tmp, "memory.gguf"), os.path.join(tmp, "streamed.gguf"),
                                                shallow=False)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| blocks | parameters | safetensors (bf16) GiB | mode | resident after loading | "
          "resident after quantizing | peak, export included | same GGUF |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for mode in ("memory", "streamed"):
            m = r[mode]
            print(f"| {r['layers']} | {r['parameters'] / 1e6:.0f} M | {r['safetensors_gib']:.2f} | {mode} | "
                  f"{m['loaded']['rss']:.2f} GiB | {m['quantized']['rss']:.2f} GiB | {m['exported']['peak']:.2f} GiB | "
                  f"{r['identical_gguf']} |")


if __name__ == "__main__":
    main()
