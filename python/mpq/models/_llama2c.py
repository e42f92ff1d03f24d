"""karpathy's llama2.c checkpoints and tokenizers, loaded as a transformers LlamaForCausalLM.

Checkpoint formats (llama2.c export.py): the legacy v0 layout (a 7-int32 header, then float32
weights in run.c's order) and v1 (the "ak42" magic, a 256-byte header, float32 weights).
llama2.c rotates interleaved pairs (x[2i], x[2i+1]) of each head; transformers' Llama rotates
halves (x[i], x[i + d/2]). The Q and K rows are permuted accordingly, as transformers'
convert_llama_weights_to_hf.py does for Meta's checkpoints.
"""
from __future__ import annotations

import functools
import heapq
import math
import os
import struct
from dataclasses import dataclass

import numpy as np
import torch

BOS_ID = 1
EOS_ID = 2
_MAGIC_V1 = 0x616B3432  # "ak42"


@dataclass(frozen=True)
class Llama2cConfig:
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    max_seq_len: int
    shared_classifier: bool

    @property
    def head_size(self) -> int:
        return self.dim // self.n_heads


def _check(cond: bool, path: str, rule: str) -> None:
    if not cond:
        raise ValueError(f"{path}: not a valid llama2.c checkpoint: {rule}")


def read_checkpoint(path: str | os.PathLike) -> tuple[Llama2cConfig, dict[str, torch.Tensor]]:
    """Reads a llama2.c checkpoint into its config and float32 tensors named as in run.c."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    _check(len(data) >= 28, path, f"{len(data)} bytes is shorter than the header")
    (magic,) = struct.unpack_from("<I", data, 0)
    if magic == _MAGIC_V1:
        _check(len(data) >= 256, path, "truncated v1 header")
        version, dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack_from("<8i", data, 4)
        _check(version == 1, path, f"version {version} is not supported (only v0 and v1, float32)")
        shared = bool(data[36])
        offset = 256
        order = "v1"
    else:
        dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack_from("<7i", data, 0)
        shared = vocab > 0  # v0 marks an unshared classifier with a negative vocab size
        vocab = abs(vocab)
        offset = 28
        order = "v0"
    cfg = Llama2cConfig(dim, hidden, layers, heads, kv_heads, vocab, seq, shared)
    for name in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len"):
        _check(getattr(cfg, name) > 0, path, f"{name} = {getattr(cfg, name)} must be positive")
    _check(dim % heads == 0 and heads % kv_heads == 0 and cfg.head_size % 2 == 0, path,
           f"dim {dim}, heads {heads}, kv heads {kv_heads} do not divide")

    kv_dim = kv_heads * cfg.head_size
    L = layers
    shapes = {
        "tok_embeddings": (vocab, dim),
        "attention_norm": (L, dim),
        "wq": (L, dim, dim),
        "wk": (L, kv_dim, dim),
        "wv": (L, kv_dim, dim),
        "wo": (L, dim, dim),
        "ffn_norm": (L, dim),
        "w1": (L, hidden, dim),
        "w2": (L, dim, hidden),
        "w3": (L, hidden, dim),
        "norm": (dim,),
        "freq_cis_real": (seq, cfg.head_size // 2),
        "freq_cis_imag": (seq, cfg.head_size // 2),
    }
    if order == "v0":
        names = ["tok_embeddings", "attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1",
                 "w2", "w3", "norm", "freq_cis_real", "freq_cis_imag"]
    else:
        names = ["attention_norm", "ffn_norm", "norm", "tok_embeddings", "wq", "wk", "wv", "wo",
                 "w1", "w2", "w3"]
    if not shared:
        shapes["output"] = (vocab, dim)
        names.append("output")
    # Python integers: a corrupt header cannot overflow the size it implies.
    need = offset + 4 * sum(math.prod(shapes[n]) for n in names)
    _check(len(data) == need, path, f"{len(data)} bytes, but the header implies {need}")
    floats = np.frombuffer(data, dtype="<f4", count=(need - offset) // 4, offset=offset)
    tensors, pos = {}, 0
    for n in names:
        count = math.prod(shapes[n])
        tensors[n] = torch.from_numpy(floats[pos:pos + count].copy()).reshape(shapes[n])
        pos += count
    return cfg, tensors


def _interleaved_to_halves(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorders the rows of a Q/K projection from interleaved rope pairs to rotate-half pairs."""
    rows, cols = w.shape
    return w.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def load_llama2c(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """Loads a llama2.c checkpoint as a transformers LlamaForCausalLM (eval mode)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg, t = read_checkpoint(path)
    hf_config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=1e-5,  # run.c's rmsnorm
        rope_theta=10000.0,  # run.c's rope base
        tie_word_embeddings=cfg.shared_classifier,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
    state = {"model.embed_tokens.weight": t["tok_embeddings"], "model.norm.weight": t["norm"]}
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        state[p + "input_layernorm.weight"] = t["attention_norm"][i]
        state[p + "post_attention_layernorm.weight"] = t["ffn_norm"][i]
        state[p + "self_attn.q_proj.weight"] = _interleaved_to_halves(t["wq"][i], cfg.n_heads)
        state[p + "self_attn.k_proj.weight"] = _interleaved_to_halves(t["wk"][i], cfg.n_kv_heads)
        state[p + "self_attn.v_proj.weight"] = t["wv"][i]
        state[p + "self_attn.o_proj.weight"] = t["wo"][i]
        state[p + "mlp.gate_proj.weight"] = t["w1"][i]
        state[p + "mlp.down_proj.weight"] = t["w2"][i]
        state[p + "mlp.up_proj.weight"] = t["w3"][i]
    state["lm_head.weight"] = t["tok_embeddings"] if cfg.shared_classifier else t["output"]
    with torch.device("meta"):
        model = LlamaForCausalLM(hf_config)
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.shared_classifier:
        model.tie_weights()
    # Buffers (rotary frequencies) were created on the meta device: rebuild them on the CPU.
    model.model.rotary_emb = type(model.model.rotary_emb)(config=hf_config)
    return model.to(dtype).eval()


class Llama2cTokenizer:
    """The llama2.c tokenizer (tokenizer.bin / tok512.bin): sentencepiece-style BPE by scores.

    encode() follows run.c: an optional BOS, a dummy-prefix space, code points looked up in the
    vocabulary (unknown ones fall back to byte tokens <0xXX> = byte + 3), then repeated merging of
    the adjacent pair whose concatenation is the highest-scoring vocabulary entry.
    """

    bos_id = BOS_ID
    eos_id = EOS_ID

    def __init__(self, path: str | os.PathLike, vocab_size: int | None = None):
        path = os.fspath(path)
        with open(path, "rb") as f:
            data = f.read()
        if len(data) < 4:
            raise ValueError(f"{path}: not a llama2.c tokenizer: too short")
        (self.max_token_length,) = struct.unpack_from("<i", data, 0)
        pos, pieces, scores = 4, [], []
        while pos < len(data):
            if pos + 8 > len(data):
                raise ValueError(f"{path}: truncated at token {len(pieces)}")
            score, length = struct.unpack_from("<fi", data, pos)
            pos += 8
            if length < 0 or pos + length > len(data):
                raise ValueError(f"{path}: token {len(pieces)} has invalid length {length}")
            pieces.append(data[pos:pos + length])
            scores.append(score)
            pos += length
        if vocab_size is not None and len(pieces) != vocab_size:
            raise ValueError(f"{path}: {len(pieces)} tokens, the model expects {vocab_size}")
        self._set_vocab(pieces, scores, path)

    @classmethod
    def from_pieces(cls, pieces: list[bytes], scores: list[float]) -> "Llama2cTokenizer":
        """A tokenizer from its pieces (with ' ' for sentencepiece's '▁') and merge scores."""
        tok = cls.__new__(cls)
        tok.max_token_length = max(map(len, pieces))
        tok._set_vocab(list(pieces), [float(s) for s in scores], "the tokenizer")
        return tok

    def _set_vocab(self, pieces: list[bytes], scores: list[float], where: str) -> None:
        for i, p in enumerate(pieces):
            if _is_byte_piece(p) and not all(c in b"0123456789abcdefABCDEF" for c in p[3:5]):
                raise ValueError(f"{where}: token {i} {p!r} looks like a byte token <0xXX> but is not hex")
        self.pieces: list[bytes] = pieces
        self.scores: list[float] = scores
        self._ids = {p: i for i, p in enumerate(pieces)}
        # Merges never cross a space when no token has a space after its first byte: then each
        # space-started word can be encoded (and cached) on its own with identical results.
        self._split_words = all(b" " not in p[1:] for p in pieces)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def _encode_chunk(self, chunk: bytes) -> list[int]:
        ids = []
        for ch in chunk.decode("utf-8"):
            b = ch.encode("utf-8")
            if b in self._ids:
                ids.append(self._ids[b])
            else:
                ids.extend(x + 3 for x in b)
        return self._merge(ids)

    def _merge(self, ids: list[int]) -> list[int]:
        """run.c's merge loop (merge the adjacent pair whose concatenation scores highest, the
        leftmost on ties, until none is in the vocabulary), with a heap of candidate pairs and a
        linked list instead of a rescan per merge: n log n instead of n² on long texts."""
        n = len(ids)
        piece = [self.pieces[t] for t in ids]
        nxt, prev, alive = list(range(1, n)) + [-1], list(range(-1, n - 1)), [True] * n
        heap = []

        def push(i):
            j = nxt[i]
            t = self._ids.get(piece[i] + piece[j]) if i >= 0 and j >= 0 else None
            if t is not None and self.scores[t] > -1e10:  # run.c's initial best score
                heapq.heappush(heap, (-self.scores[t], i, j, t))

        for i in range(n - 1):
            push(i)
        while heap:
            _, i, j, t = heapq.heappop(heap)
            if not (alive[i] and alive[j] and nxt[i] == j and self._ids.get(piece[i] + piece[j]) == t):
                continue  # a pair that a merge since has changed
            piece[i], ids[i], alive[j] = piece[i] + piece[j], t, False
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prev[nxt[j]] = i
            push(prev[i])
            push(i)
        return [t for t, a in zip(ids, alive) if a]

    @functools.lru_cache(maxsize=65536)
    def _encode_word(self, word: bytes) -> tuple[int, ...]:
        return tuple(self._encode_chunk(word))

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        ids = [BOS_ID] if bos else []
        if text:
            data = b" " + text.encode("utf-8")  # run.c's dummy prefix
            if self._split_words:
                starts = [0] + [i for i in range(1, len(data)) if data[i] == 0x20]
                for a, b in zip(starts, starts[1:] + [len(data)]):
                    ids.extend(self._encode_word(data[a:b]))
            else:
                ids.extend(self._encode_chunk(data))
        if eos:
            ids.append(EOS_ID)
        return ids

    def decode(self, ids) -> str:
        out = bytearray()
        prev = None
        for t in ids:
            t = int(t)
            if t in (BOS_ID, EOS_ID):
                prev = t
                continue
            piece = self.pieces[t]
            if prev == BOS_ID and piece.startswith(b" "):
                piece = piece[1:]  # run.c drops the dummy-prefix space after BOS
            if _is_byte_piece(piece):
                piece = bytes([int(piece[3:5], 16)])
            out += piece
            prev = t
        return out.decode("utf-8", errors="replace")


def _is_byte_piece(piece: bytes) -> bool:
    return len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">")
