#include <mpq/awq.h>
#include <mpq/expert.h>
#include <mpq/gptq.h>
#include <mpq/smoothquant.h>

#include <mpq/error.h>

#include <torch/csrc/autograd/python_variable.h>

#include "bind.h"
#include "bind_options.h"
#include "format_arg.h"

namespace mpq::bindings {
namespace {

// Lets Python subclasses of mpq.Expert stand in wherever C++ expects an Expert.
class PyExpert : public Expert {
 public:
  using Expert::Expert;
  std::string name() const override { PYBIND11_OVERRIDE_PURE(std::string, Expert, name); }
  std::string to_string() const override { PYBIND11_OVERRIDE(std::string, Expert, to_string); }
  bool needs_stats() const override { PYBIND11_OVERRIDE(bool, Expert, needs_stats); }
  bool transforms_input() const override { PYBIND11_OVERRIDE(bool, Expert, transforms_input); }
  at::Tensor input_scale(const std::vector<ExpertLayer>& layers,
                         const LayerStats* stats) const override {
    PYBIND11_OVERRIDE(at::Tensor, Expert, input_scale, layers, stats);
  }
  std::vector<ExpertResult> quantize(const std::vector<ExpertLayer>& layers,
                                     const LayerStats* stats, bool can_scale) const override {
    PYBIND11_OVERRIDE_PURE(std::vector<ExpertResult>, Expert, quantize, layers, stats, can_scale);
  }
};

ExpertLayer make_layer(std::string name, at::Tensor weight, const py::object& format) {
  Format f = py::isinstance<py::str>(format) ? find_format(format.cast<std::string>())
                                             : format.cast<Format>();
  return ExpertLayer{std::move(name), std::move(weight), std::move(f)};
}

}  // namespace

void bind_expert(py::module_& m) {
  py::class_<ExpertLayer>(m, "ExpertLayer", "A linear layer handed to an expert.")
      .def(py::init(&make_layer), py::arg("name"), py::arg("weight"), py::arg("format"),
           "Args:\n    name: llama.cpp name, e.g. 'blk.0.attn_q'.\n    weight: [out, in] "
           "floating tensor.\n    format: format name or Format.")
      .def_readonly("name", &ExpertLayer::name)
      .def_readonly("weight", &ExpertLayer::weight)
      .def_readonly("format", &ExpertLayer::format);

  py::class_<ExpertResult>(m, "ExpertResult", "What an expert made of one layer.")
      .def(py::init([](std::string name, QuantizedTensor q, std::optional<at::Tensor> input_scale,
                       std::string note) {
             ExpertResult r;
             r.name = std::move(name);
             r.quantized = std::move(q);
             r.input_scale = input_scale.value_or(at::Tensor());
             r.note = std::move(note);
             return r;
           }),
           py::arg("name"), py::arg("quantized"), py::arg("input_scale") = py::none(),
           py::arg("note") = "")
      .def_readonly("name", &ExpertResult::name)
      .def_readonly("quantized", &ExpertResult::quantized)
      .def_property(
          "input_scale",
          [](const ExpertResult& r) -> std::optional<at::Tensor> {
            if (!r.input_scale.defined()) return std::nullopt;
            return r.input_scale;
          },
          [](ExpertResult& r, std::optional<at::Tensor> s) { r.input_scale = s.value_or(at::Tensor()); },
          "The folded input scale s [in] (None: no transform).")
      .def_readwrite("weight_mse", &ExpertResult::weight_mse)
      .def_readwrite("output_error", &ExpertResult::output_error)
      .def_readwrite("note", &ExpertResult::note)
      .def("effective_weight", [](const ExpertResult& r) { return effective_weight(r); },
           "dequantize(quantized) / input_scale: the weight this result stands for.")
      .def("fill_errors",
           [](ExpertResult& r, const at::Tensor& weight, std::optional<at::Tensor> hessian) {
             fill_errors(r, weight, hessian.value_or(at::Tensor()));
           },
           py::arg("weight"), py::arg("hessian") = py::none(),
           "Sets weight_mse and (with a Hessian) output_error against the original weight.")
      .def("__repr__", &ExpertResult::to_string);

  py::class_<Expert, PyExpert, std::shared_ptr<Expert>>(
      m, "Expert",
      "A quantization method. Subclass it in Python (name(), quantize(layers, stats, can_scale), "
      "optionally needs_stats(), transforms_input()) and register_expert() a factory.")
      .def(py::init<>())
      .def("name", &Expert::name)
      .def("needs_stats", &Expert::needs_stats)
      .def("transforms_input", &Expert::transforms_input)
      .def(
          "input_scale",
          [](const Expert& e, const std::vector<ExpertLayer>& layers,
             const LayerStats* stats) -> std::optional<at::Tensor> {
            at::Tensor s;
            {
              py::gil_scoped_release release;
              s = e.input_scale(layers, stats);
            }
            if (!s.defined()) return std::nullopt;
            return s;
          },
          py::arg("layers"), py::arg("stats") = nullptr,
          "Transforming experts: the input scale s for these layers (None for the others).")
      .def(
          "quantize",
          [](const Expert& e, const std::vector<ExpertLayer>& layers, const LayerStats* stats,
             bool can_scale) {
            py::gil_scoped_release release;
            return e.quantize(layers, stats, can_scale);
          },
          py::arg("layers"), py::arg("stats") = nullptr, py::arg("can_scale") = true,
          R"(Quantizes layers that read one input.

Args:
    layers: list of ExpertLayer sharing in_features.
    stats: the input's LayerStats (Calibrator.stats(name)); None for experts that need none.
    can_scale: whether an input scale can be folded into the op producing the input.

Returns:
    list of ExpertResult, one per layer.)")
      .def("__repr__", &Expert::to_string);

  py::class_<RtnExpert, Expert, std::shared_ptr<RtnExpert>>(m, "RtnExpert")
      .def(py::init<RtnOptions>(), py::arg("options") = RtnOptions{})
      .def_property_readonly("options", &RtnExpert::options);
  py::class_<KquantExpert, Expert, std::shared_ptr<KquantExpert>>(m, "KquantExpert")
      .def(py::init<bool>(), py::arg("use_imatrix") = false);

  py::class_<GptqOptions> gptq(m, "GptqOptions", "Options of GPTQ.");
  def_options(gptq, field("damp", &GptqOptions::damp), field("max_damp", &GptqOptions::max_damp),
              field("block_size", &GptqOptions::block_size), field("act_order", &GptqOptions::act_order),
              field("static_groups", &GptqOptions::static_groups),
              field("mse_clip", &GptqOptions::mse_clip), field("importance", &GptqOptions::importance));
  py::class_<GptqResult>(m, "GptqResult")
      .def_readonly("quantized", &GptqResult::quantized)
      .def_readonly("damp", &GptqResult::damp)
      .def_readonly("dead_columns", &GptqResult::dead_columns);
  m.def(
      "gptq_quantize",
      [](const at::Tensor& weight, py::object format, py::object hessian, const GptqOptions& options,
         const std::string& name) {
        if (THPVariable_Check(format.ptr()) && !THPVariable_Check(hessian.ptr())) {
          // mpq 0.1's order, gptq_quantize(weight, hessian, format): accepted for a while.
          PyErr_WarnEx(PyExc_DeprecationWarning,
                       "gptq_quantize(weight, hessian, format) is deprecated: pass "
                       "gptq_quantize(weight, format, hessian), the order of the quantize family",
                       1);
          std::swap(format, hessian);
        }
        const Format f = as_format(format);
        const at::Tensor h = hessian.cast<at::Tensor>();
        py::gil_scoped_release release;
        return gptq_quantize(weight, h, f, options, name);
      },
      py::arg("weight"), py::arg("format"), py::arg("hessian"),
      py::arg("options") = GptqOptions{}, py::arg("name") = "weight",
      R"(GPTQ of one weight against its Hessian.

Like every one-tensor quantizer (quantize, quantize_rtn, quantize_ggml): the weight, the format,
then what this method needs (here the Hessian), its options and the tensor's name.

Args:
    weight: [out, in] floating tensor (CPU, CUDA, ...).
    format: a format name or mpq.Format (integer group formats or llama.cpp types).
    hessian: [in, in], e.g. Calibrator.stats(name).hessian().
    options: GptqOptions.
    name: the layer's name for error messages.

Returns:
    GptqResult (quantized, damp used, dead columns).)");
  py::class_<GptqExpert, Expert, std::shared_ptr<GptqExpert>>(m, "GptqExpert")
      .def(py::init<GptqOptions>(), py::arg("options") = GptqOptions{})
      .def_property_readonly("options", &GptqExpert::options);

  py::class_<AwqOptions> awq(m, "AwqOptions", "Options of AWQ.");
  def_options(awq, field("grid", &AwqOptions::grid), field("duo_scaling", &AwqOptions::duo_scaling),
              field("clip", &AwqOptions::clip), field("clip_grid", &AwqOptions::clip_grid),
              field("max_shrink", &AwqOptions::max_shrink), field("no_clip", &AwqOptions::no_clip));
  py::class_<AwqExpert, Expert, std::shared_ptr<AwqExpert>>(m, "AwqExpert")
      .def(py::init<AwqOptions>(), py::arg("options") = AwqOptions{})
      .def_property_readonly("options", &AwqExpert::options);

  py::class_<SmoothQuantOptions> sq(m, "SmoothQuantOptions", "Options of SmoothQuant.");
  def_options(sq, field("alpha", &SmoothQuantOptions::alpha), field("rtn", &SmoothQuantOptions::rtn));
  py::class_<SmoothQuantExpert, Expert, std::shared_ptr<SmoothQuantExpert>>(m, "SmoothQuantExpert")
      .def(py::init<SmoothQuantOptions>(), py::arg("options") = SmoothQuantOptions{})
      .def_property_readonly("options", &SmoothQuantExpert::options);
  m.def("smoothquant_scale", &smoothquant_scale, py::arg("weights"), py::arg("act_max"),
        py::arg("alpha") = 0.5,
        "SmoothQuant's per-input-channel scale for weights [out_k, in] and max |x| [in].");

  m.def("output_error", &output_error, py::arg("weight"), py::arg("approx"), py::arg("hessian"),
        "tr(ΔW H ΔWᵀ) for ΔW = weight - approx.");
  m.def("make_expert", &make_expert, py::arg("name"),
        "An expert with default options: 'rtn', 'kquant', 'kquant_imatrix', 'gptq', 'awq', "
        "'smoothquant', or a registered name.");
  m.def("list_experts", &list_experts);
  m.def(
      "register_expert",
      [](const std::string& name, py::object factory) {
        MPQ_CHECK_TYPE(PyCallable_Check(factory.ptr()), "register_expert('", name,
                       "'): factory must be callable");
        // Deliberately leaked: the registry is a static that outlives the interpreter, and a
        // py::object destroyed after Python's finalisation would crash the process at exit.
        auto* fn = new py::object(std::move(factory));
        register_expert(name, [fn]() -> std::shared_ptr<Expert> {
          py::gil_scoped_acquire gil;
          py::object obj = (*fn)();
          auto* raw = obj.cast<Expert*>();
          // The Python object owns the expert (and its Python overrides): keep it alive for as
          // long as C++ holds the pointer.
          auto keep = std::make_shared<py::object>(std::move(obj));
          return std::shared_ptr<Expert>(raw, [keep](Expert*) mutable {
            py::gil_scoped_acquire g;
            keep->release().dec_ref();
          });
        });
      },
      py::arg("name"), py::arg("factory"),
      "Registers factory() -> Expert under `name` for make_expert (replacing any).");
}

}  // namespace mpq::bindings
