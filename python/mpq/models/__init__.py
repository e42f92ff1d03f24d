"""Models: loading (Hugging Face directories, GGUF files, llama2.c checkpoints, blocks streamed from
safetensors), tokenizers, the one table of tensor names, the quantizable layers under llama.cpp's
names, calibration hooks, applying (then undoing) a per-layer quantization, and the decoder run
block by block from saved hidden states.

Layer: above mpq._C and mpq.data; imports nothing else of mpq.
"""
from ._blocks import block_inputs, decoder_layers, final_norm, run_block
from ._gguf_import import ggml_format, load_gguf, tensor_to_torch
from ._head import CHUNK_TOKENS, head_logits, kl_sum, kl_sum_logits, log_probs, logit_chunks, split_head
from ._layers import (QuantizedWeights, Quantizer, WeightSwap, apply_quantization, calibrate, calibration_hooks,
                      generate_greedy, linear_layers, weight_tensors)
from ._llama2c import Llama2cConfig, Llama2cTokenizer, load_llama2c, read_checkpoint
from ._load import LoadedModel, load_model
from ._names import BLOCK_LINEARS, BLOCK_TENSORS, INPUT_GROUPS, SUPPORTED_ARCHITECTURES
from ._streaming import BlockStore, block_store, load_streamed
from ._tokenizer import BPE_PRE_TOKENIZERS, HFTokenizer, build_pre_tokenizer, pre_tokenizer_name

__all__ = [
    "block_inputs", "decoder_layers", "final_norm", "run_block",
    "BLOCK_LINEARS", "BPE_PRE_TOKENIZERS", "build_pre_tokenizer", "pre_tokenizer_name", "BLOCK_TENSORS", "BlockStore", "HFTokenizer", "INPUT_GROUPS", "Llama2cConfig",
    "Llama2cTokenizer", "LoadedModel", "QuantizedWeights", "Quantizer", "SUPPORTED_ARCHITECTURES", "WeightSwap",
    "apply_quantization", "block_store", "calibrate", "calibration_hooks", "generate_greedy",
    "ggml_format", "linear_layers", "load_gguf", "load_llama2c", "load_model", "load_streamed",
    "read_checkpoint", "tensor_to_torch", "weight_tensors", "CHUNK_TOKENS", "kl_sum", "log_probs",
    "logit_chunks", "split_head", "head_logits", "kl_sum_logits",
]
