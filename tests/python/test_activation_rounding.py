"""mpq's simulation of llama.cpp's activation rounding against ggml's own CPU code (the
libggml-cpu that llama-cpp-python builds), called through ctypes."""
import ctypes
import os

import numpy as np
import pytest
import torch

import mpq
from mpq import activation_rounding as ar

llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (the real ggml)")

# ggml_type ids (ggml.h)
GGML = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q8_1": 9,
        "q2_k": 10, "q3_k": 11, "q4_k": 12, "q5_k": 13, "q6_k": 14, "q8_k": 15, "iq2_xxs": 16,
        "iq2_xs": 17, "iq3_xxs": 18, "iq1_s": 19, "iq4_nl": 20, "iq3_s": 21, "iq2_s": 22, "iq4_xs": 23,
        "iq1_m": 29, "bf16": 30}


class _Traits(ctypes.Structure):  # ggml-cpu.h: struct ggml_type_traits_cpu
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


@pytest.fixture(scope="module")
def ggml_cpu():
    lib = ctypes.CDLL(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-cpu.so"))
    lib.ggml_cpu_init()
    lib.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_Traits)
    lib.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
    for f in (lib.quantize_row_q8_0, lib.quantize_row_q8_1, lib.quantize_row_q8_K):
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        f.restype = None
    return lib


def test_activation_types_are_ggml_vec_dot_types(ggml_cpu):
    names = {v: k for k, v in GGML.items()}
    for fmt in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0",
                "iq4_nl", "iq4_xs", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m",
                "f16", "bf16", "f32"):
        theirs = names[ggml_cpu.ggml_get_type_traits_cpu(GGML[fmt]).contents.vec_dot_type]
        ours = ar.activation_type(fmt)
        # Q8_1 carries the same values as Q8_0 (plus the block sum); F32 means no rounding.
        assert ours == {"q8_1": "q8_0", "f32": None}.get(theirs, theirs), fmt
    with pytest.raises(ValueError, match="int4_g128"):
        ar.activation_type("int4_g128")


def _activations(rows: int, n: int) -> np.ndarray:
    """Heavy-tailed rows, as a SwiGLU output is, with an all-zero block and exact ties."""
    g = np.random.default_rng(0)
    x = (g.standard_normal((rows, n)) * np.exp(g.standard_normal((rows, n)))).astype(np.float32)
    x[0, :256] = 0.0
    x[1, :32] = np.arange(32, dtype=np.float32) - 15.5  # halves after scaling
    return x


def test_rounding_matches_ggml_bit_for_bit(ggml_cpu):
    x = _activations(6, 1536)
    for name, ours, block, nbytes, read in (
            ("q8_0", ar.round_q8_0, 32, 34, lambda b: b[:, :2].copy().view(np.float16).astype(np.float32)
             * b[:, 2:].view(np.int8)),
            ("q8_1", ar.round_q8_0, 32, 36, lambda b: b[:, :2].copy().view(np.float16).astype(np.float32)
             * b[:, 4:].view(np.int8)),
            ("q8_K", ar.round_q8_k, 256, 292, lambda b: b[:, :4].copy().view(np.float32)
             * b[:, 4:260].view(np.int8))):
        out = np.zeros((x.size // block, nbytes), np.uint8)
        fn = getattr(ggml_cpu, f"quantize_row_{name}")
        for r in range(x.shape[0]):
            row = np.ascontiguousarray(x[r])
            fn(row.ctypes.data, out[r * (x.shape[1] // block):].ctypes.data, x.shape[1])
        theirs = read(out).reshape(x.shape).astype(np.float32)
        got = ours(torch.from_numpy(x)).numpy()
        np.testing.assert_array_equal(got, theirs, err_msg=name)


def test_hooks_round_each_named_layer_and_come_off(stories):
    model = stories.model
    q = model.model.layers[0].self_attn.q_proj
    seen = {}
    ids = torch.tensor([[1, 400, 12, 33, 7, 250, 9, 64]])
    raw = q.register_forward_pre_hook(lambda m, a: seen.__setitem__("raw", a[0].clone()))
    with mpq.llama_cpp_activations(model, {"blk.0.attn_q.weight": "q4_0", "token_embd": "f16"}):
        after = q.register_forward_pre_hook(lambda m, a: seen.__setitem__("used", a[0].clone()))
        head = model.get_output_embeddings()
        got_head = head.register_forward_pre_hook(lambda m, a: seen.__setitem__("head", a[0].clone()))
        with torch.no_grad():
            model(ids)
        after.remove()
        got_head.remove()
    assert torch.equal(seen["used"], ar.round_q8_0(seen["raw"]))
    assert not torch.equal(seen["used"], seen["raw"])
    tied = head.weight is model.get_input_embeddings().weight
    # The tied head multiplies by token_embd, so it rounds as an F16 weight's input: to fp16.
    assert torch.equal(seen["head"], seen["head"].half().float()) == tied
    raw.remove()
    assert not q._forward_pre_hooks and not head._forward_pre_hooks  # the rounding came off
    with torch.no_grad():
        model(ids)
    # A format whose block does not divide the layer's inputs: a clear error naming the layer.
    with pytest.raises(ValueError, match=r"blk.0.attn_q \(q4_k\): rows of 64 activations"):
        with mpq.llama_cpp_activations(model, {"blk.0.attn_q": "q4_k"}):
            pass
