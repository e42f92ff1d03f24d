// Mutates a real GGUF file (truncation, bit flips, bytes overwritten with large values) and opens
// every mutant with mpq's Reader: each must load or throw; the sanitizers catch anything else.
//   gguf_fuzz SEED.gguf ITERATIONS WORKDIR
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <mpq/gguf.h>

namespace {

void exercise(const std::string& path) {
  mpq::gguf::Reader r(path);
  for (const auto& [key, value] : r.metadata()) {
    if (value.type() == mpq::gguf::ValueType::kArray) (void)value.as_array().items.size();
  }
  for (const auto& t : r.tensors()) (void)r.read(t.name);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  std::ifstream in(argv[1], std::ios::binary);
  const std::vector<char> seed((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const long iterations = std::stol(argv[2]);
  const std::string path = std::string(argv[3]) + "/mutant.gguf";
  std::mt19937_64 rng(12345);
  long loaded = 0, rejected = 0;
  for (long i = 0; i < iterations; ++i) {
    std::vector<char> m = seed;
    switch (i % 3) {
      case 0:  // truncation
        m.resize(rng() % m.size());
        break;
      case 1:  // a few bit flips, mostly in the header and metadata
        for (int k = 0, n = 1 + rng() % 4; k < n; ++k) {
          const size_t pos = (rng() % 2 ? rng() % std::min<size_t>(m.size(), 4096) : rng() % m.size());
          m[pos] ^= static_cast<char>(1 << (rng() % 8));
        }
        break;
      default: {  // a run of 0xff / 0x7f bytes: huge lengths and counts
        const size_t pos = rng() % std::min<size_t>(m.size(), 4096);
        for (size_t k = pos; k < std::min(m.size(), pos + 1 + rng() % 8); ++k) m[k] = rng() % 2 ? '\xff' : '\x7f';
      }
    }
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(m.data(), static_cast<std::streamsize>(m.size()));
    }
    try {
      exercise(path);
      ++loaded;
    } catch (const std::exception&) {
      ++rejected;
    }
  }
  std::printf("iterations %ld loaded %ld rejected %ld\n", iterations, loaded, rejected);
  return 0;
}
