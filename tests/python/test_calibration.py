import threading

import numpy as np
import pytest
import torch

import mpq


def test_statistics_match_float64_reference(device):
    torch.manual_seed(0)
    x = torch.randn(4, 33, 48, dtype=torch.float64)
    cal = mpq.Calibrator(mpq.CalibratorOptions(accumulate_dtype=torch.float64))
    for chunk in x.split(1):
        cal.observe("blk.0.ffn_down", chunk.to(device))
    s = cal.stats("blk.0.ffn_down")
    rows = x.reshape(-1, 48).numpy()
    np.testing.assert_allclose(s.xtx.cpu().numpy(), rows.T @ rows, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(s.hessian().cpu().numpy(), 2 / rows.shape[0] * rows.T @ rows, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(s.mean_sq().cpu().numpy(), (rows ** 2).mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.mean_abs().cpu().numpy(), np.abs(rows).mean(0), rtol=1e-12)
    np.testing.assert_array_equal(s.max_abs.cpu().numpy(), np.abs(rows).max(0))
    assert (s.tokens, s.batches, s.in_features) == (132, 4, 48)


def test_float32_accumulation_is_accurate():
    torch.manual_seed(1)
    x = torch.randn(64, 128, 32)
    cal = mpq.Calibrator()
    for chunk in x:
        cal.observe("a", chunk)
    rows = x.reshape(-1, 32).double().numpy()
    ref = rows.T @ rows
    err = np.abs(cal.stats("a").xtx.double().numpy() - ref).max() / np.abs(ref).max()
    assert err < 1e-5


def test_concurrent_observe_from_threads():
    torch.manual_seed(2)
    x = torch.randn(16, 50, 8, dtype=torch.float64)
    cal = mpq.Calibrator(mpq.CalibratorOptions(accumulate_dtype=torch.float64))
    threads = [threading.Thread(target=lambda i=i: [cal.observe(f"l{j}", x[i]) for j in range(3)])
               for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = x.reshape(-1, 8).numpy()
    for j in range(3):
        s = cal.stats(f"l{j}")
        assert s.tokens == 800
        np.testing.assert_allclose(s.xtx.numpy(), rows.T @ rows, rtol=1e-12)


def test_save_load_round_trip(tmp_path):
    cal = mpq.Calibrator()
    cal.observe("blk.0.attn_q", torch.randn(7, 16))
    cal.observe("blk.0.ffn_down", torch.randn(7, 43))
    path = tmp_path / "stats.bin"
    cal.save(str(path))
    back = mpq.Calibrator.load(str(path))
    assert back.layers() == cal.layers()
    for name in cal.layers():
        a, b = cal.stats(name), back.stats(name)
        for field in ("xtx", "sum_sq", "sum_abs", "max_abs"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field
        assert (a.tokens, a.batches) == (b.tokens, b.batches)
    assert not (tmp_path / "stats.bin.tmp").exists()


def test_truncated_and_corrupted_files_never_crash(tmp_path):
    cal = mpq.Calibrator()
    cal.observe("blk.0.attn_q", torch.randn(5, 6))
    cal.observe("blk.0.attn_k", torch.randn(5, 6))
    good = tmp_path / "good.bin"
    cal.save(str(good))
    data = good.read_bytes()
    bad = tmp_path / "bad.bin"
    for cut in range(len(data)):
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError):
            mpq.Calibrator.load(str(bad))
    rng = np.random.default_rng(0)
    for _ in range(300):
        flipped = bytearray(data)
        for pos in rng.integers(0, len(data), size=3):
            flipped[pos] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(flipped))
        try:
            mpq.Calibrator.load(str(bad))  # a flip inside the numbers still loads
        except ValueError:
            pass


def test_without_xtx():
    cal = mpq.Calibrator(mpq.CalibratorOptions(collect_xtx=False))
    cal.observe("a", torch.randn(5, 6))
    assert cal.stats("a").xtx is None
    with pytest.raises(ValueError, match="collect_xtx"):
        cal.stats("a").hessian()


def test_bad_input(tmp_path):
    cal = mpq.Calibrator()
    cal.observe("blk.2.attn_k", torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"blk\.2\.attn_k.*9 features.*had 8"):
        cal.observe("blk.2.attn_k", torch.randn(3, 9))
    with pytest.raises(ValueError, match="NaN"):
        cal.observe("blk.2.attn_k", torch.full((3, 8), float("nan")))
    with pytest.raises(TypeError):
        cal.observe("blk.2.attn_k", torch.ones(3, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="never observed"):
        cal.stats("blk.9.attn_k")
    assert cal.stats("blk.2.attn_k").tokens == 3
    with pytest.raises(OSError):
        mpq.Calibrator.load(str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="not an mpq calibration file"):
        mpq.Calibrator.load(str(bad))
    torch.save({"kind": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an mpq calibration file"):
        mpq.Calibrator.load(str(tmp_path / "other.pt"))
    with pytest.raises(ValueError, match="accumulate_dtype"):
        mpq.CalibratorOptions(accumulate_dtype=torch.float16)


def test_observing_several_layers_at_once_equals_observing_each():
    torch.manual_seed(3)
    x = torch.randn(3, 20, 24, dtype=torch.float64)
    opts = mpq.CalibratorOptions(accumulate_dtype=torch.float64)
    together, apart = mpq.Calibrator(opts), mpq.Calibrator(opts)
    for chunk in x:
        together.observe(["q", "k", "v"], chunk)
        for name in ("q", "k", "v"):
            apart.observe(name, chunk)
    rows = x.reshape(-1, 24).numpy()
    assert together.layers() == ["q", "k", "v"]
    for name in ("q", "k", "v"):
        a, b = together.stats(name), apart.stats(name)
        np.testing.assert_allclose(a.xtx.numpy(), rows.T @ rows, rtol=1e-12)
        np.testing.assert_allclose(a.sum_abs.numpy(), np.abs(rows).sum(0), rtol=1e-12)
        np.testing.assert_array_equal(a.max_abs.numpy(), np.abs(rows).max(0))
        for field in ("xtx", "sum_sq", "sum_abs", "max_abs", "imatrix_sum_sq"):
            assert torch.equal(getattr(a, field), getattr(b, field)), (name, field)
        assert (a.tokens, a.batches, a.imatrix_tokens) == (b.tokens, b.batches, b.imatrix_tokens) == (60, 3, 60)
    # Each layer owns its sums: adding to one leaves the others alone.
    together.observe("q", x[0])
    assert together.stats("q").tokens == 80 and together.stats("k").tokens == 60
    with pytest.raises(ValueError, match="named twice"):
        together.observe(["q", "q"], x[0])
    with pytest.raises(ValueError, match="no layer names"):
        together.observe([], x[0])


def test_without_abs_statistics(tmp_path):
    cal = mpq.Calibrator(mpq.CalibratorOptions(collect_abs=False))
    x = torch.randn(40, 6)
    cal.observe("a", x)
    s = cal.stats("a")
    assert s.sum_abs is None and s.max_abs is None
    np.testing.assert_allclose(s.sum_sq.numpy(), (x.double() ** 2).sum(0).numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match="collect_abs"):
        s.mean_abs()
    with pytest.raises(ValueError, match="collect_abs"):
        mpq.make_expert("smoothquant").input_scale([mpq.ExpertLayer("a", torch.randn(3, 6), "int8")], s)
    path = tmp_path / "stats.bin"
    cal.save(str(path))
    back = mpq.Calibrator.load(str(path))
    assert not back.options.collect_abs and back.stats("a").sum_abs is None
    assert torch.equal(back.stats("a").xtx, s.xtx) and torch.equal(back.stats("a").sum_sq, s.sum_sq)


def test_calibrate_matches_independent_per_layer_sums(stories):
    """mpq.models.calibrate observes q/k/v and gate/up together and takes the head's input from
    the decoder alone (the head never runs); every layer's sums must still be those of its own
    input, here captured by plain hooks on a full forward pass and summed in float64."""
    model = stories.model
    layers = dict(mpq.models.linear_layers(model))
    layers["output"] = model.get_output_embeddings()
    torch.manual_seed(4)
    batches = [torch.randint(3, 512, (2, 64)) for _ in range(3)]
    inputs = {name: [] for name in layers}
    head_calls = []
    handles = [m.register_forward_pre_hook(lambda mod, a, n=n: inputs[n].append(a[0].detach().double()))
               for n, m in layers.items()]
    try:
        with torch.no_grad():
            for ids in batches:
                model(ids)
    finally:
        for h in handles:
            h.remove()
    probe = layers["output"].register_forward_pre_hook(lambda mod, a: head_calls.append(1))
    try:
        cal = mpq.models.calibrate(model, batches, layers=layers, progress=False)
    finally:
        probe.remove()
    assert not head_calls, "calibration ran the output head"
    assert set(cal.layers()) == set(layers)
    for name, xs in inputs.items():
        rows = torch.cat([x.reshape(-1, x.size(-1)) for x in xs]).numpy()
        s = cal.stats(name)
        assert (s.tokens, s.batches) == (rows.shape[0], 3), name
        scale = np.abs(rows.T @ rows).max()
        np.testing.assert_allclose(s.xtx.double().numpy(), rows.T @ rows, atol=1e-5 * scale, err_msg=name)
        np.testing.assert_allclose(s.sum_sq.double().numpy(), (rows ** 2).sum(0), rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(s.sum_abs.double().numpy(), np.abs(rows).sum(0), rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(s.max_abs.double().numpy(), np.abs(rows).max(0), rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [768, 1000, 1536])
def test_wide_inputs_xtx_matches_float64_reference(dtype, width):
    """Inputs of 768 columns and more take the blocked symmetric product on the CPU: every
    block, mirrored ones included, must match the float64 reference."""
    torch.manual_seed(width)
    x = torch.randn(2, 90, width, dtype=dtype) + torch.linspace(-1, 1, width, dtype=dtype)
    cal = mpq.Calibrator(mpq.CalibratorOptions(accumulate_dtype=dtype))
    for chunk in x:
        cal.observe("blk.0.ffn_down", chunk)
    rows = x.reshape(-1, width).double().numpy()
    ref = rows.T @ rows
    got = cal.stats("blk.0.ffn_down").xtx
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert np.abs(got.double().numpy() - ref).max() <= tol * np.abs(ref).max()
