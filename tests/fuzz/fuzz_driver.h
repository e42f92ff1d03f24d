#pragma once
// The mutation loop every reader's fuzz target shares, for a build with AddressSanitizer and
// UndefinedBehaviorSanitizer: each mutant of a real seed file is written to disk and opened by the
// reader, and must load or throw a std::exception. The sanitizers abort on memory errors and
// undefined behaviour; the driver itself fails the run on
//   - amplification: a case whose peak heap growth exceeds kFactor x the mutant's size + kMargin
//     (tracked exactly through the sanitizer allocator's malloc hooks);
//   - a hang: a case running longer than kHangSeconds (SIGALRM; the process exits with 3).
// It prints one line of "name value" pairs: iterations, loaded, rejected, over_budget, seed_bytes,
// peak_bytes (the largest heap growth of any case) and max_ms (the slowest case).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

// From the sanitizer runtime (<sanitizer/allocator_interface.h>, which not every compiler ships).
extern "C" {
size_t __sanitizer_get_current_allocated_bytes(void);
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void*, size_t),
                                              void (*free_hook)(const volatile void*));
}

namespace fuzz {

constexpr uint64_t kFactor = 16;                  // twice the readers' own MemoryBudget factor
constexpr uint64_t kMargin = uint64_t{128} << 20;  // and twice its margin: transients included
constexpr unsigned kHangSeconds = 20;

inline std::atomic<uint64_t> peak{0};
inline long current_case = -1;

inline void on_malloc(const volatile void*, size_t) {
  const uint64_t now = __sanitizer_get_current_allocated_bytes();
  uint64_t p = peak.load(std::memory_order_relaxed);
  while (now > p && !peak.compare_exchange_weak(p, now, std::memory_order_relaxed)) {
  }
}
inline void on_free(const volatile void*) {}

inline void on_alarm(int) {
  char msg[96];
  const int n = std::snprintf(msg, sizeof msg, "HANG: case %ld ran longer than %u s\n", current_case,
                              kHangSeconds);
  if (n > 0) (void)!write(2, msg, static_cast<size_t>(n));
  _exit(3);
}

inline std::vector<char> read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Large values that lengths, counts, sizes and indices get overwritten with.
inline uint64_t large_value(std::mt19937_64& rng) {
  static const uint64_t kValues[] = {
      ~uint64_t{0},          uint64_t{1} << 63,       (uint64_t{1} << 63) - 1, (uint64_t{1} << 62) + 64,
      uint64_t{1} << 32,     (uint64_t{1} << 32) - 1, uint64_t{1} << 31,       (uint64_t{1} << 30) + 1,
      0x7f800000u /*inf*/,   0x7fc00000u /*nan*/,     0x7149f2cau /*1e30f*/,   0xff800000u /*-inf*/,
      uint64_t{1} << 24,     uint64_t{1} << 40,       0,                       1};
  return kValues[rng() % std::size(kValues)];
}

// JSON number literals a reader must range-check.
inline const char* large_literal(std::mt19937_64& rng) {
  static const char* kLiterals[] = {"4294967296", "9223372036854775807", "99999999999999999999",
                                    "-1",         "1e30",                "-9223372036854775808",
                                    "2147483648", "1e400",               "0.5"};
  return kLiterals[rng() % std::size(kLiterals)];
}

// Bytes that are not UTF-8: a lone continuation, a truncated sequence, a surrogate, an overlong
// form, 0xff.
inline std::string bad_utf8(std::mt19937_64& rng) {
  static const char* kBad[] = {"\x80", "\xc3", "\xed\xa0\x80", "\xc0\xaf", "\xff", "\xf4\x90\x80\x80"};
  return kBad[rng() % std::size(kBad)];
}

inline std::vector<char> mutate(const std::vector<char>& seed, long i, std::mt19937_64& rng,
                                bool text) {
  std::vector<char> m = seed;
  if (m.empty()) return m;
  const size_t head = std::min<size_t>(m.size(), 4096);  // headers, names, counts live here
  switch (i % 6) {
    case 0:  // truncation
      m.resize(rng() % m.size());
      break;
    case 1:  // a few bit flips, mostly in the first 4 KiB
      for (int k = 0, n = 1 + rng() % 4; k < n; ++k) {
        const size_t pos = rng() % 2 ? rng() % head : rng() % m.size();
        m[pos] ^= static_cast<char>(1 << (rng() % 8));
      }
      break;
    case 2: {  // a run of 0xff / 0x7f bytes: huge lengths and counts
      const size_t pos = rng() % head;
      for (size_t k = pos; k < std::min(m.size(), pos + 1 + rng() % 8); ++k) {
        m[k] = rng() % 2 ? '\xff' : '\x7f';
      }
      break;
    }
    case 3: {  // a length, count, dimension, offset or value overwritten with a large value
      if (text) {  // a number in the text
        size_t pos = rng() % m.size();
        while (pos < m.size() && !(m[pos] >= '0' && m[pos] <= '9')) ++pos;
        if (pos == m.size()) break;
        size_t end = pos;
        while (end < m.size() && m[end] >= '0' && m[end] <= '9') ++end;
        const std::string lit = large_literal(rng);
        m.erase(m.begin() + pos, m.begin() + end);
        m.insert(m.begin() + pos, lit.begin(), lit.end());
      } else {
        const size_t width = rng() % 2 ? 8 : 4;
        if (m.size() < width) break;
        const size_t pos = (rng() % (head - std::min(head, width) + 1)) & ~size_t{3};
        const uint64_t v = large_value(rng);
        std::memcpy(m.data() + std::min(pos, m.size() - width), &v, width);
      }
      break;
    }
    default: {  // bytes that are not UTF-8 inside a name (a run of letters, dots and digits)
      std::vector<size_t> names;
      for (size_t k = 0; k + 3 < head; ++k) {
        const auto is_name = [&](size_t j) {
          const char c = m[j];
          return (c >= 'a' && c <= 'z') || c == '.' || c == '_' || (c >= '0' && c <= '9');
        };
        if (is_name(k) && is_name(k + 1) && is_name(k + 2) && is_name(k + 3)) names.push_back(k + 1);
      }
      if (names.empty()) break;
      const size_t pos = names[rng() % names.size()];
      const std::string bad = bad_utf8(rng);
      // Binary formats keep their lengths (the bytes are overwritten); text may grow.
      if (text && rng() % 2) {
        m.insert(m.begin() + pos, bad.begin(), bad.end());
      } else {
        for (size_t k = 0; k < bad.size() && pos + k < m.size(); ++k) m[pos + k] = bad[k];
      }
    }
  }
  return m;
}

struct Result {
  long iterations = 0, loaded = 0, rejected = 0, over_budget = 0;
  uint64_t peak_bytes = 0;
  double max_ms = 0;
};

// Runs `iterations` mutants of `seed` through `open(path)`; returns 0, or 4 when a case allocated
// more than the bound (the case is named on stderr).
inline int run(const std::vector<char>& seed, long iterations, const std::string& path, bool text,
               const std::function<void(const std::string&)>& open) {
  __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
  signal(SIGALRM, on_alarm);
  std::mt19937_64 rng(12345);
  Result r;
  for (long i = 0; i < iterations; ++i) {
    const std::vector<char> m = mutate(seed, i, rng, text);
    {
      std::ofstream out(path, std::ios::binary | std::ios::trunc);
      out.write(m.data(), static_cast<std::streamsize>(m.size()));
    }
    current_case = i;
    const uint64_t before = __sanitizer_get_current_allocated_bytes();
    peak = before;
    alarm(kHangSeconds);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      open(path);
      ++r.loaded;
    } catch (const std::exception&) {
      ++r.rejected;
    }
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    alarm(0);
    const uint64_t grew = peak - std::min<uint64_t>(peak, before);
    r.peak_bytes = std::max(r.peak_bytes, grew);
    r.max_ms = std::max(r.max_ms, ms);
    if (grew > kFactor * m.size() + kMargin) {
      ++r.over_budget;
      std::fprintf(stderr, "AMPLIFICATION: case %ld: a %zu-byte file took %llu bytes\n", i, m.size(),
                   static_cast<unsigned long long>(grew));
      const std::string keep = path + ".amplified";
      std::ofstream(keep, std::ios::binary).write(m.data(), static_cast<std::streamsize>(m.size()));
    }
    r.iterations = i + 1;
  }
  std::printf("iterations %ld loaded %ld rejected %ld over_budget %ld seed_bytes %zu peak_bytes %llu "
              "max_ms %lld\n",
              r.iterations, r.loaded, r.rejected, r.over_budget, seed.size(),
              static_cast<unsigned long long>(r.peak_bytes), static_cast<long long>(r.max_ms));
  return r.over_budget ? 4 : 0;
}

}  // namespace fuzz
