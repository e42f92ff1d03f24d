"""The device-generic (ATen-op) reader of the ggml block formats is bit-identical with the CPU row
kernels (themselves byte-exact with ggml), on the CPU and on every accelerator present."""
import pytest
import torch

import mpq
from mpq import _C

QUANT_TYPES = ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
               "iq4_nl", "iq4_xs"]
ALL_TYPES = QUANT_TYPES + ["f16", "bf16", "f32"]

# Byte offsets of each block's fp16 fields (ggml_blocks.h) and the block geometry.
HALF_FIELDS = {"q8_0": [0], "q4_0": [0], "q4_1": [0, 2], "q5_0": [0], "q5_1": [0, 2],
               "q2_k": [80, 82], "q3_k": [108], "q4_k": [0, 2], "q5_k": [0, 2], "q6_k": [208],
               "iq4_nl": [0], "iq4_xs": [0]}
BLOCK = {"q8_0": (32, 34), "q4_0": (32, 18), "q4_1": (32, 20), "q5_0": (32, 22), "q5_1": (32, 24),
         "q2_k": (256, 84), "q3_k": (256, 110), "q4_k": (256, 144), "q5_k": (256, 176),
         "q6_k": (256, 210), "iq4_nl": (32, 18), "iq4_xs": (256, 136)}


def n_per_row(fmt: str, blocks: torch.Tensor) -> int:
    if fmt in BLOCK:
        return blocks.shape[1] // BLOCK[fmt][1] * BLOCK[fmt][0]
    return blocks.shape[1] // {"f16": 2, "bf16": 2, "f32": 4}[fmt]


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def assert_bit_identical(got: torch.Tensor, ref: torch.Tensor, what: str, strict_nan: bool = True):
    """Every float32 bit pattern equal. With strict_nan=False, NaNs need only sit at the same
    places: a NaN made by the arithmetic (inf * 0, from a scale that overflowed fp16) is 0xFFC00000
    on x86 but 0x7FFFFFFF on CUDA, whatever the operation order."""
    assert got.dtype == torch.float32 and got.shape == ref.shape, (what, got.dtype, got.shape)
    got, ref = got.cpu(), ref.cpu()
    diff = bits(got) != bits(ref)
    if not strict_nan:
        diff &= ~(torch.isnan(got) & torch.isnan(ref))
    if diff.any():
        r, c = torch.nonzero(diff)[0].tolist()
        pytest.fail(f"{what}: {int(diff.sum())} values differ, first at [{r}, {c}]: "
                    f"{got[r, c].item()!r} ({bits(got)[r, c].item() & 0xFFFFFFFF:#010x}) vs row "
                    f"kernel {ref[r, c].item()!r} ({bits(ref)[r, c].item() & 0xFFFFFFFF:#010x})")


def matrices(seed: int):
    """Normal; heavy-tailed with outliers, within fp16's range, and beyond it (blocks whose fp16
    scales overflow to inf, so that some values come out inf or NaN); rows of zeros (with some
    all-zero rows)."""
    g = torch.Generator().manual_seed(seed)
    normal = torch.randn(8, 512, generator=g)
    heavy = torch.distributions.StudentT(2.0).sample((8, 512)) ** 3
    heavy[0, 7], heavy[3, 100] = 1e4, -3e3
    heavy_in_range = heavy.clamp(-3e4, 3e4)
    zeros = torch.randn(6, 256, generator=g) * 0.01
    zeros[1] = 0
    zeros[4] = 0
    zeros[5, :128] = 0
    return {"normal": normal, "heavy": heavy_in_range, "heavy_overflowing": heavy, "zero_rows": zeros}


def importance(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=g) * 3 ** 2


def quantized_cases(fmt: str, weighted: bool):
    torch.manual_seed(ALL_TYPES.index(fmt) * 2 + weighted)  # StudentT draws from the global RNG
    for kind, x in matrices(ALL_TYPES.index(fmt) * 2 + weighted).items():
        imp = importance(x.shape[1], 7) if weighted else None
        if kind != "heavy_overflowing":
            yield kind, mpq.quantize_ggml(x, fmt, imp), x.shape[1]
        elif fmt in HALF_FIELDS:
            # quantize_ggml refuses weights beyond fp16's range (ggml would store inf scales), so
            # such blocks are made by hand: the in-range blocks with every third block's fp16
            # scale set to inf (0x7C00) and every fifth to NaN (0x7E00).
            blocks = mpq.quantize_ggml(x.clamp(-3e4, 3e4), fmt, imp).clone()
            view = blocks.view(blocks.shape[0], -1, BLOCK[fmt][1])
            off = HALF_FIELDS[fmt][0]
            view[:, ::3, off:off + 2] = torch.tensor([0x00, 0x7C], dtype=torch.uint8)
            view[:, ::5, off:off + 2] = torch.tensor([0x00, 0x7E], dtype=torch.uint8)
            yield kind, blocks, x.shape[1]


@pytest.mark.parametrize("fmt", ALL_TYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["ref", "imatrix"])
def test_aten_reader_matches_row_kernels_on_cpu(fmt, weighted):
    for kind, blocks, n in quantized_cases(fmt, weighted):
        ref = mpq.dequantize_ggml(blocks, fmt, n)
        got = _C._dequantize_ggml_device(blocks, fmt, n)
        assert got.device.type == "cpu" and got.is_contiguous()
        assert_bit_identical(got, ref, f"{fmt} {kind}")


def random_blocks(fmt: str, rows: int, n: int, seed: int) -> torch.Tensor:
    """Arbitrary bytes: every bit field takes every value. fp16 scales are kept finite (exponent
    < 16, subnormals and both signs included) so no NaN arises; plain f16 / bf16 / f32 rows keep
    everything, NaNs and infinities too."""
    g = torch.Generator().manual_seed(seed)
    if fmt in BLOCK:
        bs, ts = BLOCK[fmt]
        b = torch.randint(0, 256, (rows * (n // bs), ts), generator=g, dtype=torch.uint8)
        for off in HALF_FIELDS[fmt]:
            b[:, off + 1] &= 0xBF  # clear the exponent's top bit: |d| < 2
        return b.view(rows, -1)
    width = {"f16": 2, "bf16": 2, "f32": 4}[fmt]
    return torch.randint(0, 256, (rows, n * width), generator=g, dtype=torch.uint8)


@pytest.mark.parametrize("fmt", ALL_TYPES)
def test_aten_reader_matches_row_kernels_on_random_bytes(fmt):
    blocks = random_blocks(fmt, 16, 512, ALL_TYPES.index(fmt))
    ref = mpq.dequantize_ggml(blocks, fmt, 512)
    got = _C._dequantize_ggml_device(blocks, fmt, 512)
    if fmt in ("f16", "bf16", "f32"):  # pure reinterpretation: NaN payloads included
        assert torch.isnan(ref).any()
    assert_bit_identical(got, ref, f"{fmt} random bytes")


@pytest.mark.parametrize("fmt", ["q4_k", "q5_0", "q6_k", "f16", "f32"])
def test_aten_reader_takes_strided_and_misaligned_blocks(fmt):
    x = torch.randn(12, 512)
    blocks = mpq.quantize_ggml(x, fmt)
    ref = mpq.dequantize_ggml(blocks, fmt, 512)
    # every other row (non-contiguous), and a copy at an odd storage offset (misaligned fields)
    assert_bit_identical(_C._dequantize_ggml_device(blocks[::2], fmt, 512), ref[::2], f"{fmt} strided")
    flat = torch.empty(blocks.numel() + 1, dtype=torch.uint8)
    odd = flat[1:].view(blocks.shape)
    odd.copy_(blocks)
    assert odd.storage_offset() == 1
    assert_bit_identical(_C._dequantize_ggml_device(odd, fmt, 512), ref, f"{fmt} odd offset")


def test_aten_reader_checks_its_arguments():
    blocks = mpq.quantize_ggml(torch.randn(2, 256), "q4_k")
    with pytest.raises(ValueError, match="n_per_row"):
        _C._dequantize_ggml_device(blocks, "q4_k", 100)
    with pytest.raises(ValueError, match="bytes"):
        _C._dequantize_ggml_device(blocks[:, :100], "q4_k", 256)
    with pytest.raises(TypeError, match="uint8"):
        _C._dequantize_ggml_device(blocks.to(torch.int32), "q4_k", 256)
    with pytest.raises(ValueError, match="ggml"):
        _C._dequantize_ggml_device(blocks, "int4_g32", 256)
    assert _C._dequantize_ggml_device(blocks[:0], "q4_k", 256).shape == (0, 256)


@pytest.mark.parametrize("fmt", ALL_TYPES)
def test_blocks_on_a_device_dequantize_there_bit_identically(device, fmt):
    cases = [(kind, b) for kind, b, _ in quantized_cases(fmt, True)]
    cases.append(("random bytes", random_blocks(fmt, 16, 512, 99)))
    for kind, blocks in cases:
        n = n_per_row(fmt, blocks)
        ref = mpq.dequantize_ggml(blocks, fmt, n)  # the CPU row kernels
        on_dev = blocks.to(device)
        got = mpq.dequantize_ggml(on_dev, fmt, n)
        assert got.device.type == device
        strict = device == "cpu" or kind != "heavy_overflowing"
        assert_bit_identical(got, ref, f"{fmt} {kind} via dequantize_ggml on {device}", strict)
        got = _C._dequantize_ggml_device(on_dev, fmt, n)
        assert got.device.type == device
        assert_bit_identical(got, ref, f"{fmt} {kind} via the ATen reader on {device}", strict)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantized_tensor_with_codes_on_a_device_dequantizes_there(device, dtype):
    w = torch.randn(16, 512).to(dtype)
    q = mpq.quantize_tensor(w, "q4_k")
    ref = mpq.dequantize(q)
    moved = mpq.QuantizedTensor(q.format, q.codes.to(device), None, None, q.rows, q.cols, q.dtype)
    got = mpq.dequantize(moved)
    assert got.device.type == device and got.dtype == dtype and got.shape == (16, 512)
    assert torch.equal(got.cpu().view(torch.int16 if dtype == torch.bfloat16 else torch.int32),
                       ref.view(torch.int16 if dtype == torch.bfloat16 else torch.int32))
    assert_bit_identical(mpq.dequantize(moved, torch.float32), mpq.dequantize(q, torch.float32),
                         f"q4_k QuantizedTensor on {device}")
