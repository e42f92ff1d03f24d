"""mpq's GGUF reader and writer, checked against the gguf package (llama.cpp's own Python
implementation of the format) in both directions, and fuzzed."""
import numpy as np
import pytest
import torch

import mpq
from mpq import gguf

VT = gguf.ValueType


def write_sample(path, alignment=32):
    w = gguf.Writer(str(path), alignment)
    w.set("general.architecture", "llama", VT.STRING)
    w.set("general.name", "tiny ünïcödé", VT.STRING)
    w.set("llama.block_count", 2, VT.UINT32)
    w.set("llama.rope.freq_base", 10000.0, VT.FLOAT32)
    w.set("test.i8", -5, VT.INT8)
    w.set("test.u64", 2**40, VT.UINT64)
    w.set("test.f64", 0.1, VT.FLOAT64)
    w.set("test.flag", True, VT.BOOL)
    w.set("tokenizer.ggml.tokens", ["<s>", "a", "b\x00c", "▁the"], VT.ARRAY, VT.STRING)
    w.set("tokenizer.ggml.scores", [0.0, -1.5, -2.0, 3.25], VT.ARRAY, VT.FLOAT32)
    w.set("tokenizer.ggml.token_type", [3, 1, 1, 1], VT.ARRAY, VT.INT32)
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    b = torch.randn(2, 64).to(torch.float16)
    q = mpq.quantize_ggml(torch.randn(4, 256), "q4_k")
    w.add_tensor("a", [4, 3], 0)
    w.add_tensor("blk.0.b", [64, 2], 1)
    w.add_tensor("blk.0.q", [256, 4], 12)
    w.write_tensor("a", a)
    w.write_tensor("blk.0.b", b)
    w.write_tensor("blk.0.q", q)
    w.finish()
    return a, b, q


def test_gguf_package_reads_what_mpq_writes(tmp_path):
    from gguf import GGUFReader

    path = tmp_path / "m.gguf"
    a, b, q = write_sample(path)
    r = GGUFReader(str(path))
    fields = {f.name: f for f in r.fields.values()}
    assert fields["general.architecture"].contents() == "llama"
    assert fields["general.name"].contents() == "tiny ünïcödé"
    assert fields["llama.block_count"].contents() == 2
    assert fields["test.u64"].contents() == 2**40
    assert fields["test.flag"].contents() is True
    assert fields["tokenizer.ggml.tokens"].contents() == ["<s>", "a", "b\x00c", "▁the"]
    assert fields["tokenizer.ggml.scores"].contents() == [0.0, -1.5, -2.0, 3.25]
    tensors = {t.name: t for t in r.tensors}
    np.testing.assert_array_equal(np.asarray(tensors["a"].data).reshape(3, 4), a.numpy())
    np.testing.assert_array_equal(np.asarray(tensors["blk.0.b"].data).reshape(2, 64), b.numpy())
    assert list(tensors["blk.0.q"].shape) == [256, 4] and int(tensors["blk.0.q"].tensor_type) == 12
    np.testing.assert_array_equal(np.asarray(tensors["blk.0.q"].data).reshape(-1), q.numpy().reshape(-1))


def test_mpq_reads_what_the_gguf_package_writes(tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "p.gguf"
    w = GGUFWriter(str(path), "qwen3")
    w.add_uint32("qwen3.block_count", 28)
    w.add_float32("qwen3.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_array("tokenizer.ggml.merges", ["a b", "c d"])
    w.add_bool("x.flag", False)
    t = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    w.add_tensor("output_norm.weight", t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = gguf.Reader(str(path))
    assert r.version == 3
    assert r.get("general.architecture") == "qwen3"
    assert r.get("qwen3.block_count") == 28 and r.value_type("qwen3.block_count") == VT.UINT32
    assert r.get("qwen3.attention.layer_norm_rms_epsilon") == pytest.approx(1e-6)
    assert r.get("tokenizer.ggml.merges") == ["a b", "c d"]
    assert r.get("x.flag") is False
    info = r.tensor("output_norm.weight")
    assert info.shape == [7, 5] and info.type == 0
    np.testing.assert_array_equal(r.read("output_norm.weight").view(torch.float32).numpy().reshape(5, 7), t)


def test_round_trip_and_alignment(tmp_path):
    path = tmp_path / "m.gguf"
    a, b, q = write_sample(path, alignment=64)
    r = gguf.Reader(str(path))
    assert r.alignment == 64 and r.data_offset % 64 == 0
    assert all(t.offset % 64 == 0 for t in r.tensors)
    assert r.get("general.alignment") == 64
    assert r.get("tokenizer.ggml.tokens") == ["<s>", "a", "b\x00c", "▁the"]
    assert r.get("test.i8") == -5 and r.get("test.f64") == 0.1
    assert torch.equal(r.read("blk.0.q").reshape(4, -1), q)
    assert torch.equal(r.read("a").view(torch.float32).reshape(3, 4), a)


def test_writer_is_atomic_and_checks_its_input(tmp_path):
    path = tmp_path / "x.gguf"
    w = gguf.Writer(str(path))
    w.add_tensor("t", [256, 2], 12)
    with pytest.raises(ValueError, match="needs 288 bytes"):
        w.write_tensor("t", torch.zeros(10, dtype=torch.uint8))
    with pytest.raises(ValueError, match="not written"):
        w.finish()
    del w
    assert not path.exists() and not (tmp_path / "x.gguf.tmp").exists()
    w = gguf.Writer(str(path))
    w.set("k", 1, VT.UINT32)
    with pytest.raises(ValueError, match="set twice"):
        w.set("k", 2, VT.UINT32)
    with pytest.raises(ValueError, match="does not fit"):
        w.set("k2", 300, VT.UINT8)
    with pytest.raises(ValueError, match="multiple of q4_k"):
        w.add_tensor("bad", [100, 2], 12)
    with pytest.raises(ValueError, match="not supported"):
        w.add_tensor("bad", [100, 2], 999)
    with pytest.raises(ValueError, match="1..63 characters"):
        w.add_tensor("x" * 64, [4], 0)


def test_fuzzed_files_never_crash(tmp_path):
    """Thousands of truncations and bit flips of a real file: each is read cleanly or rejected with
    ValueError; never a crash, never another exception type."""
    good = tmp_path / "good.gguf"
    write_sample(good)
    data = good.read_bytes()
    bad = tmp_path / "bad.gguf"
    rng = np.random.default_rng(0)
    outcomes = {"ok": 0, "rejected": 0}
    cuts = sorted(set(rng.integers(0, len(data), 400).tolist()) | set(range(0, 200)))
    for cut in cuts:
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError):
            r = gguf.Reader(str(bad))
            for t in r.tensors:  # a truncated data section must be caught at open
                r.read(t.name)
        outcomes["rejected"] += 1
    header_end = gguf.Reader(str(good)).data_offset
    for _ in range(2000):
        flipped = bytearray(data)
        for pos in rng.integers(0, header_end, size=int(rng.integers(1, 4))):
            flipped[pos] ^= 1 << int(rng.integers(0, 8))
        bad.write_bytes(bytes(flipped))
        try:
            r = gguf.Reader(str(bad))
            r.metadata()
            for t in r.tensors:
                r.read(t.name)
            outcomes["ok"] += 1
        except ValueError:
            outcomes["rejected"] += 1
    assert outcomes["rejected"] > 0 and outcomes["ok"] > 0, outcomes


def test_reader_under_address_sanitizer(tmp_path):
    """tests/fuzz: 6000 mutants of a real model file opened by the reader compiled with ASan and
    UBSan; any out-of-bounds access, overflow or leak-free crash fails the run."""
    import subprocess

    from conftest import REPO
    from test_cpp import cmake_build

    from mpq import export, model as mm
    import mpq.data

    seed = tmp_path / "seed.gguf"
    lm = mm.load_model(mpq.data.stories260k_path(), tokenizer=mpq.data.default_tokenizer_path())
    export.export_gguf(lm, seed, {"token_embd.weight": "q8_0", "blk.0.attn_q.weight": "q4_0"}, progress=False)
    build = REPO / "build" / "fuzz"
    cmake_build(REPO / "tests" / "fuzz", build)
    r = subprocess.run([str(build / "gguf_fuzz"), str(seed), "6000", str(tmp_path)], capture_output=True,
                       text=True, timeout=1200, env={"ASAN_OPTIONS": "detect_leaks=0", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    counts = dict(zip(r.stdout.split()[::2], map(int, r.stdout.split()[1::2])))
    assert counts["iterations"] == 6000 and counts["rejected"] > 1000 and counts["loaded"] > 100, counts
