"""The llama2.c loader, checked against karpathy's documented output and an independent float64
re-implementation of run.c's forward pass (interleaved rope, no transformers)."""
import math

import numpy as np
import pytest
import torch

from mpq import llama2c, model as model_lib


def runc_forward(cfg, t, tokens):
    """run.c's transformer in float64, written from run.c (not from transformers)."""
    d = {k: v.double().numpy() for k, v in t.items()}
    hs, kv_dim = cfg.head_size, cfg.n_kv_heads * cfg.head_size
    rms = lambda x, w: x * w / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5)
    T = len(tokens)
    x = d["tok_embeddings"][tokens]
    pos = np.arange(T)[:, None]
    i = np.arange(0, cfg.dim, 2)
    theta = pos / 10000.0 ** ((i % hs) / hs)  # [T, dim/2]: run.c's freq for pair (i, i+1)
    cos, sin = np.cos(theta), np.sin(theta)

    def rope(v, n):
        a, b = v[:, 0:n:2].copy(), v[:, 1:n:2].copy()
        c, s = cos[:, : n // 2], sin[:, : n // 2]
        out = v.copy()
        out[:, 0:n:2], out[:, 1:n:2] = a * c - b * s, a * s + b * c
        return out

    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(cfg.n_layers):
        xb = rms(x, d["attention_norm"][l])
        q = rope(xb @ d["wq"][l].T, cfg.dim)
        k = rope(xb @ d["wk"][l].T, kv_dim)
        v = xb @ d["wv"][l].T
        out = np.zeros_like(q)
        for h in range(cfg.n_heads):
            kh = h // (cfg.n_heads // cfg.n_kv_heads)
            qh, khs, vh = q[:, h * hs:(h + 1) * hs], k[:, kh * hs:(kh + 1) * hs], v[:, kh * hs:(kh + 1) * hs]
            att = qh @ khs.T / math.sqrt(hs) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            out[:, h * hs:(h + 1) * hs] = (att / att.sum(-1, keepdims=True)) @ vh
        x = x + out @ d["wo"][l].T
        xb = rms(x, d["ffn_norm"][l])
        g = xb @ d["w1"][l].T
        x = x + ((g / (1 + np.exp(-g))) * (xb @ d["w3"][l].T)) @ d["w2"][l].T
    x = rms(x, d["norm"])
    return x @ d["tok_embeddings" if cfg.shared_classifier else "output"].T


def test_logits_match_runc_reference(data_dir, stories):
    cfg, t = llama2c.read_checkpoint(data_dir / "models" / "stories260K.bin")
    assert (cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.vocab_size) == (64, 172, 5, 8, 4, 512)
    tokens = stories.tokenizer.encode("Once upon a time, there was a big dog named Max. He liked to run.")
    ref = runc_forward(cfg, t, tokens)
    with torch.no_grad():
        got = stories.model(torch.tensor([tokens])).logits[0].double().numpy()
    assert np.abs(got - ref).max() < 1e-4 * np.abs(ref).max()


def test_greedy_text_is_the_documented_one(stories):
    ids = model_lib.generate_greedy(stories.model, [stories.tokenizer.bos_id], 40)
    text = stories.tokenizer.decode(ids)
    # karpathy documents stories260K's greedy continuation from BOS as starting with this.
    assert text.startswith("Once upon a time, there was a little girl named Lily"), text


def test_tokenizer_round_trip_and_word_split(data_dir, stories):
    tok = stories.tokenizer
    text = (data_dir / "text" / "tinystories_valid.txt").read_text(encoding="utf-8")
    samples = [s.strip() for s in text.split("<|endoftext|>")[1:30]]
    samples.append("Tabs\tand\nnewlines,  double  spaces, ünïcödé and 日本語")
    for s in samples:
        ids = tok.encode(s, bos=True)
        assert ids[0] == tok.bos_id
        assert tok.decode(ids) == s
        # The per-word cache must give exactly the unsplit merge result.
        assert ids[1:] == tok._encode_chunk(b" " + s.encode("utf-8"))


def test_corrupt_files_are_rejected(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\x01\x00")
    with pytest.raises(ValueError, match="not a valid llama2.c checkpoint"):
        llama2c.read_checkpoint(bad)
    import struct
    bad.write_bytes(struct.pack("<7i", 64, 172, 5, 8, 4, 512, 512) + b"\x00" * 100)
    with pytest.raises(ValueError, match="header implies"):
        llama2c.read_checkpoint(bad)
    bad.write_bytes(struct.pack("<7i", 64, 172, 5, 7, 4, 512, 512))
    with pytest.raises(ValueError, match="do not divide"):
        llama2c.read_checkpoint(bad)
    tok = tmp_path / "tok.bin"
    tok.write_bytes(struct.pack("<i", 4) + struct.pack("<fi", 0.0, 1000) + b"ab")
    with pytest.raises(ValueError, match="invalid length"):
        llama2c.Llama2cTokenizer(tok)
