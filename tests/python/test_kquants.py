"""mpq's llama.cpp formats against the real ggml (llama-cpp-python's build), byte for byte."""
import numpy as np
import pytest
import torch

import mpq

from ggml_reference import Ggml

QUANT_TYPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
               "iq4_nl", "iq4_xs"]


@pytest.fixture(scope="module")
def ggml():
    return Ggml()


def matrices(rng):
    """The data kinds the issue names: normal, heavy-tailed with outliers, all-zero rows, tiny
    magnitudes, constant rows, and a long row."""
    normal = rng.standard_normal((8, 512)).astype(np.float32)
    # Clipped to the fp16 range: beyond it ggml writes Inf scales, mpq rejects the weight
    # (tests/python/test_readers.py::test_quantize_ggml_rejects_weights_beyond_fp16).
    heavy = np.clip(rng.standard_t(2, (8, 512)) ** 3, -6e4, 6e4).astype(np.float32)
    heavy[0, 7], heavy[3, 100] = 1e4, -3e3
    zeros = rng.standard_normal((6, 256)).astype(np.float32)
    zeros[1] = 0
    zeros[4] = 0
    tiny = (rng.standard_normal((6, 256)) * 10.0 ** rng.uniform(-30, -8, (6, 1))).astype(np.float32)
    const = np.full((4, 256), 0.37, dtype=np.float32)
    const[2] = -1.5
    long = rng.standard_normal((2, 8192)).astype(np.float32)
    return {"normal": normal, "heavy": heavy, "zero_rows": zeros, "tiny": tiny, "constant": const,
            "long_rows": long}


@pytest.mark.parametrize("fmt", QUANT_TYPES + ["f16", "bf16", "f32"])
@pytest.mark.parametrize("weighted", [False, True], ids=["ref", "imatrix"])
def test_bytes_and_floats_match_ggml(ggml, fmt, weighted):
    rng = np.random.default_rng(abs(hash((fmt, weighted))) % 2**32)
    for kind, x in matrices(rng).items():
        imp = (rng.uniform(0, 3, x.shape[1]) ** 2).astype(np.float32) if weighted else None
        ref = ggml.quantize(x, fmt, imp)
        got = mpq.quantize_ggml(torch.from_numpy(x), fmt,
                                None if imp is None else torch.from_numpy(imp)).numpy()
        assert got.shape == ref.shape, (fmt, kind)
        bad = np.nonzero((got != ref).any(1))[0]
        assert bad.size == 0, f"{fmt} {kind}: rows {bad[:5]} differ from ggml"
        ref_f = ggml.dequantize(ref, fmt, x.shape[1])
        got_f = mpq.dequantize_ggml(torch.from_numpy(got), fmt, x.shape[1]).numpy()
        np.testing.assert_array_equal(got_f.view(np.uint32), ref_f.view(np.uint32), err_msg=f"{fmt} {kind}")


def test_gguf_package_agrees_where_it_quantizes():
    """The gguf package's numpy quantizers are a second, independent reference (Q8_0, Q4_0...)."""
    gguf_quants = pytest.importorskip("gguf.quants", reason="needs the gguf package")
    from gguf.constants import GGMLQuantizationType as T

    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 256)).astype(np.float32)
    for fmt, t in [("q8_0", T.Q8_0), ("q4_0", T.Q4_0), ("q4_1", T.Q4_1), ("q5_0", T.Q5_0), ("q5_1", T.Q5_1)]:
        try:
            ref = gguf_quants.quantize(x, t)
        except NotImplementedError:
            continue
        got = mpq.quantize_ggml(torch.from_numpy(x), fmt).numpy()
        np.testing.assert_array_equal(got.reshape(ref.shape), ref, err_msg=fmt)
    for fmt, t in [("q4_k", T.Q4_K), ("q6_k", T.Q6_K), ("q2_k", T.Q2_K), ("iq4_xs", T.IQ4_XS)]:
        blocks = mpq.quantize_ggml(torch.from_numpy(x), fmt).numpy()
        ref = gguf_quants.dequantize(blocks, t)
        got = mpq.dequantize_ggml(torch.from_numpy(blocks), fmt, 256).numpy()
        np.testing.assert_array_equal(got, ref.reshape(got.shape), err_msg=fmt)


def test_importance_lowers_weighted_error():
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((64, 512)).astype(np.float32))
    imp = torch.from_numpy((rng.lognormal(0, 1.5, 512) ** 2).astype(np.float32))
    for fmt in ["q2_k", "q3_k", "q4_k", "iq4_xs"]:
        err = {}
        for name, w in (("plain", None), ("weighted", imp)):
            d = mpq.dequantize_ggml(mpq.quantize_ggml(x, fmt, w), fmt, 512)
            err[name] = float(((d - x) ** 2 * imp).sum())
        assert err["weighted"] < err["plain"], (fmt, err)


def test_quantized_tensor_for_ggml_formats():
    w = torch.randn(8, 512, dtype=torch.bfloat16)
    q = mpq.quantize_tensor(w, "q4_k", name="blk.0.ffn_up")
    assert q.nbytes == 8 * 2 * 144 and q.scales is None and q.zeros is None
    d = mpq.dequantize(q)
    assert d.dtype == torch.bfloat16 and d.shape == (8, 512)
    f = mpq.find_format("q4_k")
    assert f.family == mpq.FormatFamily.GGML and f.ggml_type == 12 and f.bits_per_weight(512) == 4.5


def test_fallbacks_follow_llama_quantize():
    assert mpq.ggml_fallback("q4_k", 4096).name == "q4_k"
    assert mpq.ggml_fallback("q4_k", 64 * 3).name == "q5_0"
    assert mpq.ggml_fallback("q5_k", 96).name == "q5_1"
    assert mpq.ggml_fallback("q6_k", 160).name == "q8_0"
    assert mpq.ggml_fallback("q2_k", 32).name == "q4_0"
    assert mpq.ggml_fallback("q3_k", 64).name == "q4_0"
    assert mpq.ggml_fallback("iq4_xs", 96).name == "iq4_nl"
    assert mpq.ggml_fallback("q4_k", 172).name == "f16"
    assert mpq.ggml_fallback("q8_0", 172).name == "f16"


def test_bad_input_is_reported():
    w = torch.randn(4, 256)
    with pytest.raises(ValueError, match=r"blk\.3\.ffn_down.*multiple of q4_k's block of 256.*q5_0"):
        mpq.quantize_ggml(torch.randn(4, 160), "q4_k", name="blk.3.ffn_down")
    bad = w.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mpq.quantize_ggml(bad, "q4_k", name="x")
    with pytest.raises(ValueError, match="importance.*256"):
        mpq.quantize_ggml(w, "q4_k", torch.ones(255))
    with pytest.raises(ValueError, match=">= 0"):
        mpq.quantize_ggml(w, "q4_k", -torch.ones(256))
    with pytest.raises(ValueError, match="NaN"):
        mpq.quantize_ggml(w, "q4_k", torch.full((256,), float("inf")))
    with pytest.raises(TypeError):
        mpq.quantize_ggml(torch.ones(4, 256, dtype=torch.int64), "q4_k")
    with pytest.raises(ValueError, match="non-empty"):
        mpq.quantize_ggml(torch.zeros(0, 256), "q4_k")
    with pytest.raises(ValueError, match="not a llama.cpp"):
        mpq.quantize_ggml(w, "int4_g32")
    with pytest.raises(ValueError, match="importance.*256"):
        mpq.quantize_tensor(w, "int4_g32", torch.ones(255))
    with pytest.raises(ValueError, match="take 144 bytes"):
        mpq.dequantize_ggml(torch.zeros(2, 143, dtype=torch.uint8), "q4_k", 256)


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "iq4_nl", "f16"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), -float("nan")])
def test_non_finite_rows_are_named(fmt, bad):
    """The fast formats find NaN/Inf in their own block scans (the others before quantizing):
    either way the error names the row, with or without importance weights."""
    w = torch.randn(8, 256)
    w[5, 77] = bad
    for imp in (None, torch.ones(256)):
        with pytest.raises(ValueError, match="row 5 contains NaN/Inf"):
            mpq.quantize_ggml(w, fmt, imp)


@pytest.mark.parametrize("fmt", ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"])
def test_signed_zeros_and_ties_match_ggml(ggml, fmt):
    """The reference scans keep the first of equal values: which zero (+0 or -0) sets a block's
    min, max or scale shows in the fp16 sign bits."""
    rng = np.random.default_rng(5)
    x = rng.choice(np.array([0.0, -0.0, 1.0, -1.0, 0.5, -2.0, 2.0], np.float32), (600, 64))
    x[:200] = rng.choice(np.array([0.0, -0.0], np.float32), (200, 64))
    x[200:400] = np.abs(x[200:400])
    x[400:] = -np.abs(x[400:])
    np.testing.assert_array_equal(mpq.quantize_ggml(torch.from_numpy(x), fmt).numpy(), ggml.quantize(x, fmt))
