"""The main job, end to end, as a user runs it."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest


def run_mpq(*args, cwd):
    import mpq.data

    env = {**os.environ, mpq.data.DATA_ENV: str(mpq.data.data_dir())}
    return subprocess.run([sys.executable, "-m", "mpq", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=900)


@pytest.fixture(scope="module")
def reports(tmp_path_factory, data_dir):
    out = {}
    tmp = tmp_path_factory.mktemp("cli")
    for fmt in ("int8", "int4_g32"):
        path = tmp / f"{fmt}.json"
        r = run_mpq("quantize", "--model", str(data_dir / "models" / "stories260K.bin"),
                    "--tokenizer", str(data_dir / "models" / "tok512.bin"), "--format", fmt,
                    "--eval-windows", "96", "-q", "--report", str(path), cwd=tmp)
        assert r.returncode == 0, r.stderr
        assert "perplexity original" in r.stdout
        out[fmt] = json.loads(path.read_text())
    return out


def test_int8_changes_perplexity_by_less_than_one_percent(reports):
    ev = reports["int8"]["evaluation"]
    assert abs(ev["ppl_change"]) < 0.01, ev


def test_int4_g32_changes_perplexity_measurably(reports):
    ev = reports["int4_g32"]["evaluation"]
    assert ev["ppl_change"] > 0.01, ev
    assert reports["int4_g32"]["quantization"]["bits_per_weight"] == pytest.approx(4.64, abs=0.01)


def test_report_is_complete_and_calibration_is_held_out(reports):
    r = reports["int4_g32"]
    assert r["model"]["name"] == "stories260K"
    assert len(r["layers"]) == 35
    assert all(v["output_rel_err"] > 0 for v in r["layers"].values())
    assert r["calibration"]["stories"] == "first 100"
    assert r["evaluation"]["stories"] == "after the first 100"
    assert r["evaluation"]["original"]["ppl"] == reports["int8"]["evaluation"]["original"]["ppl"]


def test_bad_arguments_give_clear_errors(tmp_path):
    r = run_mpq("quantize", "--format", "int11", "-q", "--report", "", cwd=tmp_path)
    assert r.returncode == 2 and "unknown quantization format" in r.stderr
    r = run_mpq("quantize", "--model", str(tmp_path / "missing"), "-q", cwd=tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run_mpq("quantize", "--help", cwd=tmp_path)
    help_text = " ".join(r.stdout.split())
    assert r.returncode == 0 and "--format" in r.stdout and "--thorough" in r.stdout
    assert "--target-bpw, default 5.0" in help_text and "(default: model.gguf)" in help_text
    r = run_mpq("quantize", "--format", "int8", "--target-bpw", "5", cwd=tmp_path)
    assert r.returncode == 2 and "exclude each other" in r.stderr


def test_no_arguments_run_the_mixed_job_to_a_gguf_llama_cpp_loads(tmp_path):
    """`mpq quantize` without a format or a budget: the mixed job at the default budget on the
    default model, written to model.gguf in the current folder, scored, with a closing table;
    its progress goes to a pipe here, so it must come as lines. The sizes are cut further than
    the quick defaults to keep the test short; everything else is the no-argument path."""
    import mpq.data

    llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (setup.sh --tests)")
    path = tmp_path / "r.json"
    r = run_mpq("quantize", "--calib-windows", "2", "--eval-windows", "2", "--window", "64",
                "--population", "4", "--generations", "1", "--report", str(path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(path.read_text())
    expected = mpq.data.default_model_path()
    assert report["model"]["source"] == str(expected)
    assert report["budget"].startswith("Budget(") and "5" in report["budget"]
    gguf = tmp_path / "model.gguf"
    assert gguf.is_file() and report["gguf"]["path"] == "model.gguf"
    assert report["gguf"]["bytes"] == gguf.stat().st_size
    assert report["gguf"]["bits_per_weight"] <= 5.0
    assert not list(tmp_path.glob("*.tmp*")), "a temporary file was left behind"
    # llama.cpp loads the file and its own perplexity is the one the table reports.
    ev = report["evaluation"]
    assert ev["mixed_runtime"].startswith("llama.cpp")
    llm = llama_cpp.Llama(str(gguf), n_ctx=64, logits_all=True, verbose=False)
    llm.eval([1, 2, 3, 4])
    assert np.isfinite(np.array(llm.scores[:4])).all()
    assert 0 < ev["kl"]["kl_mean"] < 1 and ev["mixed"]["ppl"] > ev["original"]["ppl"] * 0.9
    # The closing table: one row with the figures of the report.
    lines = r.stdout.splitlines()
    head = lines.index("| file | size MiB | bpw | perplexity before | perplexity after | Δppl | KLD | peak RSS MiB |")
    row = [c.strip() for c in lines[head + 2].strip("|").split("|")]
    assert row[0] == "model.gguf" and float(row[1]) == round(gguf.stat().st_size / 2**20, 1)
    assert float(row[2]) == pytest.approx(report["gguf"]["bits_per_weight"], abs=1e-3)
    assert float(row[3]) == pytest.approx(ev["original"]["ppl"], abs=1e-4)
    assert float(row[4]) == pytest.approx(ev["mixed"]["ppl"], abs=1e-4)
    assert float(row[6]) == pytest.approx(ev["kl"]["kl_mean"], abs=1e-5)
    assert float(row[7]) == round(report["peak_rss_bytes"] / 2**20)
    stages = lines[head + 4]
    assert stages == "| load | calibration | sensitivity | search | export | evaluation | total |"
    assert "--thorough" in r.stdout
    # Progress on a pipe: whole lines, no carriage returns.
    assert "\r" not in r.stderr
    assert any(line.startswith("calibrate: 2/2 batch") or line.startswith("calibrate: 1/1 batch")
               for line in r.stderr.splitlines()), r.stderr


def test_default_options_take_the_iq_types_at_low_budgets():
    """Below LOW_BIT_BPW the search's default options include llama.cpp's codebook formats (they
    are the better options there); above it the k-quant defaults alone; every budget kind maps to
    bits per weight the same way."""
    from torch import nn

    import mpq
    from mpq.jobs import _mixed
    from mpq.jobs import DEFAULT_FORMATS, LOW_BIT_FORMATS, default_formats

    assert set(LOW_BIT_FORMATS) <= set(default_formats(3.0)) and default_formats(5.0) == DEFAULT_FORMATS
    for name in LOW_BIT_FORMATS:
        assert mpq.find_format(name).family == mpq.FormatFamily.GGML, name
    model = nn.Linear(100, 10, bias=False)  # 1,000 weights
    assert _mixed._budget_bpw(mpq.Budget("bpw", 3.0), model) == 3.0
    assert _mixed._budget_bpw(mpq.Budget("compression", 0.25), model) == 4.0
    assert _mixed._budget_bpw(mpq.Budget("bytes", 500.0), model) == 4.0


def test_each_command_keeps_its_own_default_sizes():
    """quantize and compare share their common arguments (one parent parser); a size left out is
    filled per command, so quantize's presets never leak into compare or back."""
    from mpq.jobs._cli import _COMPARE, parse_args
    from mpq.jobs._mixed import QUICK, THOROUGH

    for command in (["compare"], ["quantize"], ["compare"]):  # order: a leak would show on the second compare
        args = parse_args(command)
        want = _COMPARE if command == ["compare"] else QUICK
        for key in ("calib_windows", "population", "generations"):
            assert getattr(args, key) == want[key], (command, key)
    assert parse_args(["quantize", "--thorough"]).generations == THOROUGH["generations"]
    assert parse_args(["compare", "--generations", "3"]).generations == 3
    assert parse_args(["quantize", "--population", "7"]).population == 7
