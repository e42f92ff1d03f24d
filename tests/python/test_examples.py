"""The README's quickstarts work as written, and examples/ holds them verbatim."""
import re
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = ["quickstart.py", "gguf_quickstart.py", "experts_quickstart.py", "mixed_quickstart.py"]


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
    if index == 0:
        assert "QuantizedTensor(format='int4_g128'" in r.stdout
    elif index == 1:
        assert (tmp_path / "stories-q4_k_m.gguf").exists() and (tmp_path / "imatrix.gguf").exists()
    elif index == 2:
        assert "ExpertResult(name='blk.0.attn_q', format='int4_g32'" in r.stdout
    else:
        bpw, kl, choice = r.stdout.split()[-3:]
        assert float(bpw) <= 4.0 and float(kl) > 0 and choice.split(":")[1] in ("int2_g32", "int4_g32", "int8")
