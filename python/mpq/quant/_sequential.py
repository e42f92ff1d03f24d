"""Block-by-block quantization with the experts (GPTQ's "true-sequential" pipeline).

The model is quantized one transformer block at a time. A block's calibration inputs are the
outputs of the blocks before it *after* they were quantized, so each expert sees the errors it
has to compensate; within a block the layers are quantized in execution order, each group seeing
the already-quantized groups before it:

    [attn_q, attn_k, attn_v] -> [attn_output] -> [ffn_gate, ffn_up] -> [ffn_down]

Transforming experts (AWQ, SmoothQuant) first compute their input scales on the block as it came
in and fold them into the preceding operation (RMSNorm weight, or the rows of attn_v / ffn_up),
before anything in the block is quantized, so that the folded weights are the ones quantized.

Only one block is on the compute device at a time: with `offload=True` every other block stays in
host memory, so peak device memory is about one block plus the calibration activations. A model
from mpq.models.load_streamed() keeps its blocks on disk: each is read just before it is
quantized and its linear weights dropped after, so host memory holds one block at a time too.
The model is modified in place: its linear weights become the dequantized results (and folded
norms change); `SequentialResult.results` holds the QuantizedTensors a GGUF export writes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch
from torch import nn

from .. import _C
from ..models import BLOCK_LINEARS, INPUT_GROUPS, block_inputs, block_store, decoder_layers, run_block
from ._experts import make_expert

# Groups of layers that read one input, in execution order: (llama.cpp roles, HF module paths,
# the module producing their input: an RMSNorm or a linear whose rows can absorb a scale).


@dataclass
class SequentialResult:
    """What quantize_sequential did."""

    results: dict = field(default_factory=dict)       # layer name -> ExpertResult
    input_scales: dict = field(default_factory=dict)  # layer name -> folded scale [in]
    originals: dict = field(default_factory=dict, repr=False)  # scratch: pre-fold weights
    seconds: float = 0.0
    peak_device_bytes: int | None = None              # CUDA only

    @property
    def quantized(self) -> dict:
        """GGUF tensor name -> QuantizedTensor, for export_gguf(quantized=...)."""
        return {f"{name}.weight": r.quantized for name, r in self.results.items()}


def _submodule(block: nn.Module, path: str) -> nn.Module | None:
    m = block
    for part in path.split("."):
        m = getattr(m, part, None)
        if m is None:
            return None
    return m


def _collect(block: nn.Module, paths: dict[str, str], hidden: list, kwargs_list: list,
             xtx: bool = True) -> _C.Calibrator:
    """Statistics of the inputs of the layers in `paths` (name -> module path) over all batches."""
    cal = _C.Calibrator(_C.CalibratorOptions(collect_xtx=xtx))
    handles = []
    for name, path in paths.items():
        def hook(mod, args, name=name):
            cal.observe(name, args[0].detach())
        handles.append(_submodule(block, path).register_forward_pre_hook(hook))
    try:
        run_block(block, hidden, kwargs_list)
    finally:
        for h in handles:
            h.remove()
    return cal


def _fold(producer: nn.Module, s: torch.Tensor, is_norm: bool) -> None:
    """Divides the producer's output channels by s: the input of the next layers becomes x / s."""
    s = s.to(producer.weight.device, producer.weight.dtype)
    if is_norm:
        producer.weight.data.div_(s)
    else:
        producer.weight.data.div_(s.unsqueeze(1))
        if getattr(producer, "bias", None) is not None:
            producer.bias.data.div_(s)


def _choices(plan, layer_names: Iterable[str], expert: str, fmt: str | None) -> dict:
    """layer name -> (expert name, format name) from a Plan, a mapping or one (expert, format)."""
    if plan is None:
        if fmt is None:
            raise ValueError("give a plan or a format")
        return {n: (expert, fmt) for n in layer_names}
    if isinstance(plan, _C.Plan):
        # A whole-model plan: keep the block linears (embeddings/output are not sequential).
        wanted = set(layer_names)
        out = {}
        for t in plan.tensors():
            name = t.removesuffix(".weight")
            if name in wanted:
                c = plan.get(t)
                out[name] = (c.expert or expert, c.format)
        return out
    out = {}
    for name, choice in plan.items():
        out[name] = (expert, choice) if isinstance(choice, str) else tuple(choice)
    return out


@torch.no_grad()
def quantize_sequential(model: nn.Module, batches: Iterable[torch.Tensor], plan=None, *,
                        expert: str = "gptq", format: str | None = None,
                        experts: Mapping[str, _C.Expert] | None = None,
                        device: str | torch.device | None = None, offload: bool = False,
                        progress: bool = True) -> SequentialResult:
    """Quantizes a model's decoder blocks one at a time with the experts.

    Args:
        model: a transformers Llama/Qwen2/Qwen3 causal LM (see mpq.load_model); modified in place.
        batches: calibration token ids, each [batch, seq].
        plan: layer name ("blk.0.attn_q", ...) -> format name (quantized by `expert`) or
            (expert name, format name), or an mpq.Plan; None: every block layer gets `format`.
            Layers not in the plan are left as they are.
        expert: the expert for plan entries that name only a format.
        format: with plan=None, the format of every layer.
        experts: expert name -> configured Expert (e.g. mpq.GptqExpert(mpq.GptqOptions(
            act_order=True))); other names come from mpq.make_expert(name).
        device: where blocks are computed (default: the model's device).
        offload: keep blocks in host memory and move each to `device` only while it is quantized.
            A streamed model (mpq.models.load_streamed) reads each block from disk instead and
            drops its linear weights after; it can then be exported, not run.
        progress: show a progress bar with ETA.

    Returns:
        SequentialResult with every layer's ExpertResult and the folded input scales.
    """
    from .._progress import progress_bar

    start = time.perf_counter()
    layers = decoder_layers(model)
    home = next(model.parameters()).device
    device = torch.device(device) if device is not None else home
    names = [f"blk.{i}.{role}" for i in range(len(layers)) for roles, _ in INPUT_GROUPS
             for role in roles]
    choices = _choices(plan, names, expert, format)
    unknown = sorted(set(choices) - set(names))
    if unknown:
        raise ValueError(f"the plan names layers that are not decoder-block linears: "
                         f"{', '.join(unknown[:5])} (token_embd/output are quantized by "
                         "apply_quantization)")
    experts = dict(experts or {})
    for e, _ in choices.values():
        if e not in experts:
            experts[e] = make_expert(e)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    batches = list(batches)
    store = block_store(model)
    dtype = model.model.embed_tokens.weight.dtype
    if offload or store is not None:
        # Everything but the blocks (embeddings, final norm, head) is needed on the device.
        for name, child in model.model.named_children():
            if name != "layers":
                child.to(device)
        if store is None:
            layers.to("cpu")
    else:
        model.to(device)
    hidden, kwargs_list = block_inputs(model, batches, device)
    result = SequentialResult()
    for i in progress_bar(range(len(layers)), desc="quantize blocks", unit="block",
                  disable=not progress):
        if store is not None:
            store.load_block(layers[i], i, device, dtype)
        block = layers[i].to(device)
        groups = []
        for roles, producer in INPUT_GROUPS:
            members = [(f"blk.{i}.{r}", BLOCK_LINEARS[r]) for r in roles
                       if f"blk.{i}.{r}" in choices and _submodule(block, BLOCK_LINEARS[r]) is not None]
            if members:
                groups.append((members, producer))
        _fold_transforms(block, groups, choices, experts, hidden, kwargs_list, result)
        for members, producer in groups:
            _quantize_group(block, members, choices, experts, hidden, kwargs_list, result)
        hidden = run_block(block, hidden, kwargs_list)
        if store is not None:
            store.release_block(block)
        elif offload:
            layers[i].to("cpu")
    if store is not None:
        for name, child in model.model.named_children():
            if name != "layers":
                child.to(home)
    elif offload:
        model.to(home)
    if device.type == "cuda":
        result.peak_device_bytes = torch.cuda.max_memory_allocated(device)
    result.seconds = time.perf_counter() - start
    return result


def _expert_of(members, choices, experts) -> tuple[str, _C.Expert]:
    names = {choices[n][0] for n, _ in members}
    if len(names) > 1 and any(experts[e].transforms_input() for e in names):
        raise ValueError(f"{', '.join(n for n, _ in members)} read one input and share its "
                         f"transform, so they need one expert; the plan gives {sorted(names)}")
    e = choices[members[0][0]][0]
    return e, experts[e]


def _fold_transforms(block, groups, choices, experts, hidden, kwargs_list, result) -> None:
    """Input scales of the transforming experts, from the block as it came in, folded in."""
    todo = [(m, p) for m, p in groups if _expert_of(m, choices, experts)[1].transforms_input()]
    if not todo:
        return
    paths = {n: path for members, _ in todo for n, path in members}
    cal = _collect(block, paths, hidden, kwargs_list)
    for members, producer_path in todo:
        _, ex = _expert_of(members, choices, experts)
        producer = _submodule(block, producer_path)
        mods = [_submodule(block, p) for _, p in members]
        is_norm = not isinstance(producer, nn.Linear)
        if producer is None or (not is_norm and producer.out_features != mods[0].in_features):
            continue  # e.g. o_proj under grouped-query attention: v's rows do not match o's input
        layer_list = [_C.ExpertLayer(n, m.weight.data, choices[n][1])
                      for (n, _), m in zip(members, mods)]
        s = ex.input_scale(layer_list, cal.stats(members[0][0]))
        if s is None:
            continue
        _fold(producer, s, is_norm)
        for (n, _), m in zip(members, mods):
            result.originals[n] = m.weight.data.clone()
            m.weight.data.mul_(s.to(m.weight.device, m.weight.dtype))
            result.input_scales[n] = s.cpu()


def _quantize_group(block, members, choices, experts, hidden, kwargs_list, result) -> None:
    mods = {n: _submodule(block, p) for n, p in members}
    needs = any(experts[choices[n][0]].needs_stats() for n in mods)
    cal = _collect(block, {members[0][0]: members[0][1]}, hidden, kwargs_list) if needs else None
    stats = cal.stats(members[0][0]) if cal is not None else None
    by_expert: dict[str, list[str]] = {}
    for n in mods:
        by_expert.setdefault(choices[n][0], []).append(n)
    for e, group in by_expert.items():
        layer_list = [_C.ExpertLayer(n, mods[n].weight.data, choices[n][1]) for n in group]
        # Scales were folded already (can_scale=False): what is left is to quantize.
        for r in experts[e].quantize(layer_list, stats if experts[e].needs_stats() else None,
                                     False):
            w = mods[r.name].weight
            w.data = _C.dequantize(r.quantized).to(w.device, w.dtype)
            if r.name in result.input_scales:
                # The expert saw W·s; describe the result against the original weight. (The
                # output error is the same in either form: the statistics were of x / s.)
                r.input_scale = result.input_scales[r.name].to(w.device)
                original = result.originals.pop(r.name)
                r.weight_mse = float((original.float() - r.effective_weight().to(original.device)).pow(2).mean())
            result.results[r.name] = r
