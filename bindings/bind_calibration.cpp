#include <ATen/ATen.h>

#include <mpq/calibration.h>
#include <mpq/imatrix.h>

#include <mpq/error.h>

#include "bind.h"
#include "bind_options.h"

namespace mpq::bindings {

void bind_calibration(py::module_& m) {
  py::class_<CalibratorOptions> cal(m, "CalibratorOptions", "Options of the Calibrator.");
  def_options(cal, field("collect_xtx", &CalibratorOptions::collect_xtx),
              field("collect_abs", &CalibratorOptions::collect_abs),
              field("accumulate_dtype", &CalibratorOptions::accumulate_dtype));

  m.attr("IMATRIX_MIN_ROWS") = kImatrixMinRows;
  py::class_<LayerStats>(m, "LayerStats", "Sums over a layer's observed input rows.")
      .def_property_readonly("xtx", [](const LayerStats& s) -> std::optional<at::Tensor> {
        if (!s.xtx.defined()) return std::nullopt;
        return s.xtx;
      })
      .def_readonly("sum_sq", &LayerStats::sum_sq)
      .def_property_readonly("sum_abs", [](const LayerStats& s) -> std::optional<at::Tensor> {
        if (!s.sum_abs.defined()) return std::nullopt;
        return s.sum_abs;
      })
      .def_property_readonly("max_abs", [](const LayerStats& s) -> std::optional<at::Tensor> {
        if (!s.max_abs.defined()) return std::nullopt;
        return s.max_abs;
      })
      .def_readonly("tokens", &LayerStats::tokens)
      .def_readonly("batches", &LayerStats::batches)
      .def_readonly("imatrix_sum_sq", &LayerStats::imatrix_sum_sq,
                    "Σx² over observations of >= 16 rows (llama-imatrix's rule)")
      .def_readonly("imatrix_tokens", &LayerStats::imatrix_tokens)
      .def_property_readonly("in_features", &LayerStats::in_features)
      .def("hessian", &LayerStats::hessian, "GPTQ's Hessian (2 / tokens) Σ x xᵀ.")
      .def("mean_sq", &LayerStats::mean_sq, "Mean x² per input column (the importance matrix).")
      .def("mean_abs", &LayerStats::mean_abs, "Mean |x| per input column (AWQ's statistic).");

  py::class_<ImatrixEntry>(m, "ImatrixEntry")
      .def_property_readonly("in_sum2", [](const ImatrixEntry& e) {
        return at::tensor(e.in_sum2, at::TensorOptions().dtype(at::kFloat));
      })
      .def_readonly("count", &ImatrixEntry::count);

  py::class_<Imatrix>(m, "Imatrix", "llama.cpp's importance matrix (GGUF or legacy .dat files).")
      .def(py::init<>())
      .def_readwrite("datasets", &Imatrix::datasets)
      .def_readwrite("chunk_count", &Imatrix::chunk_count)
      .def_readwrite("chunk_size", &Imatrix::chunk_size)
      .def("names", [](const Imatrix& m) {
        std::vector<std::string> names;
        for (const auto& kv : m.entries) names.push_back(kv.first);
        return names;
      }, "Tensor names with an entry, sorted.")
      .def("__len__", [](const Imatrix& m) { return m.entries.size(); })
      .def("__contains__", [](const Imatrix& m, const std::string& n) { return m.entries.count(n) > 0; })
      .def("__getitem__", [](const Imatrix& m, const std::string& n) {
        auto it = m.entries.find(n);
        if (it == m.entries.end()) throw py::key_error(n);
        return it->second;
      })
      .def("set", [](Imatrix& m, const std::string& name, const at::Tensor& in_sum2, int64_t count) {
        const at::Tensor t = in_sum2.to(at::kCPU, at::kFloat).contiguous();
        MPQ_CHECK_VALUE(t.dim() == 1 && count >= 0, "Imatrix.set: ", name,
                        ": in_sum2 must be 1-D and count >= 0");
        m.entries[name] = ImatrixEntry{std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel()), count};
      }, py::arg("name"), py::arg("in_sum2"), py::arg("count"))
      .def("importance", [](const Imatrix& m, const std::string& name) {
        return at::tensor(m.importance(name), at::TensorOptions().dtype(at::kFloat));
      }, py::arg("name"), "in_sum2 / count: the weights llama-quantize gives ggml.")
      .def("save", &Imatrix::save, py::arg("path"), "Writes llama-imatrix's GGUF format.")
      .def("save_legacy", &Imatrix::save_legacy, py::arg("path"), "Writes the legacy .dat format.")
      .def_static("load", &Imatrix::load, py::arg("path"), "Reads either format.")
      .def("__repr__", [](const Imatrix& m) {
        return "Imatrix(" + std::to_string(m.entries.size()) + " tensors, chunk_count=" +
               std::to_string(m.chunk_count) + ", chunk_size=" + std::to_string(m.chunk_size) + ")";
      });

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
      .def(
          "observe",
          [](Calibrator& c, const std::vector<std::string>& layers, const at::Tensor& x) {
            py::gil_scoped_release release;
            c.observe(layers, x);
          },
          py::arg("layers"), py::arg("x"),
          R"(Adds the rows of x to the sums of every layer in `layers`, computing them once.

Args:
    layers: distinct names of layers that read the same input (e.g. blk.0.attn_q/k/v).
    x: floating tensor [..., in_features], their common input.)")
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
      .def("imatrix", &Imatrix::from_calibrator, py::arg("chunk_size"),
           py::arg("datasets") = std::vector<std::string>{}, py::arg("include_output") = false,
           R"(llama.cpp's importance matrix from the observed statistics.

Args:
    chunk_size: tokens per chunk (llama-imatrix's n_ctx), recorded in the file.
    datasets: names of the calibration texts, recorded in the file.
    include_output: also the "output" layer (llama-imatrix's --process-output).

Returns:
    Imatrix with entries named "<layer>.weight".)")
      .def("__repr__", [](const Calibrator& c) {
        return "Calibrator(" + std::to_string(c.layers().size()) + " layers, " +
               c.options().to_string() + ")";
      });
}

}  // namespace mpq::bindings
