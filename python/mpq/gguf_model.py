"""GGUF import: a llama/qwen2/qwen3 GGUF file (any tensor type mpq implements) as a transformers
model carrying the dequantized weights, with its tokenizer rebuilt from the file."""
from __future__ import annotations

import os

import torch

from . import _C
from ._C import gguf

# llama.cpp's pre-tokenizer regexes (llama-vocab.cpp) for the BPE families mpq targets.
_LLAMA3_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
                 r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_REGEX = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
                r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


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
    import transformers

    arch = reader.get("general.architecture")
    classes = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
               "qwen3": transformers.Qwen3Config}
    if arch not in classes:
        raise ValueError(f"{reader.path}: architecture '{arch}' is not supported (llama, qwen2, qwen3)")
    g = lambda key, default=None: reader.get(f"{arch}.{key}", default)
    n_embd, n_head = g("embedding_length"), g("attention.head_count")
    names = {t.name for t in reader.tensors}
    vocab = g("vocab_size") or len(reader.get("tokenizer.ggml.tokens"))
    kwargs = dict(
        vocab_size=vocab, hidden_size=n_embd, intermediate_size=g("feed_forward_length"),
        num_hidden_layers=g("block_count"), num_attention_heads=n_head,
        num_key_value_heads=g("attention.head_count_kv", n_head),
        head_dim=g("attention.key_length", n_embd // n_head),
        max_position_embeddings=g("context_length"), rms_norm_eps=g("attention.layer_norm_rms_epsilon"),
        rope_theta=g("rope.freq_base", 10000.0), tie_word_embeddings="output.weight" not in names,
        bos_token_id=reader.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=reader.get("tokenizer.ggml.eos_token_id"),
    )
    if "rope_freqs.weight" in names:
        raise ValueError(f"{reader.path}: Llama 3 rope scaling (rope_freqs) is not supported on import yet")
    if arch == "llama":
        kwargs["attention_bias"] = "blk.0.attn_q.bias" in names
    return arch, classes[arch](**kwargs)


def _tokenizer(reader: gguf.Reader):
    from . import llama2c
    from .model import HFTokenizer

    kind = reader.get("tokenizer.ggml.model")
    tokens = reader.get("tokenizer.ggml.tokens")
    if kind == "llama":
        pieces = [t.replace("\u2581", " ").encode("utf-8", "surrogateescape") for t in tokens]
        return llama2c.Llama2cTokenizer.from_pieces(pieces, reader.get("tokenizer.ggml.scores"))
    if kind != "gpt2":
        raise ValueError(f"{reader.path}: tokenizer model '{kind}' is not supported (llama, gpt2)")
    import transformers
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    merges = [tuple(m.split(" ", 1)) for m in reader.get("tokenizer.ggml.merges")]
    bpe = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    pre = reader.get("tokenizer.ggml.pre", "default")
    if pre == "smollm":
        bpe.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    elif pre in ("qwen2", "llama-bpe", "llama3"):
        regex = _QWEN2_REGEX if pre == "qwen2" else _LLAMA3_REGEX
        bpe.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        raise ValueError(f"{reader.path}: BPE pre-tokenizer '{pre}' is not supported (smollm, qwen2, llama-bpe)")
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
    inverse = {v: k for k, v in _block_names().items()}
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
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise ValueError(f"{reader.path}: tensors missing for {sorted(missing)[:5]}")
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    return model.to(dtype).eval(), _tokenizer(reader), reader


def _block_names():
    from .export import _BLOCK_TENSORS

    return _BLOCK_TENSORS
