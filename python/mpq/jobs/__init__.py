"""The jobs a user runs: `quantize` (one format, or mixed precision under a size budget: calibrate,
sensitivity, search, export, evaluate, report), `compare` (the original, llama.cpp's mixes and
mpq's mixed file, each run by llama.cpp), the plots, and the `mpq` command.

Layer: the top; imports from every layer below.
"""
from ._cli import main
from ._common import Texts, default_texts, load_texts, write_json
from ._compare import COLUMNS, CompareRow, compare, to_markdown
from ._mixed import DEFAULT_EXPERTS, DEFAULT_FORMATS, LOW_BIT_FORMATS, default_formats, quantize_mixed
from ._quantize import layer_errors, quantize
from ._work_folder import WorkFolder, model_digest, tensor_digest

__all__ = [
    "COLUMNS", "CompareRow", "DEFAULT_EXPERTS", "DEFAULT_FORMATS", "LOW_BIT_FORMATS", "Texts", "compare",
    "default_formats", "default_texts",
    "layer_errors", "load_texts", "main", "model_digest", "quantize", "quantize_mixed", "tensor_digest",
    "to_markdown", "WorkFolder", "write_json",
]
