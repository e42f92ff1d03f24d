import pytest
import torch

import mpq
from mpq import model as model_lib


def test_linear_layers_use_llama_cpp_names(stories):
    layers = model_lib.linear_layers(stories.model)
    assert len(layers) == 5 * 7
    assert list(layers)[:7] == [f"blk.0.{r}" for r in
                                ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")]
    assert layers["blk.4.ffn_down"].weight.shape == (64, 172)
    # The tied head is the embedding's tensor, not a layer of its own.
    assert "output" not in model_lib.linear_layers(stories.model, include_output=True)


def test_calibration_hooks_feed_every_layer(stories):
    ids = torch.randint(0, 512, (2, 40))
    cal = model_lib.calibrate(stories.model, [ids], progress=False)
    assert len(cal.layers()) == 35
    assert cal.stats("blk.0.attn_q").in_features == 64
    assert cal.stats("blk.3.ffn_down").in_features == 172
    assert cal.stats("blk.2.attn_v").tokens == 80
    # Hooks are gone after calibration.
    stories.model(ids)
    assert cal.stats("blk.2.attn_v").tokens == 80


def test_calibration_input_is_what_the_layer_sees(stories):
    layer = model_lib.linear_layers(stories.model)["blk.1.ffn_down"]
    seen = []
    handle = layer.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().reshape(-1, 172)))
    try:
        ids = torch.randint(0, 512, (1, 30))
        cal = model_lib.calibrate(stories.model, [ids], progress=False)
    finally:
        handle.remove()
    x = seen[0].double()
    torch.testing.assert_close(cal.stats("blk.1.ffn_down").xtx.double(), x.T @ x, rtol=1e-5, atol=1e-4)


def test_apply_and_restore(stories):
    layers = model_lib.linear_layers(stories.model)
    before = {n: m.weight.detach().clone() for n, m in layers.items()}
    with model_lib.apply_quantization(stories.model, {"blk.0.attn_q": "int4_g32", "blk.1.ffn_down": "int2"}) as q:
        w = layers["blk.0.attn_q"].weight
        assert not torch.equal(w, before["blk.0.attn_q"])
        assert torch.equal(w, mpq.dequantize(q.results["blk.0.attn_q"]))
        assert torch.equal(layers["blk.2.attn_q"].weight, before["blk.2.attn_q"])
    for n, m in layers.items():
        assert torch.equal(m.weight, before[n]), n


def test_apply_with_callable_and_bad_plans(stories):
    with model_lib.apply_quantization(stories.model, {"blk.0.attn_k": lambda n, w: torch.zeros_like(w)}):
        assert model_lib.linear_layers(stories.model)["blk.0.attn_k"].weight.abs().sum() == 0
    with pytest.raises(ValueError, match="blk.9.attn_q"):
        model_lib.apply_quantization(stories.model, {"blk.9.attn_q": "int4"})
    before = model_lib.linear_layers(stories.model)["blk.0.attn_q"].weight.clone()
    with pytest.raises(ValueError, match="unknown quantization format"):
        model_lib.apply_quantization(stories.model, {"blk.0.attn_q": "int4", "blk.0.attn_k": "int99"})
    # A failure part-way leaves the model as it was.
    assert torch.equal(model_lib.linear_layers(stories.model)["blk.0.attn_q"].weight, before)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_hugging_face_directories(tmp_path, arch):
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    cfg_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
               "qwen3": transformers.Qwen3Config}[arch]
    cfg = cfg_cls(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                  bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{chr(97 + i): 3 + i for i in range(26)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                         unk_token="<unk>").save_pretrained(tmp_path)

    loaded = model_lib.load_model(tmp_path)
    layers = model_lib.linear_layers(loaded.model)
    assert len(layers) == 14 and "blk.1.ffn_down" in layers
    assert loaded.tokenizer.encode("abc")[0] == 1
    cal = model_lib.calibrate(loaded.model, [torch.randint(0, 300, (2, 16))], progress=False)
    assert cal.stats("blk.1.attn_output").tokens == 32
    with model_lib.apply_quantization(loaded.model, {n: "int8" for n in layers}):
        pass


def test_unsupported_or_missing_models(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        model_lib.load_model(tmp_path / "nope")
    import transformers
    transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="gpt2.*not supported"):
        model_lib.load_model(tmp_path)
