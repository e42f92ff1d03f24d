#pragma once
// Internal: the quantization grid a ggml block defines, weight by weight, and read / write access
// to the block's integer codes. Built for GPTQ-style error compensation, which quantizes a block
// with quantize_row (fixing its scales, mins and super-scales), then rounds *updated* weights onto
// that fixed grid one column at a time, and finally writes the chosen codes back into the block.
//
// Weight j of a block (0 <= j < info(type).block_size) decodes to
//   grid_value(g, scale[j], offset[j], q) = scale[j] * level(q) + offset[j],   q in [qmin, qmax],
// with level(q) = q for the linear types and level(q) = kIq4nlLevels[q] for IQ4_NL / IQ4_XS. Codes
// are chosen so that this expression, in float arithmetic without fused multiply-add, is
// bit-identical to dequantize_row for every code (including the sign of zeros):
//
//   type     code q        scale[j]                        offset[j]
//   Q4_0     -8..7         d                               -0
//   Q4_1     0..15         d                               m
//   Q5_0     -16..15       d                               -0
//   Q5_1     0..31         d                               m
//   Q8_0     -128..127     d                               -0
//   Q2_K     0..3          d * (sc & 15)                   -(dmin * (sc >> 4))
//   Q3_K     -4..3         d * (6-bit scale - 32)          -0
//   Q4_K     0..15         d * sc                          -(dmin * m)
//   Q5_K     0..31         d * sc                          -(dmin * m)
//   Q6_K     -32..31       d * (int8 scale)                -0
//   IQ4_NL   0..15 (index) d                               -0
//   IQ4_XS   0..15 (index) d * (6-bit scale - 32)          -0
//
// The symmetric types get offset -0.0f rather than +0.0f: x + (-0) == x for every x, while
// (-0) + (+0) would turn ggml's negative zeros (d < 0 times level 0) into positive ones. A - b and
// a + (-b) round identically, so the K-types' "d1 * q - m1" is reproduced too (where an fp16 dmin
// overflowed and the block decodes to NaN, the offset keeps the NaN's sign, so that even those
// bits match on x86). Consumers that decode elsewhere (torch, a GPU kernel) must not contract the
// multiply-add into an FMA for Q4_1, Q5_1, Q2_K, Q4_K and Q5_K if they need ggml's exact floats.
//
// The code ranges are what the formats can hold; ggml's Q8_0 quantizer only writes -127..127.
// Everything here is pure and re-entrant; blocks need no alignment.
#include <cstdint>

#include "ggml/ggml_types.h"

namespace mpq::detail::ggml {

// ggml's kvalues_iq4nl: the IQ4_NL / IQ4_XS levels, ascending.
inline constexpr int8_t kIq4nlLevels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

struct GridInfo {
  int32_t qmin, qmax;     // the codes the format can store
  const int8_t* levels;   // nullptr: level(q) = q; else kIq4nlLevels, level(q) = levels[q]
  int32_t zero_code;      // the code whose level is nearest 0, what a zero scale rounds to
};

// For the quantized types with a per-weight grid (is_quantized(type) && !is_codebook(type));
// {0, 0, nullptr, 0} for any other (the codebook types' codes index vectors of weights).
GridInfo grid_info(Type type);

inline float grid_level(const GridInfo& g, int32_t q) {
  return g.levels ? static_cast<float>(g.levels[q]) : static_cast<float>(q);
}

// The decoded value of code q; bit-identical to ggml's reader (see above). Out of line so that it
// is compiled with -ffp-contract=off whatever the caller's flags.
float grid_value(const GridInfo& g, float scale, float offset, int32_t q);

// Per-weight scale and offset of the block at `block` (block_size floats each).
void block_grid(Type type, const void* block, float* scale, float* offset);
// The block's stored codes, block_size values in [qmin, qmax].
void block_codes(Type type, const void* block, int32_t* q);
// Overwrites the block's codes with q (each in [qmin, qmax], unchecked); all other bits (scales,
// mins, super-scales) are kept, so the grid is unchanged.
void set_block_codes(Type type, void* block, const int32_t* q);

// Whole-row forms of the three above: n values (a multiple of block_size), row_size(type, n)
// bytes.
void row_grid(Type type, const void* row, int64_t n, float* scale, float* offset);
void row_codes(Type type, const void* row, int64_t n, int32_t* q);
void set_row_codes(Type type, void* row, int64_t n, const int32_t* q);

// The code whose grid_value is nearest v (compared in double; ties go either way). Where
// scale == 0 every code decodes to the same value and g.zero_code is returned. NaN v gives some
// valid code.
int32_t nearest_code(const GridInfo& g, float scale, float offset, float v);

}  // namespace mpq::detail::ggml
