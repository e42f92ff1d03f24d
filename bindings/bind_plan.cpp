#include <mpq/plan.h>

#include "bind.h"

namespace mpq::bindings {

void bind_plan(py::module_& m) {
  py::class_<TensorSpec>(m, "TensorSpec", "A tensor of a model: GGUF name and GGUF-order shape.")
      .def(py::init([](std::string name, std::vector<int64_t> shape, std::string source_format) {
             return TensorSpec{std::move(name), std::move(shape), std::move(source_format)};
           }),
           py::arg("name"), py::arg("shape"), py::arg("source_format") = "f32")
      .def_readwrite("name", &TensorSpec::name)
      .def_readwrite("shape", &TensorSpec::shape)
      .def_readwrite("source_format", &TensorSpec::source_format);

  py::class_<ModelSpec>(m, "ModelSpec", "What llama.cpp's mix rules need to know about a model.")
      .def(py::init([](std::string arch, int64_t n_layer, int64_t n_head, int64_t n_head_kv,
                       bool tied_output, std::vector<TensorSpec> tensors, int64_t n_expert) {
             ModelSpec s;
             s.arch = std::move(arch);
             s.n_layer = n_layer;
             s.n_head = n_head;
             s.n_head_kv = n_head_kv;
             s.tied_output = tied_output;
             s.tensors = std::move(tensors);
             s.n_expert = n_expert;
             return s;
           }),
           py::arg("arch"), py::arg("n_layer"), py::arg("n_head"), py::arg("n_head_kv"),
           py::arg("tied_output"), py::arg("tensors"), py::arg("n_expert") = 0)
      .def_readwrite("arch", &ModelSpec::arch)
      .def_readwrite("n_layer", &ModelSpec::n_layer)
      .def_readwrite("tensors", &ModelSpec::tensors)
      .def_readwrite("tied_output", &ModelSpec::tied_output);

  py::class_<TensorChoice>(m, "TensorChoice")
      .def(py::init([](std::string format, std::string expert) {
             return TensorChoice{std::move(format), std::move(expert)};
           }),
           py::arg("format"), py::arg("expert") = "kquant")
      .def_readwrite("format", &TensorChoice::format)
      .def_readwrite("expert", &TensorChoice::expert)
      .def("__eq__", [](const TensorChoice& a, const TensorChoice& b) { return a == b; })
      .def("__repr__", [](const TensorChoice& c) {
        return "TensorChoice(format='" + c.format + "', expert='" + c.expert + "')";
      });

  py::class_<Plan>(m, "Plan", "Which format (and expert) each tensor of a model gets.")
      .def(py::init<>())
      .def_readwrite("name", &Plan::name)
      .def_readwrite("base", &Plan::base)
      .def("set", &Plan::set, py::arg("tensor"), py::arg("choice"))
      .def("get", &Plan::get, py::arg("tensor"))
      .def("__contains__", &Plan::contains)
      .def("__len__", &Plan::size)
      .def("tensors", &Plan::tensors)
      .def("formats", [](const Plan& p) {
        py::dict out;
        for (const auto& [name, c] : p.tensors()) out[py::str(name)] = c.format;
        return out;
      }, "dict tensor name -> format")
      .def("to_json", &Plan::to_json)
      .def_static("from_json", &Plan::from_json, py::arg("json"))
      .def("tensor_type_lines", &Plan::tensor_type_lines,
           "The equivalent llama-quantize --tensor-type arguments (use with --pure and `base`).")
      .def("bytes", &Plan::bytes, py::arg("model"), "Tensor data bytes of the model under this plan.")
      .def("bits_per_weight", &Plan::bits_per_weight, py::arg("model"),
           "8 * bytes / weights, every tensor counted.")
      .def("__repr__", [](const Plan& p) {
        return "Plan('" + p.name + "', " + std::to_string(p.size()) + " tensors, base='" + p.base + "')";
      });

  m.def("llama_cpp_mix", &llama_cpp_mix, py::arg("ftype"), py::arg("model"),
        py::arg("imatrix") = false,
        R"(llama-quantize's choice of type for every tensor under `ftype`.

Args:
    ftype: "Q4_K_M", "Q3_K_S", "IQ3_M", "IQ2_XXS", "Q8_0", ...; "+L8" variants of the K mixes put
        token_embd and output at q8_0.
    model: the ModelSpec (mpq.export.model_spec).
    imatrix: whether the file is made with an importance matrix (llama-quantize --imatrix); some
        rules depend on it.

Returns:
    The Plan.

Raises:
    ValueError: unknown ftype, or (without imatrix) a tensor would get a type llama-quantize
        refuses to write without an importance matrix.)");
  m.def("llama_cpp_file_type", &llama_cpp_file_type, py::arg("ftype"),
        "llama.h's llama_ftype number (general.file_type) of a mix name.");
  m.def("llama_cpp_mix_names", &llama_cpp_mix_names);
}

}  // namespace mpq::bindings
