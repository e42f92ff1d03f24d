#pragma once
// One bind_<area> per public header; module.cpp calls them all.
#include <torch/csrc/utils/pybind.h>

namespace py = pybind11;

namespace mpq::bindings {
void bind_error(py::module_& m);
void bind_format(py::module_& m);
void bind_quantizer(py::module_& m);
void bind_calibration(py::module_& m);
void bind_kquants(py::module_& m);
void bind_gguf(py::module_& m);
void bind_plan(py::module_& m);
void bind_expert(py::module_& m);
void bind_candidates(py::module_& m);
void bind_search(py::module_& m);
}  // namespace mpq::bindings
