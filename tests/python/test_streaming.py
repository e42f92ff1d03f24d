"""Block-by-block quantization of a model read from disk one block at a time: the same bytes as
with the whole model in memory, and no block but the current one holding its linear weights."""
import filecmp

import pytest
import torch

import mpq
from mpq import export, streaming
from mpq import model as mm
from test_export import tiny_hf_model


def saved_model(arch: str, tmp_path, shards: bool):
    """test_export's small random model, saved as safetensors (in several shards if asked)."""
    whole = tiny_hf_model(arch, tmp_path)
    if shards:
        (tmp_path / "model.safetensors").unlink()
        whole.model.save_pretrained(tmp_path, max_shard_size="1MB")
        assert (tmp_path / "model.safetensors.index.json").exists()
    return whole


@pytest.mark.parametrize("arch,shards", [("llama", True), ("qwen3", False), ("qwen2", True)])
def test_streamed_model_quantizes_and_exports_the_same_bytes(arch, shards, tmp_path):
    d = tmp_path / "hf"
    whole = saved_model(arch, d, shards)
    batches = torch.randint(0, 384, (8, 32), generator=torch.Generator().manual_seed(1)).split(4)
    roles = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    # AWQ folds scales into the norms and v rows, GPTQ runs on k-quant grids: both must see the
    # weights read from disk exactly as the model in memory has them.
    plan = {f"blk.{i}.{r}": ("awq", "q4_0") if r in ("attn_q", "attn_k", "attn_v") else ("gptq", "q8_0")
            for i in range(2) for r in roles}
    ref = mpq.quantize_sequential(whole.model, batches, plan, progress=False)
    lazy = streaming.load_streamed(d)
    assert all(lay.self_attn.q_proj.weight.is_meta for lay in lazy.model.model.layers)  # biases are read
    seen = []

    def check(module, args):  # while block i runs, no other block holds linear weights
        seen.append([lay.mlp.down_proj.weight.is_meta for lay in lazy.model.model.layers])
    for lay in lazy.model.model.layers:
        lay.register_forward_pre_hook(check)
    res = mpq.quantize_sequential(lazy.model, batches, plan, progress=False)
    # (The first calls see none: the embeddings' pass that captures block 0's inputs.)
    held = [sum(not m for m in flags) for flags in seen]
    assert max(held) == 1 and held.count(1) >= 2 * 2 and all(lay.mlp.down_proj.weight.is_meta for lay in lazy.model.model.layers)
    assert sorted(res.results) == sorted(ref.results)
    for name, r in ref.results.items():
        assert torch.equal(r.quantized.codes, res.results[name].quantized.codes), name
    a, b = tmp_path / "whole.gguf", tmp_path / "streamed.gguf"
    heads = {f"{n}.weight": "q8_0" for n in mm.weight_tensors(whole.model) if n in ("token_embd", "output")}
    export.export_gguf(whole, a, heads, quantized=ref.quantized, progress=False)
    export.export_gguf(lazy, b, heads, quantized=res.quantized, progress=False)
    assert filecmp.cmp(a, b, shallow=False)


def test_streaming_needs_safetensors(tmp_path):
    with pytest.raises(ValueError, match="is not one"):
        streaming.load_streamed(tmp_path / "missing")
    d = tmp_path / "hf"
    saved_model("llama", d, False)
    for f in d.glob("model*.safetensors*"):
        f.unlink()
    with pytest.raises(ValueError, match="needs safetensors weights"):
        streaming.load_streamed(d)
