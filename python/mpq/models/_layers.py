"""The quantizable layers under llama.cpp's names, calibration hooks, and applying
(then undoing) a per-layer quantization.

Layer names follow llama.cpp's GGUF tensor names without the ".weight" suffix
(blk.N.attn_q ... blk.N.ffn_down, output), so that plans, reports and GGUF files agree.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator

import torch
from torch import nn

from .. import _C
from ._head import split_head
from ._names import BLOCK_LINEARS, BLOCK_RE

_LAYER_OF_PATH = {path: name for name, path in BLOCK_LINEARS.items()}

def linear_layers(model: nn.Module, include_output: bool = False) -> dict[str, nn.Linear]:
    """The quantizable linear layers under llama.cpp names, in execution order.

    Args:
        model: a transformers Llama/Qwen2/Qwen3 causal LM.
        include_output: also return the LM head as "output", unless it is tied to the token
            embedding (then it is the embedding's tensor, token_embd, and not a layer of its own).
    """
    blocks: dict[int, dict[str, nn.Linear]] = {}
    for module_name, module in model.named_modules():
        m = BLOCK_RE.match(module_name)
        if m and m.group(2) in _LAYER_OF_PATH and isinstance(module, nn.Linear):
            blocks.setdefault(int(m.group(1)), {})[_LAYER_OF_PATH[m.group(2)]] = module
    if not blocks:
        raise ValueError(f"{type(model).__name__}: no Llama-style decoder layers found "
                         "(expected model.layers.N.self_attn.q_proj ...)")
    layers = {}
    for i in sorted(blocks):
        for role in BLOCK_LINEARS:
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
    """Within the block, every forward pass feeds each layer's input to `calibrator`.

    Consecutive layers that receive the very same input tensor (q/k/v read one normed hidden
    state, gate/up another) are observed together, so their statistics are computed once: the
    hook holds the input until a layer with another input runs or the forward pass ends."""
    layers = layers if layers is not None else linear_layers(model)
    pending: dict = {"names": [], "x": None, "version": None}

    def flush(*_):
        x = pending["x"]
        if x is None:
            return
        if x._version != pending["version"]:
            raise AssertionError(f"the input of {pending['names']} was modified in place before "
                                 "it was observed")  # no supported model does
        names = pending["names"]
        pending.update(names=[], x=None, version=None)
        calibrator.observe(names if len(names) > 1 else names[0], x)

    handles = []
    for name, module in layers.items():
        def hook(mod, args, name=name):
            x = args[0].detach()
            if pending["x"] is not None and x.data_ptr() == pending["x"].data_ptr() \
                    and x.dtype == pending["x"].dtype and x.shape == pending["x"].shape \
                    and x.stride() == pending["x"].stride() \
                    and x._version == pending["version"] and name not in pending["names"]:
                pending["names"].append(name)
                return
            flush()
            pending.update(names=[name], x=x, version=x._version)
        handles.append(module.register_forward_pre_hook(hook))
    handles.append(model.register_forward_hook(flush))
    try:
        yield calibrator
        flush()
    finally:
        pending.update(names=[], x=None, version=None)
        for h in handles:
            h.remove()


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor],
              calibrator: _C.Calibrator | None = None, layers: dict[str, nn.Linear] | None = None,
              progress: bool = True) -> _C.Calibrator:
    """Runs `batches` of token ids ([batch, seq]) through the model, collecting layer statistics.

    Nothing here needs the logits: when the output head can be split off (split_head), only the
    decoder runs and the head's statistics, if asked for, come from its input, the decoder's
    last hidden state. The head of a 49,152-token vocabulary is a fifth of SmolLM2's forward pass
    and its logits the largest tensor of it."""
    from .._progress import progress_bar

    calibrator = calibrator if calibrator is not None else _C.Calibrator()
    device = next(model.parameters()).device
    batches = list(batches)
    layers = dict(layers if layers is not None else linear_layers(model))
    split = split_head(model)
    head_name = None
    if split is not None:
        head_name = next((n for n, m in layers.items() if m is split[1]), None)
        if head_name is not None:
            del layers[head_name]
    # Hooks on the decoder when it runs alone: its forward hook ends each observation group.
    with calibration_hooks(split[0] if split is not None else model, calibrator, layers):
        for ids in progress_bar(batches, desc="calibrate", unit="batch", disable=not progress):
            if split is None:
                model(ids.to(device))
                continue
            hidden = split[0](input_ids=ids.to(device), use_cache=False).last_hidden_state
            if head_name is not None:
                calibrator.observe(head_name, hidden)
    return calibrator


Quantizer = Callable[[str, torch.Tensor], torch.Tensor]


class WeightSwap:
    """Module weights replaced in place and put back: the one mechanism behind apply_quantization,
    the KL fitness's plans and a searched plan applied for evaluation or export. Only the weight
    tensors are swapped (no copies of the model); restore(), or leaving a `with` block, puts every
    original back.

    Args:
        modules: name -> module whose .weight may be swapped (e.g. weight_tensors(model)).
    """

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules = modules
        self._originals: dict[str, torch.Tensor] = {}

    def original(self, name: str) -> torch.Tensor:
        """The weight `name` had before any swap."""
        return self._originals.get(name, self.modules[name].weight.data)

    def set(self, name: str, weight: torch.Tensor | None) -> None:
        """Puts `weight` (in the original's dtype and device) into module `name`; None puts the
        original back."""
        module, original = self.modules[name], self.original(name)
        if weight is None:
            module.weight.data = original
            self._originals.pop(name, None)
            return
        if weight.shape != original.shape:
            raise ValueError(f"{name}: the new weight has shape {tuple(weight.shape)}, "
                             f"expected {tuple(original.shape)}")
        self._originals.setdefault(name, original)
        module.weight.data = weight.to(device=original.device, dtype=original.dtype)

    def restore(self) -> None:
        for name, weight in self._originals.items():
            self.modules[name].weight.data = weight
        self._originals.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.restore()


class QuantizedWeights(WeightSwap):
    """apply_quantization's swap, with the QuantizedTensor of each format-name entry in
    `.results` (the bytes a GGUF export writes)."""

    def __init__(self, modules: dict[str, nn.Module]):
        super().__init__(modules)
        self.results: dict[str, object] = {}


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
    from .._progress import progress_bar

    layers = weight_tensors(model)
    unknown = sorted(set(plan) - set(layers))
    if unknown:
        raise ValueError(f"plan names layers the model does not have: {', '.join(unknown)} "
                         f"(known: {', '.join(layers)})")
    options = rtn_options if rtn_options is not None else _C.RtnOptions()
    handle = QuantizedWeights(layers)
    try:
        for name in progress_bar(list(plan), desc="quantize", unit="layer", disable=not progress):
            module, how = layers[name], plan[name]
            weight = module.weight.data
            if isinstance(how, str):
                imp = importance.get(name) if importance else None
                q = _C.quantize(weight, how, imp, options, name=name)
                new = _C.dequantize(q).to(weight.device)
                handle.results[name] = q
            else:
                new = how(name, weight)
            handle.set(name, new)
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
