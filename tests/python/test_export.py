"""GGUF export and import, verified with the real llama.cpp (llama-cpp-python) and the gguf package."""
import json
import math

import numpy as np
import pytest
import torch

import mpq
from mpq import data, evaluate, export, gguf_model, model as mm

from ggml_reference import Ggml


def llama(path, n_ctx=512):
    import llama_cpp

    # f32 KV cache: llama.cpp's default f16 cache would add its own rounding to the comparison.
    return llama_cpp.Llama(str(path), n_ctx=n_ctx, logits_all=True, verbose=False, type_k=0, type_v=0)


def llama_logits(path, ids):
    llm = llama(path)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


def plan_for(model, choose):
    """A plan {tensor: format} and the formats llama-quantize would really use (row fallbacks)."""
    tensors = mm.weight_tensors(model)
    plan = {n: choose(n) for n in tensors}
    final = {n: mpq.ggml_fallback(f, tensors[n].weight.shape[1]).name for n, f in plan.items()}
    return plan, final


def export_evaluated(lm, path, choose):
    """Quantize in torch, evaluate, export exactly those bytes; returns (logits torch, report)."""
    plan, final = plan_for(lm.model, choose)
    ids = lm.tokenizer.encode("Once upon a time, there was a big dog named Max. He liked to run and play in the park.")
    with mm.apply_quantization(lm.model, final) as q:
        rep = export.export_gguf(lm, path, {n + ".weight": f for n, f in plan.items()},
                                 quantized={n + ".weight": r for n, r in q.results.items()}, progress=False)
        with torch.no_grad():
            logits = lm.model(torch.tensor([ids])).logits[0].double().numpy()
        weights = {n: m.weight.detach().clone() for n, m in mm.weight_tensors(lm.model).items()}
    return ids, logits, rep, weights


PLANS = {
    "f32": lambda n: "f32",
    "f16": lambda n: "f16",
    "q8_0": lambda n: "q8_0",
    "q4_0": lambda n: "q4_0",
    "mixed": lambda n: "q4_0" if "attn" in n else "q8_0" if "ffn" in n else "q5_1",
}


@pytest.mark.parametrize("plan", list(PLANS))
def test_stories260k_export_runs_in_llama_cpp(tmp_path, stories, plan):
    path = tmp_path / f"s_{plan}.gguf"
    ids, logits, rep, weights = export_evaluated(stories, path, PLANS[plan])
    # 1. The bytes in the file dequantize (by ggml itself) to exactly the weights mpq evaluated.
    ref = Ggml()
    reader = mpq.gguf.Reader(str(path))
    for name, w in weights.items():
        info = reader.tensor(name + ".weight")
        fmt = rep.types()[name + ".weight"]
        raw = reader.read(info.name).numpy().reshape(w.shape[0], -1)
        if name.endswith(("attn_q", "attn_k")):  # rows permuted for llama.cpp's rope
            cfg = stories.model.config
            w = export.permute_for_llama(w, cfg.num_attention_heads if name.endswith("q") else cfg.num_key_value_heads)
        deq = ref.dequantize(raw, fmt, w.shape[1])
        np.testing.assert_array_equal(deq, w.float().numpy(), err_msg=name)
    # 2. llama.cpp's logits agree with mpq's torch model carrying those weights. llama.cpp rounds
    #    activations to 8 bits (q8_0/q8_1) before quantized dot products, so the agreement is
    #    ~0.7% of the logits' RMS, an order below what quantizing the weights itself changes.
    got = llama_logits(path, ids)
    rms = lambda a: float(np.sqrt((a ** 2).mean()))
    tolerance = 1e-6 if plan == "f32" else 0.012
    assert rms(got - logits) < tolerance * rms(logits), rms(got - logits) / rms(logits)
    assert (got.argmax(-1) == logits.argmax(-1)).mean() > 0.95


def test_tokenization_is_identical_to_llama_cpp(tmp_path, stories, data_dir):
    path = tmp_path / "s.gguf"
    export.export_gguf(stories, path, "f32", progress=False)
    llm = llama(path)
    text = (data_dir / "text" / "tinystories_valid.txt").read_text(encoding="utf-8")
    for story in data.split_stories(text)[100:140] + ["Tabs\tand\nnewlines,  double  spaces, ünïcödé 日本語"]:
        assert llm.tokenize(story.encode(), add_bos=True) == stories.tokenizer.encode(story)


def tiny_hf_model(arch, tmp_path):
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders

    cfg_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
               "qwen3": transformers.Qwen3Config}[arch]
    cfg = cfg_cls(vocab_size=384, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=(arch != "llama"), bos_token_id=0, eos_token_id=1)
    if arch == "qwen3":
        cfg.head_dim = 128  # Qwen3's head_dim differs from hidden/heads
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():  # non-trivial norms and biases
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=["<|bos|>", "<|eos|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["Once upon a time there was a little girl named Lily. " * 20], trainer)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>",
                                         eos_token="<|eos|>").save_pretrained(tmp_path)
    return mm.load_model(tmp_path)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_architectures_export_and_import(tmp_path, arch):
    lm = tiny_hf_model(arch, tmp_path / "hf")
    ids = list(range(2, 60, 3))
    for plan in ("f32", "q8_0"):
        path = tmp_path / f"{arch}_{plan}.gguf"
        with mm.apply_quantization(lm.model, {n: plan for n in mm.weight_tensors(lm.model)}) as q:
            export.export_gguf(lm, path, plan, quantized={n + ".weight": r for n, r in q.results.items()},
                               progress=False)
            with torch.no_grad():
                ref = lm.model(torch.tensor([ids])).logits[0].double().numpy()
        got = llama_logits(path, ids)
        rms = lambda a: float(np.sqrt((a ** 2).mean()))
        assert rms(got - ref) < (1e-5 if plan == "f32" else 0.02) * rms(ref), (arch, plan, rms(got - ref) / rms(ref))
        # Import: the same weights back in a transformers model.
        model, tok, _ = gguf_model.load_gguf(path)
        with torch.no_grad():
            back = model(torch.tensor([ids])).logits[0].double().numpy()
        assert rms(back - ref) < 1e-5 * rms(ref), (arch, plan)


def test_bad_plans_are_rejected(tmp_path, stories):
    with pytest.raises(ValueError, match="not a llama.cpp format"):
        export.export_gguf(stories, tmp_path / "x.gguf", "int4_g32", progress=False)
    with pytest.raises(ValueError, match="does not have"):
        export.export_gguf(stories, tmp_path / "x.gguf", {"blk.99.attn_q.weight": "q8_0"}, progress=False)
    assert not (tmp_path / "x.gguf").exists()


def test_bpe_pre_tokenizer_is_identified_by_what_it_does_not_by_vocabulary_size():
    """llama.cpp's pre-tokenizer name comes from the tokenizer's own definition; one mpq does not
    know is refused (a wrong name makes llama.cpp split text differently), whatever the size."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    def definition(pre):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre
        return json.loads(tok.to_str())["pre_tokenizer"]

    qwen2_hf = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")  # Qwen2.5's tokenizer.json
    split = lambda regex: pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated"),
                                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    assert mm.pre_tokenizer_name(definition(split(qwen2_hf))) == "qwen2"
    assert mm.pre_tokenizer_name(definition(split(qwen2_hf.replace(r"|\p{N}|", r"|\p{N}{1,3}|")))) == "llama-bpe"
    assert mm.pre_tokenizer_name(definition(pre_tokenizers.ByteLevel(add_prefix_space=False))) == "gpt-2"
    for name in mm.BPE_PRE_TOKENIZERS:  # what GGUF import builds is recognised as itself
        assert mm.pre_tokenizer_name(definition(mm.build_pre_tokenizer(name))) == name
    with pytest.raises(ValueError, match="unknown BPE pre-tokenizer"):
        mm.pre_tokenizer_name(definition(split(r"\p{L}+|\s+")))
    with pytest.raises(ValueError, match="unknown BPE pre-tokenizer"):
        mm.pre_tokenizer_name(definition(pre_tokenizers.Whitespace()))
