// Readers of the K-quant formats, exactly ggml's dequantize_row_q*_K (same products, same order).
#include <cstring>

#include "ggml/ggml_blocks.h"
#include "ggml/half.h"
#include "ggml/k_quants_pack.h"

namespace mpq::detail::ggml {

void dequantize_q2_k(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockQ2_K b;
  for (int64_t i = 0; i < n / kSuperBlock; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d), min = float_from_half(b.dmin);
    const uint8_t* q = b.qs;
    int is = 0;
    for (int half = 0; half < 2; ++half, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int part = 0; part < 2; ++part) {  // values l and l + 16 of the 32 bytes
          const uint8_t sc = b.scales[is++];
          const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
          for (int l = 0; l < 16; ++l) *y++ = dl * ((q[16 * part + l] >> shift) & 3) - ml;
        }
      }
    }
  }
}

void dequantize_q3_k(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockQ3_K b;
  for (int64_t i = 0; i < n / kSuperBlock; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    const float d_all = float_from_half(b.d);
    const uint8_t* q = b.qs;
    uint8_t m = 1;
    int is = 0;
    for (int half = 0; half < 2; ++half, q += 32) {
      for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
        for (int part = 0; part < 2; ++part) {
          const float dl = d_all * get_q3_k_scale(b.scales, is++);
          const uint8_t* qp = q + 16 * part;
          const uint8_t* hp = b.hmask + 16 * part;
          for (int l = 0; l < 16; ++l) *y++ = dl * (((qp[l] >> shift) & 3) - ((hp[l] & m) ? 0 : 4));
        }
      }
    }
  }
}

void dequantize_q4_k(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockQ4_K b;
  for (int64_t i = 0; i < n / kSuperBlock; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d), min = float_from_half(b.dmin);
    const uint8_t* q = b.qs;
    for (int is = 0; is < 8; is += 2, q += 32) {
      uint8_t sc, m;
      get_scale_min_k4(is, b.scales, sc, m);
      const float d1 = d * sc, m1 = min * m;
      get_scale_min_k4(is + 1, b.scales, sc, m);
      const float d2 = d * sc, m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
    }
  }
}

void dequantize_q5_k(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockQ5_K b;
  for (int64_t i = 0; i < n / kSuperBlock; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d), min = float_from_half(b.dmin);
    const uint8_t* ql = b.qs;
    uint8_t u1 = 1, u2 = 2;
    for (int is = 0; is < 8; is += 2, ql += 32) {
      uint8_t sc, m;
      get_scale_min_k4(is, b.scales, sc, m);
      const float d1 = d * sc, m1 = min * m;
      get_scale_min_k4(is + 1, b.scales, sc, m);
      const float d2 = d * sc, m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (b.qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (b.qh[l] & u2 ? 16 : 0)) - m2;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

void dequantize_q6_k(const void* src, float* y, int64_t n) {
  const auto* in = static_cast<const uint8_t*>(src);
  BlockQ6_K b;
  for (int64_t i = 0; i < n / kSuperBlock; ++i, in += sizeof b) {
    std::memcpy(&b, in, sizeof b);
    const float d = float_from_half(b.d);
    const uint8_t* ql = b.ql;
    const uint8_t* qh = b.qh;
    const int8_t* sc = b.scales;
    for (int half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[is] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

}  // namespace mpq::detail::ggml
