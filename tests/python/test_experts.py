"""The experts (expert.h, gptq.h, awq.h, smoothquant.h), checked against independent float64
re-implementations of the published algorithms and against ggml itself."""
import math

import numpy as np
import pytest
import torch

import mpq

GGML_FORMATS = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
                "iq4_nl", "iq4_xs"]


@pytest.fixture(scope="module")
def ggml():
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (the real ggml) as reference")
    from ggml_reference import Ggml

    return Ggml()


def correlated_inputs(n, d, seed=0, outliers=()):
    """Activations with correlated channels (as a transformer's are) and optional outlier
    channels."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) * 0.15 + torch.eye(d)
    x = torch.randn(n, d, generator=g) @ mix
    for c in outliers:
        x[:, c] *= 20
    return x


def stats_for(x, name="layer"):
    cal = mpq.Calibrator()
    cal.observe(name, x)
    return cal.stats(name)


def gptq_reference(w, h, bits, group, act_order=False, damp=0.01, block=128):
    """GPTQ in float64 after IST-DASLab/gptq (gptq.py + quant.py, min/max asymmetric quantizer),
    with the group parameters rounded to fp16 as mpq's integer formats store them; act_order uses
    static groups (parameters from the original weights)."""
    w, h = w.double().clone(), h.double().clone()
    rows, cols = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    maxq = 2 ** bits - 1

    def params(x):
        lo, hi = x.min(1).values.clamp(max=0), x.max(1).values.clamp(min=0)
        scale = ((hi - lo) / maxq).half().double().clamp(min=5.960464477539063e-08)
        zero = torch.round(-lo / scale).clamp(0, maxq)
        return scale, zero

    scales = torch.zeros(rows, cols, dtype=torch.float64)
    zeros = torch.zeros(rows, cols, dtype=torch.float64)
    if act_order:
        for c0 in range(0, cols, group):
            s, z = params(w[:, c0:c0 + group])
            scales[:, c0:c0 + group], zeros[:, c0:c0 + group] = s[:, None], z[:, None]
        perm = torch.argsort(torch.diag(h), descending=True, stable=True)
        w, h, scales, zeros = w[:, perm], h[perm][:, perm], scales[:, perm], zeros[:, perm]
    h += damp * torch.mean(torch.diag(h)) * torch.eye(cols, dtype=torch.float64)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q_all = torch.zeros_like(w)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1, err1 = w[:, i1:i2].clone(), torch.zeros(rows, i2 - i1, dtype=torch.float64)
        for i in range(i2 - i1):
            c = i1 + i
            if not act_order and c % group == 0:
                s, z = params(torch.cat([w1[:, i:], w[:, i2:]], 1)[:, :group])
                scales[:, c:c + group], zeros[:, c:c + group] = s[:, None], z[:, None]
            x = w1[:, i]
            q = (torch.clamp(torch.round(x / scales[:, c]) + zeros[:, c], 0, maxq) - zeros[:, c]) \
                * scales[:, c]
            q_all[:, c] = q
            e = (x - q) / hinv[i1 + i, i1 + i]
            w1[:, i:] -= e[:, None] * hinv[i1 + i, i1 + i:i2][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    if act_order:
        q_all = q_all[:, torch.argsort(perm)]
    return q_all.float()


# 1088 columns: the inverse factor's triangular inverse recurses (halves of 576 and 512 columns).
@pytest.mark.parametrize("bits,group,act_order,cols", [(4, 128, False, 256), (3, 64, False, 256),
                                                       (4, 128, True, 256), (2, 32, False, 256),
                                                       (4, 64, True, 1088)])
def test_gptq_matches_float64_reference(bits, group, act_order, cols):
    x = correlated_inputs(2048, cols)
    w = torch.randn(96, cols, generator=torch.Generator().manual_seed(1)) * 0.05
    st = stats_for(x)
    h = st.hessian()
    ref = gptq_reference(w, h, bits, group, act_order)
    res = mpq.gptq_quantize(w, f"int{bits}_g{group}", h, mpq.GptqOptions(act_order=act_order))
    got = mpq.dequantize(res.quantized).float()
    same = (got == ref).float().mean().item()
    err_ref, err_got = mpq.output_error(w, ref, h), mpq.output_error(w, got, h)
    rtn = mpq.output_error(w, mpq.dequantize(mpq.quantize_tensor(w, f"int{bits}_g{group}")), h)
    # float32 against float64: an early rounding that flips changes the later updates slightly.
    assert same > 0.97, same
    assert err_got == pytest.approx(err_ref, rel=0.03)
    assert err_got < 0.8 * rtn


def test_gptq_grid_of_ggml_blocks_without_correlation(ggml):
    """With a diagonal Hessian nothing is compensated: GPTQ must round every weight to the
    nearest value of the block grid that ggml chose, which is never further than ggml's own
    choice. With importance weights this holds where ggml's weighting is local to the block (the
    K and IQ4 types); the legacy types weight by the whole row's variance, which GPTQ, fitting a
    block before the rest of the row is final, replaces by the block's own."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(24, 512, generator=g) * 0.02
    d = torch.rand(512, generator=g) + 0.1
    for fmt in GGML_FORMATS:
        for importance in (False, True):
            if importance and fmt[0] == "q" and not fmt.endswith("_k") and fmt != "q8_0":
                continue
            res = mpq.gptq_quantize(w, fmt, torch.diag(d),
                                    mpq.GptqOptions(damp=0.0, importance=importance))
            got = torch.from_numpy(ggml.dequantize(res.quantized.codes.numpy(), fmt, 512))
            # The real ggml decodes GPTQ's bytes to exactly what mpq evaluated.
            assert torch.equal(got, mpq.dequantize(res.quantized).float()), fmt
            blocks = ggml.quantize(w.numpy(), fmt, d.numpy() if importance else None)
            ref = torch.from_numpy(ggml.dequantize(blocks, fmt, 512))
            assert ((w - got).abs() <= (w - ref).abs() + 1e-7).all(), (fmt, importance)


@pytest.mark.parametrize("fmt", GGML_FORMATS + ["int4_g128", "int3_g32_sym", "int8"])
def test_gptq_beats_rtn_on_every_format(fmt):
    x = correlated_inputs(4096, 512, seed=2)
    w = torch.randn(64, 512, generator=torch.Generator().manual_seed(4)) * 0.05
    h = stats_for(x).hessian()
    rtn = mpq.output_error(w, mpq.dequantize(mpq.quantize_tensor(w, fmt)).float(), h)
    for act_order in (False, True):
        res = mpq.gptq_quantize(w, fmt, h, mpq.GptqOptions(act_order=act_order))
        err = mpq.output_error(w, mpq.dequantize(res.quantized).float(), h)
        assert err < 0.85 * rtn, (fmt, act_order, err, rtn)


def test_gptq_on_device(device):
    x = correlated_inputs(2048, 256)
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(1)) * 0.05
    h = stats_for(x).hessian()
    for fmt in ("int4_g64", "q4_k", "iq4_nl"):
        cpu = mpq.dequantize(mpq.gptq_quantize(w, fmt, h).quantized).float()
        res = mpq.gptq_quantize(w.to(device), fmt, h.to(device))
        dev = mpq.dequantize(res.quantized).float().cpu()
        assert (dev == cpu).float().mean() > 0.97, fmt
        assert mpq.output_error(w, dev, h) == pytest.approx(mpq.output_error(w, cpu, h), rel=0.03)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
def test_gptq_cuda_kernel_matches_the_cpu_loop():
    """GPTQ's CUDA kernel (eight lanes per row, integer groups fitted inside it) rounds as the CPU loop
    does; the inverse Hessian factor (float32 on GPUs, float64 on the CPU) and the lazy block
    updates (cuBLAS vs the CPU's BLAS) differ in their last bits, which moves a few codes."""
    from mpq import _build_info

    if not _build_info.CUDA_KERNELS:
        pytest.skip("mpq was built without its CUDA kernels (no nvcc at build time)")
    x = correlated_inputs(4096, 320, seed=5)
    # 99 rows: the last thread block has one warp with three live rows and three warps with none.
    w = torch.randn(99, 320, generator=torch.Generator().manual_seed(6)) * 0.05
    h = stats_for(x).hessian()
    # Blocks of 32 .. 256 columns (320 leaves a short last block), one past the kernel's limit
    # (the ATen path), act-order, and each kind of grid: linear, symmetric, k-quant, IQ4's table.
    cases = [("int4_g64", 128, False), ("int3_g32_sym", 32, False), ("int4_g64", 100, True),
             ("int8", 256, False), ("iq4_nl", 64, False), ("q4_0", 320, False)]
    for fmt, block, act_order in cases:
        opts = mpq.GptqOptions(block_size=block, act_order=act_order)
        cpu = mpq.dequantize(mpq.gptq_quantize(w, fmt, h, opts).quantized).float()
        gpu = mpq.dequantize(mpq.gptq_quantize(w.cuda(), fmt, h.cuda(), opts).quantized).float().cpu()
        assert (gpu == cpu).float().mean() > 0.98, (fmt, block, act_order)
        assert mpq.output_error(w, gpu, h) == pytest.approx(mpq.output_error(w, cpu, h), rel=0.02)
    w256 = torch.randn(32, 512, generator=torch.Generator().manual_seed(7)) * 0.05
    h256 = stats_for(correlated_inputs(2048, 512, seed=8)).hessian()
    cpu = mpq.gptq_quantize(w256, "q4_k", h256).quantized
    gpu = mpq.gptq_quantize(w256.cuda(), "q4_k", h256.cuda()).quantized
    assert (mpq.dequantize(gpu).float().cpu() == mpq.dequantize(cpu).float()).float().mean() > 0.98


def test_gptq_dead_columns_damping_and_bad_input():
    x = correlated_inputs(1024, 128)
    x[:, 5] = 0
    w = torch.randn(32, 128) * 0.05
    h = stats_for(x).hessian()
    res = mpq.gptq_quantize(w, "int4_g32", h)
    assert res.dead_columns == 1
    assert (mpq.dequantize(res.quantized)[:, 5] == 0).all()
    # Rank-deficient: fewer tokens than columns. Damping keeps it solvable.
    few = stats_for(torch.randn(16, 128)).hessian()
    assert mpq.gptq_quantize(w, "int4_g32", few, mpq.GptqOptions(damp=0.0)).damp > 0
    # All inputs zero: no information, RTN instead.
    res = mpq.gptq_quantize(w, "int4_g32", torch.zeros(128, 128))
    assert res.dead_columns == 128
    assert torch.equal(mpq.dequantize(res.quantized),
                       mpq.dequantize(mpq.quantize_tensor(w, "int4_g32")))
    with pytest.raises(ValueError, match=r"blk.0.attn_q Hessian.*\[128, 128\]"):
        mpq.gptq_quantize(w, "int4_g32", torch.eye(64), name="blk.0.attn_q")
    bad = h.clone()
    bad[3, 3] = float("nan")
    with pytest.raises(ValueError, match="blk.1.ffn_up Hessian.*NaN"):
        mpq.gptq_quantize(w, "int4_g32", bad, name="blk.1.ffn_up")
    with pytest.raises(ValueError, match="not positive definite"):
        mpq.gptq_quantize(w, "int4_g32", -torch.eye(128), name="neg")
    with pytest.raises(ValueError, match="blk.2.ffn_down.*q4_k's block of 256.*q5_0"):
        mpq.gptq_quantize(w, "q4_k", h, name="blk.2.ffn_down")
    with pytest.raises(ValueError, match="plain float"):
        mpq.gptq_quantize(w, "f16", h)


def test_expert_registry_and_errors():
    assert {"rtn", "kquant", "kquant_imatrix", "gptq", "awq", "smoothquant"} <= set(
        mpq.list_experts())
    with pytest.raises(ValueError, match="unknown expert 'nope'.*gptq"):
        mpq.make_expert("nope")
    assert mpq.make_expert("gptq", act_order=True).options.act_order
    x = correlated_inputs(1024, 128)
    st = stats_for(x)
    w = torch.randn(32, 128) * 0.05
    layers = [mpq.ExpertLayer("blk.0.attn_q", w, "int4_g32")]
    for name in mpq.list_experts():
        e = mpq.make_expert(name)
        (r,) = e.quantize(layers, st)
        assert r.name == "blk.0.attn_q" and r.quantized.format == "int4_g32"
        # output_error describes the effective weight (scales divided back out).
        assert r.output_error == pytest.approx(
            mpq.output_error(w, r.effective_weight(), st.hessian()), rel=1e-6)
        if e.needs_stats():
            with pytest.raises(ValueError, match="needs calibration statistics.*blk.0.attn_q"):
                e.quantize(layers, None)
            wrong = stats_for(torch.randn(64, 64))
            with pytest.raises(ValueError, match="blk.0.attn_q.*64 input features.*128"):
                e.quantize(layers, wrong)
    with pytest.raises(ValueError, match="share one input"):
        mpq.make_expert("rtn").quantize(
            layers + [mpq.ExpertLayer("blk.0.attn_k", torch.randn(8, 64), "int4_g32")])


def test_python_expert_registered_by_name():
    class Halve(mpq.Expert):
        """A toy expert: RTN of half the weight, with input scale 1/2 (so the effective weight
        is the RTN of the weight)."""

        def name(self):
            return "halve"

        def needs_stats(self):
            return False

        def transforms_input(self):
            return True

        def quantize(self, layers, stats, can_scale):
            out = []
            for layer in layers:
                q = mpq.quantize_tensor(layer.weight * 0.5, layer.format.name)
                out.append(mpq.ExpertResult(layer.name, q,
                                            torch.full((layer.weight.shape[1],), 0.5)))
            return out

    mpq.register_expert("halve", Halve)
    e = mpq.make_expert("halve")
    w = torch.randn(8, 64)
    (r,) = e.quantize([mpq.ExpertLayer("x", w, "int8")], None, True)
    assert torch.allclose(r.effective_weight(), w, atol=0.05)
    assert "halve" in mpq.list_experts()


def test_awq_protects_salient_channels():
    """AWQ's premise: channels with large activations matter most; scaling them up before
    rounding lowers the output error. Checked against RTN on the same grid, per base format."""
    x = correlated_inputs(4096, 256, seed=5, outliers=(3, 17, 100, 200))
    st = stats_for(x)
    g = torch.Generator().manual_seed(6)
    ws = [torch.randn(128, 256, generator=g) * 0.05 for _ in range(3)]
    for fmt in ("int4_g128", "int3_g64", "q4_k", "q4_0"):
        layers = [mpq.ExpertLayer(f"blk.0.{r}", w, fmt)
                  for r, w in zip(("attn_q", "attn_k", "attn_v"), ws)]
        res = mpq.make_expert("awq").quantize(layers, st)
        rtn = mpq.make_expert("rtn").quantize(layers, st)
        assert all(r.input_scale is not None for r in res)
        assert all(torch.equal(r.input_scale, res[0].input_scale) for r in res)  # one shared s
        awq_err = sum(r.output_error for r in res)
        rtn_err = sum(r.output_error for r in rtn)
        assert awq_err < 0.9 * rtn_err, (fmt, awq_err, rtn_err)
        # The outlier channels are scaled up relative to the rest.
        s = res[0].input_scale
        assert s[[3, 17, 100, 200]].min() > s.median()


def test_smoothquant_scale_matches_the_paper_formula():
    x = correlated_inputs(2048, 64, seed=7, outliers=(9,))
    x[:, 10] = 0  # a channel that never fires
    st = stats_for(x)
    ws = [torch.randn(32, 64, dtype=torch.float64) * 0.05, torch.randn(16, 64, dtype=torch.float64)]
    alpha = 0.85
    act = x.double().abs().amax(0)
    wmax = torch.cat(ws).abs().amax(0)
    ref = (act ** alpha / wmax ** (1 - alpha)).clamp(min=1e-5)
    ref[10] = 1.0
    s = mpq.smoothquant_scale([w.float() for w in ws], st.max_abs, alpha)
    assert torch.allclose(s.double(), ref, rtol=1e-5)
    # Smoothing is an identity in exact arithmetic: (x / s) (W s)ᵀ = x Wᵀ.
    w = ws[0].float()
    assert torch.allclose((x / s) @ (w * s).T, x @ w.T, rtol=1e-4, atol=1e-4)
    res = mpq.SmoothQuantExpert(mpq.SmoothQuantOptions(alpha=alpha)).quantize(
        [mpq.ExpertLayer("blk.0.ffn_gate", w, "int8_sym"),
         mpq.ExpertLayer("blk.0.ffn_up", ws[1].float(), "int8_sym")], st)
    assert torch.equal(res[0].input_scale, s) and torch.equal(res[1].input_scale, s)


def test_smoothquant_w8a8_simulation_helps_with_outliers():
    """W8A8 with per-token int8 activations: an outlier channel ruins the activation scale of
    every token; smoothing moves it into the weights and the layer output gets closer."""
    from mpq.experts import fake_quantize_activations

    x = correlated_inputs(2048, 128, seed=8, outliers=(5, 77))
    x[:, 5] *= 5
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(9)) * 0.05
    st = stats_for(x)
    y = x @ w.T
    plain = mpq.dequantize(mpq.quantize_tensor(w, "int8_sym")).float()
    err_plain = (fake_quantize_activations(x) @ plain.T - y).pow(2).mean()
    (r,) = mpq.make_expert("smoothquant").quantize([mpq.ExpertLayer("l", w, "int8_sym")], st)
    s = r.input_scale
    err_sq = (fake_quantize_activations(x / s) @ mpq.dequantize(r.quantized).float().T - y) \
        .pow(2).mean()
    assert err_sq < 0.5 * err_plain


def test_kquant_imatrix_expert_is_llama_quantize(ggml):
    """kquant_imatrix on a ggml format is exactly llama.cpp's quantizer with the imatrix's
    mean x² as importance."""
    x = correlated_inputs(512, 256, seed=10)
    st = stats_for(x)
    w = torch.randn(16, 256) * 0.05
    (r,) = mpq.make_expert("kquant_imatrix").quantize([mpq.ExpertLayer("l", w, "q4_k")], st)
    ref = ggml.quantize(w.numpy(), "q4_k", st.mean_sq().numpy())
    assert np.array_equal(r.quantized.codes.numpy(), ref)


def test_one_tensor_quantizers_take_weight_then_format_as_a_name_or_a_format():
    """quantize, quantize_rtn, quantize_ggml and gptq_quantize: weight, format (name or Format),
    then what the method needs; gptq_quantize's 0.1 order (weight, hessian, format) still works,
    with a DeprecationWarning, and gives the same bytes."""
    torch.manual_seed(0)
    w = torch.randn(8, 256)
    x = torch.randn(512, 256)
    h = 2 * x.T @ x / x.size(0)
    for fmt in ("q4_k", mpq.find_format("q4_k")):
        a = mpq.quantize_tensor(w, fmt, name="w")
        b = mpq.quantize_ggml(w, fmt, name="w")
        assert torch.equal(mpq.dequantize(a), mpq.dequantize_ggml(b, "q4_k", 256))
        assert mpq.quantize_rtn(w, mpq.find_format("int4_g32")).nbytes == mpq.quantize_rtn(w, "int4_g32").nbytes
    new = mpq.gptq_quantize(w, mpq.find_format("q4_k"), h)
    with pytest.warns(DeprecationWarning, match=r"gptq_quantize\(weight, format, hessian\)"):
        old = mpq.gptq_quantize(w, h, "q4_k")
    assert torch.equal(mpq.dequantize(new.quantized), mpq.dequantize(old.quantized))
    with pytest.raises(TypeError, match="format must be a format name"):
        mpq.quantize_rtn(w, 4)
