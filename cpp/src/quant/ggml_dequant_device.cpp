// The ggml block formats read with ATen ops only, on whatever device holds the blocks. Mirrors
// the row kernels of cpp/src/ggml (legacy_quants.cpp, k_dequants.cpp, iq4_quants.cpp,
// iq_dequants.cpp, fp16.cpp) value for value:
//   - blocks are viewed as [n_blocks, type_size] and each field sliced out of the bytes; bit
//     fields are unpacked with int32 shifts and masks, broadcast against small shift tensors, into
//     the order the row kernel writes its values;
//   - integer levels and scales are converted to float32 exactly (they are small integers), fp16
//     fields reinterpreted as at::kHalf and widened (exact);
//   - every float product and sum the row kernel does is one float32 ATen op here, in the same
//     order (d * sc, then that * q, then minus m ...), so each rounds exactly as the CPU code does
//     (which is compiled with -ffp-contract=off); multiplication being commutative, operand order
//     within one product does not matter.
#include "quant/ggml_dequant_device.h"

#include <array>
#include <limits>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include <mpq/error.h>

#include "core/checks.h"
#include "ggml/ggml_blocks.h"
#include "ggml/ggml_types.h"
#include "ggml/iq_grids.h"

namespace mpq::detail {
namespace {

namespace g = ggml;

// ---------------------------------------------------------------- field access

// bytes [off, off + len) of each block, as int32 [nb, len].
at::Tensor bytes(const at::Tensor& blk, int64_t off, int64_t len) {
  return blk.narrow(1, off, len).to(at::kInt);
}

// Signed bytes (int8 fields), as int32 [nb, len].
at::Tensor signed_bytes(const at::Tensor& blk, int64_t off, int64_t len) {
  return blk.narrow(1, off, len).view(at::kChar).to(at::kInt);
}

// An fp16 field: the 2 bytes at `off` reinterpreted as half and widened, float32 [nb, 1].
at::Tensor half_field(const at::Tensor& blk, int64_t off) {
  return blk.narrow(1, off, 2).contiguous().view(at::kHalf).to(at::kFloat);
}

at::Tensor low4(const at::Tensor& q) { return at::bitwise_and(q, 0xF); }
at::Tensor high4(const at::Tensor& q) { return at::bitwise_right_shift(q, 4); }

// (q >> shift) & mask, shift broadcast against q.
at::Tensor field(const at::Tensor& q, const at::Tensor& shift, int64_t mask) {
  return at::bitwise_and(at::bitwise_right_shift(q, shift), mask);
}

// int32 {0, step, 2 step, ...} (n values) on q's device, shaped `shape`.
at::Tensor steps(const at::Tensor& like, int64_t n, int64_t step, at::IntArrayRef shape) {
  return at::arange(0, n * step, step, like.options().dtype(at::kInt)).view(shape);
}

at::Tensor fl(const at::Tensor& t) { return t.to(at::kFloat); }

// ggml's kvalues_iq4nl as float32 on blk's device (exact: small integers).
at::Tensor iq4_values(const at::Tensor& blk) {
  static constexpr std::array<float, 16> kValues = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                    1,    13,   25,  38,  53,  69,  89,  113};
  return at::tensor(at::ArrayRef<float>(kValues.data(), kValues.size()), at::kFloat).to(blk.device());
}

// table[idx], idx any integer shape.
at::Tensor lookup(const at::Tensor& table, const at::Tensor& idx) {
  return table.index_select(0, idx.reshape({-1}).to(at::kLong)).view(idx.sizes());
}

// ---------------------------------------------------------------- 32-value blocks

// Values j and j + 16 of a block share qs[j] (low, high nibble): [nb, 16] -> [nb, 32].
at::Tensor nibbles32(const at::Tensor& qs) { return at::cat({low4(qs), high4(qs)}, 1); }

// Q5_0 / Q5_1: bit i of the little-endian u32 qh is the 5th bit of value i: [nb, 32] of 0 / 16.
at::Tensor fifth_bits32(const at::Tensor& blk, int64_t off) {
  const at::Tensor qh = bytes(blk, off, 4);
  const int64_t nb = qh.size(0);
  return at::bitwise_left_shift(field(qh.unsqueeze(2), steps(qh, 8, 1, {1, 1, 8}), 1), 4).view({nb, 32});
}

at::Tensor deq_q4_0(const at::Tensor& blk) {
  const at::Tensor d = half_field(blk, offsetof(g::BlockQ4_0, d));
  const at::Tensor q = at::sub(nibbles32(bytes(blk, offsetof(g::BlockQ4_0, qs), 16)), 8);
  return at::mul(fl(q), d);  // ((qs & 0xF) - 8) * d
}

at::Tensor deq_q4_1(const at::Tensor& blk) {
  const at::Tensor d = half_field(blk, offsetof(g::BlockQ4_1, d));
  const at::Tensor m = half_field(blk, offsetof(g::BlockQ4_1, m));
  const at::Tensor q = nibbles32(bytes(blk, offsetof(g::BlockQ4_1, qs), 16));
  return at::add(at::mul(fl(q), d), m);  // q * d + m
}

at::Tensor deq_q5_0(const at::Tensor& blk) {
  const at::Tensor d = half_field(blk, offsetof(g::BlockQ5_0, d));
  const at::Tensor q = at::bitwise_or(nibbles32(bytes(blk, offsetof(g::BlockQ5_0, qs), 16)),
                                      fifth_bits32(blk, offsetof(g::BlockQ5_0, qh)));
  return at::mul(fl(at::sub(q, 16)), d);  // (q - 16) * d
}

at::Tensor deq_q5_1(const at::Tensor& blk) {
  const at::Tensor d = half_field(blk, offsetof(g::BlockQ5_1, d));
  const at::Tensor m = half_field(blk, offsetof(g::BlockQ5_1, m));
  const at::Tensor q = at::bitwise_or(nibbles32(bytes(blk, offsetof(g::BlockQ5_1, qs), 16)),
                                      fifth_bits32(blk, offsetof(g::BlockQ5_1, qh)));
  return at::add(at::mul(fl(q), d), m);  // q * d + m
}

at::Tensor deq_q8_0(const at::Tensor& blk) {
  const at::Tensor d = half_field(blk, offsetof(g::BlockQ8_0, d));
  return at::mul(fl(signed_bytes(blk, offsetof(g::BlockQ8_0, qs), 32)), d);  // qs * d
}

at::Tensor deq_iq4_nl(const at::Tensor& blk) {
  const at::Tensor d = half_field(blk, offsetof(g::BlockIQ4_NL, d));
  const at::Tensor idx = nibbles32(bytes(blk, offsetof(g::BlockIQ4_NL, qs), 16));
  return at::mul(d, lookup(iq4_values(blk), idx));  // d * kValues[q]
}

// ---------------------------------------------------------------- 256-value super-blocks

at::Tensor deq_q2_k(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor d = half_field(blk, offsetof(g::BlockQ2_K, d));
  const at::Tensor dmin = half_field(blk, offsetof(g::BlockQ2_K, dmin));
  const at::Tensor sc = bytes(blk, offsetof(g::BlockQ2_K, scales), 16);  // group is, in output order
  const at::Tensor dl = at::mul(d, fl(low4(sc))).view({nb, 2, 4, 2, 1});
  const at::Tensor ml = at::mul(dmin, fl(high4(sc))).view({nb, 2, 4, 2, 1});
  // value [half][shift/2][part][l] = (qs[32 half + 16 part + l] >> shift) & 3
  const at::Tensor qs = bytes(blk, offsetof(g::BlockQ2_K, qs), 64).view({nb, 2, 1, 2, 16});
  const at::Tensor q = field(qs, steps(qs, 4, 2, {1, 1, 4, 1, 1}), 3);
  return at::sub(at::mul(dl, fl(q)), ml);  // dl * q - ml
}

// Q3_K's 16 signed group scales (get_q3_k_scale), int32 [nb, 16].
at::Tensor q3_k_scales(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor s = bytes(blk, offsetof(g::BlockQ3_K, scales), 12);
  const at::Tensor s8 = s.narrow(1, 0, 8);
  const at::Tensor low = at::cat({low4(s8), high4(s8)}, 1);  // j < 8: low nibble of s[j], else high of s[j-8]
  // 2 high bits of scale j = 4a + b: (s[8 + b] >> 2a) & 3
  const at::Tensor sh = s.narrow(1, 8, 4).view({nb, 1, 4});
  const at::Tensor high = field(sh, steps(sh, 4, 2, {1, 4, 1}), 3).reshape({nb, 16});
  return at::sub(at::bitwise_or(low, at::bitwise_left_shift(high, 4)), 32);
}

at::Tensor deq_q3_k(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor d_all = half_field(blk, offsetof(g::BlockQ3_K, d));
  const at::Tensor dl = at::mul(d_all, fl(q3_k_scales(blk))).view({nb, 2, 4, 2, 1});
  // value [half][shift/2][part][l]: low 2 bits as Q2_K; high bit: bit (4 half + shift/2) of
  // hmask[16 part + l], and a clear bit subtracts 4.
  const at::Tensor qs = bytes(blk, offsetof(g::BlockQ3_K, qs), 64).view({nb, 2, 1, 2, 16});
  const at::Tensor low = field(qs, steps(qs, 4, 2, {1, 1, 4, 1, 1}), 3);
  const at::Tensor hm = bytes(blk, offsetof(g::BlockQ3_K, hmask), 32).view({nb, 1, 1, 2, 16});
  const at::Tensor high = field(hm, steps(hm, 8, 1, {1, 2, 4, 1, 1}), 1);
  const at::Tensor q = at::sub(low, at::mul(at::rsub(high, 1), 4));  // low - (high ? 0 : 4)
  return at::mul(dl, fl(q));  // dl * q
}

// Q4_K / Q5_K: the 8 six-bit scales and mins (get_scale_min_k4), each int32 [nb, 8].
std::pair<at::Tensor, at::Tensor> scale_min_k4(const at::Tensor& blk, int64_t off) {
  const at::Tensor s = bytes(blk, off, 12);
  const at::Tensor a = s.narrow(1, 0, 4), b = s.narrow(1, 4, 4), c = s.narrow(1, 8, 4);
  const at::Tensor top_a = at::bitwise_left_shift(at::bitwise_right_shift(a, 6), 4);
  const at::Tensor top_b = at::bitwise_left_shift(at::bitwise_right_shift(b, 6), 4);
  const at::Tensor sc = at::cat({at::bitwise_and(a, 63), at::bitwise_or(low4(c), top_a)}, 1);
  const at::Tensor m = at::cat({at::bitwise_and(b, 63), at::bitwise_or(high4(c), top_b)}, 1);
  return {sc, m};
}

// Q4_K / Q5_K nibbles: 32 bytes per 64 values, low nibbles first: [nb, 8 groups, 32].
at::Tensor nibbles_k(const at::Tensor& blk, int64_t off) {
  const at::Tensor qs = bytes(blk, off, 128).view({blk.size(0), 4, 1, 32});
  return at::cat({low4(qs), high4(qs)}, 2).view({blk.size(0), 8, 32});
}

at::Tensor deq_q4_k(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor d = half_field(blk, offsetof(g::BlockQ4_K, d));
  const at::Tensor dmin = half_field(blk, offsetof(g::BlockQ4_K, dmin));
  const auto [sc, m] = scale_min_k4(blk, offsetof(g::BlockQ4_K, scales));
  const at::Tensor d1 = at::mul(d, fl(sc)).view({nb, 8, 1});
  const at::Tensor m1 = at::mul(dmin, fl(m)).view({nb, 8, 1});
  const at::Tensor q = nibbles_k(blk, offsetof(g::BlockQ4_K, qs));
  return at::sub(at::mul(d1, fl(q)), m1);  // d1 * q - m1
}

at::Tensor deq_q5_k(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor d = half_field(blk, offsetof(g::BlockQ5_K, d));
  const at::Tensor dmin = half_field(blk, offsetof(g::BlockQ5_K, dmin));
  const auto [sc, m] = scale_min_k4(blk, offsetof(g::BlockQ5_K, scales));
  const at::Tensor d1 = at::mul(d, fl(sc)).view({nb, 8, 1});
  const at::Tensor m1 = at::mul(dmin, fl(m)).view({nb, 8, 1});
  // The 5th bit of value l of group k is bit k of qh[l].
  const at::Tensor qh = bytes(blk, offsetof(g::BlockQ5_K, qh), 32).view({nb, 1, 32});
  const at::Tensor high = at::bitwise_left_shift(field(qh, steps(qh, 8, 1, {1, 8, 1}), 1), 4);
  const at::Tensor q = at::add(nibbles_k(blk, offsetof(g::BlockQ5_K, qs)), high);
  return at::sub(at::mul(d1, fl(q)), m1);  // d1 * q - m1
}

at::Tensor deq_q6_k(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor d = half_field(blk, offsetof(g::BlockQ6_K, d));
  // Output [half][k][l] (value 128 half + 32 k + l): scale index 8 half + 2 k + l / 16.
  const at::Tensor dsc =
      at::mul(d, fl(signed_bytes(blk, offsetof(g::BlockQ6_K, scales), 16))).view({nb, 2, 4, 2, 1});
  // Low nibble of value k: ql[64 half + 32 (k % 2) + l] >> 4 (k / 2); high 2 bits: (qh[32 half + l] >> 2k) & 3.
  const at::Tensor ql = bytes(blk, offsetof(g::BlockQ6_K, ql), 128).view({nb, 2, 2, 32});
  const at::Tensor low = at::stack({low4(ql), high4(ql)}, 2).view({nb, 2, 4, 32});
  const at::Tensor qh = bytes(blk, offsetof(g::BlockQ6_K, qh), 64).view({nb, 2, 1, 32});
  const at::Tensor high = field(qh, steps(qh, 4, 2, {1, 1, 4, 1}), 3);
  const at::Tensor q = at::sub(at::bitwise_or(low, at::bitwise_left_shift(high, 4)), 32);
  return at::mul(dsc, fl(q).view({nb, 2, 4, 2, 16}));  // d * sc * q, as (d * sc) * q
}

at::Tensor deq_iq4_xs(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor d = half_field(blk, offsetof(g::BlockIQ4_XS, d));
  // Scale ib: low 4 bits from nibble ib % 2 of scales_l[ib / 2], high 2 from bits 2 ib of the
  // little-endian u16 scales_h.
  const at::Tensor sl = bytes(blk, offsetof(g::BlockIQ4_XS, scales_l), 4).view({nb, 4, 1});
  const at::Tensor ls_low = at::cat({low4(sl), high4(sl)}, 2).view({nb, 8});
  const at::Tensor shb = bytes(blk, offsetof(g::BlockIQ4_XS, scales_h), 2);
  const at::Tensor sh =
      at::bitwise_or(shb.narrow(1, 0, 1), at::bitwise_left_shift(shb.narrow(1, 1, 1), 8));  // [nb, 1]
  const at::Tensor ls_high = field(sh, steps(sh, 8, 2, {1, 8}), 3);
  const at::Tensor ls = at::bitwise_or(ls_low, at::bitwise_left_shift(ls_high, 4));
  const at::Tensor dl = at::mul(d, fl(at::sub(ls, 32))).view({nb, 8, 1});  // d * (ls - 32)
  const at::Tensor qs = bytes(blk, offsetof(g::BlockIQ4_XS, qs), 128).view({nb, 8, 16});
  const at::Tensor idx = at::cat({low4(qs), high4(qs)}, 2);  // [nb, 8, 32]
  return at::mul(dl, lookup(iq4_values(blk), idx));          // dl * kValues[q]
}

// ---------------------------------------------------------------- codebook super-blocks (IQ1-IQ3)

// A grid (iq_grids.h) as float32 [entries, bytes per entry] on blk's device; each entry's bytes
// are its values (unsigned; signed for IQ1's -1 / 0 / 1).
template <typename T, size_t N>
at::Tensor grid_table(const at::Tensor& blk, const T (&grid)[N], bool is_signed) {
  const at::Tensor bytes = at::from_blob(const_cast<T*>(grid), {static_cast<int64_t>(N * sizeof(T))}, at::kByte);
  const at::Tensor t = is_signed ? bytes.view(at::kChar).to(at::kFloat) : bytes.to(at::kFloat);
  return t.view({static_cast<int64_t>(N), static_cast<int64_t>(sizeof(T))}).to(blk.device());
}

// grid rows for indices idx (any integer shape): [..., bytes per entry].
at::Tensor grid_rows(const at::Tensor& table, const at::Tensor& idx) {
  std::vector<int64_t> shape(idx.sizes().begin(), idx.sizes().end());
  shape.push_back(table.size(1));
  return table.index_select(0, idx.reshape({-1}).to(at::kLong)).view(shape);
}

// Little-endian u16 / u32 fields: n of them from `off`, as int64 [nb, n].
at::Tensor words(const at::Tensor& blk, int64_t off, int64_t n, int width) {
  const at::Tensor b = blk.narrow(1, off, n * width).to(at::kLong).view({blk.size(0), n, width});
  at::Tensor w = b.select(2, 0);
  for (int i = 1; i < width; ++i) w = at::bitwise_or(w, at::bitwise_left_shift(b.select(2, i), 8 * i));
  return w;
}

// +1 / -1 (float32) for bits 0..7 of each sign byte: [..., 8].
at::Tensor sign_factors(const at::Tensor& signs) {
  const at::Tensor bit = field(signs.unsqueeze(-1), at::arange(8, signs.options().dtype(signs.scalar_type())), 1);
  return at::rsub(fl(bit).mul(2), 1);  // 1 - 2 bit: exact
}

// 7 stored sign bits -> the sign byte with the even-parity 8th bit (ggml's ksigns_iq2xs).
at::Tensor even_signs(const at::Tensor& seven) {
  at::Tensor parity = at::zeros_like(seven);
  for (int j = 0; j < 7; ++j) parity = at::bitwise_xor(parity, field(seven, at::scalar_tensor(j, seven.options()), 1));
  return at::bitwise_or(seven, at::bitwise_left_shift(parity, 7));
}

// d * (0.5 + ls) * k for the 4-bit group scales of IQ2 / IQ3_XXS.
at::Tensor half_step_scale(const at::Tensor& d, const at::Tensor& ls, double k) {
  return at::mul(at::mul(d, at::add(fl(ls), 0.5)), k);
}

at::Tensor deq_iq2_xxs(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor d = half_field(blk, offsetof(g::BlockIQ2_XXS, d));  // [nb, 1]
  const at::Tensor aux = words(blk, offsetof(g::BlockIQ2_XXS, qs), 16, 4).view({nb, 8, 2});
  const at::Tensor idx = bytes(blk, offsetof(g::BlockIQ2_XXS, qs), 64).view({nb, 8, 2, 4}).select(2, 0);
  const at::Tensor hi = aux.select(2, 1);                                                  // [nb, 8]
  const at::Tensor db = half_step_scale(d, at::bitwise_right_shift(hi, 28), 0.25).view({nb, 8, 1, 1});
  const at::Tensor seven = field(hi.unsqueeze(2), steps(hi, 4, 7, {1, 1, 4}).to(at::kLong), 127);
  const at::Tensor grid = grid_rows(grid_table(blk, g::kIq2xxsGrid, false), idx);         // [nb, 8, 4, 8]
  return at::mul(at::mul(db, grid), sign_factors(even_signs(seven)));
}

// IQ2_XS / IQ2_S scales: db [nb, 8 groups, 4 codewords, 1], codewords 0-1 from the low nibble.
at::Tensor iq2_pair_scales(const at::Tensor& blk, int64_t d_off, int64_t scales_off) {
  const int64_t nb = blk.size(0);
  const at::Tensor d = half_field(blk, d_off).view({nb, 1, 1});
  const at::Tensor sc = bytes(blk, scales_off, 8).view({nb, 8, 1});
  const at::Tensor ls = at::cat({low4(sc), high4(sc)}, 2);  // [nb, 8, 2]
  return half_step_scale(d, ls, 0.25).repeat_interleave(2, 2).view({nb, 8, 4, 1});
}

at::Tensor deq_iq2_xs(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor q = words(blk, offsetof(g::BlockIQ2_XS, qs), 32, 2).view({nb, 8, 4});
  const at::Tensor db = iq2_pair_scales(blk, offsetof(g::BlockIQ2_XS, d), offsetof(g::BlockIQ2_XS, scales));
  const at::Tensor grid = grid_rows(grid_table(blk, g::kIq2xsGrid, false), at::bitwise_and(q, 511));
  return at::mul(at::mul(db, grid), sign_factors(even_signs(at::bitwise_right_shift(q, 9))));
}

at::Tensor deq_iq2_s(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor lo = bytes(blk, offsetof(g::BlockIQ2_S, qs), 32).view({nb, 8, 4});
  const at::Tensor signs = bytes(blk, offsetof(g::BlockIQ2_S, qs) + 32, 32).view({nb, 8, 4});
  const at::Tensor qh = bytes(blk, offsetof(g::BlockIQ2_S, qh), 8).view({nb, 8, 1});
  const at::Tensor high = field(qh, steps(qh, 4, 2, {1, 1, 4}), 3);  // bits 2l..2l+1 of qh[ib]
  const at::Tensor idx = at::bitwise_or(lo, at::bitwise_left_shift(high, 8));
  const at::Tensor db = iq2_pair_scales(blk, offsetof(g::BlockIQ2_S, d), offsetof(g::BlockIQ2_S, scales));
  const at::Tensor grid = grid_rows(grid_table(blk, g::kIq2sGrid, false), idx);
  return at::mul(at::mul(db, grid), sign_factors(signs));
}

at::Tensor deq_iq3_xxs(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor d = half_field(blk, offsetof(g::BlockIQ3_XXS, d));
  const at::Tensor idx = bytes(blk, offsetof(g::BlockIQ3_XXS, qs), 64).view({nb, 8, 4, 2});
  const at::Tensor aux = words(blk, offsetof(g::BlockIQ3_XXS, qs) + 64, 8, 4);  // [nb, 8]
  const at::Tensor db = half_step_scale(d, at::bitwise_right_shift(aux, 28), 0.5).view({nb, 8, 1, 1});
  const at::Tensor seven = field(aux.unsqueeze(2), steps(aux, 4, 7, {1, 1, 4}).to(at::kLong), 127);
  // each 8 values: two 4-value codewords under one sign byte
  const at::Tensor grid = grid_rows(grid_table(blk, g::kIq3xxsGrid, false), idx).view({nb, 8, 4, 8});
  return at::mul(at::mul(db, grid), sign_factors(even_signs(seven)));
}

at::Tensor deq_iq3_s(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor d = half_field(blk, offsetof(g::BlockIQ3_S, d)).view({nb, 1, 1});
  const at::Tensor lo = bytes(blk, offsetof(g::BlockIQ3_S, qs), 64).view({nb, 8, 8});
  const at::Tensor qh = bytes(blk, offsetof(g::BlockIQ3_S, qh), 8).view({nb, 8, 1});
  const at::Tensor idx = at::bitwise_or(lo, at::bitwise_left_shift(field(qh, steps(qh, 8, 1, {1, 1, 8}), 1), 8));
  const at::Tensor signs = bytes(blk, offsetof(g::BlockIQ3_S, signs), 32).view({nb, 8, 4});
  const at::Tensor sc = bytes(blk, offsetof(g::BlockIQ3_S, scales), 4).view({nb, 4, 1});
  const at::Tensor ls = at::cat({low4(sc), high4(sc)}, 2).view({nb, 8, 1});
  const at::Tensor db = at::mul(d, fl(at::add(at::mul(ls, 2), 1))).view({nb, 8, 1, 1});  // d * (1 + 2 ls)
  const at::Tensor grid = grid_rows(grid_table(blk, g::kIq3sGrid, false), idx).view({nb, 8, 4, 8});
  return at::mul(at::mul(db, grid), sign_factors(signs));
}

// IQ1: dl * (grid + delta), delta = +-1/8 from a sign bit.
at::Tensor ternary(const at::Tensor& dl, const at::Tensor& grid, const at::Tensor& delta_bit) {
  const at::Tensor delta = at::rsub(fl(delta_bit).mul(0.25), 0.125);  // 0.125 - 0.25 bit: exact
  return at::mul(dl, at::add(grid, delta));
}

at::Tensor deq_iq1_s(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor d = half_field(blk, offsetof(g::BlockIQ1_S, d)).view({nb, 1, 1});
  const at::Tensor qh = words(blk, offsetof(g::BlockIQ1_S, qh), 8, 2).view({nb, 8, 1});
  const at::Tensor lo = bytes(blk, offsetof(g::BlockIQ1_S, qs), 32).view({nb, 8, 4}).to(at::kLong);
  const at::Tensor idx = at::bitwise_or(lo, at::bitwise_left_shift(field(qh, steps(qh, 4, 3, {1, 1, 4}).to(at::kLong), 7), 8));
  const at::Tensor ls = field(qh, at::scalar_tensor(12, qh.options()), 7);
  const at::Tensor dl = at::mul(d, fl(at::add(at::mul(ls, 2), 1))).view({nb, 8, 1, 1});
  const at::Tensor delta_bit = field(qh, at::scalar_tensor(15, qh.options()), 1).view({nb, 8, 1, 1});
  return ternary(dl, grid_rows(grid_table(blk, g::kIq1sGrid, true), idx), delta_bit);
}

at::Tensor float_from_half_bits(const at::Tensor& h);

at::Tensor deq_iq1_m(const at::Tensor& blk) {
  const int64_t nb = blk.size(0);
  const at::Tensor sc = words(blk, offsetof(g::BlockIQ1_M, scales), 4, 2);  // [nb, 4]
  // the fp16 super-scale: the top nibble of each scale word, word 0 lowest
  at::Tensor dh = at::zeros({nb}, sc.options());
  for (int w = 0; w < 4; ++w) {
    dh = at::bitwise_or(dh, at::bitwise_left_shift(at::bitwise_right_shift(sc.select(1, w), 12), 4 * w));
  }
  const at::Tensor d = float_from_half_bits(dh.to(at::kInt)).view({nb, 1, 1});
  // 3-bit scale of 16 values k (k = 2 ib + half): bits 3 (k % 4) of word k / 4
  const at::Tensor ls = field(sc.view({nb, 4, 1}), steps(sc, 4, 3, {1, 1, 4}).to(at::kLong), 7).view({nb, 16, 1});
  const at::Tensor dl = at::mul(d, fl(at::add(at::mul(ls, 2), 1))).view({nb, 16, 1, 1});
  // per 8 values m (m = 2 k + i): nibble i of qh[k]: 3 high index bits, then the delta sign
  const at::Tensor qh = bytes(blk, offsetof(g::BlockIQ1_M, qh), 16).view({nb, 16, 1});
  const at::Tensor nib = field(qh, steps(qh, 2, 4, {1, 1, 2}), 15);  // [nb, 16, 2]
  const at::Tensor lo = bytes(blk, offsetof(g::BlockIQ1_M, qs), 32).view({nb, 16, 2});
  const at::Tensor idx = at::bitwise_or(lo, at::bitwise_left_shift(at::bitwise_and(nib, 7), 8));
  const at::Tensor delta_bit = at::bitwise_right_shift(nib, 3).unsqueeze(3);
  return ternary(dl, grid_rows(grid_table(blk, g::kIq1sGrid, true), idx), delta_bit);
}

// ---------------------------------------------------------------- plain float rows

// A fresh contiguous copy of the bytes, so that a dtype view of it is aligned and owns its data.
at::Tensor own_copy(const at::Tensor& blocks) { return blocks.clone(at::MemoryFormat::Contiguous); }

// IEEE half / bfloat16 bits (int32 0..65535) -> float32 bits, as half.h's float_from_half /
// float_from_bf16 (integer ops, so NaN payloads come out exactly as on the CPU too).
at::Tensor sign_bit(const at::Tensor& h) {
  return at::mul(at::bitwise_right_shift(h, 15), std::numeric_limits<int32_t>::min());
}

at::Tensor float_from_half_bits(const at::Tensor& h) {
  const at::Tensor em = at::bitwise_and(h, 0x7FFF);
  const at::Tensor shifted = at::bitwise_left_shift(em, 13);
  const at::Tensor normal = at::add(shifted, 0x38000000);
  const at::Tensor quiet = at::mul(at::bitwise_and(em, 0x3FF).ne(0).to(at::kInt), 0x00400000);
  const at::Tensor special = at::bitwise_or(at::bitwise_or(shifted, 0x7F800000), quiet);
  const at::Tensor subnormal = at::mul(fl(em), 0x1p-24).view(at::kInt);  // exact: em < 2^10
  const at::Tensor bits = at::where(em.lt(0x400), subnormal, at::where(em.ge(0x7C00), special, normal));
  return at::bitwise_or(bits, sign_bit(h)).view(at::kFloat);
}

at::Tensor float_from_bf16_bits(const at::Tensor& h) {
  const at::Tensor mag = at::bitwise_left_shift(at::bitwise_and(h, 0x7FFF), 16);
  return at::bitwise_or(mag, sign_bit(h)).view(at::kFloat);
}

at::Tensor half_bits(const at::Tensor& blocks) {
  return at::bitwise_and(own_copy(blocks).view(at::kShort).to(at::kInt), 0xFFFF);
}

}  // namespace

at::Tensor dequantize_ggml_device(const at::Tensor& blocks, ggml::Type type, int64_t n_per_row) {
  MPQ_CHECK_VALUE(g::is_supported(type), "dequantize_ggml_device: unsupported ggml type ",
                  static_cast<int32_t>(type));
  const g::TypeInfo& info = g::info(type);
  MPQ_CHECK_VALUE(n_per_row > 0 && n_per_row % info.block_size == 0, "dequantize_ggml_device: n_per_row ",
                  n_per_row, " is not a positive multiple of ", info.name, "'s block of ", info.block_size);
  const int64_t row_bytes = static_cast<int64_t>(g::row_size(type, n_per_row));
  MPQ_CHECK_TYPE(blocks.defined() && blocks.scalar_type() == at::kByte,
                 "dequantize_ggml_device: blocks must be uint8, got ", describe(blocks));
  MPQ_CHECK_VALUE(blocks.dim() == 2 && blocks.size(1) == row_bytes, "dequantize_ggml_device: ", info.name,
                  " rows of ", n_per_row, " weights take ", row_bytes, " bytes; got ", describe(blocks));
  const int64_t rows = blocks.size(0);

  switch (type) {
    case g::Type::F32: return own_copy(blocks).view(at::kFloat);
    case g::Type::F16: return float_from_half_bits(half_bits(blocks));
    case g::Type::BF16: return float_from_bf16_bits(half_bits(blocks));
    default: break;
  }

  const at::Tensor blk = blocks.contiguous().view({rows * (n_per_row / info.block_size), info.type_size});
  at::Tensor y;
  switch (type) {
    case g::Type::Q4_0: y = deq_q4_0(blk); break;
    case g::Type::Q4_1: y = deq_q4_1(blk); break;
    case g::Type::Q5_0: y = deq_q5_0(blk); break;
    case g::Type::Q5_1: y = deq_q5_1(blk); break;
    case g::Type::Q8_0: y = deq_q8_0(blk); break;
    case g::Type::Q2_K: y = deq_q2_k(blk); break;
    case g::Type::Q3_K: y = deq_q3_k(blk); break;
    case g::Type::Q4_K: y = deq_q4_k(blk); break;
    case g::Type::Q5_K: y = deq_q5_k(blk); break;
    case g::Type::Q6_K: y = deq_q6_k(blk); break;
    case g::Type::IQ4_NL: y = deq_iq4_nl(blk); break;
    case g::Type::IQ4_XS: y = deq_iq4_xs(blk); break;
    case g::Type::IQ2_XXS: y = deq_iq2_xxs(blk); break;
    case g::Type::IQ2_XS: y = deq_iq2_xs(blk); break;
    case g::Type::IQ2_S: y = deq_iq2_s(blk); break;
    case g::Type::IQ3_XXS: y = deq_iq3_xxs(blk); break;
    case g::Type::IQ3_S: y = deq_iq3_s(blk); break;
    case g::Type::IQ1_S: y = deq_iq1_s(blk); break;
    case g::Type::IQ1_M: y = deq_iq1_m(blk); break;
    default: MPQ_ASSERT(false, "unreachable ggml type ", static_cast<int32_t>(type));
  }
  return y.reshape({rows, n_per_row}).contiguous();
}

}  // namespace mpq::detail
