#include <cmath>
#include <limits>

#include <mpq/candidates.h>

#include <pybind11/numpy.h>

#include "bind.h"

namespace mpq::bindings {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Tensors and options may be given by index or by name.
int tensor_of(const CandidateTable& t, const py::object& tensor) {
  if (py::isinstance<py::str>(tensor)) return t.tensor_index(tensor.cast<std::string>());
  return tensor.cast<int>();
}
int option_of(const CandidateTable& t, const py::object& option) {
  if (py::isinstance<py::str>(option)) return t.option_index(option.cast<std::string>());
  return option.cast<int>();
}

// A [tensors, options] numpy array of one cell value; `missing` where the cell is unavailable.
template <typename T, typename F>
py::array_t<T> matrix(const CandidateTable& t, T missing, F&& value) {
  py::array_t<T> out({t.num_tensors(), t.num_options()});
  auto a = out.template mutable_unchecked<2>();
  for (int i = 0; i < t.num_tensors(); ++i) {
    for (int o = 0; o < t.num_options(); ++o) a(i, o) = t.available(i, o) ? value(i, o) : missing;
  }
  return out;
}

}  // namespace

void bind_candidates(py::module_& m) {
  py::class_<CandidateTable>(m, "CandidateTable", R"(What the search chooses from.

Rows are quantizable tensors, columns options (e.g. "gptq:q4_k"); each available cell holds the
tensor's bytes in the file under that option, its proxy error and its measured KL (NaN: not
measured). Tensors sharing a non-empty group always take the same option. fixed_bytes /
fixed_weights count the file's tensors outside the search.)")
      .def(py::init<std::vector<std::string>>(), py::arg("options"),
           "Args:\n    options: unique option labels (the columns).")
      .def("add_tensor", &CandidateTable::add_tensor, py::arg("name"), py::arg("weights"),
           py::arg("group") = "",
           "Adds a row (every option unavailable). Returns its index.\n\nArgs:\n    name: tensor "
           "name.\n    weights: number of weights (> 0).\n    group: coupling group ('' = none).")
      .def(
          "set",
          [](CandidateTable& t, const py::object& tensor, const py::object& option, int64_t bytes,
             double proxy, double kl) {
            t.set(tensor_of(t, tensor), option_of(t, option), bytes, proxy, kl);
          },
          py::arg("tensor"), py::arg("option"), py::arg("bytes"), py::arg("proxy"),
          py::arg("kl") = kNaN,
          "Makes `option` available to `tensor` (each an index or a name) with its bytes, proxy "
          "error and KL (NaN: not measured).")
      .def(
          "set_kl",
          [](CandidateTable& t, const py::object& tensor, const py::object& option, double kl) {
            t.set_kl(tensor_of(t, tensor), option_of(t, option), kl);
          },
          py::arg("tensor"), py::arg("option"), py::arg("kl"))
      .def(
          "set_unavailable",
          [](CandidateTable& t, const py::object& tensor, const py::object& option) {
            t.set_unavailable(tensor_of(t, tensor), option_of(t, option));
          },
          py::arg("tensor"), py::arg("option"))
      .def("set_fixed", &CandidateTable::set_fixed, py::arg("bytes"), py::arg("weights"),
           "Bytes and weights of the file's tensors outside the search (norms, ...).")
      .def_property_readonly("num_tensors", &CandidateTable::num_tensors)
      .def_property_readonly("num_options", &CandidateTable::num_options)
      .def_property_readonly("options", &CandidateTable::options)
      .def_property_readonly("fixed_bytes", &CandidateTable::fixed_bytes)
      .def_property_readonly("fixed_weights", &CandidateTable::fixed_weights)
      .def_property_readonly("total_weights", &CandidateTable::total_weights)
      .def_property_readonly(
          "tensors",
          [](const CandidateTable& t) {
            std::vector<std::string> names;
            for (int i = 0; i < t.num_tensors(); ++i) names.push_back(t.tensor_name(i));
            return names;
          },
          "Tensor names in row order.")
      .def("tensor_name", &CandidateTable::tensor_name, py::arg("tensor"))
      .def("tensor_weights", &CandidateTable::tensor_weights, py::arg("tensor"))
      .def("tensor_group", &CandidateTable::tensor_group, py::arg("tensor"))
      .def("tensor_index", &CandidateTable::tensor_index, py::arg("name"))
      .def("option_index", &CandidateTable::option_index, py::arg("label"))
      .def(
          "available",
          [](const CandidateTable& t, const py::object& tensor, const py::object& option) {
            return t.available(tensor_of(t, tensor), option_of(t, option));
          },
          py::arg("tensor"), py::arg("option"))
      .def(
          "cell",
          [](const CandidateTable& t, const py::object& tensor, const py::object& option) {
            const int i = tensor_of(t, tensor), o = option_of(t, option);
            return py::make_tuple(t.cell_bytes(i, o), t.cell_proxy(i, o), t.cell_kl(i, o));
          },
          py::arg("tensor"), py::arg("option"),
          "(bytes, proxy, kl) of an available cell; ValueError for an unavailable one.")
      .def("bytes_matrix",
           [](const CandidateTable& t) {
             return matrix<int64_t>(t, -1, [&](int i, int o) { return t.cell_bytes(i, o); });
           },
           "int64 [tensors, options]; -1 where unavailable.")
      .def("proxy_matrix",
           [](const CandidateTable& t) {
             return matrix<double>(t, kNaN, [&](int i, int o) { return t.cell_proxy(i, o); });
           },
           "float64 [tensors, options]; NaN where unavailable.")
      .def("kl_matrix",
           [](const CandidateTable& t) {
             return matrix<double>(t, kNaN, [&](int i, int o) { return t.cell_kl(i, o); });
           },
           "float64 [tensors, options]; NaN where unavailable or not measured.")
      .def("genes", &CandidateTable::genes,
           "The coupling groups: lists of tensor indices (an ungrouped tensor alone).")
      .def("gene_options", &CandidateTable::gene_options,
           "For each gene, the options available to all of its tensors.")
      .def("validate", &CandidateTable::validate)
      .def("check_genome", &CandidateTable::check_genome, py::arg("genome"))
      .def("bytes", &CandidateTable::bytes, py::arg("genome"),
           "File bytes of a genome (one option index per tensor), fixed bytes included.")
      .def("bits_per_weight", &CandidateTable::bits_per_weight, py::arg("genome"),
           "8 * bytes / total_weights.")
      .def("proxy", &CandidateTable::proxy, py::arg("genome"), "Summed proxy error of a genome.")
      .def("to_json", &CandidateTable::to_json)
      .def_static("from_json", &CandidateTable::from_json, py::arg("json"),
                  py::arg("what") = "table JSON")
      .def("save", &CandidateTable::save, py::arg("path"),
           "Writes JSON (temporary name, then rename).")
      .def_static("load", &CandidateTable::load, py::arg("path"))
      .def("__len__", &CandidateTable::num_tensors)
      .def("__repr__", &CandidateTable::to_string);
}

}  // namespace mpq::bindings
