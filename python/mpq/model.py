"""Models: loading, the quantizable layers under llama.cpp's names, calibration hooks, and applying
(then undoing) a per-layer quantization.

Layer names follow llama.cpp's GGUF tensor names without the ".weight" suffix
(blk.N.attn_q ... blk.N.ffn_down, output), so that plans, reports and GGUF files agree.
"""
from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from . import _C, data

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")

# transformers module path inside a decoder block -> llama.cpp tensor name.
_BLOCK_LAYERS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_BLOCK_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer. `tokenizer.encode(text, bos=...)` returns token ids."""

    model: nn.Module
    tokenizer: object
    name: str
    source: str  # where it was loaded from
    info: dict = field(default_factory=dict)

    @property
    def max_context(self) -> int:
        return int(self.model.config.max_position_embeddings)


class HFTokenizer:
    """Adapts a transformers tokenizer to mpq's encode(text, bos) / decode(ids) interface."""

    def __init__(self, tok):
        self.tok = tok
        self.bos_id = tok.bos_token_id
        self.eos_id = tok.eos_token_id

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        if bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        if eos and self.eos_id is not None:
            ids = ids + [self.eos_id]
        return ids

    def decode(self, ids) -> str:
        return self.tok.decode(list(map(int, ids)), skip_special_tokens=True)


def load_model(path: str | os.PathLike | None = None, *, tokenizer: str | os.PathLike | None = None,
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Loads a causal LM from local files.

    Args:
        path: a Hugging Face model directory (Llama, Qwen2 or Qwen3 architecture), a GGUF file
            (dequantized), a llama2.c checkpoint (.bin), or None for the default model.
        tokenizer: the llama2.c tokenizer for a .bin checkpoint (default: tokenizer.bin or
            tok<vocab>.bin beside the checkpoint); for a Hugging Face directory, a tokenizer
            directory or llama2.c tokenizer file to use instead of the directory's own.
        device: where the model goes.
        dtype: parameter dtype.

    Returns:
        LoadedModel in eval mode.
    """
    from . import llama2c

    if path is None:
        path = data.default_model_path()
        tokenizer = tokenizer or data.default_tokenizer_path()
    path = os.fspath(path)
    if path.endswith(".gguf") and os.path.isfile(path):
        from .gguf_model import load_gguf

        model, tok, _ = load_gguf(path, dtype=dtype)
        name = os.path.splitext(os.path.basename(path))[0]
    elif os.path.isdir(path):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        config = AutoConfig.from_pretrained(path, local_files_only=True)
        if config.model_type not in SUPPORTED_ARCHITECTURES:
            raise ValueError(f"{path}: architecture '{config.model_type}' is not supported; mpq "
                             f"supports {', '.join(SUPPORTED_ARCHITECTURES)}")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
        if tokenizer is not None and os.path.isfile(tokenizer):
            tok = llama2c.Llama2cTokenizer(os.fspath(tokenizer), vocab_size=config.vocab_size)
        else:
            tok = HFTokenizer(AutoTokenizer.from_pretrained(tokenizer or path, local_files_only=True))
        name = os.path.basename(os.path.normpath(path))
    elif os.path.isfile(path):
        model = llama2c.load_llama2c(path, dtype=dtype)
        if tokenizer is None:
            # llama2.c's convention is tokenizer.bin; stories260K ships its own tok512.bin.
            here = os.path.dirname(path)
            found = [p for p in ("tokenizer.bin", f"tok{model.config.vocab_size}.bin")
                     if os.path.isfile(os.path.join(here, p))]
            tokenizer = os.path.join(here, found[0] if found else "tokenizer.bin")
        if not os.path.isfile(tokenizer):
            raise ValueError(f"{path}: a llama2.c checkpoint needs its tokenizer; {tokenizer} "
                             "does not exist (pass tokenizer=...)")
        tok = llama2c.Llama2cTokenizer(tokenizer, vocab_size=model.config.vocab_size)
        name = os.path.splitext(os.path.basename(path))[0]
    else:
        raise ValueError(f"model path {path} does not exist (expected a Hugging Face model "
                         "directory or a llama2.c checkpoint file)")
    model = model.to(device).eval()
    return LoadedModel(model, tok, name, path)


def linear_layers(model: nn.Module, include_output: bool = False) -> dict[str, nn.Linear]:
    """The quantizable linear layers under llama.cpp names, in execution order.

    Args:
        model: a transformers Llama/Qwen2/Qwen3 causal LM.
        include_output: also return the LM head as "output", unless it is tied to the token
            embedding (then it is the embedding's tensor, token_embd, and not a layer of its own).
    """
    blocks: dict[int, dict[str, nn.Linear]] = {}
    for module_name, module in model.named_modules():
        m = _BLOCK_RE.match(module_name)
        if m and m.group(2) in _BLOCK_LAYERS and isinstance(module, nn.Linear):
            blocks.setdefault(int(m.group(1)), {})[_BLOCK_LAYERS[m.group(2)]] = module
    if not blocks:
        raise ValueError(f"{type(model).__name__}: no Llama-style decoder layers found "
                         "(expected model.layers.N.self_attn.q_proj ...)")
    layers = {}
    order = list(_BLOCK_LAYERS.values())
    for i in sorted(blocks):
        for role in order:
            if role in blocks[i]:
                layers[f"blk.{i}.{role}"] = blocks[i][role]
    if include_output:
        head = model.get_output_embeddings()
        if isinstance(head, nn.Linear) and head.weight is not model.get_input_embeddings().weight:
            layers["output"] = head
    return layers


def weight_tensors(model: nn.Module) -> dict[str, nn.Module]:
    """Every quantizable 2-D weight under its llama.cpp name (GGUF name without ".weight"):
    token_embd (the embedding, which is also the output head when tied), the linear layers, and
    output when it is a tensor of its own. Each value is the module whose .weight it is."""
    return {"token_embd": model.get_input_embeddings(), **linear_layers(model, include_output=True)}


@contextlib.contextmanager
def calibration_hooks(model: nn.Module, calibrator: _C.Calibrator,
                      layers: dict[str, nn.Linear] | None = None) -> Iterator[_C.Calibrator]:
    """Within the block, every forward pass feeds each layer's input to `calibrator`."""
    layers = layers if layers is not None else linear_layers(model)
    handles = []
    for name, module in layers.items():
        def hook(mod, args, name=name):
            calibrator.observe(name, args[0].detach())
        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield calibrator
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor],
              calibrator: _C.Calibrator | None = None, layers: dict[str, nn.Linear] | None = None,
              progress: bool = True) -> _C.Calibrator:
    """Runs `batches` of token ids ([batch, seq]) through the model, collecting layer statistics."""
    from tqdm.auto import tqdm

    calibrator = calibrator if calibrator is not None else _C.Calibrator()
    device = next(model.parameters()).device
    batches = list(batches)
    with calibration_hooks(model, calibrator, layers):
        for ids in tqdm(batches, desc="calibrate", unit="batch", disable=not progress):
            model(ids.to(device))
    return calibrator


Quantizer = Callable[[str, torch.Tensor], torch.Tensor]


class QuantizedWeights:
    """Weights replaced by their quantized versions; restore() (or leaving a `with`) undoes it."""

    def __init__(self):
        self._originals: dict[str, tuple[nn.Linear, torch.Tensor]] = {}
        self.results: dict[str, object] = {}

    def restore(self) -> None:
        for module, weight in self._originals.values():
            module.weight.data = weight
        self._originals.clear()

    def __enter__(self) -> "QuantizedWeights":
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


@torch.no_grad()
def apply_quantization(model: nn.Module, plan: dict[str, str | Quantizer],
                       rtn_options: _C.RtnOptions | None = None,
                       importance: dict[str, torch.Tensor] | None = None,
                       progress: bool = False) -> QuantizedWeights:
    """Replaces the weights in `plan` with quantized-then-dequantized weights.

    Args:
        model: the model.
        plan: tensor name (see weight_tensors: "token_embd", "blk.0.attn_q", ...) -> format name
            (any registered format: integer ones by RTN, llama.cpp ones as ggml quantizes them)
            or a callable (name, weight) -> new weight.
        rtn_options: options for integer formats.
        importance: tensor name -> importance weights [in_features] for llama.cpp formats.
        progress: show a progress bar.

    Returns:
        QuantizedWeights: `.results[name]` holds the QuantizedTensor of each format-name entry
        (the bytes a GGUF export writes); `.restore()` puts the original weights back.
    """
    from tqdm.auto import tqdm

    layers = weight_tensors(model)
    unknown = sorted(set(plan) - set(layers))
    if unknown:
        raise ValueError(f"plan names layers the model does not have: {', '.join(unknown)} "
                         f"(known: {', '.join(layers)})")
    options = rtn_options if rtn_options is not None else _C.RtnOptions()
    handle = QuantizedWeights()
    try:
        for name in tqdm(list(plan), desc="quantize", unit="layer", disable=not progress):
            module, how = layers[name], plan[name]
            weight = module.weight.data
            if isinstance(how, str):
                imp = importance.get(name) if importance else None
                q = _C.quantize(weight, how, imp, options, name=name)
                new = _C.dequantize(q).to(weight.device)
                handle.results[name] = q
            else:
                new = how(name, weight)
                if new.shape != weight.shape:
                    raise ValueError(f"{name}: the quantizer returned shape {tuple(new.shape)}, "
                                     f"expected {tuple(weight.shape)}")
            handle._originals[name] = (module, weight)
            module.weight.data = new.to(weight.dtype)
    except BaseException:
        handle.restore()
        raise
    return handle


@torch.no_grad()
def generate_greedy(model: nn.Module, ids: list[int], max_new_tokens: int,
                    eos_id: int | None = None) -> list[int]:
    """Greedy decoding (argmax at every step), without a KV cache: simple and exact."""
    device = next(model.parameters()).device
    ids = list(ids)
    limit = int(model.config.max_position_embeddings)
    for _ in range(max_new_tokens):
        if len(ids) >= limit:
            break
        logits = model(torch.tensor([ids], device=device)).logits[0, -1]
        nxt = int(logits.argmax())
        ids.append(nxt)
        if nxt == eos_id:
            break
    return ids
