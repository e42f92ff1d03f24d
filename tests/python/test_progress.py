"""Progress bars on a pipe or in a log file: whole lines, a few of them, never carriage returns."""
import io
import subprocess
import sys

from mpq import _progress


def test_off_a_terminal_progress_prints_few_whole_lines():
    out = io.StringIO()
    items = list(_progress.progress_bar(range(1000), desc="calibrate", unit="batch", file=out))
    assert items == list(range(1000))
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # The first step, the last, and one line per LINE_SECONDS in between (this loop is instant).
    assert lines[0].startswith("calibrate: 1/1000 batch (") and lines[-1].startswith("calibrate: 1000/1000 batch (")
    assert len(lines) == 2, lines
    assert ", eta " in lines[0] and ", eta " not in lines[-1]  # what is left, while something is


def test_lines_follow_the_interval_and_manual_updates():
    out = io.StringIO()
    bar = _progress.LineProgress(desc="search", total=5, unit="gen", file=out, every=0.0)
    for gen in range(1, 6):
        bar.n = gen
        bar.set_postfix(best=f"{1 / gen:.3g}")
        bar.refresh()
        bar.refresh()  # no new step: no new line
    bar.close()
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"search: {g}/5 gen" for g in range(1, 6)]
    assert lines[-1].endswith("best=0.2)")


def test_disabled_prints_nothing_and_unknown_totals_count_up():
    out = io.StringIO()
    assert list(_progress.progress_bar([1, 2], disable=True, file=out)) == [1, 2]
    bar = _progress.progress_bar(total=3, disable=True, file=out)
    bar.update(3)
    bar.close()
    assert out.getvalue() == ""
    bar = _progress.progress_bar(iter(range(3)), desc="mmlu", file=out)
    assert list(bar) == [0, 1, 2]
    assert out.getvalue().splitlines()[-1].startswith("mmlu: 3 it (")


def test_every_progress_bar_of_mpq_goes_through_the_helper():
    """No module calls tqdm itself (it would print carriage returns into log files)."""
    from conftest import REPO

    r = subprocess.run(["grep", "-rln", "tqdm", str(REPO / "python" / "mpq")], capture_output=True, text=True)
    assert [p for p in r.stdout.split() if not p.endswith("_progress.py")] == []


def test_a_pipe_gets_lines_from_a_real_job():
    code = ("import sys, torch, mpq; from mpq import models, data;"
            "lm = models.load_model(sys.argv[1], tokenizer=sys.argv[2]);"
            "ids = torch.randint(3, 512, (40, 32));"
            "models.calibrate(lm.model, ids.split(1))")
    import mpq.data

    d = mpq.data.data_dir() / "models"
    r = subprocess.run([sys.executable, "-c", code, str(d / "stories260K.bin"), str(d / "tok512.bin")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("calibrate:")]
    assert lines[0].startswith("calibrate: 1/40 batch") and lines[-1].startswith("calibrate: 40/40 batch")
    assert len(lines) <= 2 + 40 // 10, lines
