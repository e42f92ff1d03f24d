"""Evaluation of a torch model and of a GGUF file run by llama.cpp (through llama-cpp-python),
on the default model: perplexity under both protocols, KL divergence, MMLU and llama.cpp's speed
(the README's evaluation quickstart, verbatim; few windows and questions to stay quick).
"""
import mpq
from mpq import model as mm, data, evaluate

lm = mm.load_model(data.smollm2_path())                  # the torch model (dequantized Q4_1)
gguf = str(data.smollm2_path())                          # the same file, run by llama.cpp
test = data.data_dir() / "text" / "wikitext2_raw_test.txt"
ids = data.tokenize_file(lm.tokenizer, test)
print(evaluate.perplexity(lm.model, ids, protocol="p1", window=512, max_windows=4))        # GPTQ/AWQ papers
print(evaluate.perplexity(lm.model, ids, protocol="llama.cpp", bos_id=lm.tokenizer.bos_id, max_windows=4))
print(evaluate.gguf_perplexity(gguf, test, max_windows=4))          # llama-perplexity, its own tokenizer
kl = evaluate.kl_divergence(lm.model, gguf, ids, max_windows=4)     # mean, p99, max KLD, same top p, ...
r = evaluate.mmlu(gguf, shots=5, subjects=["astronomy"], max_questions=5)   # or (lm.model, lm.tokenizer)
print(kl["kl_mean"], kl["same_top"], r.accuracy, r.categories)
print(evaluate.gguf_speed(gguf, n_prompt=128, n_gen=16, repetitions=1))    # pp, tg, load, memory, bpw
with mpq.llama_cpp_activations(lm.model, mpq.gguf_formats(gguf)):  # round activations as llama.cpp
    print(evaluate.perplexity(lm.model, ids, window=512, max_windows=4))  # does: torch ≈ llama.cpp
