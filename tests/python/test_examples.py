"""The README's quickstarts work as written, and examples/ holds them verbatim."""
import re
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = ["quickstart.py", "gguf_quickstart.py", "experts_quickstart.py", "evaluate_quickstart.py",
           "mixed_quickstart.py"]


@pytest.mark.parametrize("index", range(len(SCRIPTS)))
def test_python_quickstarts_are_the_readme_ones_and_run(index, tmp_path, data_dir):
    readme = (REPO / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, re.S)[index]
    path = REPO / "examples" / SCRIPTS[index]
    assert path.read_text().split('"""\n', 2)[-1] == code
    import os

    env = {**os.environ, "MPQ_DATA_DIR": str(data_dir)}  # run outside the checkout
    r = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    script = SCRIPTS[index]
    if script == "quickstart.py":
        assert "QuantizedTensor(format='int4_g128'" in r.stdout
    elif script == "gguf_quickstart.py":
        assert (tmp_path / "stories-q4_k_m.gguf").exists() and (tmp_path / "imatrix.gguf").exists()
    elif script == "experts_quickstart.py":
        assert "ExpertResult(name='blk.0.attn_q', format='int4_g32'" in r.stdout
    elif script == "evaluate_quickstart.py":
        assert "tg_tokens_per_s" in r.stdout and "protocol='llama.cpp'" in r.stdout
    else:
        bpw, kl, choice = r.stdout.split()[-3:]
        assert float(bpw) <= 4.0 and float(kl) > 0 and choice.split(":")[1] in ("int2_g32", "int4_g32", "int8")


WORKFLOWS = {  # script -> what its output must show
    "sensitivity.py": "KL of blk.0.attn_v at rtn:int2_g32",
    "custom_expert.py": "clip_rtn chosen for",
    "custom_fitness.py": "top-1 disagreement",
    "compare_quickstart.py": "| mpq mixed",
}


@pytest.mark.parametrize("script", sorted(WORKFLOWS))
def test_workflow_examples_run(script, tmp_path, data_dir):
    import os

    if script == "compare_quickstart.py":
        pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (setup.sh --tests)")
    env = {**os.environ, "MPQ_DATA_DIR": str(data_dir)}
    r = subprocess.run([sys.executable, str(REPO / "examples" / script)], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert WORKFLOWS[script] in r.stdout, r.stdout[-2000:]
    if script == "custom_expert.py":
        # The clipping search can only lower the error RTN reaches (ratio 1.0 is RTN itself).
        proxy = eval(r.stdout.split("linear layers:", 1)[1].splitlines()[0])
        assert proxy["clip_rtn:int3_g32"] <= proxy["rtn:int3_g32"]


def test_notebook_runs_end_to_end(tmp_path, data_dir):
    """examples/tour.ipynb, executed cell by cell in a fresh kernel on the default model."""
    import os

    nbformat = pytest.importorskip("nbformat", reason="needs nbformat/nbclient (setup.sh --tests)")
    nbclient = pytest.importorskip("nbclient", reason="needs nbformat/nbclient (setup.sh --tests)")
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (setup.sh --tests)")
    os.environ.setdefault("MPQ_DATA_DIR", str(data_dir))
    nb = nbformat.read(REPO / "examples" / "tour.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "int4_g64 RTN" in text and "bpw in the file" in text
    tables = [o["data"]["text/markdown"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "text/markdown" in o.get("data", {})]
    assert tables and "| Q4_K_M (imatrix) |" in tables[0] and "| tour-mixed |" in tables[0]
    assert (tmp_path / "tour_compare" / "size_vs_ppl.png").exists()
