"""The README's quickstarts work as written."""
import re
import subprocess
import sys

from conftest import REPO


def test_python_quickstart_is_the_readme_one_and_runs():
    readme = (REPO / "README.md").read_text()
    code = re.search(r"## Python quickstart\n\n```python\n(.*?)```", readme, re.S).group(1)
    script = (REPO / "examples" / "quickstart.py").read_text()
    assert script.split('"""\n', 2)[-1] == code
    r = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart.py")], capture_output=True,
                       text=True, cwd=REPO, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "QuantizedTensor(format='int4_g128'" in r.stdout
