"""The real ggml, as compiled by the llama-cpp-python package, called through ctypes: the
independent reference for mpq's llama.cpp formats."""
import ctypes
import os

import numpy as np

TYPE_IDS = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q2_k": 10,
            "q3_k": 11, "q4_k": 12, "q5_k": 13, "q6_k": 14, "iq2_xxs": 16, "iq2_xs": 17, "iq3_xxs": 18,
            "iq1_s": 19, "iq4_nl": 20, "iq3_s": 21, "iq2_s": 22, "iq4_xs": 23, "iq1_m": 29, "bf16": 30}


class _Traits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def library_dir() -> str:
    import llama_cpp

    return os.path.join(os.path.dirname(llama_cpp.__file__), "lib")


class Ggml:
    def __init__(self):
        self.lib = ctypes.CDLL(os.path.join(library_dir(), "libggml-base.so"))
        self.lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                                 ctypes.c_void_p]
        self.lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        self.lib.ggml_row_size.restype = ctypes.c_size_t
        self.lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        self.lib.ggml_get_type_traits.restype = ctypes.POINTER(_Traits)
        self.lib.ggml_quantize_init.argtypes = [ctypes.c_int]
        self.lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        self.lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool

    def requires_imatrix(self, fmt: str) -> bool:
        return self.lib.ggml_quantize_requires_imatrix(TYPE_IDS[fmt])

    def row_size(self, fmt: str, n: int) -> int:
        return self.lib.ggml_row_size(TYPE_IDS[fmt], n)

    def quantize(self, x: np.ndarray, fmt: str, importance: np.ndarray | None = None) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows, n = x.shape
        t = TYPE_IDS[fmt]
        self.lib.ggml_quantize_init(t)
        out = np.zeros((rows, self.row_size(fmt, n)), dtype=np.uint8)
        imp = None
        # ggml aborts the process (GGML_ASSERT) instead of refusing: never let it get that far
        assert importance is not None or not self.requires_imatrix(fmt), f"ggml would abort: {fmt} needs an imatrix"
        if importance is not None:
            importance = np.ascontiguousarray(importance, dtype=np.float32)
            imp = importance.ctypes.data
        size = self.lib.ggml_quantize_chunk(t, x.ctypes.data, out.ctypes.data, 0, rows, n, imp)
        assert size == out.nbytes
        return out

    def dequantize(self, blocks: np.ndarray, fmt: str, n: int) -> np.ndarray:
        blocks = np.ascontiguousarray(blocks, dtype=np.uint8)
        if fmt == "f32":  # ggml has no to_float for its own float type
            return blocks.view(np.float32).reshape(blocks.shape[0], n).copy()
        out = np.zeros((blocks.shape[0], n), dtype=np.float32)
        fn = _TO_FLOAT(self.lib.ggml_get_type_traits(TYPE_IDS[fmt]).contents.to_float)
        fn(blocks.ctypes.data, out.ctypes.data, blocks.shape[0] * n)
        return out
