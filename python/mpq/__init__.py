"""mpq: mixed-precision post-training quantization of LLMs.

The numerics live in libmpq (C++, exposed as ``mpq._C``); this package adds models, data,
evaluation and the ``mpq`` command.
"""
from __future__ import annotations

import os as _os

import torch as _torch  # loads libtorch before libmpq needs it

from . import _build_info


def _check_torch() -> None:
    built, running = _build_info.TORCH_VERSION, _torch.__version__
    if built != running:
        raise ImportError(
            f"mpq was compiled against torch {built}, but torch {running} is installed; the C++ "
            "ABI of libtorch changes between releases. Rebuild mpq against this torch: "
            "pip install --no-build-isolation --no-deps --force-reinstall <path to mpq source>"
        )


_check_torch()

from ._C import (  # noqa: E402
    AwqExpert,
    AwqOptions,
    Budget,
    BudgetKind,
    Calibrator,
    CandidateTable,
    CalibratorOptions,
    Format,
    FormatFamily,
    GaOptions,
    GenerationStats,
    Imatrix,
    ImatrixEntry,
    LayerStats,
    ModelSpec,
    ParetoPoint,
    Plan,
    QuantizedTensor,
    RtnOptions,
    SearchResult,
    Solution,
    dequantize,
    dequantize_ggml,
    Expert,
    ExpertLayer,
    ExpertResult,
    GptqExpert,
    GptqOptions,
    GptqResult,
    gptq_quantize,
    KquantExpert,
    list_experts,
    output_error,
    register_expert,
    RtnExpert,
    SmoothQuantExpert,
    SmoothQuantOptions,
    smoothquant_scale,
    find_format,
    genetic_search,
    ggml_fallback,
    gguf,
    integer_format_name,
    knapsack,
    list_formats,
    llama_cpp_file_type,
    llama_cpp_mix,
    llama_cpp_mix_names,
    pack_codes,
    quantize_ggml,
    quantize_rtn,
    register_format,
    TensorChoice,
    TensorSpec,
    uniform,
    unpack_codes,
)
from ._C import quantize as quantize_tensor  # noqa: E402

__version__ = _build_info.MPQ_VERSION

#: Pass to CMake as CMAKE_PREFIX_PATH so that find_package(mpq) finds the installed libmpq.
cmake_prefix_path = _os.path.join(_os.path.dirname(__file__), "lib", "cmake")
#: The public C++ headers (<mpq/...>).
include_dir = _os.path.join(_os.path.dirname(__file__), "include")


from . import data, evaluation, export, jobs, models, quant, search  # noqa: E402
from .jobs import compare, quantize, quantize_mixed  # noqa: E402
from .quant import (activation_quantization, fake_quantize_activations, gguf_formats,  # noqa: E402
                    llama_cpp_activations, make_expert, quantize_sequential)
from .search import build_candidates  # noqa: E402


def _deprecated_aliases() -> None:
    """The flat module names of mpq 0.1 (mpq.model, mpq.evaluate, ...), kept importable for a
    while: each is the subpackage (or private module) that now holds its names."""
    import sys

    aliases = {
        "model": models, "llama2c": models._llama2c, "gguf_model": models._gguf_import,
        "streaming": models._streaming, "experts": quant._experts, "sequential": quant._sequential,
        "activation_rounding": quant._activation_rounding, "sensitivity": search, "fitness": search,
        "evaluate": evaluation, "mmlu": evaluation._mmlu, "llama_bench": evaluation._speed,
        "pipeline": jobs._quantize, "mixed": jobs._mixed, "comparison": jobs._compare,
        "plots": jobs._plots, "cli": jobs._cli,
    }
    for old, module in aliases.items():
        sys.modules[f"{__name__}.{old}"] = module
        globals()[old] = module


_deprecated_aliases()

__all__ = [
    "build_candidates",
    "data",
    "evaluation",
    "export",
    "jobs",
    "models",
    "quant",
    "search",
    "gguf_formats",
    "llama_cpp_activations",
    "compare",
    "quantize_mixed",
    "AwqExpert",
    "AwqOptions",
    "Expert",
    "ExpertLayer",
    "ExpertResult",
    "GptqExpert",
    "GptqOptions",
    "GptqResult",
    "KquantExpert",
    "RtnExpert",
    "SmoothQuantExpert",
    "SmoothQuantOptions",
    "gptq_quantize",
    "list_experts",
    "make_expert",
    "activation_quantization",
    "fake_quantize_activations",
    "output_error",
    "quantize_sequential",
    "register_expert",
    "smoothquant_scale",
    "Budget",
    "BudgetKind",
    "Calibrator",
    "CalibratorOptions",
    "CandidateTable",
    "GaOptions",
    "GenerationStats",
    "ParetoPoint",
    "SearchResult",
    "Solution",
    "Format",
    "FormatFamily",
    "Imatrix",
    "ImatrixEntry",
    "LayerStats",
    "ModelSpec",
    "Plan",
    "TensorChoice",
    "TensorSpec",
    "QuantizedTensor",
    "RtnOptions",
    "cmake_prefix_path",
    "dequantize",
    "dequantize_ggml",
    "find_format",
    "genetic_search",
    "ggml_fallback",
    "gguf",
    "include_dir",
    "integer_format_name",
    "knapsack",
    "list_formats",
    "llama_cpp_file_type",
    "llama_cpp_mix",
    "llama_cpp_mix_names",
    "pack_codes",
    "quantize",
    "quantize_ggml",
    "quantize_rtn",
    "quantize_tensor",
    "register_format",
    "uniform",
    "unpack_codes",
]
