"""Quantization beyond one tensor: the experts by name, block-by-block quantization of a model
(GPTQ's true-sequential pipeline, with AWQ/SmoothQuant transforms folded), activation
quantization (W8A8) and llama.cpp's rounding of activations simulated in a torch model.

One tensor at a time is mpq._C's job (quantize, quantize_rtn, quantize_ggml, gptq_quantize).
Layer: above mpq.models.
"""
from ._activation_rounding import (activation_type, gguf_formats, llama_cpp_activations, round_q8_0,
                                   round_q8_k)
from ._experts import activation_quantization, fake_quantize_activations, make_expert
from ._sequential import SequentialResult, quantize_sequential

__all__ = [
    "SequentialResult", "activation_quantization", "activation_type", "fake_quantize_activations",
    "gguf_formats", "llama_cpp_activations", "make_expert", "quantize_sequential", "round_q8_0",
    "round_q8_k",
]
