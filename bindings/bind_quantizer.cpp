#include <mpq/quantizer.h>

#include "bind.h"
#include "bind_options.h"
#include "format_arg.h"

namespace mpq::bindings {

void bind_quantizer(py::module_& m) {
  py::class_<RtnOptions> rtn(m, "RtnOptions", "Options of round-to-nearest quantization.");
  def_options(rtn, field("mse_clip", &RtnOptions::mse_clip), field("grid", &RtnOptions::grid),
              field("max_shrink", &RtnOptions::max_shrink), field("norm", &RtnOptions::norm));

  py::class_<QuantizedTensor>(m, "QuantizedTensor",
                              "A packed quantized 2-D weight: codes, fp16 scales, zero points.")
      .def(py::init([](std::string format, at::Tensor codes, std::optional<at::Tensor> scales,
                       std::optional<at::Tensor> zeros, int64_t rows, int64_t cols,
                       at::ScalarType dtype) {
             QuantizedTensor q{std::move(format), std::move(codes), scales.value_or(at::Tensor()),
                               zeros.value_or(at::Tensor()), rows, cols, dtype};
             q.validate();
             return q;
           }),
           py::arg("format"), py::arg("codes"), py::arg("scales"), py::arg("zeros"),
           py::arg("rows"), py::arg("cols"), py::arg("dtype") = at::kFloat)
      .def_readonly("format", &QuantizedTensor::format)
      .def_readonly("codes", &QuantizedTensor::codes)
      .def_property_readonly("scales",
                             [](const QuantizedTensor& q) -> std::optional<at::Tensor> {
                               if (!q.scales.defined()) return std::nullopt;
                               return q.scales;
                             })
      .def_property_readonly("zeros",
                             [](const QuantizedTensor& q) -> std::optional<at::Tensor> {
                               if (!q.zeros.defined()) return std::nullopt;
                               return q.zeros;
                             })
      .def_readonly("rows", &QuantizedTensor::rows)
      .def_readonly("cols", &QuantizedTensor::cols)
      .def_readonly("dtype", &QuantizedTensor::dtype)
      .def_property_readonly("shape", [](const QuantizedTensor& q) {
        return py::make_tuple(q.rows, q.cols);
      })
      .def_property_readonly("nbytes", &QuantizedTensor::nbytes)
      .def(
          "to", [](const QuantizedTensor& q, const std::string& device) { return q.to(at::Device(device)); },
          py::arg("device"),
          "A copy with its tensors on `device` (e.g. \"cuda\"); mpq.dequantize runs where the codes are.")
      .def("__repr__", &QuantizedTensor::to_string);

  m.def(
      "quantize",
      [](const at::Tensor& weight, const py::object& format, std::optional<at::Tensor> importance,
         const RtnOptions& options, const std::string& name) {
        const Format f = as_format(format);
        py::gil_scoped_release release;
        return quantize(weight, f, importance, options, name);
      },
      py::arg("weight"), py::arg("format"), py::arg("importance") = py::none(),
      py::arg("options") = RtnOptions{}, py::arg("name") = "weight",
      R"(Quantizes a 2-D weight to any registered format.

Args:
    weight: floating tensor [rows, cols].
    format: an integer format ("int4_g128": RTN with `options`) or a llama.cpp one ("q4_k":
        byte-identical with ggml, weighted by `importance` when given).
    importance: float [cols] importance weights (ggml formats only).
    options: RtnOptions for integer formats.
    name: the tensor's name, used in error messages.

Returns:
    QuantizedTensor.)");
  m.def(
      "quantize_rtn",
      [](const at::Tensor& weight, const py::object& format, const RtnOptions& options,
         const std::string& name) {
        const Format f = as_format(format);
        py::gil_scoped_release release;
        return quantize_rtn(weight, f, options, name);
      },
      py::arg("weight"), py::arg("format"), py::arg("options") = RtnOptions{},
      py::arg("name") = "weight",
      R"(Round-to-nearest quantization of a 2-D weight to an integer format.

Args:
    weight: floating tensor [rows, cols] (fp32/fp16/bf16/fp64) on any device.
    format: format name, e.g. "int4_g32", "int8", "int3_g128_sym".
    options: RtnOptions (e.g. mse_clip=True for the clipping search).
    name: the tensor's name, used in error messages.

Returns:
    QuantizedTensor on the weight's device.)");
  m.def(
      "dequantize",
      [](const QuantizedTensor& q, std::optional<at::ScalarType> dtype) {
        py::gil_scoped_release release;
        return dequantize(q, dtype);
      },
      py::arg("q"), py::arg("dtype") = py::none(),
      R"(Dequantizes a QuantizedTensor.

Args:
    q: the QuantizedTensor.
    dtype: result dtype; default the dtype of the weight that was quantized.

Returns:
    Tensor [rows, cols] on the device of q.codes.)");
  m.def("pack_codes", &pack_codes, py::arg("codes"), py::arg("bits"),
        "Packs uint8 codes [rows, n] (< 2^bits) into a little-endian bit stream per row.");
  m.def("unpack_codes", &unpack_codes, py::arg("packed"), py::arg("bits"), py::arg("n"),
        "Unpacks rows of n codes of `bits` bits (the inverse of pack_codes).");
}

}  // namespace mpq::bindings
