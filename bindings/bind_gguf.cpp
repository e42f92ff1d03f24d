#include <ATen/ATen.h>

#include <mpq/gguf.h>

#include <mpq/error.h>

#include "bind.h"

namespace mpq::bindings {
namespace {

using gguf::Value;
using gguf::ValueType;

py::object to_python(const std::string& x) {
  // Token strings need not be valid UTF-8: keep their bytes recoverable.
  return py::reinterpret_steal<py::object>(
      PyUnicode_DecodeUTF8(x.data(), static_cast<Py_ssize_t>(x.size()), "surrogateescape"));
}

template <typename T>
py::object scalar_to_python(const T& x) {
  if constexpr (std::is_same_v<T, bool>) {
    return py::bool_(x);
  } else if constexpr (std::is_floating_point_v<T>) {
    return py::float_(static_cast<double>(x));
  } else {
    return py::int_(x);
  }
}

py::object to_python(const gguf::Array& a) {
  return std::visit(
      [](const auto& items) -> py::object {
        using T = typename std::decay_t<decltype(items)>::value_type;
        py::list out(items.size());
        for (size_t i = 0; i < items.size(); ++i) {
          if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, gguf::Array>) {
            out[i] = to_python(items[i]);
          } else {
            out[i] = scalar_to_python(static_cast<T>(items[i]));
          }
        }
        return out;
      },
      a.items);
}

py::object to_python(const Value& value) {
  return std::visit(
      [](const auto& x) -> py::object {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string> || std::is_same_v<T, gguf::Array>) {
          return to_python(x);
        } else {
          return scalar_to_python(x);
        }
      },
      value.v);
}

std::string encode_str(const py::handle& h) {
  if (py::isinstance<py::bytes>(h)) return h.cast<std::string>();
  py::object b = py::reinterpret_steal<py::object>(
      PyUnicode_AsEncodedString(h.ptr(), "utf-8", "surrogateescape"));
  if (!b) throw py::error_already_set();
  return b.cast<std::string>();
}

template <typename T>
T checked_int(const py::handle& h, const std::string& key) {
  const auto v = h.cast<long long>();
  MPQ_CHECK_VALUE(v >= static_cast<long long>(std::numeric_limits<T>::min()) &&
                      (v < 0 || static_cast<unsigned long long>(v) <= std::numeric_limits<T>::max()),
                  "GGUF key ", key, ": ", v, " does not fit the declared type");
  return static_cast<T>(v);
}

Value from_python(const py::handle& h, ValueType type, ValueType element, const std::string& key) {
  Value v;
  switch (type) {
    case ValueType::kUint8: v.v = checked_int<uint8_t>(h, key); break;
    case ValueType::kInt8: v.v = checked_int<int8_t>(h, key); break;
    case ValueType::kUint16: v.v = checked_int<uint16_t>(h, key); break;
    case ValueType::kInt16: v.v = checked_int<int16_t>(h, key); break;
    case ValueType::kUint32: v.v = checked_int<uint32_t>(h, key); break;
    case ValueType::kInt32: v.v = checked_int<int32_t>(h, key); break;
    case ValueType::kUint64: v.v = h.cast<uint64_t>(); break;
    case ValueType::kInt64: v.v = h.cast<int64_t>(); break;
    case ValueType::kFloat32: v.v = h.cast<float>(); break;
    case ValueType::kFloat64: v.v = h.cast<double>(); break;
    case ValueType::kBool: v.v = h.cast<bool>(); break;
    case ValueType::kString: v.v = encode_str(h); break;
    case ValueType::kArray: {
      MPQ_CHECK_VALUE(element != ValueType::kArray, "GGUF key ", key,
                      ": nested arrays are not supported from Python");
      gguf::Array a = gguf::Array::of(element);
      std::visit(
          [&](auto& items) {
            using T = typename std::decay_t<decltype(items)>::value_type;
            if constexpr (!std::is_same_v<T, gguf::Array>) {
              for (const py::handle& item : h) {
                items.push_back(std::get<T>(from_python(item, element, element, key).v));
              }
            }
          },
          a.items);
      v.v = std::move(a);
      break;
    }
  }
  return v;
}

}  // namespace

void bind_gguf(py::module_& m) {
  py::module_ g = m.def_submodule("gguf", "GGUF v3 files: reader and streaming writer.");
  py::enum_<ValueType>(g, "ValueType")
      .value("UINT8", ValueType::kUint8).value("INT8", ValueType::kInt8)
      .value("UINT16", ValueType::kUint16).value("INT16", ValueType::kInt16)
      .value("UINT32", ValueType::kUint32).value("INT32", ValueType::kInt32)
      .value("FLOAT32", ValueType::kFloat32).value("BOOL", ValueType::kBool)
      .value("STRING", ValueType::kString).value("ARRAY", ValueType::kArray)
      .value("UINT64", ValueType::kUint64).value("INT64", ValueType::kInt64)
      .value("FLOAT64", ValueType::kFloat64);

  py::class_<gguf::TensorInfo>(g, "TensorInfo")
      .def_readonly("name", &gguf::TensorInfo::name)
      .def_readonly("shape", &gguf::TensorInfo::shape, "GGUF order: innermost first")
      .def_readonly("type", &gguf::TensorInfo::type, "ggml type id")
      .def_readonly("offset", &gguf::TensorInfo::offset)
      .def_readonly("nbytes", &gguf::TensorInfo::nbytes)
      .def("__repr__", [](const gguf::TensorInfo& t) {
        std::string s = "TensorInfo('" + t.name + "', shape=[";
        for (size_t i = 0; i < t.shape.size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape[i]);
        return s + "], type=" + std::to_string(t.type) + ", nbytes=" + std::to_string(t.nbytes) + ")";
      });

  py::class_<gguf::Reader>(g, "Reader", "Reads and validates a GGUF file; tensor data on demand.")
      .def(py::init<const std::string&>(), py::arg("path"))
      .def_property_readonly("path", &gguf::Reader::path)
      .def_property_readonly("version", &gguf::Reader::version)
      .def_property_readonly("alignment", &gguf::Reader::alignment)
      .def_property_readonly("data_offset", &gguf::Reader::data_offset)
      .def_property_readonly("tensors", &gguf::Reader::tensors)
      .def("keys", [](const gguf::Reader& r) {
        py::list out;
        for (const auto& kv : r.metadata()) out.append(kv.first);
        return out;
      })
      .def("metadata", [](const gguf::Reader& r) {
        py::dict out;
        for (const auto& [k, v] : r.metadata()) out[py::str(k)] = to_python(v);
        return out;
      }, "All metadata as a dict of Python values.")
      .def("value_type", [](const gguf::Reader& r, const std::string& key) { return r.get(key).type(); },
           py::arg("key"))
      .def("get", [](const gguf::Reader& r, const std::string& key, py::object default_) {
        const Value* v = r.find(key);
        return v ? to_python(*v) : default_;
      }, py::arg("key"), py::arg("default") = py::none())
      .def("tensor", &gguf::Reader::tensor, py::arg("name"), py::return_value_policy::copy)
      .def("read", [](const gguf::Reader& r, const std::string& name) {
        const gguf::TensorInfo& t = r.tensor(name);
        at::Tensor out = at::empty({static_cast<int64_t>(t.nbytes)}, at::TensorOptions().dtype(at::kByte));
        {
          py::gil_scoped_release release;
          r.read_into(t, out.data_ptr());
        }
        return out;
      }, py::arg("name"), "The tensor's stored bytes as a uint8 tensor.");

  py::class_<gguf::Writer>(g, "Writer",
                           R"(Streams a GGUF file: set() metadata and add_tensor() declarations first,
then write_tensor() in declaration order, then finish(). Nothing appears at `path` until finish().)")
      .def(py::init<std::string, uint32_t>(), py::arg("path"), py::arg("alignment") = 32)
      .def("set", [](gguf::Writer& w, const std::string& key, py::handle value, ValueType type,
                     ValueType element_type) {
        w.set(key, from_python(value, type, element_type, key));
      }, py::arg("key"), py::arg("value"), py::arg("type"), py::arg("element_type") = ValueType::kUint8,
         "Sets key to value, stored as `type` (arrays: elements of `element_type`).")
      .def("add_tensor", &gguf::Writer::add_tensor, py::arg("name"), py::arg("shape"), py::arg("type"),
           "Declares a tensor: GGUF shape (innermost first) and ggml type id.")
      .def("write_tensor", [](gguf::Writer& w, const std::string& name, const at::Tensor& data) {
        MPQ_CHECK_TYPE(data.device().is_cpu() && data.is_contiguous(), "GGUF writer: tensor '", name,
                       "' data must be a contiguous CPU tensor");
        py::gil_scoped_release release;
        w.write_tensor(name, data.data_ptr(), data.nbytes());
      }, py::arg("name"), py::arg("data"), "Writes a tensor's bytes (any dtype; its raw memory).")
      .def("finish", &gguf::Writer::finish)
      .def("abort", &gguf::Writer::abort, "Gives up: removes the temporary file now.")
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](gguf::Writer& w, py::handle type, py::handle, py::handle) {
        if (!type.is_none()) w.abort();  // an exception inside `with`: no temporary file is left
      }, "A `with` block aborts the writer when it raises; finish() still commits.");

  g.def("tensor_nbytes", &gguf::tensor_nbytes, py::arg("type"), py::arg("shape"), py::arg("name") = "tensor");
}

}  // namespace mpq::bindings
