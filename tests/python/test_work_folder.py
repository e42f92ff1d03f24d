"""The main job's work folder: a run stopped inside the table, inside the search or by a kill goes
on where it was when started again, and ends with the file of a run that was never stopped (same
sha256); a folder made from other inputs is refused."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import mpq
from mpq.jobs import WorkFolder, quantize_mixed
from mpq.search import _candidates, _fitness

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("llama_cpp") is None,
    reason="needs llama-cpp-python (the main job scores its GGUF in llama.cpp): bash scripts/setup.sh --tests")


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def job(data_dir, stories):
    """The job's arguments on stories260K, small, and the sha256 of its file run without a stop."""
    def run(tmp, work_dir=None, **over):
        kw = dict(target_bpw=9.0, calib_windows=4, window=64, kl_sequences=4, kl_stages=(1, 4),
                  eval_windows=2, ga_options=mpq.GaOptions(population=6, generations=6, seed=3),
                  progress=False)
        kw.update(over)
        out = os.path.join(tmp, "model.gguf")
        report = quantize_mixed(stories, out=out, work_dir=work_dir, **kw)
        return out, report

    return run


@pytest.fixture(scope="module")
def reference(job, tmp_path_factory):
    out, report = job(str(tmp_path_factory.mktemp("reference")))
    return _sha(out), report


class _Stop(Exception):
    pass


def _counting(monkeypatch, module, name, stop_at=None):
    """Wraps module.name so that its calls are counted and call `stop_at` raises _Stop instead."""
    original = getattr(module, name)
    calls = []

    def wrapper(*a, **k):
        calls.append(1)
        if stop_at is not None and len(calls) == stop_at:
            raise _Stop(f"{name} stopped at call {stop_at}")
        return original(*a, **k)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_stopped_in_the_table_and_in_the_search_it_goes_on_and_writes_the_same_file(
        job, reference, tmp_path, monkeypatch):
    sha, ref = reference
    work = tmp_path / "work"
    tensors = 1 + 5 * 7  # stories260K: token_embd and 7 linears per block (the output is tied)

    # 1. Stopped after 9 of the table's rows: calibration and those rows are on disk.
    with monkeypatch.context() as m:
        _counting(m, _candidates, "_save_row", stop_at=10)
        with pytest.raises(_Stop):
            job(str(tmp_path), work_dir=work)
    assert (work / "calibration.bin").exists() and (work / "imatrix.gguf").exists()
    assert len(list((work / "table" / "tensors").glob("*.pt"))) == 9
    assert not (work / "table" / "table.json").exists()

    # 2. Started again: only the other rows are quantized; then stopped inside the search, after
    # the initial population and two generations were judged (each generation: two stages).
    with monkeypatch.context() as m:
        rows = _counting(m, _candidates, "_save_row")
        _counting(m, _fitness.KlFitness, "__call__", stop_at=1 + 2 * 2 + 1)
        with pytest.raises(Exception, match="stopped at call"):
            job(str(tmp_path), work_dir=work)
    assert len(rows) == tensors - 9
    assert (work / "table" / "table.json").exists()
    assert not (work / "calibration.bin").exists()  # the table holds what the search needs
    checkpoints = list(work.glob("search-*.ckpt"))
    assert len(checkpoints) == 1

    # 3. Started again: no row is quantized, the search goes on from its checkpoint.
    with monkeypatch.context() as m:
        rows = _counting(m, _candidates, "_save_row")
        judged = _counting(m, _fitness.KlFitness, "__call__")
        out, rep = job(str(tmp_path), work_dir=work)
    assert rows == []
    full_calls = 1 + 2 * ref["search"]["options"]["generations"]
    assert 0 < len(judged) < full_calls - 2  # the two finished generations are not judged again
    assert rep["result"]["plan"] == ref["result"]["plan"]
    assert _sha(out) == sha


def test_a_folder_of_other_inputs_is_refused_with_what_changed(job, tmp_path):
    work = tmp_path / "work"
    job(str(tmp_path), work_dir=work, evaluate_model=False)
    with pytest.raises(ValueError, match=r"other inputs \(calibration_ids: .*choose another --work-dir"):
        job(str(tmp_path), work_dir=work, evaluate_model=False, calib_windows=5)
    with pytest.raises(ValueError, match=r"other inputs \(options: "):
        job(str(tmp_path), work_dir=work, evaluate_model=False, formats=["q8_0", "f16"], target_bpw=12.0)
    # Another budget is another search on the same calibration and table.
    job(str(tmp_path), work_dir=work, evaluate_model=False, target_bpw=10.0)
    assert len(list(work.glob("search-*.ckpt"))) == 2
    (work / "inputs.json").write_text("{")
    with pytest.raises(ValueError, match="inputs.json is not JSON"):
        WorkFolder(work, {})


def test_killed_in_the_search_the_same_command_finishes_with_the_same_file(data_dir, tmp_path):
    """The command line, stopped by SIGKILL (no chance to clean up) once the search has written a
    checkpoint, and run again: the file of an uninterrupted run with the same arguments."""
    stories = data_dir / "models"
    args = [sys.executable, "-m", "mpq", "quantize", "--model", str(stories / "stories260K.bin"),
            "--tokenizer", str(stories / "tok512.bin"), "--target-bpw", "9", "--calib-windows", "4",
            "--window", "64", "--eval-windows", "2", "--population", "6", "--generations", "40", "-q"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def run(folder, *extra):
        return subprocess.run(args + ["--out", str(folder / "m.gguf"), "--report", str(folder / "r.json"),
                                      *extra], capture_output=True, text=True, env=env, timeout=900)

    whole = tmp_path / "whole"
    whole.mkdir()
    r = run(whole)
    assert r.returncode == 0, r.stderr
    assert not (whole / "m.gguf.work").exists()  # the default folder goes once the run completes

    killed = tmp_path / "killed"
    killed.mkdir()
    work = killed / "m.gguf.work"
    p = subprocess.Popen(args + ["--out", str(killed / "m.gguf"), "--report", str(killed / "r.json")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 600
    while not list(work.glob("search-*.ckpt")) and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL, "the run ended before the search wrote its first checkpoint"
    stopped_at = json.loads(next(work.glob("search-*.ckpt")).read_text())["generation"]
    assert stopped_at < 40 and not (killed / "m.gguf").exists()

    r = run(killed)
    assert r.returncode == 0, r.stderr
    assert _sha(killed / "m.gguf") == _sha(whole / "m.gguf")
    assert json.loads((killed / "r.json").read_text())["result"]["plan"] == \
        json.loads((whole / "r.json").read_text())["result"]["plan"]
