#pragma once
// Two kinds of failure, kept apart (as Faiss does):
//  - bad user input: MPQ_CHECK_VALUE / MPQ_CHECK_TYPE / MPQ_CHECK_IO throw with a message that
//    names the tensor, layer or file and the rule broken (Python: ValueError / TypeError / OSError;
//    a message quoting bytes from a file escapes those that are not UTF-8, core/untrusted.h);
//  - a broken internal invariant, i.e. a bug in mpq: MPQ_ASSERT throws c10::Error (RuntimeError).
// Nothing in mpq aborts on input.
#include <stdexcept>
#include <string>

#include <c10/util/Exception.h>
#include <c10/util/StringUtil.h>

namespace mpq {

// A file could not be opened, read, written or renamed.
class IoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A lookup by name found nothing (Python: KeyError). It is a std::out_of_range, which the C++ API
// (Plan::get) has always thrown.
class KeyError : public std::out_of_range {
 public:
  using std::out_of_range::out_of_range;
};

}  // namespace mpq

#define MPQ_CHECK_VALUE(cond, ...) TORCH_CHECK_VALUE(cond, __VA_ARGS__)
#define MPQ_CHECK_TYPE(cond, ...) TORCH_CHECK_TYPE(cond, __VA_ARGS__)
#define MPQ_CHECK_IO(cond, ...)                          \
  do {                                                   \
    if (!(cond)) throw ::mpq::IoError(::c10::str(__VA_ARGS__)); \
  } while (0)
#define MPQ_ASSERT(cond, ...) TORCH_INTERNAL_ASSERT(cond, __VA_ARGS__)
