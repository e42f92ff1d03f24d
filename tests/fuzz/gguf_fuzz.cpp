// The GGUF reader's fuzz target with the command line tests/python/test_gguf.py uses:
//   gguf_fuzz SEED.gguf ITERATIONS WORKDIR
// (the same as `reader_fuzz gguf SEED.gguf ITERATIONS WORKDIR`; see fuzz_driver.h).
#include <string>

#include <mpq/gguf.h>

#include "fuzz_driver.h"

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  return fuzz::run(fuzz::read(argv[1]), std::stol(argv[2]), std::string(argv[3]) + "/mutant.gguf",
                   false, [](const std::string& path) {
                     mpq::gguf::Reader r(path);
                     for (const auto& [key, value] : r.metadata()) {
                       if (value.type() == mpq::gguf::ValueType::kArray) (void)value.as_array().size();
                     }
                     for (const auto& t : r.tensors()) (void)r.read(t.name);
                   });
}
