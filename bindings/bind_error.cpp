#include <mpq/error.h>

#include "bind.h"
#include "core/untrusted.h"

namespace mpq::bindings {
namespace {

// Messages may quote names from files; a byte that is not UTF-8 would turn the error into a
// UnicodeDecodeError without the message, so such bytes arrive escaped (\xNN).
void set_error(PyObject* type, const char* message) {
  PyErr_SetString(type, detail::escape_utf8(message).c_str());
}

}  // namespace

// mpq's C++ exceptions become the Python exceptions a user expects, without C++ backtraces.
void bind_error(py::module_& m) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const c10::ValueError& e) {
      set_error(PyExc_ValueError, e.what_without_backtrace());
    } catch (const c10::TypeError& e) {
      set_error(PyExc_TypeError, e.what_without_backtrace());
    } catch (const c10::IndexError& e) {
      set_error(PyExc_IndexError, e.what_without_backtrace());
    } catch (const c10::Error& e) {
      set_error(PyExc_RuntimeError, e.what_without_backtrace());
    } catch (const mpq::IoError& e) {
      set_error(PyExc_OSError, e.what());
    } catch (const mpq::KeyError& e) {
      set_error(PyExc_KeyError, e.what());
    } catch (const std::invalid_argument& e) {  // the plan API's documented error
      set_error(PyExc_ValueError, e.what());
    }
  });
}

}  // namespace mpq::bindings
