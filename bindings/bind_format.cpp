#include <mpq/error.h>
#include <mpq/format.h>

#include "bind.h"

namespace mpq::bindings {

void bind_format(py::module_& m) {
  py::enum_<FormatFamily>(m, "FormatFamily")
      .value("INTEGER", FormatFamily::kInteger, "integer codes with per-group fp16 scales")
      .value("GGML", FormatFamily::kGgml, "a llama.cpp tensor type stored as ggml blocks");

  py::class_<Format>(m, "Format", "A quantization format and its traits.")
      .def(py::init([](std::string name, FormatFamily family, int bits, int64_t group_size,
                       bool symmetric) {
             MPQ_CHECK_VALUE(family == FormatFamily::kInteger,
                             "Format: only integer formats can be defined (the ggml ones are built in)");
             Format f{std::move(name), family, bits, group_size, symmetric};
             f.validate();
             return f;
           }),
           py::arg("name"), py::arg("family") = FormatFamily::kInteger, py::arg("bits") = 4,
           py::arg("group_size") = 0, py::arg("symmetric") = false)
      .def_readonly("ggml_type", &Format::ggml_type, "ggml type id (GGUF tensor type); -1 if none")
      .def_readonly("name", &Format::name)
      .def_readonly("family", &Format::family)
      .def_readonly("bits", &Format::bits)
      .def_readonly("group_size", &Format::group_size, "weights per scale; 0 = a whole row")
      .def_readonly("symmetric", &Format::symmetric)
      .def("groups_per_row", &Format::groups_per_row, py::arg("row_length"))
      .def("bytes", &Format::bytes, py::arg("rows"), py::arg("cols"),
           "Bytes of the stored form of a rows x cols weight.")
      .def("bits_per_weight", &Format::bits_per_weight, py::arg("row_length"),
           "Stored bits per weight for rows of `row_length` weights (scales and zeros included).")
      .def_property_readonly("requires_importance", &Format::requires_importance,
                             "True for the ggml formats that cannot be quantized without an imatrix")
      .def("__repr__", &Format::to_string)
      .def("__eq__", [](const Format& a, const Format& b) { return a.name == b.name; })
      .def("__hash__", [](const Format& f) { return py::hash(py::str(f.name)); });

  m.def("find_format", &find_format, py::arg("name"),
        R"(Looks a format up by name.

Args:
    name: a registered name, or an integer format int<bits>[_g<group>][_sym].

Returns:
    Format. Raises ValueError for an unknown name.)");
  m.def("register_format", &register_format, py::arg("format"),
        "Registers a format under its name (ValueError if the name means something else).");
  m.def("list_formats", &list_formats, "Names of the registered formats, sorted.");
  m.def("integer_format_name", &integer_format_name, py::arg("bits"), py::arg("group_size") = 0,
        py::arg("symmetric") = false, "The canonical name of an integer format.");
}

}  // namespace mpq::bindings
