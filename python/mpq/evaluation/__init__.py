"""Evaluation of a (quantized) model against its original, torch models and GGUF files alike
(GGUF files run in the real llama.cpp through llama-cpp-python): perplexity under a stated
protocol, KL divergence of the next-token distributions, MMLU as the original evaluate.py prompts
and scores it, and a GGUF file's size, speed and memory in llama.cpp.

Layer: above mpq.search; imports mpq._C and mpq.data.
"""
from ._evaluate import (LLAMA_CPP_WINDOW, PROTOCOLS, KLDivergence, Perplexity, describe_protocol,
                        gguf_perplexity, kl_divergence, perplexity)
from ._logits import (LogitsFn, default_threads, forward_accepts, is_gguf_path, is_llama, llama_logits,
                      open_gguf, torch_logits)
from ._mmlu import (CATEGORIES, LETTERS, SUBJECT_CATEGORY, SUBJECTS, MmluResult, Question, answer_tokens,
                    build_prompt, format_example, load_questions, mmlu, mmlu_dir)
from ._speed import TOOLS_ENV, GgufSpeed, find_llama_tool, gguf_file_stats, gguf_speed

__all__ = [
    "CATEGORIES", "GgufSpeed", "KLDivergence", "LETTERS", "LLAMA_CPP_WINDOW", "LogitsFn", "MmluResult",
    "PROTOCOLS", "Perplexity", "Question", "SUBJECTS", "SUBJECT_CATEGORY", "TOOLS_ENV", "answer_tokens",
    "build_prompt", "default_threads", "describe_protocol", "find_llama_tool", "format_example",
    "forward_accepts", "gguf_file_stats", "gguf_perplexity", "gguf_speed", "is_gguf_path", "is_llama",
    "kl_divergence", "llama_logits", "load_questions", "mmlu", "mmlu_dir", "open_gguf", "perplexity",
    "torch_logits",
]
