"""llama.cpp's codebook formats (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S): mpq's bytes
against the real ggml's ggml_quantize_chunk and its to_float (llama-cpp-python's build), on data
chosen to break things."""
import numpy as np
import pytest
import torch

import mpq
from mpq import _C

from ggml_reference import Ggml

IQ_TYPES = ["iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq1_s", "iq1_m"]
NEEDS_IMATRIX = {"iq2_xxs", "iq2_xs", "iq1_s"}
GEOMETRY = {"iq2_xxs": (16, 66), "iq2_xs": (17, 74), "iq2_s": (22, 82), "iq3_xxs": (18, 98),
            "iq3_s": (21, 110), "iq1_s": (19, 50), "iq1_m": (29, 56)}  # ggml id, bytes per 256
# Byte offset of the fp16 field whose exponent's top bit random_blocks clears (IQ1_M's fp16 is
# spread over the top nibbles of its four scale words; its exponent's top bit is in byte 55).
HALF_HIGH_BYTE = {"iq2_xxs": 1, "iq2_xs": 1, "iq2_s": 1, "iq3_xxs": 1, "iq3_s": 1, "iq1_s": 1, "iq1_m": 55}


@pytest.fixture(scope="module")
def ggml():
    return Ggml()


def bf16_rounded(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(x).to(torch.bfloat16).float().numpy()


def matrices(rng, ggml, fmt):
    """Gaussians of several rows x 256 k; bf16-rounded values (many ties); all-zero rows; tiny and
    huge magnitudes; a few huge columns; constant rows; sparse rows (whole groups of zeros); rows
    already on the format's grid (ggml's own dequantized output)."""
    gauss = rng.standard_normal((6, 768)).astype(np.float32)
    bf16 = bf16_rounded(rng.standard_normal((8, 512)).astype(np.float32) * 0.02)
    coarse = bf16_rounded(np.round(rng.standard_normal((4, 256)) * 4).astype(np.float32) / 4)
    zero_rows = rng.standard_normal((4, 256)).astype(np.float32)
    zero_rows[1] = 0
    zero_rows[3] = 0
    tiny = (rng.standard_normal((3, 256)) * 1e-8).astype(np.float32)
    huge = (rng.standard_normal((3, 256)) * 1e4).astype(np.float32)
    cols = rng.standard_normal((4, 512)).astype(np.float32)
    cols[:, [3, 100, 257, 400]] *= 1e3
    const = np.full((3, 256), 0.37, dtype=np.float32)
    const[1] = -1.5
    const[2] = 1e-5
    sparse = rng.standard_normal((4, 512)).astype(np.float32)
    sparse[:, :64] = 0
    sparse[1, 256:] = 0
    sparse[2, ::3] = 0
    cases = {"gaussian": gauss, "bf16": bf16, "bf16_coarse": coarse, "zero_rows": zero_rows, "tiny": tiny,
             "huge": huge, "huge_columns": cols, "constant": const, "sparse": sparse}
    imp = importance(rng, 512)
    cases["on_grid"] = ggml.dequantize(ggml.quantize(gauss[:, :512], fmt, imp), fmt, 512)
    return cases


def importance(rng, n, zeros=False):
    imp = (rng.uniform(0, 3, n) ** 2).astype(np.float32)
    if zeros:
        imp[rng.choice(n, n // 8, replace=False)] = 0  # scattered zeros
        imp[32:64] = 0  # and a whole group (IQ1_S's 32, two of IQ2_XS's 16)
    return imp


def weightings(fmt):
    out = ["imatrix", "imatrix_with_zeros"]
    if fmt not in NEEDS_IMATRIX:
        out.append("none")
    return out


def mpq_quantize(x, fmt, imp):
    return mpq.quantize_ggml(torch.from_numpy(x), fmt, None if imp is None else torch.from_numpy(imp)).numpy()


def assert_same_bytes(got, ref, what):
    assert got.shape == ref.shape, (what, got.shape, ref.shape)
    bad = np.nonzero((got != ref).any(1))[0]
    if bad.size:
        r = bad[0]
        c = int(np.nonzero(got[r] != ref[r])[0][0])
        pytest.fail(f"{what}: {bad.size} of {got.shape[0]} rows differ from ggml, first row {r} at byte {c}")


def assert_same_floats(got, ref, what):
    diff = got.view(np.uint32) != ref.view(np.uint32)
    if diff.any():
        r, c = np.argwhere(diff)[0]
        pytest.fail(f"{what}: {int(diff.sum())} floats differ, first [{r}, {c}]: {got[r, c]!r} vs ggml {ref[r, c]!r}")


@pytest.mark.parametrize("fmt", IQ_TYPES)
def test_bytes_and_floats_match_ggml(ggml, fmt):
    seed = IQ_TYPES.index(fmt)
    rng = np.random.default_rng(seed)
    checked = 0
    for kind, x in matrices(rng, ggml, fmt).items():
        for weighting in weightings(fmt):
            imp = None if weighting == "none" else importance(rng, x.shape[1], weighting == "imatrix_with_zeros")
            what = f"{fmt} {kind} {weighting}"
            ref = ggml.quantize(x, fmt, imp)
            got = mpq_quantize(x, fmt, imp)
            assert_same_bytes(got, ref, what)
            ref_f = ggml.dequantize(ref, fmt, x.shape[1])
            got_f = mpq.dequantize_ggml(torch.from_numpy(got), fmt, x.shape[1]).numpy()
            assert_same_floats(got_f, ref_f, what)
            checked += 1
    assert checked == 10 * len(weightings(fmt))


@pytest.mark.parametrize("fmt", IQ_TYPES)
def test_importance_changes_the_result(ggml, fmt):
    """The importance weights reach the kernel: weighting a few columns heavily changes bytes."""
    rng = np.random.default_rng(100 + IQ_TYPES.index(fmt))
    x = rng.standard_normal((8, 512)).astype(np.float32)
    flat = np.ones(512, dtype=np.float32)
    peaked = flat.copy()
    peaked[::7] = 50
    a, b = mpq_quantize(x, fmt, flat), mpq_quantize(x, fmt, peaked)
    np.testing.assert_array_equal(b, ggml.quantize(x, fmt, peaked))
    assert (a != b).any()


def random_blocks(fmt, rows, n, seed):
    """Arbitrary bytes (every field takes every value); the fp16 scale kept finite (|d| < 2)."""
    g = torch.Generator().manual_seed(seed)
    ts = GEOMETRY[fmt][1]
    b = torch.randint(0, 256, (rows * (n // 256), ts), generator=g, dtype=torch.uint8)
    b[:, HALF_HIGH_BYTE[fmt]] &= 0xBF
    return b.view(rows, -1)


@pytest.mark.parametrize("fmt", IQ_TYPES)
def test_any_bytes_dequantize_as_ggml(ggml, fmt):
    blocks = random_blocks(fmt, 32, 1024, IQ_TYPES.index(fmt))
    ref = ggml.dequantize(blocks.numpy(), fmt, 1024)
    assert np.isfinite(ref).all() and (ref != 0).mean() > 0.5
    assert_same_floats(mpq.dequantize_ggml(blocks, fmt, 1024).numpy(), ref, f"{fmt} random bytes")
    # the device-generic (ATen-op) reader, run on the CPU, against ggml too
    assert_same_floats(_C._dequantize_ggml_device(blocks, fmt, 1024).numpy(), ref, f"{fmt} ATen reader")


@pytest.mark.parametrize("fmt", IQ_TYPES)
def test_blocks_on_a_device_dequantize_there_bit_identically(device, fmt):
    x = torch.randn(8, 512)
    blocks = mpq.quantize_ggml(x, fmt, torch.rand(512) + 0.1)
    ref = mpq.dequantize_ggml(blocks, fmt, 512)
    got = mpq.dequantize_ggml(blocks.to(device), fmt, 512)
    assert got.device.type == device
    assert torch.equal(got.cpu().view(torch.int32), ref.view(torch.int32)), fmt


def test_formats_are_registered(ggml):
    for fmt in IQ_TYPES:
        f = mpq.find_format(fmt)
        type_id, nbytes = GEOMETRY[fmt]
        assert f.family == mpq.FormatFamily.GGML and f.ggml_type == type_id and f.group_size == 256
        assert f.bytes(3, 512) == 3 * 2 * nbytes == 3 * ggml.row_size(fmt, 512)
        assert f.bits_per_weight(256) == nbytes * 8 / 256
        assert fmt in mpq.list_formats()
        assert ggml.requires_imatrix(fmt) == (fmt in NEEDS_IMATRIX)
    q = mpq.quantize_tensor(torch.randn(4, 512, dtype=torch.bfloat16), "iq3_s", name="blk.0.attn_q")
    assert q.nbytes == 4 * 2 * 110
    d = mpq.dequantize(q)
    assert d.dtype == torch.bfloat16 and d.shape == (4, 512)


def test_quantization_is_independent_of_threads(ggml):
    x = torch.randn(64, 512)
    imp = torch.rand(512) + 0.5
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = mpq.quantize_ggml(x, "iq2_xs", imp)
        torch.set_num_threads(max(2, threads))
        many = mpq.quantize_ggml(x, "iq2_xs", imp)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
    np.testing.assert_array_equal(many.numpy(), ggml.quantize(x.numpy(), "iq2_xs", imp.numpy()))


@pytest.mark.parametrize("fmt", sorted(NEEDS_IMATRIX))
def test_types_that_need_an_imatrix_refuse_without_one(fmt):
    w = torch.randn(4, 256)
    with pytest.raises(ValueError, match=rf"blk\.7\.ffn_up: {fmt} needs importance weights"):
        mpq.quantize_ggml(w, fmt, name="blk.7.ffn_up")
    with pytest.raises(ValueError, match=rf"blk\.7\.attn_k: {fmt} needs importance weights"):
        mpq.quantize_tensor(w, fmt, name="blk.7.attn_k")


def test_rows_that_are_not_whole_super_blocks():
    for fmt in IQ_TYPES:
        assert mpq.ggml_fallback(fmt, 4096).name == fmt
        assert mpq.ggml_fallback(fmt, 96).name == "iq4_nl"
        assert mpq.ggml_fallback(fmt, 100).name == "f16"
        with pytest.raises(ValueError, match=rf"blk\.2\.ffn_down.*multiple of {fmt}'s block of 256.*iq4_nl"):
            mpq.quantize_ggml(torch.randn(2, 160), fmt, torch.ones(160), name="blk.2.ffn_down")
    with pytest.raises(ValueError, match="take 66 bytes"):
        mpq.dequantize_ggml(torch.zeros(2, 65, dtype=torch.uint8), "iq2_xxs", 256)


def test_gptq_refuses_codebook_formats():
    w = torch.randn(8, 256)
    with pytest.raises(ValueError, match="GPTQ cannot target iq2_s: its codes index a codebook"):
        mpq.gptq_quantize(w, torch.eye(256), "iq2_s")


def test_gguf_package_reads_the_blocks_alike():
    """The gguf package's numpy readers are a second, independent reference for the layouts."""
    gguf_quants = pytest.importorskip("gguf.quants", reason="needs the gguf package")
    from gguf.constants import GGMLQuantizationType as T

    x = torch.randn(4, 512)
    imp = torch.rand(512) + 0.1
    for fmt in IQ_TYPES:
        blocks = mpq.quantize_ggml(x, fmt, imp).numpy()
        ref = gguf_quants.dequantize(blocks, T(GEOMETRY[fmt][0])).reshape(4, 512)
        got = mpq.dequantize_ggml(torch.from_numpy(blocks), fmt, 512).numpy()
        np.testing.assert_array_equal(got, ref, err_msg=fmt)
