#pragma once
// Internal: the byte layouts of ggml's blocks (ggml-common.h), shared constants, and the per-type
// row kernels the dispatcher in ggml_quants.cpp calls. Kernels build each block in a local struct
// and memcpy it out (readers memcpy blocks in, or read bytes in place), so callers' buffers need
// no alignment.
#include <cstddef>
#include <cstdint>

namespace mpq::detail::ggml {

inline constexpr int kBlock32 = 32;      // the legacy and IQ4_NL block
inline constexpr int kSuperBlock = 256;  // the K-quant / IQ super-block (ggml's QK_K)

// fp16 fields are raw IEEE half bits. All fields are naturally aligned with no padding, so
// sizeof() is ggml's type_size; the static_asserts pin that down.
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];  // value j in the low nibble of qs[j], value j+16 in the high nibble
};
struct BlockQ4_1 {
  uint16_t d, m;
  uint8_t qs[16];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];  // bit j = 5th bit of value j (little-endian u32)
  uint8_t qs[16];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};
struct BlockQ2_K {
  uint8_t scales[16];  // low nibble: scale, high nibble: min, per 16 values
  uint8_t qs[64];
  uint16_t d, dmin;
};
struct BlockQ3_K {
  uint8_t hmask[32];   // bit k of hmask[j] = high bit of value 32k + j
  uint8_t qs[64];      // low 2 bits
  uint8_t scales[12];  // 16 six-bit scales, offset by 32
  uint16_t d;
};
struct BlockQ4_K {
  uint16_t d, dmin;
  uint8_t scales[12];  // 8 six-bit scales and 8 six-bit mins, see pack_scale_min_k4
  uint8_t qs[128];
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
struct BlockQ6_K {
  uint8_t ql[128];  // low 4 bits
  uint8_t qh[64];   // high 2 bits
  int8_t scales[16];
  uint16_t d;
};
struct BlockIQ4_NL {
  uint16_t d;
  uint8_t qs[16];
};
struct BlockIQ4_XS {
  uint16_t d;
  uint16_t scales_h;   // 2 high bits of each of the 8 six-bit scales
  uint8_t scales_l[4]; // 4 low bits of each scale
  uint8_t qs[128];
};

// The codebook formats (iq_grids.h): indices into fixed grids of 8 or 4 values, sign bits and
// small group scales under one fp16 scale.
struct BlockIQ2_XXS {
  uint16_t d;
  uint16_t qs[32];  // per group of 32: u32 of 4 grid indices, u32 of 4x7 sign bits + 4-bit scale
};
struct BlockIQ2_XS {
  uint16_t d;
  uint16_t qs[32];  // 9-bit grid index | 7 sign bits << 9, per 8 values
  uint8_t scales[8];
};
struct BlockIQ2_S {
  uint16_t d;
  uint8_t qs[64];  // low 8 bits of 32 grid indices, then 32 sign bytes
  uint8_t qh[8];   // high 2 bits of the indices
  uint8_t scales[8];
};
struct BlockIQ3_XXS {
  uint16_t d;
  uint8_t qs[96];  // 64 grid indices, then per group of 32 a u32 of 4x7 sign bits + 4-bit scale
};
struct BlockIQ3_S {
  uint16_t d;
  uint8_t qs[64];  // low 8 bits of the grid indices
  uint8_t qh[8];   // their 9th bits
  uint8_t signs[32];
  uint8_t scales[4];
};
struct BlockIQ1_S {
  uint16_t d;
  uint8_t qs[32];   // low 8 bits of the grid indices
  uint16_t qh[8];   // per 32: 4x3 high index bits, 3-bit scale, delta sign (bit 15)
};
struct BlockIQ1_M {
  uint8_t qs[32];
  uint8_t qh[16];     // per 8 values a nibble: 3 high index bits, delta sign
  uint8_t scales[8];  // 4 u16 of 4x3-bit scales; their top nibbles hold the fp16 super-scale
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);
static_assert(sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136);
static_assert(sizeof(BlockIQ2_XXS) == 66 && sizeof(BlockIQ2_XS) == 74 && sizeof(BlockIQ2_S) == 82);
static_assert(sizeof(BlockIQ3_XXS) == 98 && sizeof(BlockIQ3_S) == 110);
static_assert(sizeof(BlockIQ1_S) == 50 && sizeof(BlockIQ1_M) == 56);
static_assert(offsetof(BlockQ3_K, d) == 108 && offsetof(BlockQ6_K, d) == 208);
static_assert(offsetof(BlockQ2_K, d) == 80 && offsetof(BlockQ5_K, qs) == 48);

// Row kernels: x / y hold n values (a multiple of the type's block size); qw (nullable) holds n
// per-column importance weights.
// The legacy types split as ggml's do: *_ref without importance weights, *_impl with them. The
// _ref kernels and Q8_0 (which has no weighted form) accept any floats and return the row's
// largest |x| as float bits, found while scanning the blocks (NaN/Inf: >= 0x7F800000, and then
// the bytes written are meaningless); the others expect finite values.
uint32_t quantize_q4_0_ref(const float* x, void* dst, int64_t n);
uint32_t quantize_q4_1_ref(const float* x, void* dst, int64_t n);
uint32_t quantize_q5_0_ref(const float* x, void* dst, int64_t n);
uint32_t quantize_q5_1_ref(const float* x, void* dst, int64_t n);
uint32_t quantize_q8_0(const float* x, void* dst, int64_t n);
void quantize_q4_0_impl(const float* x, void* dst, int64_t n, const float* qw);
void quantize_q4_1_impl(const float* x, void* dst, int64_t n, const float* qw);
void quantize_q5_0_impl(const float* x, void* dst, int64_t n, const float* qw);
void quantize_q5_1_impl(const float* x, void* dst, int64_t n, const float* qw);
void quantize_q2_k(const float* x, void* dst, int64_t n, const float* qw);
void quantize_q3_k(const float* x, void* dst, int64_t n, const float* qw);
void quantize_q4_k(const float* x, void* dst, int64_t n, const float* qw);
void quantize_q5_k(const float* x, void* dst, int64_t n, const float* qw);
void quantize_q6_k(const float* x, void* dst, int64_t n, const float* qw);
void quantize_iq4_nl(const float* x, void* dst, int64_t n, const float* qw);
void quantize_iq4_xs(const float* x, void* dst, int64_t n, const float* qw);
// IQ2_XXS, IQ2_XS and IQ1_S require qw (requires_importance()); the others weigh by x^2 (IQ2_S:
// 0.25 sigma^2 + x^2) without it.
void quantize_iq2_xxs(const float* x, void* dst, int64_t n, const float* qw);
void quantize_iq2_xs(const float* x, void* dst, int64_t n, const float* qw);
void quantize_iq2_s(const float* x, void* dst, int64_t n, const float* qw);
void quantize_iq3_xxs(const float* x, void* dst, int64_t n, const float* qw);
void quantize_iq3_s(const float* x, void* dst, int64_t n, const float* qw);
void quantize_iq1_s(const float* x, void* dst, int64_t n, const float* qw);
void quantize_iq1_m(const float* x, void* dst, int64_t n, const float* qw);

// Plain float rows (fp16.cpp).
void convert_row_to_f16(const float* x, void* dst, int64_t n);
void convert_row_to_bf16(const float* x, void* dst, int64_t n);
void convert_row_from_f16(const void* src, float* y, int64_t n);
void convert_row_from_bf16(const void* src, float* y, int64_t n);

void dequantize_q4_0(const void* src, float* y, int64_t n);
void dequantize_q4_1(const void* src, float* y, int64_t n);
void dequantize_q5_0(const void* src, float* y, int64_t n);
void dequantize_q5_1(const void* src, float* y, int64_t n);
void dequantize_q8_0(const void* src, float* y, int64_t n);
void dequantize_q2_k(const void* src, float* y, int64_t n);
void dequantize_q3_k(const void* src, float* y, int64_t n);
void dequantize_q4_k(const void* src, float* y, int64_t n);
void dequantize_q5_k(const void* src, float* y, int64_t n);
void dequantize_q6_k(const void* src, float* y, int64_t n);
void dequantize_iq4_nl(const void* src, float* y, int64_t n);
void dequantize_iq4_xs(const void* src, float* y, int64_t n);
void dequantize_iq2_xxs(const void* src, float* y, int64_t n);
void dequantize_iq2_xs(const void* src, float* y, int64_t n);
void dequantize_iq2_s(const void* src, float* y, int64_t n);
void dequantize_iq3_xxs(const void* src, float* y, int64_t n);
void dequantize_iq3_s(const void* src, float* y, int64_t n);
void dequantize_iq1_s(const void* src, float* y, int64_t n);
void dequantize_iq1_m(const void* src, float* y, int64_t n);

}  // namespace mpq::detail::ggml
