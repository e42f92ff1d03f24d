"""Block-by-block quantization with the experts (mpq.sequential) on the real stories260K model."""
import copy

import pytest
import torch

import mpq
from mpq import evaluate
from mpq.model import linear_layers


@pytest.fixture(scope="module")
def tokens(data_dir, stories):
    from mpq import data

    path = data_dir / "text" / "tinystories_valid.txt"
    calib = data.tokenize_file(stories.tokenizer, path, first=100)[:16 * 256].view(16, 256)
    held_out = data.tokenize_file(stories.tokenizer, path, skip=100, first=200)[:40 * 256]
    return [calib[i:i + 4] for i in range(0, 16, 4)], held_out


def ppl(model, held_out):
    return evaluate.perplexity(model, held_out, window=256, progress=False)["ppl"]


@pytest.mark.parametrize("fmt", ["int3_g32", "int4_g32"])
def test_gptq_and_awq_beat_rtn_on_a_real_model(stories, tokens, fmt):
    batches, held_out = tokens
    base = ppl(stories.model, held_out)
    out = {}
    for expert in ("rtn", "gptq", "awq"):
        model = copy.deepcopy(stories.model)
        res = mpq.quantize_sequential(model, batches, expert=expert, format=fmt, progress=False)
        assert len(res.results) == 5 * 7
        # The model now computes with exactly the dequantized results.
        for name, layer in linear_layers(model).items():
            r = res.results[name]
            assert torch.equal(layer.weight.data, mpq.dequantize(r.quantized).float())
        out[expert] = ppl(model, held_out)
    assert base < out["gptq"] < out["rtn"], out
    assert out["awq"] < out["rtn"], out


def test_folded_scales_keep_the_function(stories, tokens):
    """AWQ's scales divide the RMSNorm weights and multiply the next layers' columns: the folded
    model must compute what a model with the effective weights dequantize(q) / s computes."""
    batches, held_out = tokens
    plan = {f"blk.{i}.{r}": ("awq", "int4_g32") for i in range(5)
            for r in ("attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up")}
    folded = copy.deepcopy(stories.model)
    res = mpq.quantize_sequential(folded, batches, plan, progress=False)
    assert set(res.input_scales) == set(plan)
    unfolded = copy.deepcopy(stories.model)
    layers = linear_layers(unfolded)
    for name, r in res.results.items():
        layers[name].weight.data = r.effective_weight()
    ids = held_out[:256].view(1, -1)
    a, b = folded(ids).logits, unfolded(ids).logits
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())


def test_mixed_plan_offload_and_coupling(stories, tokens):
    batches, _ = tokens
    plan = {"blk.0.attn_q": ("gptq", "int4_g32"), "blk.0.attn_k": ("rtn", "int8"),
            "blk.1.ffn_down": ("kquant_imatrix", "int3_g32"),
            "blk.2.attn_output": ("smoothquant", "int8_sym")}
    a = copy.deepcopy(stories.model)
    ra = mpq.quantize_sequential(a, batches, plan, progress=False)
    b = copy.deepcopy(stories.model)
    rb = mpq.quantize_sequential(b, batches, plan, offload=True, progress=False)
    assert set(ra.results) == set(plan)
    for name in plan:
        assert torch.equal(mpq.dequantize(ra.results[name].quantized),
                           mpq.dequantize(rb.results[name].quantized)), name
    assert ra.results["blk.0.attn_k"].quantized.format == "int8"
    # Under grouped-query attention (8 heads, 4 KV heads) v's rows cannot absorb o's scale.
    assert "blk.2.attn_output" not in ra.input_scales
    with pytest.raises(ValueError, match="share its transform"):
        mpq.quantize_sequential(copy.deepcopy(stories.model), batches,
                                {"blk.0.attn_q": ("awq", "int4"), "blk.0.attn_k": ("gptq", "int4")},
                                progress=False)
    with pytest.raises(ValueError, match="not decoder-block linears: token_embd"):
        mpq.quantize_sequential(copy.deepcopy(stories.model), batches,
                                {"token_embd": ("rtn", "int8")}, progress=False)


def test_sequential_on_device(stories, tokens, device):
    batches, held_out = tokens
    cpu = copy.deepcopy(stories.model)
    mpq.quantize_sequential(cpu, batches, expert="gptq", format="int4_g32", progress=False)
    dev = copy.deepcopy(stories.model)
    res = mpq.quantize_sequential(dev, batches, expert="gptq", format="int4_g32", device=device,
                                  offload=True, progress=False)
    assert next(dev.parameters()).device.type == "cpu"  # offload brings the model back
    assert ppl(dev, held_out) == pytest.approx(ppl(cpu, held_out), rel=0.01)
    if device == "cuda":
        assert res.peak_device_bytes > 0
