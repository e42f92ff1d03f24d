#include <mpq/calibration.h>

#include "bind.h"

namespace mpq::bindings {

void bind_calibration(py::module_& m) {
  py::class_<CalibratorOptions>(m, "CalibratorOptions", "Options of the Calibrator.")
      .def(py::init([](bool collect_xtx, at::ScalarType accumulate_dtype) {
             CalibratorOptions o{collect_xtx, accumulate_dtype};
             o.validate();
             return o;
           }),
           py::arg("collect_xtx") = true, py::arg("accumulate_dtype") = at::kFloat)
      .def_readwrite("collect_xtx", &CalibratorOptions::collect_xtx)
      .def_readwrite("accumulate_dtype", &CalibratorOptions::accumulate_dtype)
      .def("validate", &CalibratorOptions::validate)
      .def("__repr__", &CalibratorOptions::to_string);

  py::class_<LayerStats>(m, "LayerStats", "Sums over a layer's observed input rows.")
      .def_property_readonly("xtx", [](const LayerStats& s) -> std::optional<at::Tensor> {
        if (!s.xtx.defined()) return std::nullopt;
        return s.xtx;
      })
      .def_readonly("sum_sq", &LayerStats::sum_sq)
      .def_readonly("sum_abs", &LayerStats::sum_abs)
      .def_readonly("max_abs", &LayerStats::max_abs)
      .def_readonly("tokens", &LayerStats::tokens)
      .def_readonly("batches", &LayerStats::batches)
      .def_property_readonly("in_features", &LayerStats::in_features)
      .def("hessian", &LayerStats::hessian, "GPTQ's Hessian (2 / tokens) Σ x xᵀ.")
      .def("mean_sq", &LayerStats::mean_sq, "Mean x² per input column (the importance matrix).")
      .def("mean_abs", &LayerStats::mean_abs, "Mean |x| per input column (AWQ's statistic).");

  py::class_<Calibrator>(m, "Calibrator",
                         "Accumulates per-layer activation statistics; thread-safe.")
      .def(py::init<CalibratorOptions>(), py::arg("options") = CalibratorOptions{})
      .def(
          "observe",
          [](Calibrator& c, const std::string& layer, const at::Tensor& x) {
            py::gil_scoped_release release;
            c.observe(layer, x);
          },
          py::arg("layer"), py::arg("x"),
          R"(Adds the rows of x [..., in_features] to the layer's sums.

Args:
    layer: the layer's name (e.g. "blk.0.attn_q").
    x: floating tensor of the layer's inputs, on the device of earlier observations.)")
      .def("__contains__", &Calibrator::contains, py::arg("layer"))
      .def("contains", &Calibrator::contains, py::arg("layer"))
      .def("stats", &Calibrator::stats, py::arg("layer"),
           "A copy of the layer's statistics (ValueError if never observed).")
      .def("layers", &Calibrator::layers, "Observed layer names, in order of first observation.")
      .def("clear", &Calibrator::clear)
      .def_property_readonly("options", &Calibrator::options)
      .def(
          "save",
          [](const Calibrator& c, const std::string& path) {
            py::gil_scoped_release release;
            c.save(path);
          },
          py::arg("path"), "Writes the statistics to path (atomically; torch.load reads it too).")
      .def_static("load", &Calibrator::load, py::arg("path"), "Reads a file written by save().")
      .def("__len__", [](const Calibrator& c) { return c.layers().size(); })
      .def("__repr__", [](const Calibrator& c) {
        return "Calibrator(" + std::to_string(c.layers().size()) + " layers, " +
               c.options().to_string() + ")";
      });
}

}  // namespace mpq::bindings
