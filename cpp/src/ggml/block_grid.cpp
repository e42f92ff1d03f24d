// Per-weight grids and code access for ggml blocks (block_grid.h). Scales and offsets are formed
// with the very products ggml's readers (legacy_quants.cpp, k_dequants.cpp, iq4_quants.cpp) use,
// so that scale * level + offset reproduces their floats bit for bit.
#include "ggml/block_grid.h"

#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <type_traits>

#include "ggml/ggml_blocks.h"
#include "ggml/half.h"
#include "ggml/k_quants_pack.h"

namespace mpq::detail::ggml {

namespace {

template <typename Block>
Block load(const void* p) {
  Block b;
  std::memcpy(&b, p, sizeof b);
  return b;
}

inline void fill(float* scale, float* offset, int n, float s, float o) {
  for (int j = 0; j < n; ++j) {
    scale[j] = s;
    offset[j] = o;
  }
}

// The offset that makes "x + offset" round exactly as the readers' "x - m". That is -m, except
// for a NaN m (a block whose fp16 dmin overflowed, times a zero 6-bit min): x86 passes the NaN
// operand through with its sign, so it must keep the sign it has.
inline float subtrahend(float m) { return std::isnan(m) ? m : -m; }

// `width` bits of byte `byte` of the block, from bit `shift` up.
struct BitField {
  int byte, shift, width;
};
// A code's stored bits: the low field, then (hi.width > 0) the high field above it.
struct CodeBits {
  BitField lo, hi;
};

// Bits [shift, shift + width) of byte `index` of the block member at offset `member`.
constexpr BitField field(size_t member, int index, int shift, int width) {
  return {static_cast<int>(member) + index, shift, width};
}

// The nibble of weight j in the common "j low, j + 16 high" 32-value layout.
constexpr BitField nibble32(size_t qs, int j) { return field(qs, j % 16, 4 * (j / 16), 4); }

// Where weight j's code lives; mirrors the readers' index arithmetic (the layouts are described
// in ggml_blocks.h and k_quants_pack.h).
template <Type T>
constexpr CodeBits code_bits(int j) {
  constexpr BitField kNone{0, 0, 0};
  // Q2_K / Q3_K low bits: 2 bits of byte j % 32 of each 32-byte half, shifted by quarter.
  const int k2_byte = 32 * (j / 128) + j % 32, k2_shift = 2 * (j % 128 / 32);
  // Q4_K / Q5_K nibbles: 32 bytes per 64 values, the first 32 values low.
  const int k4_byte = 32 * (j / 64) + j % 32, k4_shift = 4 * (j / 32 % 2);
  switch (T) {
    case Type::Q4_0: return {nibble32(offsetof(BlockQ4_0, qs), j), kNone};
    case Type::Q4_1: return {nibble32(offsetof(BlockQ4_1, qs), j), kNone};
    case Type::Q5_0:
      return {nibble32(offsetof(BlockQ5_0, qs), j),
              field(offsetof(BlockQ5_0, qh), j / 8, j % 8, 1)};
    case Type::Q5_1:
      return {nibble32(offsetof(BlockQ5_1, qs), j),
              field(offsetof(BlockQ5_1, qh), j / 8, j % 8, 1)};
    case Type::Q8_0: return {field(offsetof(BlockQ8_0, qs), j, 0, 8), kNone};
    case Type::Q2_K: return {field(offsetof(BlockQ2_K, qs), k2_byte, k2_shift, 2), kNone};
    case Type::Q3_K:
      return {field(offsetof(BlockQ3_K, qs), k2_byte, k2_shift, 2),
              field(offsetof(BlockQ3_K, hmask), j % 32, j / 32, 1)};
    case Type::Q4_K: return {field(offsetof(BlockQ4_K, qs), k4_byte, k4_shift, 4), kNone};
    case Type::Q5_K:
      return {field(offsetof(BlockQ5_K, qs), k4_byte, k4_shift, 4),
              field(offsetof(BlockQ5_K, qh), j % 32, j / 32, 1)};
    case Type::Q6_K: {
      // Per 128 values, quarter k: low nibble in ql[l + 32 (k & 1)] (high nibble for k >= 2),
      // 2 high bits at bit 2k of qh[l].
      const int half = j / 128, k = j % 128 / 32, l = j % 32;
      return {field(offsetof(BlockQ6_K, ql), 64 * half + 32 * (k & 1) + l, 4 * (k >> 1), 4),
              field(offsetof(BlockQ6_K, qh), 32 * half + l, 2 * k, 2)};
    }
    case Type::IQ4_NL: return {nibble32(offsetof(BlockIQ4_NL, qs), j), kNone};
    case Type::IQ4_XS: return {nibble32(offsetof(BlockIQ4_XS, qs) + 16 * (j / 32), j % 32), kNone};
    default: return {kNone, kNone};
  }
}

inline int get_field(const uint8_t* p, BitField f) {
  return (p[f.byte] >> f.shift) & ((1 << f.width) - 1);
}

inline void set_field(uint8_t* p, BitField f, int v) {
  const int mask = ((1 << f.width) - 1) << f.shift;
  p[f.byte] = static_cast<uint8_t>((p[f.byte] & ~mask) | ((v << f.shift) & mask));
}

// Stored bits hold q - qmin, except Q8_0's two's-complement int8: flipping its sign bit turns
// that into q - qmin (= q + 128) as well.
constexpr int stored_flip(Type type) { return type == Type::Q8_0 ? 0x80 : 0; }

// info(type).block_size, as a constant.
constexpr int block_size_of(Type type) {
  return type == Type::Q4_0 || type == Type::Q4_1 || type == Type::Q5_0 || type == Type::Q5_1 ||
                 type == Type::Q8_0 || type == Type::IQ4_NL
             ? kBlock32
             : kSuperBlock;
}

constexpr GridInfo grid_of(Type type) {
  switch (type) {
    case Type::Q4_0: return {-8, 7, nullptr, 0};
    case Type::Q4_1: return {0, 15, nullptr, 0};
    case Type::Q5_0: return {-16, 15, nullptr, 0};
    case Type::Q5_1: return {0, 31, nullptr, 0};
    case Type::Q8_0: return {-128, 127, nullptr, 0};
    case Type::Q2_K: return {0, 3, nullptr, 0};
    case Type::Q3_K: return {-4, 3, nullptr, 0};
    case Type::Q4_K: return {0, 15, nullptr, 0};
    case Type::Q5_K: return {0, 31, nullptr, 0};
    case Type::Q6_K: return {-32, 31, nullptr, 0};
    case Type::IQ4_NL:
    case Type::IQ4_XS: return {0, 15, kIq4nlLevels, 8};  // level 1
    default: return {0, 0, nullptr, 0};
  }
}

// Calls f(std::integral_constant<Type, type>{}), so that the per-weight code loops are compiled
// per type with constant layouts instead of switching for every weight.
template <typename F>
void with_type(Type type, F&& f) {
  using enum Type;
  switch (type) {
    case Q4_0: return f(std::integral_constant<Type, Q4_0>{});
    case Q4_1: return f(std::integral_constant<Type, Q4_1>{});
    case Q5_0: return f(std::integral_constant<Type, Q5_0>{});
    case Q5_1: return f(std::integral_constant<Type, Q5_1>{});
    case Q8_0: return f(std::integral_constant<Type, Q8_0>{});
    case Q2_K: return f(std::integral_constant<Type, Q2_K>{});
    case Q3_K: return f(std::integral_constant<Type, Q3_K>{});
    case Q4_K: return f(std::integral_constant<Type, Q4_K>{});
    case Q5_K: return f(std::integral_constant<Type, Q5_K>{});
    case Q6_K: return f(std::integral_constant<Type, Q6_K>{});
    case IQ4_NL: return f(std::integral_constant<Type, IQ4_NL>{});
    case IQ4_XS: return f(std::integral_constant<Type, IQ4_XS>{});
    default: return;
  }
}

// Twice the midpoints between neighbouring IQ4 levels (so exact), padded to 16 with a value that
// no t exceeds; a fixed-length loop over constants vectorises.
struct Midpoints {
  float m[16];
  constexpr float operator[](int k) const { return m[k]; }
};
constexpr Midpoints make_iq4nl_midpoints2() {
  Midpoints t{};
  for (int k = 0; k < 15; ++k) t.m[k] = static_cast<float>(kIq4nlLevels[k] + kIq4nlLevels[k + 1]);
  t.m[15] = std::numeric_limits<float>::infinity();
  return t;
}
constexpr Midpoints kIq4nlMidpoints2 = make_iq4nl_midpoints2();

inline float decode(const GridInfo& g, float scale, float offset, int32_t q) {
  return scale * grid_level(g, q) + offset;
}

}  // namespace

GridInfo grid_info(Type type) { return grid_of(type); }

float grid_value(const GridInfo& g, float scale, float offset, int32_t q) {
  return decode(g, scale, offset, q);
}

void block_grid(Type type, const void* block, float* scale, float* offset) {
  assert(is_quantized(type));
  // Q4_0, Q5_0, Q8_0 and IQ4_NL all start with their fp16 d.
  static_assert(offsetof(BlockQ4_0, d) == 0 && offsetof(BlockQ5_0, d) == 0);
  static_assert(offsetof(BlockQ8_0, d) == 0 && offsetof(BlockIQ4_NL, d) == 0);
  switch (type) {
    case Type::Q4_0:
    case Type::Q5_0:
    case Type::Q8_0:
    case Type::IQ4_NL: return fill(scale, offset, 32, float_from_half(load<uint16_t>(block)), -0.f);
    case Type::Q4_1: {
      const auto b = load<BlockQ4_1>(block);
      return fill(scale, offset, 32, float_from_half(b.d), float_from_half(b.m));
    }
    case Type::Q5_1: {
      const auto b = load<BlockQ5_1>(block);
      return fill(scale, offset, 32, float_from_half(b.d), float_from_half(b.m));
    }
    case Type::Q2_K: {
      const auto b = load<BlockQ2_K>(block);
      const float d = float_from_half(b.d), min = float_from_half(b.dmin);
      for (int g = 0; g < 16; ++g) {
        const uint8_t sc = b.scales[g];
        fill(scale + 16 * g, offset + 16 * g, 16, d * (sc & 0xF), subtrahend(min * (sc >> 4)));
      }
      return;
    }
    case Type::Q3_K: {
      const auto b = load<BlockQ3_K>(block);
      const float d = float_from_half(b.d);
      for (int g = 0; g < 16; ++g) {
        fill(scale + 16 * g, offset + 16 * g, 16, d * get_q3_k_scale(b.scales, g), -0.f);
      }
      return;
    }
    case Type::Q4_K:
    case Type::Q5_K: {
      // The two share their header (d, dmin, scales) at the same offsets.
      static_assert(offsetof(BlockQ4_K, dmin) == offsetof(BlockQ5_K, dmin) &&
                    offsetof(BlockQ4_K, scales) == offsetof(BlockQ5_K, scales));
      const auto b = load<BlockQ4_K>(block);
      const float d = float_from_half(b.d), min = float_from_half(b.dmin);
      for (int g = 0; g < 8; ++g) {
        uint8_t sc, m;
        get_scale_min_k4(g, b.scales, sc, m);
        fill(scale + 32 * g, offset + 32 * g, 32, d * sc, subtrahend(min * m));
      }
      return;
    }
    case Type::Q6_K: {
      const auto b = load<BlockQ6_K>(block);
      const float d = float_from_half(b.d);
      for (int g = 0; g < 16; ++g) fill(scale + 16 * g, offset + 16 * g, 16, d * b.scales[g], -0.f);
      return;
    }
    case Type::IQ4_XS: {
      const auto b = load<BlockIQ4_XS>(block);
      const float d = float_from_half(b.d);
      for (int g = 0; g < 8; ++g) {
        const int ls =
            ((b.scales_l[g / 2] >> 4 * (g % 2)) & 0xF) | (((b.scales_h >> 2 * g) & 3) << 4);
        fill(scale + 32 * g, offset + 32 * g, 32, d * (ls - 32), -0.f);
      }
      return;
    }
    default: return;
  }
}

void block_codes(Type type, const void* block, int32_t* q) {
  assert(is_quantized(type));
  const auto* p = static_cast<const uint8_t*>(block);
  with_type(type, [&](auto t) {
    constexpr Type T = decltype(t)::value;
    constexpr int qmin = grid_of(T).qmin, flip = stored_flip(T);
    for (int j = 0; j < block_size_of(T); ++j) {
      const CodeBits c = code_bits<T>(j);
      int v = get_field(p, c.lo);
      if (c.hi.width) v |= get_field(p, c.hi) << c.lo.width;
      q[j] = (v ^ flip) + qmin;
    }
  });
}

void set_block_codes(Type type, void* block, const int32_t* q) {
  assert(is_quantized(type));
  auto* p = static_cast<uint8_t*>(block);
  with_type(type, [&](auto t) {
    constexpr Type T = decltype(t)::value;
    constexpr int qmin = grid_of(T).qmin, flip = stored_flip(T);
    for (int j = 0; j < block_size_of(T); ++j) {
      const CodeBits c = code_bits<T>(j);
      const int v = (q[j] - qmin) ^ flip;
      set_field(p, c.lo, v);
      if (c.hi.width) set_field(p, c.hi, v >> c.lo.width);
    }
  });
}

void row_grid(Type type, const void* row, int64_t n, float* scale, float* offset) {
  const TypeInfo& t = info(type);
  const auto* p = static_cast<const uint8_t*>(row);
  for (int64_t i = 0; i < n; i += t.block_size, p += t.type_size) {
    block_grid(type, p, scale + i, offset + i);
  }
}

void row_codes(Type type, const void* row, int64_t n, int32_t* q) {
  const TypeInfo& t = info(type);
  const auto* p = static_cast<const uint8_t*>(row);
  for (int64_t i = 0; i < n; i += t.block_size, p += t.type_size) block_codes(type, p, q + i);
}

void set_row_codes(Type type, void* row, int64_t n, const int32_t* q) {
  const TypeInfo& t = info(type);
  auto* p = static_cast<uint8_t*>(row);
  for (int64_t i = 0; i < n; i += t.block_size, p += t.type_size) set_block_codes(type, p, q + i);
}

int32_t nearest_code(const GridInfo& g, float scale, float offset, float v) {
  if (scale == 0) return g.zero_code;
  // A product with the reciprocal (GPTQ's CUDA kernel computes the same, off its critical path);
  // only the first guess depends on it.
  const float t = (v - offset) * (1.0f / scale);
  int32_t c;
  if (g.levels) {
    // Count the midpoints between neighbouring levels below t (the levels ascend from q = 0).
    assert(g.levels == kIq4nlLevels);
    c = 0;
    for (int k = 0; k < 16; ++k) c += kIq4nlMidpoints2[k] < 2 * t;
  } else {
    // Clamped as a float first, which keeps huge t (a tiny scale) and NaN out of the int cast;
    // then rounded half up by truncating a non-negative value (ties are refined below anyway).
    const auto lo = static_cast<float>(g.qmin), hi = static_cast<float>(g.qmax);
    const float ct = t > lo ? (t < hi ? t : hi) : lo;
    c = g.qmin + static_cast<int32_t>(ct - lo + 0.5f);
  }
  // t carries the rounding of the subtraction and division, and the decoded grid the rounding of
  // its own multiply-add (which can even merge neighbouring values where offset dwarfs scale), so
  // the code nearest in decoded floats may be a neighbour of c. Selects rather than branches:
  // which one wins is data-dependent.
  const double x = v;
  const int32_t below = c > g.qmin ? c - 1 : c, above = c < g.qmax ? c + 1 : c;
  const double e_c = std::fabs(x - decode(g, scale, offset, c));
  const double e_below = std::fabs(x - decode(g, scale, offset, below));
  const double e_above = std::fabs(x - decode(g, scale, offset, above));
  int32_t best = e_below < e_c ? below : c;
  const double best_err = e_below < e_c ? e_below : e_c;
  best = e_above < best_err ? above : best;
  return best;
}

}  // namespace mpq::detail::ggml
