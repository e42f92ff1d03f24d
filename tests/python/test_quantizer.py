import numpy as np
import pytest
import torch

import mpq


def numpy_rtn(w: np.ndarray, bits: int, group: int, symmetric: bool) -> np.ndarray:
    """Independent reference of the integer formats, from their definition: the scale is computed
    in float32 (as the format defines it) and rounded to fp16, everything else in float64."""
    rows, cols = w.shape
    g = group or cols
    out = np.empty_like(w, dtype=np.float64)
    for c0 in range(0, cols, g):
        x32 = w[:, c0:c0 + g].astype(np.float32)
        lo32, hi32 = np.minimum(x32.min(1), 0), np.maximum(x32.max(1), 0)
        if symmetric:
            # GPTQ's quant.py: xmax = max(|xmin|, xmax), scale = 2 xmax / maxq, zero = (maxq+1)/2
            scale = np.maximum(-lo32, hi32) / np.float32((2 ** bits - 1) / 2)
        else:
            scale = (hi32 - lo32) / np.float32(2 ** bits - 1)
        scale = np.maximum(scale.astype(np.float16).astype(np.float64), 2.0 ** -24)
        x, lo = x32.astype(np.float64), lo32.astype(np.float64)
        if symmetric:
            zero = np.full_like(scale, 2 ** (bits - 1))
        else:
            zero = np.clip(np.round(-lo / scale), 0, 2 ** bits - 1)
        q = np.clip(np.round(x / scale[:, None]) + zero[:, None], 0, 2 ** bits - 1)
        out[:, c0:c0 + g] = (q - zero[:, None]) * scale[:, None]
    return out


@pytest.mark.parametrize("name", ["int2", "int3_g64", "int4_g32", "int4_g32_sym", "int5_g128", "int8", "int8_sym"])
def test_matches_float64_reference(name, device):
    f = mpq.find_format(name)
    torch.manual_seed(0)
    w = torch.randn(24, 172)  # 172: a short last group for every group size
    q = mpq.quantize_rtn(w.to(device), name)
    got = mpq.dequantize(q).cpu().double().numpy()
    ref = numpy_rtn(w.numpy(), f.bits, f.group_size, f.symmetric)
    step = np.abs(ref).max()
    # float32 vs float64 division can put an element sitting on a .5 boundary on the other side
    # of it: allow a handful of one-step differences, nothing more.
    diff = np.abs(got - ref)
    assert (diff > 1e-6 * step).sum() <= 3, f"{(diff > 1e-6 * step).sum()} elements differ"
    assert q.codes.device.type == torch.device(device).type


def test_packed_layout_matches_numpy_packbits(device):
    rng = np.random.default_rng(0)
    # 41 codes: rows end inside a byte; 48: every width that divides 8 packs whole codes per byte.
    for bits, n in [(b, n) for b in range(1, 9) for n in (41, 48)]:
        codes = rng.integers(0, 2 ** bits, size=(5, n), dtype=np.uint8)
        packed = mpq.pack_codes(torch.from_numpy(codes).to(device), bits).cpu().numpy()
        bitstream = np.unpackbits(codes[:, :, None], axis=2, bitorder="little")[:, :, :bits]
        ref = np.packbits(bitstream.reshape(5, -1), axis=1, bitorder="little")
        np.testing.assert_array_equal(packed, ref)
        back = mpq.unpack_codes(torch.from_numpy(packed).to(device), bits, n).cpu().numpy()
        np.testing.assert_array_equal(back, codes)
    too_big = torch.tensor([[3, 16, 17, 2]], dtype=torch.uint8, device=device)
    with pytest.raises(ValueError, match="2 codes do not fit in 4 bits"):
        mpq.pack_codes(too_big, 4)


def test_dtypes_and_shapes(device):
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        w = torch.randn(8, 64, dtype=dtype, device=device)
        q = mpq.quantize_rtn(w, "int8_g32")
        d = mpq.dequantize(q)
        assert d.dtype == dtype and d.shape == w.shape
        assert mpq.dequantize(q, dtype=torch.float32).dtype == torch.float32
        assert q.shape == (8, 64) and q.nbytes == mpq.find_format("int8_g32").bytes(8, 64)


def test_quantized_tensor_moves_to_a_device(device):
    """QuantizedTensor.to(device) moves codes, scales and zero points; dequantizing there gives
    the CPU's values exactly (integer and ggml formats)."""
    w = torch.randn(16, 256, generator=torch.Generator().manual_seed(3))
    for fmt in ("int4_g64", "int8_sym", "q4_k", "iq4_nl"):
        q = mpq.quantize_tensor(w, fmt)
        moved = q.to(device)
        assert moved.codes.device.type == device and q.codes.device.type == "cpu"
        assert moved.nbytes == q.nbytes and moved.format == q.format
        assert torch.equal(mpq.dequantize(moved).cpu(), mpq.dequantize(q)), fmt


def test_mse_clip_lowers_error_on_heavy_tails():
    torch.manual_seed(1)
    w = torch.randn(64, 256) ** 3
    plain = (mpq.dequantize(mpq.quantize_rtn(w, "int3_g128")) - w).pow(2).sum()
    clipped = (mpq.dequantize(mpq.quantize_rtn(w, "int3_g128", mpq.RtnOptions(mse_clip=True))) - w).pow(2).sum()
    assert clipped < 0.9 * plain


def test_bad_input_names_the_tensor():
    w = torch.randn(4, 64)
    w[2, 5] = float("inf")
    with pytest.raises(ValueError, match=r"blk\.1\.attn_v.*NaN/Inf"):
        mpq.quantize_rtn(w, "int4", name="blk.1.attn_v")
    with pytest.raises(TypeError, match="floating"):
        mpq.quantize_rtn(torch.ones(4, 4, dtype=torch.int32), "int4")
    with pytest.raises(ValueError, match="2 dimensions"):
        mpq.quantize_rtn(torch.randn(4, 4, 4), "int4")
    with pytest.raises(ValueError, match="non-empty"):
        mpq.quantize_rtn(torch.randn(0, 4), "int4")
    with pytest.raises(ValueError, match="unknown quantization format"):
        mpq.quantize_rtn(torch.randn(4, 4), "int4_g33_x")
    with pytest.raises(ValueError, match="max_shrink"):
        mpq.RtnOptions(max_shrink=1.5)


def test_inconsistent_quantized_tensor_is_rejected():
    q = mpq.quantize_rtn(torch.randn(4, 64), "int4_g32")
    with pytest.raises(ValueError, match="codes must be"):
        mpq.QuantizedTensor("int4_g32", q.codes, q.scales, q.zeros, rows=4, cols=80)
    with pytest.raises(TypeError, match="zeros must be uint8"):
        mpq.QuantizedTensor("int4_g32", q.codes, q.scales, None, rows=4, cols=64)
    rebuilt = mpq.QuantizedTensor("int4_g32", q.codes, q.scales, q.zeros, rows=4, cols=64)
    assert torch.equal(mpq.dequantize(rebuilt), mpq.dequantize(q))
