"""`mpq compare`: the files it makes, the measurements in its table, its plots and its errors."""
import json
import math
import os

import pytest

from test_cli import run_mpq

pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (setup.sh --tests)")


@pytest.fixture(scope="module")
def report(tmp_path_factory, stories):
    import mpq

    out = tmp_path_factory.mktemp("compare")
    return mpq.compare(stories, uniform=["Q4_K_M", "Q8_0"], mixed_bpw="match", out_dir=out,
                       eval_windows=6, mmlu_questions=2, mmlu_shots=0,
                       mmlu_subjects=["astronomy", "marketing"], speed_repetitions=1, n_prompt=64,
                       n_gen=16, mixed_options={"fitness": "proxy"}, progress=False)


def test_rows_are_the_original_the_mixes_and_the_mixed_file(report):
    rows = report["rows"]
    assert [r["kind"] for r in rows] == ["original", "uniform", "uniform", "mixed"]
    assert rows[1]["label"] == "Q4_K_M (imatrix)"
    for r in rows:
        assert r["file_bytes"] == os.path.getsize(r["path"])
        assert r["pp_tokens_per_s"] > 0 and r["tg_tokens_per_s"] > 0 and r["load_seconds"] > 0
        assert r["model_rss_bytes"] > 0 and 0 <= r["mmlu"] <= 1
        assert r["details"]["mmlu"]["questions"] == 4
    # The budget of the mixed file is the Q4_K_M file's size (bits per weight, every tensor).
    assert rows[3]["bpw"] <= rows[1]["bpw"] + 1e-9


def test_quality_measures_order_the_files_as_their_precision(report, stories, data_dir):
    import mpq
    from mpq import data, evaluate

    orig, q4, q8 = report["rows"][:3]
    # F16 in llama.cpp is almost the torch original; 8 bits are closer to it than 4.
    assert orig["kl_mean"] < q8["kl_mean"] < q4["kl_mean"]
    assert orig["same_top"] > 0.99 and q8["same_top"] > q4["same_top"]
    assert abs(orig["ppl"] / orig["ppl_original"] - 1) < 0.005
    # The reference perplexity is the torch model's under llama-perplexity's protocol.
    ids = data.tokenize_file(stories.tokenizer, data_dir / "text" / "tinystories_valid.txt", skip=100)
    ref = evaluate.perplexity(stories.model, ids, protocol="llama.cpp", window=512,
                              bos_id=stories.tokenizer.bos_id, max_windows=6, progress=False)
    assert orig["ppl_original"] == pytest.approx(ref.ppl, rel=1e-5)
    # And the Q8_0 file's perplexity is what llama.cpp alone computes on the same ids.
    alone = evaluate.gguf_perplexity(q8["path"], tokens=ids, max_windows=6, progress=False)
    assert q8["ppl"] == pytest.approx(alone.ppl, rel=1e-4)


def test_outputs_table_json_and_plots(report):
    out = os.path.dirname(report["rows"][0]["path"])
    assert json.loads(open(os.path.join(out, "compare.json")).read())["table"] == report["table"]
    table = open(os.path.join(out, "compare.md")).read()
    assert table.startswith("| model | size MiB | bpw |") and table.count("\n") == 2 + 4
    assert sorted(report["plots"]) == ["bit_allocation", "sensitivity", "size_vs_ppl"]
    for path in report["plots"].values():
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert report["mixed"]["result"]["bits_per_weight"] <= report["rows"][1]["bpw"] + 1e-9
    assert not math.isnan(report["rows"][3]["kl_mean"])


def test_command_line(tmp_path, data_dir):
    r = run_mpq("compare", "--model", str(data_dir / "models" / "stories260K.bin"), "--uniform", "Q8_0",
                "--mixed-bpw", "none", "--eval-windows", "2", "--mmlu-questions", "0", "--no-speed", "-q",
                "--out-dir", str(tmp_path / "c"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "| original (F16) |" in r.stdout and "| Q8_0 (imatrix) |" in r.stdout
    assert (tmp_path / "c" / "size_vs_ppl.png").exists()
    r = run_mpq("compare", "--help", cwd=tmp_path)
    help_text = " ".join(r.stdout.split())  # argparse wraps lines
    assert r.returncode == 0 and "--mixed-bpw" in help_text and "(default: match)" in help_text


def test_bad_input_names_what_is_wrong(tmp_path, stories):
    import mpq

    with pytest.raises(ValueError, match="unknown llama.cpp mix 'Q4_K_X'"):
        mpq.compare(stories, uniform=["Q4_K_X"], out_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.gguf does not exist"):
        mpq.compare(stories, ggufs=[str(tmp_path / "nope.gguf")], out_dir=tmp_path)
    with pytest.raises(ValueError, match="first uniform mix"):
        mpq.compare(stories, uniform=[], mixed_bpw="match", out_dir=tmp_path)
    r = run_mpq("compare", "--model", str(tmp_path / "missing.bin"), "-q", cwd=tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = run_mpq("compare", "--mixed-bpw", "lots", "-q", cwd=tmp_path)
    assert r.returncode == 2 and "--mixed-bpw takes a number, 'match' or 'none', not 'lots'" in r.stderr
