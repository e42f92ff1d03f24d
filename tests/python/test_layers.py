"""The Python package stays layered: no import cycles between its modules, and no subpackage
imports from a layer above it (the order written in the README's layout section). Read from the
source with `ast` by the shared layer checker, imports inside functions included."""
import subprocess
import sys

import mpq
from conftest import REPO

# Bottom to top, as the README's layout section states it.
LAYERS = ("_C", "_build_info", "_progress", "data", "models", "quant", "export", "search", "evaluation", "jobs")


def test_no_import_cycles_and_no_upward_imports(data_dir):
    tool = data_dir.parent / "tools" / "layers.py"
    assert tool.is_file(), f"the layer checker {tool} is missing (shared/tools/layers.py)"
    r = subprocess.run([sys.executable, str(tool), str(REPO / "python" / "mpq"), "--order", ",".join(LAYERS)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_readme_states_the_same_layers():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert " → ".join(f"mpq.{name}" for name in LAYERS if not name.startswith("_") or name == "_C") in readme


def test_every_subpackage_lists_what_it_exports():
    for name in ("models", "quant", "search", "evaluation", "jobs"):
        package = getattr(mpq, name)
        missing = [n for n in package.__all__ if not hasattr(package, n)]
        assert package.__all__ and not missing, (name, missing)


def test_deprecated_module_names_still_import():
    from mpq import evaluate, export, fitness, mixed, mmlu, model, sensitivity, streaming  # noqa: F401
    from mpq.llama_bench import gguf_speed
    from mpq.model import load_model

    assert load_model is mpq.models.load_model and gguf_speed is mpq.evaluation.gguf_speed
    assert mixed.quantize_mixed is mpq.quantize_mixed and evaluate.perplexity is mpq.evaluation.perplexity
