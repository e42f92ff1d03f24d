"""GGUF export: a transformers Llama/Qwen2/Qwen3 model (or a llama2.c checkpoint loaded as one),
with a per-tensor format plan, written as a file llama.cpp loads.

Facts followed (llama.cpp's convert_hf_to_gguf.py and llama-arch.cpp): tensor names, the
{arch}.* hyper-parameter keys, the row permutation of Q and K for the "llama" architecture (whose
rope rotates interleaved pairs, while transformers rotates halves), tied embeddings (no output
tensor), Qwen2's q/k/v biases, Qwen3's q/k norms, Llama 3's rope_freqs tensor, and the tokenizer
keys. Norms, biases and other 1-D tensors stay F32, as llama-quantize leaves them.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch

from . import _C
from ._C import gguf
from .models import BLOCK_TENSORS, HFTokenizer, Llama2cTokenizer, pre_tokenizer_name

VT = gguf.ValueType
GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
# llama.cpp's token types
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_BYTE = 1, 2, 3, 4, 6
# llama_ftype values llama.cpp records in general.file_type, for a plan whose base format is this.
# (A plan named after one of llama.cpp's mixes gets that mix's own number instead: IQ3_XS, IQ3_S
# and IQ3_M share iq3_s as their base.) iq2_s's file type is IQ2_M's, the one whose default it is.
FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10,
              "q3_k": 12, "q4_k": 15, "q5_k": 17, "q6_k": 18, "iq2_xxs": 19, "iq2_xs": 20, "iq3_xxs": 23,
              "iq1_s": 24, "iq4_nl": 25, "iq3_s": 26, "iq2_s": 29, "iq4_xs": 30, "iq1_m": 31, "bf16": 32}
# A stand-in for quantize.imatrix.file when the importance matrix never was a file.
IN_MEMORY_IMATRIX = "(mpq calibration, in memory)"


def imatrix_keys(imatrix: "_C.Imatrix", file: str) -> list[tuple[str, object, "gguf.ValueType"]]:
    """The keys llama-quantize records about the imatrix it used (tools/quantize/quantize.cpp):
    the file as given and the first dataset, each cut to 127 bytes (its fixed-size buffer), the
    number of entries, and the chunk count when the imatrix has one; integers as u32."""
    def cut(text: str) -> str:
        return text.encode("utf-8")[:127].decode("utf-8", errors="ignore")

    keys = [("quantize.imatrix.file", cut(file), VT.STRING)]
    if imatrix.datasets:
        keys.append(("quantize.imatrix.dataset", cut(imatrix.datasets[0]), VT.STRING))
    keys.append(("quantize.imatrix.entries_count", len(imatrix), VT.UINT32))
    if imatrix.chunk_count > 0:
        keys.append(("quantize.imatrix.chunks_count", int(imatrix.chunk_count), VT.UINT32))
    return keys

@dataclass
class ExportedTensor:
    name: str
    format: str
    shape: list  # GGUF order
    nbytes: int
    requested: str  # the plan's format before any row-length fallback


@dataclass
class ExportReport:
    path: str
    tensors: list = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return os.path.getsize(self.path)

    @property
    def weights(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)

    def bits_per_weight(self) -> float:
        """Bits per weight of the tensor data, every tensor counted."""
        return 8.0 * sum(t.nbytes for t in self.tensors) / self.weights

    def types(self) -> dict[str, str]:
        return {t.name: t.format for t in self.tensors}


def _config_value(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    return float(params.get("rope_theta") or _config_value(config, "rope_theta", default=10000.0))


def _rope_scaling(config) -> dict:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = params.get("rope_type") or params.get("type") or "default"
    return {**params, "rope_type": kind}


def permute_for_llama(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows of a Q/K projection from transformers' rotate-half order to llama.cpp's interleaved
    pairs (the inverse of what transformers' Llama converter does)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def llama3_rope_freqs(config) -> torch.Tensor:
    """The rope_freqs tensor llama.cpp reads for Llama 3.1+ rope scaling ("llama3" rope_type):
    per frequency, the factor its wavelength gets (convert_hf_to_gguf.py's rule)."""
    s = _rope_scaling(config)
    head_dim = _config_value(config, "head_dim", default=config.hidden_size // config.num_attention_heads)
    base = _rope_theta(config)
    factor, low, high = s.get("factor", 8.0), s.get("low_freq_factor", 1.0), s.get("high_freq_factor", 4.0)
    old_ctx = s.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    factors = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / base ** (i / head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)


def model_tensors(model) -> list[tuple[str, torch.Tensor]]:
    """(GGUF name, tensor in transformers layout) for every tensor the GGUF holds, llama.cpp's
    order: token_embd, output_norm, output (absent when tied), then the blocks."""
    config = model.config
    arch = GGUF_ARCH[config.model_type]
    state = dict(model.state_dict())
    out = [("token_embd.weight", state["model.embed_tokens.weight"]),
           ("output_norm.weight", state["model.norm.weight"])]
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    if not tied:
        out.append(("output.weight", state["lm_head.weight"]))
    if arch == "llama" and _rope_scaling(config)["rope_type"] == "llama3":
        out.append(("rope_freqs.weight", llama3_rope_freqs(config)))
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        for hf, gg in BLOCK_TENSORS.items():
            if prefix + hf in state:
                out.append((f"blk.{i}.{gg}", state[prefix + hf]))
    unknown = [k for k in state if k.startswith("model.layers.0.") and k[len("model.layers.0."):] not in BLOCK_TENSORS
               and not k.endswith("rotary_emb.inv_freq")]
    if unknown:
        raise ValueError(f"{config.model_type}: tensors mpq does not know how to export: {unknown}")
    return out


def model_spec(model) -> "_C.ModelSpec":
    """What llama.cpp's mix rules need to know about `model`: architecture, layer and head counts,
    tied output, and every tensor the GGUF will hold (GGUF names and shapes)."""
    config = model.config
    tensors = [_C.TensorSpec(name, list(reversed(t.shape))) for name, t in model_tensors(model)]
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    return _C.ModelSpec(GGUF_ARCH[config.model_type], config.num_hidden_layers, config.num_attention_heads,
                        _config_value(config, "num_key_value_heads", default=config.num_attention_heads),
                        tied, tensors)


def _is_quantizable(name: str, t: torch.Tensor) -> bool:
    # llama-quantize quantizes 2-D weights only; norms, biases and rope_freqs stay F32.
    return t.dim() == 2 and name.endswith(".weight")


def _hparams(writer, config, arch: str) -> None:
    u32 = lambda k, v: writer.set(f"{arch}.{k}", int(v), VT.UINT32)
    head_dim = _config_value(config, "head_dim", default=config.hidden_size // config.num_attention_heads)
    u32("context_length", config.max_position_embeddings)
    u32("embedding_length", config.hidden_size)
    u32("block_count", config.num_hidden_layers)
    u32("feed_forward_length", config.intermediate_size)
    u32("attention.head_count", config.num_attention_heads)
    u32("attention.head_count_kv", _config_value(config, "num_key_value_heads", default=config.num_attention_heads))
    writer.set(f"{arch}.attention.layer_norm_rms_epsilon", float(config.rms_norm_eps), VT.FLOAT32)
    writer.set(f"{arch}.rope.freq_base", _rope_theta(config), VT.FLOAT32)
    u32("vocab_size", config.vocab_size)
    if head_dim != config.hidden_size // config.num_attention_heads or arch == "qwen3":
        u32("attention.key_length", head_dim)
        u32("attention.value_length", head_dim)
    if arch == "llama":
        u32("rope.dimension_count", head_dim)
    scaling = _rope_scaling(config)
    if scaling["rope_type"] == "linear":
        writer.set(f"{arch}.rope.scaling.type", "linear", VT.STRING)
        writer.set(f"{arch}.rope.scaling.factor", float(scaling["factor"]), VT.FLOAT32)
    elif scaling["rope_type"] not in ("default", "llama3"):
        raise ValueError(f"rope scaling '{scaling['rope_type']}' is not supported by mpq's exporter")


def _tokenizer(writer, tokenizer, config) -> None:
    if isinstance(tokenizer, Llama2cTokenizer):
        _spm_from_llama2c(writer, tokenizer)
    elif isinstance(tokenizer, HFTokenizer):
        _bpe_from_hf(writer, tokenizer.tok, config)
    else:
        raise ValueError(f"cannot export a tokenizer of type {type(tokenizer).__name__}")


def _spm_from_llama2c(writer, tok) -> None:
    """llama2.c's tokenizer is sentencepiece BPE with '▁' written as ' ': a "llama" vocabulary."""
    tokens, types = [], []
    for i, piece in enumerate(tok.pieces):
        if i == 0:
            text, kind = "<unk>", TOKEN_UNKNOWN
        elif i == tok.bos_id:
            text, kind = "<s>", TOKEN_CONTROL
        elif i == tok.eos_id:
            text, kind = "</s>", TOKEN_CONTROL
        elif len(piece) == 6 and piece.startswith(b"<0x") and piece.endswith(b">"):
            text, kind = piece.decode(), TOKEN_BYTE
        else:
            text, kind = piece.decode("utf-8", errors="surrogateescape").replace(" ", "\u2581"), TOKEN_NORMAL
        tokens.append(text)
        types.append(kind)
    writer.set("tokenizer.ggml.model", "llama", VT.STRING)
    writer.set("tokenizer.ggml.tokens", tokens, VT.ARRAY, VT.STRING)
    writer.set("tokenizer.ggml.scores", [float(s) for s in tok.scores], VT.ARRAY, VT.FLOAT32)
    writer.set("tokenizer.ggml.token_type", types, VT.ARRAY, VT.INT32)
    writer.set("tokenizer.ggml.bos_token_id", tok.bos_id, VT.UINT32)
    writer.set("tokenizer.ggml.eos_token_id", tok.eos_id, VT.UINT32)
    writer.set("tokenizer.ggml.unknown_token_id", 0, VT.UINT32)
    writer.set("tokenizer.ggml.add_bos_token", True, VT.BOOL)
    writer.set("tokenizer.ggml.add_eos_token", False, VT.BOOL)


def _bpe_from_hf(writer, tok, config) -> None:
    import json

    data = json.loads(tok.backend_tokenizer.to_str())
    model = data["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"only BPE tokenizers can be exported, this one is {model.get('type')}")
    vocab = model["vocab"]
    added = {a["id"]: a for a in data.get("added_tokens", [])}
    size = max(max(vocab.values()), max(added, default=-1)) + 1
    size = max(size, config.vocab_size)
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(size):
        if i in added:
            tokens.append(added[i]["content"])
            types.append(TOKEN_CONTROL if added[i].get("special") else TOKEN_USER_DEFINED)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(TOKEN_NORMAL)
        else:  # padding rows of the embedding beyond the tokenizer
            tokens.append(f"[PAD{i}]")
            types.append(TOKEN_USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.set("tokenizer.ggml.model", "gpt2", VT.STRING)
    writer.set("tokenizer.ggml.pre", pre_tokenizer_name(data.get("pre_tokenizer")), VT.STRING)
    writer.set("tokenizer.ggml.tokens", tokens, VT.ARRAY, VT.STRING)
    writer.set("tokenizer.ggml.token_type", types, VT.ARRAY, VT.INT32)
    writer.set("tokenizer.ggml.merges", merges, VT.ARRAY, VT.STRING)
    for key, tid in (("bos", tok.bos_token_id), ("eos", tok.eos_token_id),
                     ("unknown", tok.unk_token_id), ("padding", tok.pad_token_id)):
        if tid is not None:
            writer.set(f"tokenizer.ggml.{key}_token_id", int(tid), VT.UINT32)
    writer.set("tokenizer.ggml.add_bos_token", bool(getattr(tok, "add_bos_token", False)), VT.BOOL)
    template = getattr(tok, "chat_template", None)
    if isinstance(template, str):
        writer.set("tokenizer.chat_template", template, VT.STRING)


def export_gguf(loaded, path: str | os.PathLike, plan: dict[str, str] | str = "f16", *,
                imatrix: "_C.Imatrix | str | os.PathLike | None" = None, imatrix_file: str | None = None,
                quantized: dict | None = None, progress: bool = True) -> ExportReport:
    """Writes `loaded` (a LoadedModel) as a GGUF file.

    Args:
        loaded: the model and its tokenizer.
        path: output file (written to a temporary name, renamed when complete).
        plan: a format for every 2-D weight (e.g. "q8_0"), a dict GGUF tensor name -> format
            (missing 2-D weights get their `quantized` tensor's format, else f16; names are GGUF
            names such as "blk.0.attn_q.weight"), or
            a Plan (e.g. mpq.llama_cpp_mix("Q4_K_M", export.model_spec(model))).
        imatrix: importance weights for the ggml formats, by GGUF tensor name: an Imatrix or
            the path of an imatrix file (llama-imatrix's GGUF or .dat). The file then carries
            llama-quantize's quantize.imatrix.* keys.
        imatrix_file: what quantize.imatrix.file records (default: the path given as `imatrix`,
            or a note that the imatrix was computed in memory).
        quantized: GGUF tensor name -> QuantizedTensor already computed (the bytes that were
            evaluated); those are written as they are instead of quantizing again.
        progress: show a progress bar.

    Returns:
        ExportReport with each tensor's format and bytes.
    """
    from ._progress import progress_bar

    model, config = loaded.model, loaded.model.config
    if config.model_type not in GGUF_ARCH:
        raise ValueError(f"architecture '{config.model_type}' cannot be exported (supported: {', '.join(GGUF_ARCH)})")
    arch = GGUF_ARCH[config.model_type]
    tensors = model_tensors(model)
    names = {n for n, _ in tensors}
    if isinstance(imatrix, (str, os.PathLike)):
        imatrix_file = os.fspath(imatrix) if imatrix_file is None else imatrix_file
        imatrix = _C.Imatrix.load(os.fspath(imatrix))
    file_type = None
    if isinstance(plan, _C.Plan):
        if plan.name.upper() in _C.llama_cpp_mix_names():
            file_type = _C.llama_cpp_file_type(plan.name)
        plan = dict(plan.formats())
    if isinstance(plan, dict):
        unknown = sorted(set(plan) - names)
        if unknown:
            raise ValueError(f"plan names tensors the model does not have: {unknown[:5]}")
    quantized = quantized or {}

    # Pass 1: each tensor's final format (after llama-quantize's row-length fallback) and shape.
    layout = []
    for name, t in tensors:
        if _is_quantizable(name, t):
            default = quantized[name].format if name in quantized else "f16"
            requested = plan.get(name, default) if isinstance(plan, dict) else plan
            fmt = _C.find_format(requested)
            if fmt.family != _C.FormatFamily.GGML:
                raise ValueError(f"{name}: {requested} is not a llama.cpp format and cannot be stored in GGUF")
            final = _C.ggml_fallback(requested, t.shape[-1]).name
        else:
            requested = final = "f32"
        if name in quantized and quantized[name].format != final:
            raise ValueError(f"{name}: the evaluated tensor is {quantized[name].format}, the plan says {final}")
        layout.append((name, t, requested, final))

    # Written to a temporary file that a `with` block removes if anything below raises
    # (an interrupted export leaves nothing behind); finish() renames it into place.
    with gguf.Writer(os.fspath(path)) as writer:
        writer.set("general.architecture", arch, VT.STRING)
        writer.set("general.name", loaded.name, VT.STRING)
        writer.set("general.type", "model", VT.STRING)
        _hparams(writer, config, arch)
        base = plan if isinstance(plan, str) else max(set(plan.values()) or {"f16"}, key=list(plan.values()).count)
        writer.set("general.file_type", FILE_TYPES.get(base, 1) if file_type is None else file_type, VT.UINT32)
        if any(f not in ("f32", "f16", "bf16") for *_, f in layout):
            writer.set("general.quantization_version", 2, VT.UINT32)
        if imatrix is not None:
            for key, value, vt in imatrix_keys(imatrix, IN_MEMORY_IMATRIX if imatrix_file is None else imatrix_file):
                writer.set(key, value, vt)
        _tokenizer(writer, loaded.tokenizer, config)

        report = ExportReport(os.fspath(path))
        n_head = config.num_attention_heads
        n_head_kv = _config_value(config, "num_key_value_heads", default=n_head)
        for name, t, requested, final in layout:
            shape = list(reversed(t.shape))
            writer.add_tensor(name, shape, _C.find_format(final).ggml_type)
            report.tensors.append(ExportedTensor(name, final, shape, _C.gguf.tensor_nbytes(_C.find_format(final).ggml_type, shape), requested))

        for name, t, requested, final in progress_bar(layout, desc="export", unit="tensor",
                                                      disable=not progress):
            if name in quantized:
                data = quantized[name].codes.cpu()
            elif final == "f32":
                data = t.detach().float().cpu().contiguous()
            else:
                w = t.detach()
                imp = None
                if imatrix is not None and name in imatrix:
                    imp = imatrix.importance(name)
                data = _C.quantize_ggml(w, final, imp, name=name)
            if arch == "llama" and (name.endswith("attn_q.weight") or name.endswith("attn_k.weight")):
                # Rows are quantized independently, so permuting the quantized rows is exact.
                heads = n_head if name.endswith("attn_q.weight") else n_head_kv
                data = permute_for_llama(data.reshape(t.shape[0], -1), heads).contiguous()
            writer.write_tensor(name, data.contiguous())
        writer.finish()
    return report
