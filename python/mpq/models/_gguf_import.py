"""GGUF import: a llama/qwen2/qwen3 GGUF file (any tensor type mpq implements) as a transformers
model carrying the dequantized weights, with its tokenizer rebuilt from the file."""
from __future__ import annotations

import os

import torch

from .. import _C
from .._C import gguf
from ._llama2c import Llama2cTokenizer
from ._names import BLOCK_TENSORS
from ._tokenizer import HFTokenizer, build_pre_tokenizer

def ggml_format(ggml_type: int) -> str:
    """mpq's format name for a GGML tensor type."""
    for f in _C.list_formats():
        if _C.find_format(f).ggml_type == ggml_type:
            return f
    raise ValueError(f"GGML type {ggml_type} is not a format mpq implements")


def tensor_to_torch(reader: gguf.Reader, info) -> torch.Tensor:
    """A tensor of the file as float32 (plain types reinterpreted, block types dequantized), in
    torch's [out, in] order."""
    raw = reader.read(info.name)
    shape = list(reversed(info.shape))
    if info.type == 0:
        return raw.view(torch.float32).reshape(shape).clone()
    if info.type == 1:
        return raw.view(torch.float16).reshape(shape).float()
    if info.type == 30:
        return raw.view(torch.bfloat16).reshape(shape).float()
    fmt = ggml_format(info.type)
    rows = info.nbytes // _C.find_format(fmt).bytes(1, info.shape[0])
    return _C.dequantize_ggml(raw.reshape(rows, -1), fmt, info.shape[0]).reshape(shape)


def _unpermute_llama(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's interleaved Q/K rows back to transformers' rotate-half order."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def _config(reader: gguf.Reader):
    """The transformers config of the file, every hyper-parameter checked against the tensors
    the file holds before anything is built from it (a corrupt count must not make mpq build
    four billion layers)."""
    import transformers

    path = reader.path
    arch = reader.get("general.architecture")
    classes = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
               "qwen3": transformers.Qwen3Config}
    if arch not in classes:
        raise ValueError(f"{path}: architecture '{arch}' is not supported (llama, qwen2, qwen3)")
    shapes = {t.name: list(t.shape) for t in reader.tensors}  # GGUF order: innermost first

    def count(key, default=None):
        v = reader.get(f"{arch}.{key}", default)
        if v is None:
            raise ValueError(f"{path}: {arch}.{key} is missing")
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{path}: {arch}.{key} = {v!r} must be a positive integer")
        return v

    def tensor(name, dims):
        if shapes.get(name) != dims:
            got = f"shape {shapes[name]}" if name in shapes else "missing"
            raise ValueError(f"{path}: tensor {name} is {got}; the hyper-parameters make it {dims}")

    def agree(key, value, what):
        if value != expected[key]:
            raise ValueError(f"{path}: {arch}.{key} = {value} but {what} is {expected[key]}")

    if "token_embd.weight" not in shapes or len(shapes["token_embd.weight"]) != 2:
        raise ValueError(f"{path}: tensor token_embd.weight is missing or not 2-D")
    n_embd_t, vocab_t = shapes["token_embd.weight"]
    blocks = sorted({int(n.split(".")[1]) for n in shapes if n.startswith("blk.") and n.split(".")[1].isdigit()})
    expected = {"block_count": len(blocks), "embedding_length": n_embd_t}
    n_layer, n_embd = count("block_count"), count("embedding_length")
    agree("block_count", n_layer, "the number of blk.N blocks")
    if blocks != list(range(n_layer)):
        raise ValueError(f"{path}: blocks {blocks[:3]}...{blocks[-1:]} are not numbered 0..{n_layer - 1}")
    agree("embedding_length", n_embd, "the width of token_embd.weight")
    n_head = count("attention.head_count")
    n_head_kv = count("attention.head_count_kv", n_head)
    if n_head % n_head_kv:
        raise ValueError(f"{path}: {arch}.attention.head_count = {n_head} is not a multiple of "
                         f"{arch}.attention.head_count_kv = {n_head_kv}")
    if reader.get(f"{arch}.attention.key_length") is None and n_embd % n_head:
        raise ValueError(f"{path}: {arch}.embedding_length = {n_embd} is not a multiple of "
                         f"{arch}.attention.head_count = {n_head} (and no attention.key_length)")
    head_dim = count("attention.key_length", n_embd // n_head)
    n_ff = count("feed_forward_length")
    tokens = reader.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or len(tokens) != vocab_t:
        raise ValueError(f"{path}: tokenizer.ggml.tokens holds {len(tokens) if isinstance(tokens, list) else 'no'} "
                         f"tokens, token_embd.weight {vocab_t} rows")
    vocab = reader.get(f"{arch}.vocab_size", vocab_t)
    if vocab != vocab_t:
        raise ValueError(f"{path}: {arch}.vocab_size = {vocab!r} but token_embd.weight has {vocab_t} rows")
    eps = reader.get(f"{arch}.attention.layer_norm_rms_epsilon")
    if not isinstance(eps, float) or not 0 < eps < 1:
        raise ValueError(f"{path}: {arch}.attention.layer_norm_rms_epsilon = {eps!r} must be a number in (0, 1)")
    theta = reader.get(f"{arch}.rope.freq_base", 10000.0)
    if not isinstance(theta, float) or not theta > 0 or theta == float("inf"):
        raise ValueError(f"{path}: {arch}.rope.freq_base = {theta!r} must be a positive number")
    for i in range(n_layer):
        b = f"blk.{i}."
        tensor(b + "attn_q.weight", [n_embd, n_head * head_dim])
        tensor(b + "attn_k.weight", [n_embd, n_head_kv * head_dim])
        tensor(b + "attn_v.weight", [n_embd, n_head_kv * head_dim])
        tensor(b + "attn_output.weight", [n_head * head_dim, n_embd])
        tensor(b + "ffn_gate.weight", [n_embd, n_ff])
        tensor(b + "ffn_up.weight", [n_embd, n_ff])
        tensor(b + "ffn_down.weight", [n_ff, n_embd])
    if "output.weight" in shapes:
        tensor("output.weight", [n_embd, vocab])
    kwargs = dict(
        vocab_size=vocab, hidden_size=n_embd, intermediate_size=n_ff, num_hidden_layers=n_layer,
        num_attention_heads=n_head, num_key_value_heads=n_head_kv, head_dim=head_dim,
        max_position_embeddings=count("context_length"), rms_norm_eps=eps, rope_theta=theta,
        tie_word_embeddings="output.weight" not in shapes,
        bos_token_id=reader.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=reader.get("tokenizer.ggml.eos_token_id"),
    )
    if "rope_freqs.weight" in shapes:
        raise ValueError(f"{path}: Llama 3 rope scaling (rope_freqs) is not supported on import yet")
    if arch == "llama":
        kwargs["attention_bias"] = "blk.0.attn_q.bias" in shapes
    return arch, classes[arch](**kwargs)


def _tokenizer(reader: gguf.Reader):
    kind = reader.get("tokenizer.ggml.model")
    tokens = reader.get("tokenizer.ggml.tokens")
    if kind == "llama":
        pieces = [t.replace("\u2581", " ").encode("utf-8", "surrogateescape") for t in tokens]
        return Llama2cTokenizer.from_pieces(pieces, reader.get("tokenizer.ggml.scores"))
    if kind != "gpt2":
        raise ValueError(f"{reader.path}: tokenizer model '{kind}' is not supported (llama, gpt2)")
    import transformers
    from tokenizers import Tokenizer, decoders, models

    merges = reader.get("tokenizer.ggml.merges")
    if not isinstance(merges, list) or not all(isinstance(m, str) and m.count(" ") >= 1 for m in merges):
        raise ValueError(f"{reader.path}: tokenizer.ggml.merges must be a list of 'left right' pairs")
    merges = [tuple(m.split(" ", 1)) for m in merges]
    try:
        bpe = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    except Exception as e:  # the tokenizers library raises its own Exception type
        raise ValueError(f"{reader.path}: tokenizer.ggml.tokens/merges do not make a BPE vocabulary: {e}") from None
    pre = reader.get("tokenizer.ggml.pre", "default")
    try:
        bpe.pre_tokenizer = build_pre_tokenizer(pre)
    except ValueError as e:
        raise ValueError(f"{reader.path}: {e}") from None
    bpe.decoder = decoders.ByteLevel()
    types = reader.get("tokenizer.ggml.token_type")
    special = [tokens[i] for i, t in enumerate(types) if t == 3]
    from tokenizers import AddedToken
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok_id = lambda key: reader.get(f"tokenizer.ggml.{key}_token_id")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=tokens[tok_id("bos")] if tok_id("bos") is not None else None,
        eos_token=tokens[tok_id("eos")] if tok_id("eos") is not None else None,
        unk_token=tokens[tok_id("unknown")] if tok_id("unknown") is not None else None,
        pad_token=tokens[tok_id("padding")] if tok_id("padding") is not None else None)
    template = reader.get("tokenizer.chat_template")
    if template:
        fast.chat_template = template
    wrapped = HFTokenizer(fast)
    if not reader.get("tokenizer.ggml.add_bos_token", False):
        wrapped.bos_id = None  # the model was trained without a BOS in front
    return wrapped


def load_gguf(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """Loads a GGUF file as (transformers model in eval mode, tokenizer, reader)."""
    import transformers

    reader = gguf.Reader(os.fspath(path))
    arch, config = _config(reader)
    n_head, n_head_kv = config.num_attention_heads, config.num_key_value_heads
    inverse = {v: k for k, v in BLOCK_TENSORS.items()}
    state = {}
    for info in reader.tensors:
        t = tensor_to_torch(reader, info)
        name = info.name
        if name == "token_embd.weight":
            state["model.embed_tokens.weight"] = t
        elif name == "output_norm.weight":
            state["model.norm.weight"] = t
        elif name == "output.weight":
            state["lm_head.weight"] = t
        elif name.startswith("blk."):
            _, i, rest = name.split(".", 2)
            if rest not in inverse:
                raise ValueError(f"{reader.path}: unexpected tensor {name}")
            if arch == "llama" and rest in ("attn_q.weight", "attn_k.weight"):
                t = _unpermute_llama(t, n_head if rest == "attn_q.weight" else n_head_kv)
            state[f"model.layers.{i}.{inverse[rest]}"] = t
        else:
            raise ValueError(f"{reader.path}: unexpected tensor {name}")
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    expected = model.state_dict()
    missing = set(expected) - set(state)
    if missing:
        raise ValueError(f"{reader.path}: tensors missing for {sorted(missing)[:5]}")
    for name, t in state.items():
        if name in expected and tuple(t.shape) != tuple(expected[name].shape):
            raise ValueError(f"{reader.path}: {name} has shape {tuple(t.shape)}, the hyper-parameters "
                             f"make it {tuple(expected[name].shape)}")
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    return model.to(dtype).eval(), _tokenizer(reader), reader

