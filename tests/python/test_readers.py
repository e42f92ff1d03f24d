"""Every file reader of mpq against hostile input, through the Python API: each case a fuzzing
session found is reproduced here with a file built byte by byte (independently of mpq's writers),
and must be a clear error: the right Python type, a message that names the file and the key or
tensor, never a crash, a UnicodeDecodeError or a huge allocation. The fuzz targets of tests/fuzz
run every reader under ASan/UBSan at the end (docs/FUZZING.md)."""
import gc
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap

import pytest
import torch

import mpq
from mpq import gguf

VT = gguf.ValueType
F32, U8_ARRAY = 0, 0


# ------------------------------------------------------------------ a GGUF file, byte by byte

def gguf_string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def gguf_file(kvs=(), tensors=(), data=b"", alignment=32) -> bytes:
    """kvs: (key bytes, type id, encoded value); tensors: (name bytes, dims, ggml type, offset)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    for key, t, value in kvs:
        out += gguf_string(key) + struct.pack("<I", t) + value
    for name, dims, t, offset in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", t, offset)
    out += b"\0" * (-len(out) % alignment)
    return out + data


def u32(key, v):
    return (key, 4, struct.pack("<I", v))


def strings(key, values):
    return (key, 9, struct.pack("<IQ", 8, len(values)) + b"".join(gguf_string(v) for v in values))


def imatrix_gguf(in_sum2=(1.0, 2.0), count=4.0, name=b"blk.0.attn_q.weight", datasets=(b"wiki",),
                 chunk_size=512):
    data = struct.pack(f"<{len(in_sum2)}f", *in_sum2) + b"\0" * (-4 * len(in_sum2) % 32) + struct.pack("<f", count)
    counts_at = 4 * len(in_sum2) + (-4 * len(in_sum2) % 32)
    return gguf_file(
        [("general.type".encode(), 8, gguf_string(b"imatrix")), strings(b"imatrix.datasets", list(datasets)),
         u32(b"imatrix.chunk_count", 1), u32(b"imatrix.chunk_size", chunk_size)],
        [(name + b".in_sum2", [len(in_sum2), 1], F32, 0), (name + b".counts", [1, 1], F32, counts_at)], data)


def imatrix_dat(name=b"blk.0.attn_q.weight", values=(1.0, 2.0), ncall=2, dataset=b"wiki"):
    out = struct.pack("<i", 1) + struct.pack("<i", len(name)) + name + struct.pack("<ii", ncall, len(values))
    out += struct.pack(f"<{len(values)}f", *values)
    return out + struct.pack("<ii", 1, len(dataset)) + dataset


def calibrator_file(name=b"blk.0.attn_q", inf=2, sums=None, tokens=4):
    """Calibrator.save's layout without XtX (collect_xtx = 0), float32."""
    sums = sums if sums is not None else [1.0] * (4 * inf)
    out = b"MPQCAL" + struct.pack("<IBBQ", 1, 0, 0, 1)
    out += gguf_string(name) + struct.pack("<Qqqq", inf, tokens, 1, tokens)
    return out + struct.pack(f"<{len(sums)}f", *sums)


def table_doc(bytes_=100, name="blk.0.w", proxy=1.5):
    return {"version": 1, "fixed_bytes": 0, "fixed_weights": 0, "options": ["q4_0", "q8_0"],
            "tensors": [{"name": name, "weights": 256, "group": "", "bytes": [bytes_, 300],
                         "proxy": [proxy, 0.5], "kl": [None, None]}]}


def raises(exc, path_or_text, *fragments):
    """The error's message contains every fragment (a file name, a key, the rule)."""
    class Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *a):
            handled = self.ctx.__exit__(*a)
            msg = str(self.info.value)
            for f in (str(path_or_text), *fragments):
                assert f in msg, f"{f!r} not in {msg!r}"
            return handled
    return Check()


# ------------------------------------------------------------------ 1. size arithmetic

def test_gguf_tensor_whose_byte_count_overflows(tmp_path):
    p = tmp_path / "huge.gguf"
    p.write_bytes(gguf_file(tensors=[(b"w", [2**62 + 64], F32, 0)], data=b"\0" * 256))
    with raises(ValueError, p, "tensor w", "overflows"):
        gguf.Reader(str(p))
    # The same tensor as an imatrix: ValueError naming the file, not std::vector's length_error.
    p.write_bytes(gguf_file([("general.type".encode(), 8, gguf_string(b"imatrix"))],
                            [(b"blk.0.attn_q.weight.in_sum2", [2**62 + 64, 1], F32, 0),
                             (b"blk.0.attn_q.weight.counts", [1, 1], F32, 0)], b"\0" * 256))
    with raises(ValueError, p, "blk.0.attn_q.weight.in_sum2", "overflows"):
        mpq.Imatrix.load(str(p))
    with pytest.raises(ValueError, match="overflows"):
        gguf.tensor_nbytes(0, [2**62 + 64])


def test_candidate_bytes_of_int64_max(tmp_path):
    p = tmp_path / "table.json"
    p.write_text(json.dumps(table_doc(bytes_=2**63 - 1)))
    with raises(ValueError, p, "blk.0.w", "q4_0", "2^53"):
        mpq.CandidateTable.load(str(p))
    t = mpq.CandidateTable(["a"])
    t.add_tensor("x", 10)
    with pytest.raises(ValueError, match="2\\^53"):
        t.set(0, "a", bytes=2**62, proxy=1.0)


def small_search(tmp_path):
    t = mpq.CandidateTable(["a", "b"])
    for i in range(4):
        t.add_tensor(f"blk.{i}.w", 100)
        t.set(i, "a", bytes=10, proxy=2.0)
        t.set(i, "b", bytes=20, proxy=1.0)
    ckpt = tmp_path / "ga.json"
    opts = mpq.GaOptions(population=6, generations=2, seed=1, checkpoint=str(ckpt), resume=True)
    mpq.genetic_search(t, mpq.Budget("bytes", 60), opts)
    return t, opts, ckpt


@pytest.mark.parametrize("value", [2**32, -1, 2**63 - 1, 1.5, "1e30"])
def test_checkpoint_genome_entry_out_of_range(tmp_path, value):
    t, opts, ckpt = small_search(tmp_path)
    doc = json.loads(ckpt.read_text())
    doc["population"][0]["genome"][0] = value
    text = json.dumps(doc).replace('"1e30"', "1e30")
    ckpt.write_text(text)
    with raises(ValueError, ckpt):
        mpq.genetic_search(t, mpq.Budget("bytes", 60), opts)


def test_imatrix_count_of_1e30(tmp_path):
    p = tmp_path / "imatrix.gguf"
    p.write_bytes(imatrix_gguf(count=1e30))
    with raises(ValueError, p, "blk.0.attn_q.weight.counts", "whole number"):
        mpq.Imatrix.load(str(p))
    for bad in (float("nan"), float("inf"), -1.0, 2.5):
        p.write_bytes(imatrix_gguf(count=bad))
        with raises(ValueError, p, "blk.0.attn_q.weight.counts"):
            mpq.Imatrix.load(str(p))
    p.write_bytes(imatrix_gguf(count=4.0))
    assert mpq.Imatrix.load(str(p)).importance("blk.0.attn_q.weight").tolist() == [0.25, 0.5]


def test_imatrix_chunk_keys_out_of_range(tmp_path):
    p = tmp_path / "imatrix.gguf"
    p.write_bytes(imatrix_gguf(chunk_size=2**31))
    with raises(ValueError, p, "imatrix.chunk_size", "outside"):
        mpq.Imatrix.load(str(p))


# ------------------------------------------------------------------ 2. memory

def peak_rss_growth(code: str) -> int:
    """Bytes the peak RSS of a fresh interpreter grows by while running `code` (after import mpq)."""
    script = "\n".join([
        "import mpq",
        "def hwm():",
        "    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM'))",
        "before = hwm()",
        code.strip("\n"),
        "print(hwm() - before)"])
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return int(r.stdout.split()[-1])


def test_large_gguf_array_is_stored_flat(tmp_path):
    """64 MiB of uint8 in one array took 2.8 GB as variants; flat it takes about its size."""
    n = 64 << 20
    p = tmp_path / "array.gguf"
    with open(p, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string(b"big") + struct.pack("<IIQ", 9, 0, n))
        f.write(bytes(range(256)) * (n // 256))
    grew = peak_rss_growth(f"r = mpq.gguf.Reader({str(p)!r}); assert r.value_type('big') == mpq.gguf.ValueType.ARRAY")
    assert grew < 2 * n + (32 << 20), grew
    # A count larger than the bytes left is rejected before anything is allocated.
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string(b"big") + struct.pack("<IIQ", 9, 6, 2**40))
    with raises(ValueError, p, "key 'big'", "does not fit"):
        gguf.Reader(str(p))


def test_gguf_arrays_keep_python_values(tmp_path):
    p = tmp_path / "a.gguf"
    w = gguf.Writer(str(p))
    w.set("u8", [1, 2, 255], VT.ARRAY, VT.UINT8)
    w.set("b", [True, False], VT.ARRAY, VT.BOOL)
    w.set("s", ["x", "é"], VT.ARRAY, VT.STRING)
    w.set("f", [0.5, -1.0], VT.ARRAY, VT.FLOAT64)
    w.finish()
    md = gguf.Reader(str(p)).metadata()
    assert md["u8"] == [1, 2, 255] and md["b"] == [True, False] and md["s"] == ["x", "é"]
    assert md["f"] == [0.5, -1.0] and all(type(x) is bool for x in md["b"])


def test_json_amplification_is_bounded(tmp_path):
    """[[],[],...]: each 3 bytes became a ~170-byte tree node (57x); the reader now stops at its
    memory budget (8x the file + 64 MiB) with a ValueError."""
    p = tmp_path / "table.json"
    p.write_text("[" + ",".join(["[]"] * (4 << 20)) + "]")
    with raises(ValueError, p, "memory"):
        mpq.CandidateTable.load(str(p))
    grew = peak_rss_growth(f"""
try:
    mpq.CandidateTable.load({str(p)!r})
except ValueError:
    pass""")
    size = p.stat().st_size
    assert grew < 12 * size + (80 << 20), (grew, size)  # the budget, plus the file's two copies


# ------------------------------------------------------------------ 3. UTF-8

BAD = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf"]


@pytest.mark.parametrize("bad", BAD)
def test_gguf_names_must_be_utf8(tmp_path, bad):
    p = tmp_path / "bad.gguf"
    p.write_bytes(gguf_file([(b"general." + bad, 4, struct.pack("<I", 1))]))
    with raises(ValueError, p, "key", "not valid UTF-8", "\\x"):
        gguf.Reader(str(p))
    p.write_bytes(gguf_file(tensors=[(b"blk." + bad, [32], F32, 0)], data=b"\0" * 128))
    with raises(ValueError, p, "tensor name", "not valid UTF-8", "\\x"):
        gguf.Reader(str(p))
    # Token strings are values, not names: any bytes, recoverable through surrogateescape.
    p.write_bytes(gguf_file([strings(b"tokenizer.ggml.tokens", [b"ok", bad])]))
    assert gguf.Reader(str(p)).get("tokenizer.ggml.tokens")[1].encode("utf-8", "surrogateescape") == bad


def test_imatrix_and_calibrator_names_must_be_utf8(tmp_path):
    p = tmp_path / "imatrix.dat"
    p.write_bytes(imatrix_dat(name=b"blk.0.\xff"))
    with raises(ValueError, p, "tensor name", "\\xff"):
        mpq.Imatrix.load(str(p))
    p.write_bytes(imatrix_dat(dataset=b"wiki\xc3"))
    with raises(ValueError, p, "dataset name", "\\xc3"):
        mpq.Imatrix.load(str(p))
    p = tmp_path / "imatrix.gguf"
    p.write_bytes(imatrix_gguf(datasets=(b"wi\xe9ki",)))
    with raises(ValueError, p, "dataset name", "\\xe9"):
        mpq.Imatrix.load(str(p))
    p = tmp_path / "cal.bin"
    p.write_bytes(calibrator_file(name=b"blk.\xed\xa0\x80"))
    with raises(ValueError, p, "layer name", "\\xed"):
        mpq.Calibrator.load(str(p))


def test_json_names_must_be_utf8(tmp_path):
    p = tmp_path / "table.json"
    p.write_bytes(json.dumps(table_doc()).encode().replace(b"blk.0.w", b"blk.\xff.w"))
    with raises(ValueError, p, "not valid UTF-8", "\\xff"):
        mpq.CandidateTable.load(str(p))


@pytest.mark.parametrize("prefix", [b"\xef\xbb\xbf", "é".encode(), b"\xc3", b"\xe2\x82"])
def test_errors_at_non_ascii_bytes_stay_value_errors(tmp_path, prefix):
    """A UTF-8 BOM, an é, or half of one at the start of any file: a ValueError naming the file."""
    seeds = {"gguf": gguf_file(), "json": json.dumps(table_doc()).encode(),
             "dat": imatrix_dat(), "cal": calibrator_file()}
    readers = {"gguf": gguf.Reader, "json": mpq.CandidateTable.load, "dat": mpq.Imatrix.load,
               "cal": mpq.Calibrator.load}
    for kind, data in seeds.items():
        p = tmp_path / f"f.{kind}"
        p.write_bytes(prefix + data)
        with raises(ValueError, p):
            readers[kind](str(p))
    with pytest.raises(ValueError, match="unexpected character 'é'"):
        mpq.Plan.from_json("é")
    with pytest.raises(ValueError, match="unexpected character '\ufeff'"):
        mpq.Plan.from_json("\ufeff{}")


# ------------------------------------------------------------------ 4. writer padding

@pytest.mark.parametrize("alignment", [4096, 65536])
def test_writer_padding_is_zero_for_large_alignments(tmp_path, alignment):
    p = tmp_path / "aligned.gguf"
    w = gguf.Writer(str(p), alignment)
    w.set("general.architecture", "llama", VT.STRING)
    w.add_tensor("a", [3], 0)
    w.add_tensor("b", [5], 0)
    w.write_tensor("a", torch.full((3,), 7.0))
    w.write_tensor("b", torch.full((5,), 9.0))
    w.finish()
    data = p.read_bytes()
    r = gguf.Reader(str(p))
    start = r.data_offset
    header_end = len(gguf_file([("general.alignment".encode(), 4, struct.pack("<I", alignment)),
                                ("general.architecture".encode(), 8, gguf_string(b"llama"))],
                               [(b"a", [3], 0, 0), (b"b", [5], 0, alignment)], alignment=1))
    assert start == alignment and set(data[header_end:start]) == {0}
    assert set(data[start + 12:start + alignment]) == {0}
    assert set(data[start + alignment + 20:]) == {0} and len(data) == start + 2 * alignment
    assert r.read("b").view(torch.float32).tolist() == [9.0] * 5


# ------------------------------------------------------------------ 5. temporary files

def test_temporary_file_is_removed_on_every_error_path(tmp_path):
    p = tmp_path / "out.gguf"
    tmp = tmp_path / "out.gguf.tmp"
    # An exception inside `with`: the writer aborts.
    with pytest.raises(RuntimeError, match="boom"):
        with gguf.Writer(str(p)) as w:
            w.add_tensor("a", [4], 0)
            w.write_tensor("a", torch.zeros(4))
            raise RuntimeError("boom")
    assert not tmp.exists() and not p.exists()
    # A writer dropped without finish().
    w = gguf.Writer(str(p))
    w.add_tensor("a", [4], 0)
    w.write_tensor("a", torch.zeros(4))
    assert tmp.exists()
    del w
    gc.collect()
    assert not tmp.exists() and not p.exists()
    # abort(), then any use is an error.
    w = gguf.Writer(str(p))
    w.abort()
    assert not tmp.exists()
    with pytest.raises(ValueError, match="abort"):
        w.finish()
    # A second live writer to the same path is refused; the first is unharmed.
    first = gguf.Writer(str(p))
    with raises(OSError, tmp, "another writer"):
        gguf.Writer(str(p))
    first.finish()
    assert p.exists() and not tmp.exists()


def test_killed_writer_leaves_a_stale_file_the_next_one_replaces(tmp_path):
    p = tmp_path / "out.gguf"
    tmp = tmp_path / "out.gguf.tmp"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from mpq import gguf
        w = gguf.Writer({str(p)!r})
        w.add_tensor("a", [1 << 20], 0)
        w.add_tensor("b", [4], 0)
        w.write_tensor("a", torch.ones(1 << 20))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert r.returncode == -signal.SIGKILL
    assert tmp.stat().st_size > 4 << 20 and not p.exists()  # what a kill leaves
    w = gguf.Writer(str(p))
    w.add_tensor("b", [4], 0)
    w.write_tensor("b", torch.zeros(4))
    w.finish()
    assert not tmp.exists() and [t.name for t in gguf.Reader(str(p)).tensors] == ["b"]


# ------------------------------------------------------------------ 6. finite numbers, counts

def test_non_finite_statistics_are_rejected(tmp_path):
    p = tmp_path / "imatrix.gguf"
    p.write_bytes(imatrix_gguf(in_sum2=(1.0, float("nan"))))
    with raises(ValueError, p, "blk.0.attn_q.weight.in_sum2", "finite"):
        mpq.Imatrix.load(str(p))
    p = tmp_path / "imatrix.dat"
    p.write_bytes(imatrix_dat(values=(float("inf"), 1.0)))
    with raises(ValueError, p, "blk.0.attn_q.weight", "finite"):
        mpq.Imatrix.load(str(p))
    p = tmp_path / "cal.bin"
    p.write_bytes(calibrator_file(sums=[1.0, float("nan")] + [1.0] * 6))
    with raises(ValueError, p, "blk.0.attn_q", "sum_sq", "NaN"):
        mpq.Calibrator.load(str(p))
    p.write_bytes(calibrator_file(inf=2**40, sums=[1.0] * 8))
    with raises(ValueError, p, "blk.0.attn_q", "does not fit"):
        mpq.Calibrator.load(str(p))
    t = tmp_path / "table.json"
    t.write_text(json.dumps(table_doc()).replace("1.5", "1e400"))
    with raises(ValueError, t, "finite"):
        mpq.CandidateTable.load(str(t))


def test_checkpoint_fitness_and_counts(tmp_path):
    t, opts, ckpt = small_search(tmp_path)
    good = json.loads(ckpt.read_text())
    for edit in ({"generation": 2**31}, {"evaluations": -5}):
        ckpt.write_text(json.dumps({**good, **edit}))
        with raises(ValueError, ckpt, "outside"):
            mpq.genetic_search(t, mpq.Budget("bytes", 60), opts)
    doc = json.loads(json.dumps(good))
    doc["population"][0]["fitness"] = None
    ckpt.write_text(json.dumps(doc))
    with raises(ValueError, ckpt, "finite"):
        mpq.genetic_search(t, mpq.Budget("bytes", 60), opts)


# ------------------------------------------------------------------ 7. fp16 range, one rule

@pytest.mark.parametrize("fmt,value", [("q4_0", 1e6), ("f16", 1e5), ("q8_0", 1e30), ("q4_k", 1e30),
                                       ("iq4_nl", 1e30), ("q4_1", 1e6), ("q6_k", 1e30), ("q2_k", 1e30)])
def test_quantize_ggml_rejects_weights_beyond_fp16(fmt, value):
    w = torch.randn(2, 256)
    w[1, 7] = value
    with pytest.raises(ValueError, match=f"blk.3.ffn_up.weight: its values exceed the fp16 range .*{fmt}"):
        mpq.quantize_ggml(w, fmt, name="blk.3.ffn_up.weight")
    with pytest.raises(ValueError, match="blk.3.ffn_up.weight: its values exceed the fp16 range"):
        mpq.quantize_rtn(torch.randn(2, 256) * 1e30, "int4_g32", name="blk.3.ffn_up.weight")
    # Within the range, nothing changes: the largest fp16 and the scales it implies are fine.
    w[1, 7] = 65504.0
    assert torch.isfinite(mpq.dequantize_ggml(mpq.quantize_ggml(w, fmt), fmt, 256)).all()


# ------------------------------------------------------------------ 8. the plan's JSON and errors

def test_plan_errors_are_value_and_key_errors():
    plan = mpq.Plan()
    plan.set("a.weight", mpq.TensorChoice("q4_k"))
    with pytest.raises(KeyError, match="plan has no tensor 'nope'"):
        plan.get("nope")
    for bad, fragment in [('{"version": 1, "version": 1, "tensors": {}}', "duplicate key"),
                          ('{"version": 1, "tensors": {}, "extra": 0}', "unknown key \"extra\""),
                          ('{"version": 1, "tensors": {"a": {"format": "q4_k", "bits": 4}}}', "unknown key \"bits\""),
                          ('{"version": 4294967297, "tensors": {}}', "version"),
                          ('{"version": 1, "tensors": []}', "expected an object"),
                          ('{"version": 1, "tensors": {"a": {}}}', "no \"format\"")]:
        with pytest.raises(ValueError, match=fragment):
            mpq.Plan.from_json(bad)
    assert mpq.Plan.from_json(plan.to_json()).formats() == {"a.weight": "q4_k"}


# ------------------------------------------------------------------ the fuzz targets, from real files

# Cases per target in CI: about two minutes for all seven on two cores (docs/FUZZING.md has the
# longer runs; MPQ_FUZZ_CASES overrides).
CASES = {"gguf": 1500, "imatrix_gguf": 1500, "imatrix_dat": 1500, "calibrator": 600,
         "candidates": 1500, "plan": 1500, "checkpoint": 1000}


@pytest.fixture(scope="module")
def fuzz_seeds(tmp_path_factory, stories):
    """Seeds from real data: stories260K exported by mpq, its calibration statistics and imatrix,
    llama.cpp's Q4_K_M mix of it, a candidate table of its weights and a search checkpoint."""
    from mpq import data, export, model as mm

    d = tmp_path_factory.mktemp("seeds")
    seeds = {"gguf": d / "model.gguf", "imatrix_gguf": d / "imatrix.gguf", "imatrix_dat": d / "imatrix.dat",
             "calibrator": d / "calibrator.bin", "plan": d / "plan.json", "candidates": d / "table.json",
             "checkpoint": d / "checkpoint.json"}
    export.export_gguf(stories, seeds["gguf"], {"token_embd.weight": "q8_0", "blk.0.attn_q.weight": "q4_0"},
                       progress=False)
    ids = torch.tensor(stories.tokenizer.encode("Once upon a time there was a little girl who liked to play. " * 8))
    cal = mm.calibrate(stories.model, data.windows(ids, 64, 2).split(1), progress=False)
    cal.save(str(seeds["calibrator"]))
    im = cal.imatrix(64, ["tinystories"])
    im.save(str(seeds["imatrix_gguf"]))
    im.save_legacy(str(seeds["imatrix_dat"]))
    spec = export.model_spec(stories.model)
    seeds["plan"].write_text(mpq.llama_cpp_mix("Q4_K_M", spec).to_json())
    # Per 2-D float weight of the exported model: q8_0 / q4_0 bytes and their measured squared error.
    reader = gguf.Reader(str(seeds["gguf"]))
    table = mpq.CandidateTable(["q4_0", "q8_0", "stored"])
    for info in reader.tensors:
        if info.type not in (0, 1) or len(info.shape) != 2 or info.shape[0] % 32:
            continue
        dtype = torch.float32 if info.type == 0 else torch.float16
        w = reader.read(info.name).view(dtype).float().reshape(info.shape[1], info.shape[0])
        i = table.add_tensor(info.name, w.numel(), group="qkv" if "attn_" in info.name and ".0." in info.name else "")
        for fmt in ("q4_0", "q8_0"):
            q = mpq.dequantize_ggml(mpq.quantize_ggml(w, fmt), fmt, w.shape[1])
            table.set(i, fmt, bytes=gguf.tensor_nbytes({"q4_0": 2, "q8_0": 8}[fmt], info.shape),
                      proxy=float((q - w).square().sum()))
        table.set(i, "stored", bytes=info.nbytes, proxy=0.0)
    table.save(str(seeds["candidates"]))
    genes = table.genes()
    budget = mpq.Budget("bpw", 6.0)
    mpq.genetic_search(table, budget, mpq.GaOptions(population=8, generations=3, seed=3,
                                                    checkpoint=str(seeds["checkpoint"])))
    assert len(genes) > 3 and all(p.stat().st_size > 0 for p in seeds.values())
    return seeds


@pytest.fixture(scope="module")
def fuzz_build():
    from conftest import REPO
    from test_cpp import cmake_build

    build = REPO / "build" / "fuzz"
    cmake_build(REPO / "tests" / "fuzz", build)
    return build


def run_fuzz(build, target, seed, cases, workdir, *extra):
    binary = "reader_fuzz"
    kind = {"imatrix_gguf": "imatrix", "imatrix_dat": "imatrix"}.get(target, target)
    cmd = [str(build / binary), kind, str(seed), str(cases), str(workdir), *map(str, extra)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env={"ASAN_OPTIONS": "detect_leaks=0:allocator_may_return_null=0:hard_rss_limit_mb=6000",
                            "UBSAN_OPTIONS": "print_stacktrace=1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-6000:]}"
    words = r.stdout.split()
    return dict(zip(words[::2], map(int, words[1::2])))


@pytest.mark.parametrize("target", list(CASES))
def test_reader_fuzz_target(fuzz_build, fuzz_seeds, tmp_path, target):
    """Mutants of a real file (truncations, bit flips, large lengths/counts/values, bytes that are not
    UTF-8 in names) through the reader built with ASan+UBSan: every one loads or throws; no case
    allocates more than 16x its size + 128 MiB or runs longer than 20 s."""
    cases = int(os.environ.get("MPQ_FUZZ_CASES", CASES[target]))
    extra = [fuzz_seeds["candidates"]] if target == "checkpoint" else []
    counts = run_fuzz(fuzz_build, target, fuzz_seeds[target], cases, tmp_path, *extra)
    print(target, counts)
    assert counts["iterations"] == cases and counts["over_budget"] == 0, counts
    # The mutants reach the readers' checks, and some are still valid files.
    assert counts["rejected"] > cases // 4 and counts["loaded"] > 0, counts
