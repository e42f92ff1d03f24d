#include <mpq/error.h>
#include <mpq/kquants.h>

#include "bind.h"
#include "format_arg.h"
// Internal (libmpq's private headers are not on the bindings' include path).
#include "../cpp/src/quant/ggml_dequant_device.h"

namespace mpq::bindings {

void bind_kquants(py::module_& m) {
  m.def(
      "quantize_ggml",
      [](const at::Tensor& weight, const py::object& format, std::optional<at::Tensor> importance,
         const std::string& name) {
        const Format f = as_format(format);
        py::gil_scoped_release release;
        return quantize_ggml(weight, f, importance, name);
      },
      py::arg("weight"), py::arg("format"), py::arg("importance") = py::none(),
      py::arg("name") = "weight",
      R"(Quantizes a weight [rows, n_per_row] to a llama.cpp format, byte-identical with ggml.

Args:
    weight: floating tensor; rows of a multiple of the format's block size.
    format: "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k",
        "iq4_nl", "iq4_xs", "iq3_s", "iq3_xxs", "iq2_s", "iq2_xs", "iq2_xxs", "iq1_m", "iq1_s",
        "f16", "bf16", "f32".
    importance: optional float [n_per_row] importance weights (imatrix Σx²/count); required
        for iq2_xxs, iq2_xs and iq1_s (ValueError without), as in llama.cpp.
    name: the tensor's name for error messages.

Returns:
    uint8 tensor [rows, row_bytes]: the ggml blocks, as stored in a GGUF file.)");
  m.def(
      "dequantize_ggml",
      [](const at::Tensor& blocks, const std::string& format, int64_t n_per_row) {
        const Format f = find_format(format);
        py::gil_scoped_release release;
        return dequantize_ggml(blocks, f, n_per_row);
      },
      py::arg("blocks"), py::arg("format"), py::arg("n_per_row"),
      "Dequantizes ggml blocks [rows, row_bytes] to float32 [rows, n_per_row].");
  m.def(
      "_dequantize_ggml_device",
      [](const at::Tensor& blocks, const std::string& format, int64_t n_per_row) {
        const Format f = find_format(format);
        MPQ_CHECK_VALUE(f.family == FormatFamily::kGgml, "blocks: ", f.name,
                        " is not a llama.cpp (ggml) format");
        py::gil_scoped_release release;
        return detail::dequantize_ggml_device(blocks, static_cast<detail::ggml::Type>(f.ggml_type),
                                              n_per_row);
      },
      py::arg("blocks"), py::arg("format"), py::arg("n_per_row"),
      "Private: dequantize_ggml through the device-generic ATen-op reader, on any device (CPU too).");
  m.def(
      "ggml_fallback",
      [](const std::string& format, int64_t n_per_row) { return ggml_fallback(find_format(format), n_per_row); },
      py::arg("format"), py::arg("n_per_row"),
      "The format llama-quantize substitutes when n_per_row is not a multiple of the block.");
}

}  // namespace mpq::bindings
