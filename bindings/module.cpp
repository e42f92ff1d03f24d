#include "bind.h"

PYBIND11_MODULE(_C, m) {
  // torch registers the at::Tensor and dtype conversions that every binding below relies on.
  py::module_::import("torch");
  m.doc() = "libmpq: mixed-precision post-training quantization (C++ core)";
  mpq::bindings::bind_error(m);
  mpq::bindings::bind_format(m);
  mpq::bindings::bind_quantizer(m);
  mpq::bindings::bind_calibration(m);
  mpq::bindings::bind_kquants(m);
  mpq::bindings::bind_gguf(m);
  mpq::bindings::bind_plan(m);
  mpq::bindings::bind_expert(m);
  mpq::bindings::bind_candidates(m);
  mpq::bindings::bind_search(m);
}
