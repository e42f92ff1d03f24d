#pragma once
// Every binding that takes a format takes it the same way: a registered name or a Format.
#include <mpq/format.h>

#include "bind.h"

namespace mpq::bindings {

inline Format as_format(const py::handle& format) {
  if (py::isinstance<py::str>(format)) return find_format(format.cast<std::string>());
  if (py::isinstance<Format>(format)) return format.cast<Format>();
  throw py::type_error("format must be a format name (e.g. \"q4_k\") or an mpq.Format, not " +
                       std::string(py::str(py::type::of(format).attr("__name__"))));
}

}  // namespace mpq::bindings
