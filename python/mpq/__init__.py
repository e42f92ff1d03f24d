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


from .experts import activation_quantization, fake_quantize_activations, make_expert  # noqa: E402
from .activation_rounding import gguf_formats, llama_cpp_activations  # noqa: E402


def quantize_sequential(*args, **kwargs):
    """Quantizes a model block by block with the experts (see :func:`mpq.sequential.quantize_sequential`)."""
    from .sequential import quantize_sequential as _qs

    return _qs(*args, **kwargs)


def build_candidates(*args, **kwargs):
    """The sensitivity table of a model (see :func:`mpq.sensitivity.build_candidates`)."""
    from .sensitivity import build_candidates as _bc

    return _bc(*args, **kwargs)


def quantize_mixed(*args, **kwargs):
    """Mixed precision under a size budget, end to end (see :func:`mpq.mixed.quantize_mixed`)."""
    from .mixed import quantize_mixed as _qm

    return _qm(*args, **kwargs)


def quantize(*args, **kwargs):
    """Runs the main job: one format (see :func:`mpq.pipeline.quantize`), or, given a budget
    (target_bpw=, target_bytes= or compression=), the mixed-precision pipeline: calibrate,
    sensitivity, search, export, evaluate (see :func:`mpq.mixed.quantize_mixed`)."""
    if any(kwargs.get(k) is not None for k in ("target_bpw", "target_bytes", "compression")):
        from .mixed import quantize_mixed as _qm

        return _qm(*args, **kwargs)
    from .pipeline import quantize as _quantize

    return _quantize(*args, **kwargs)


def compare(*args, **kwargs):
    """Original vs uniform mixes vs mixed precision, each file run by llama.cpp
    (see :func:`mpq.comparison.compare`)."""
    from .comparison import compare as _compare

    return _compare(*args, **kwargs)


__all__ = [
    "build_candidates",
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
