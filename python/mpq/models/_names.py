"""The one table of tensor names: transformers' parameter paths inside a decoder block
(model.layers.N.<path>) and llama.cpp's GGUF names inside blk.N, for the architectures mpq
supports. Layer names elsewhere in mpq are the GGUF names without ".weight".

mpq keeps this table of its own instead of gguf-py's TensorNameMap: gguf-py is a test-time peer,
not a dependency of `import mpq` (and of the C++-free path it would have to serve), and three
architectures need only these fourteen entries.
"""
from __future__ import annotations

import re

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")

# llama.cpp name -> transformers module path, for the decoder block's linears in execution order.
BLOCK_LINEARS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

# transformers parameter inside model.layers.N -> GGUF tensor inside blk.N: every tensor of a
# block (qwen2's q/k/v biases and qwen3's q/k norms appear only in those architectures).
BLOCK_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    **{f"{BLOCK_LINEARS[n]}.weight": f"{n}.weight" for n in ("attn_q", "attn_k", "attn_v", "attn_output")},
    **{f"{BLOCK_LINEARS[n]}.bias": f"{n}.bias" for n in ("attn_q", "attn_k", "attn_v")},
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    **{f"{BLOCK_LINEARS[n]}.weight": f"{n}.weight" for n in ("ffn_gate", "ffn_up", "ffn_down")},
}

# Linears that read the same input, with the module that produces that input: the unit of
# block-by-block quantization, and where AWQ/SmoothQuant fold their input scales.
INPUT_GROUPS = (
    (("attn_q", "attn_k", "attn_v"), "input_layernorm"),
    (("attn_output",), "self_attn.v_proj"),
    (("ffn_gate", "ffn_up"), "post_attention_layernorm"),
    (("ffn_down",), "mlp.up_proj"),
)

BLOCK_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
