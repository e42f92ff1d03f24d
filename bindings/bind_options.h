#pragma once
// One way to bind an Options struct (an aggregate with defaults, validate() and to_string()):
// keyword arguments whose defaults are read from the default-constructed struct, so each default
// lives only in the C++ header; attributes; validate; __repr__; as_dict/from_dict; pickling.
#include <string>
#include <type_traits>

#include "bind.h"

namespace mpq::bindings {

template <typename T, typename M>
struct OptionField {
  const char* name;
  M T::*member;
};

template <typename T, typename M>
OptionField<T, M> field(const char* name, M T::*member) {
  return {name, member};
}

namespace detail {

template <typename M>
concept OptionsStruct = std::is_class_v<M> && requires(const M& m) {
  { m.to_string() } -> std::convertible_to<std::string>;
  m.validate();
};

// Nested Options structs become nested dicts, so reports hold plain data.
template <typename M>
py::object to_plain(const M& value) {
  py::object v = py::cast(value);
  if constexpr (OptionsStruct<M>) return v.attr("as_dict")();
  return v;
}

template <typename M>
M from_plain(const py::handle& value) {
  if constexpr (OptionsStruct<M>) {
    if (py::isinstance<py::dict>(value)) return py::type::of<M>().attr("from_dict")(value).template cast<M>();
  }
  return value.cast<M>();
}

// Sets one field from the dict when the dict has it; returns whether it did.
template <typename T, typename M>
bool set_from(T& o, const OptionField<T, M>& f, const py::dict& d) {
  if (!d.contains(f.name)) return false;
  o.*(f.member) = from_plain<M>(d[f.name]);
  return true;
}

}  // namespace detail

template <typename T, typename... M>
void def_options(py::class_<T>& cls, OptionField<T, M>... fields) {
  static const T defaults{};
  cls.def(py::init([... member = fields.member](M... values) {
             T o{};
             ((o.*member = std::move(values)), ...);
             o.validate();
             return o;
           }),
           (py::arg(fields.name) = defaults.*(fields.member))...);
  (cls.def_readwrite(fields.name, fields.member), ...);
  auto as_dict = [... f = fields](const T& o) {
    py::dict d;
    ((d[f.name] = detail::to_plain(o.*(f.member))), ...);
    return d;
  };
  auto from_dict = [... f = fields](const py::dict& d) {
    T o{};
    const size_t known = (size_t{0} + ... + size_t{detail::set_from(o, f, d)});
    if (known != d.size()) {
      std::string names;
      for (const auto& [k, v] : d) names += " " + py::str(k).cast<std::string>();
      throw py::value_error(py::str(py::type::of<T>().attr("__name__")).cast<std::string>() +
                            ".from_dict: unknown keys among" + names +
                            " (known: " + ((std::string(" ") + f.name) + ...) + ")");
    }
    o.validate();
    return o;
  };
  cls.def("validate", &T::validate)
      .def("__repr__", &T::to_string)
      .def("as_dict", as_dict, "The options as a dict of plain values (nested options as dicts).")
      .def_static("from_dict", from_dict, py::arg("d"), "Options from as_dict's output (unknown keys are an error).")
      .def("__eq__", [as_dict](const T& a, const T& b) { return as_dict(a).equal(as_dict(b)); })
      .def(py::pickle([as_dict](const T& o) { return as_dict(o); },
                      [from_dict](const py::dict& d) { return from_dict(d); }));
}

}  // namespace mpq::bindings
