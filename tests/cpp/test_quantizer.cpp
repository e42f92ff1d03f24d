#include <gtest/gtest.h>

#include <cmath>

#include <mpq/quantizer.h>

#include "test_helpers.h"

namespace {

// A scalar reference of asymmetric RTN for one element of a group, straight from the definition
// and in float arithmetic like the library: range [min(lo,0), max(hi,0)], fp16-rounded scale,
// integer zero point, clamped codes.
float reference_dequant(float w, float lo, float hi, int bits) {
  const float maxq = static_cast<float>((1 << bits) - 1);
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  const float scale = static_cast<float>(c10::Half((hi - lo) / maxq));
  const float zero = std::clamp(std::nearbyint(-lo / scale), 0.0f, maxq);
  const float q = std::clamp(std::nearbyint(w / scale) + zero, 0.0f, maxq);
  return (q - zero) * scale;
}

}  // namespace

TEST(Quantizer, MatchesScalarReferenceAsymmetric) {
  for (const at::Device& device : mpq_test::devices()) {
    at::manual_seed(0);
    const at::Tensor w = at::randn({16, 100}).to(device);
    const mpq::QuantizedTensor q = mpq::quantize_rtn(w, mpq::find_format("int4_g32"));
    const at::Tensor got = mpq::dequantize(q).cpu();
    const at::Tensor wc = w.cpu();
    auto g_acc = got.accessor<float, 2>();
    auto w_acc = wc.accessor<float, 2>();
    int64_t mismatches = 0;
    for (int r = 0; r < 16; ++r) {
      for (int c0 = 0; c0 < 100; c0 += 32) {
        const int n = std::min(32, 100 - c0);
        float lo = INFINITY, hi = -INFINITY;
        for (int c = c0; c < c0 + n; ++c) {
          lo = std::min(lo, w_acc[r][c]);
          hi = std::max(hi, w_acc[r][c]);
        }
        for (int c = c0; c < c0 + n; ++c) {
          mismatches += reference_dequant(w_acc[r][c], lo, hi, 4) != g_acc[r][c];
        }
      }
    }
    EXPECT_EQ(mismatches, 0) << device;
  }
}

TEST(Quantizer, ErrorWithinHalfAStepAndRoundTrips) {
  for (const at::Device& device : mpq_test::devices()) {
    for (const char* name : {"int2", "int3_g64", "int4_g32_sym", "int5_g128", "int8_sym", "int8"}) {
      at::manual_seed(1);
      const at::Tensor w = at::randn({8, 300}, at::TensorOptions().device(device));
      const mpq::Format f = mpq::find_format(name);
      const mpq::QuantizedTensor q = mpq::quantize_rtn(w, f);
      const at::Tensor d = mpq::dequantize(q);
      ASSERT_EQ(d.sizes(), w.sizes());
      EXPECT_EQ(q.nbytes(), f.bytes(8, 300));
      // Per-element bound: half a quantization step of the element's group, plus what the fp16
      // rounding of the scale (relative error <= 2^-11) can cut off at the ends of the range.
      const int64_t g = f.group_size == 0 ? 300 : f.group_size;
      const double maxq = (1 << f.bits) - 1;
      const at::Tensor scales = q.scales.to(at::kFloat).repeat_interleave(g, 1).narrow(1, 0, 300);
      const at::Tensor excess = (d - w).abs() - scales * (0.5 + maxq * std::ldexp(1.0, -11));
      EXPECT_LE(excess.max().item<double>(), 1e-6) << name << " on " << device;
      // Dequantizing the same QuantizedTensor twice gives identical weights.
      EXPECT_TRUE(at::equal(d, mpq::dequantize(q))) << name;
    }
  }
}

TEST(Quantizer, MoreBitsLessError) {
  at::manual_seed(2);
  const at::Tensor w = at::randn({32, 256});
  double previous = INFINITY;
  for (const char* name : {"int2_g32", "int3_g32", "int4_g32", "int6_g32", "int8_g32"}) {
    const double err = (mpq::dequantize(mpq::quantize_rtn(w, mpq::find_format(name))) - w)
                           .square().mean().item<double>();
    EXPECT_LT(err, previous) << name;
    previous = err;
  }
}

TEST(Quantizer, MseClipNeverWorseInItsNorm) {
  at::manual_seed(3);
  // Heavy tails: clipping the range should help.
  const at::Tensor w = at::randn({64, 128}).pow(3);
  const mpq::Format f = mpq::find_format("int3_g128");
  mpq::RtnOptions clip;
  clip.mse_clip = true;
  const auto err = [&](const mpq::RtnOptions& o) {
    return (mpq::dequantize(mpq::quantize_rtn(w, f, o)) - w).abs().pow(2.4).sum(1);
  };
  const at::Tensor plain = err({}), clipped = err(clip);
  EXPECT_TRUE((clipped <= plain + 1e-4).all().item<bool>());
  EXPECT_LT(clipped.sum().item<double>(), 0.9 * plain.sum().item<double>());
}

TEST(Quantizer, HalfPrecisionInputs) {
  at::manual_seed(4);
  for (at::ScalarType t : {at::kHalf, at::kBFloat16, at::kDouble}) {
    const at::Tensor w = at::randn({4, 64}).to(t);
    const mpq::QuantizedTensor q = mpq::quantize_rtn(w, mpq::find_format("int8_g32"));
    const at::Tensor d = mpq::dequantize(q);
    EXPECT_EQ(d.scalar_type(), t);
    EXPECT_LT((d.to(at::kFloat) - w.to(at::kFloat)).abs().max().item<double>(), 0.05);
  }
}

TEST(Quantizer, PackUnpackMatchesBitDefinition) {
  at::manual_seed(5);
  for (int bits = 1; bits <= 8; ++bits) {
    const int64_t n = 37;
    const at::Tensor codes = at::randint(0, 1 << bits, {3, n}).to(at::kByte);
    const at::Tensor packed = mpq::pack_codes(codes, bits);
    ASSERT_EQ(packed.size(1), (n * bits + 7) / 8);
    // Bit k of the row's stream is bit k%8 of byte k/8; code j holds stream bits j*bits...
    auto p = packed.accessor<uint8_t, 2>();
    auto c = codes.accessor<uint8_t, 2>();
    for (int r = 0; r < 3; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        int value = 0;
        for (int b = 0; b < bits; ++b) {
          const int64_t k = j * bits + b;
          value |= ((p[r][k / 8] >> (k % 8)) & 1) << b;
        }
        ASSERT_EQ(value, c[r][j]) << "bits " << bits << " code " << j;
      }
    }
    EXPECT_TRUE(at::equal(mpq::unpack_codes(packed, bits, n), codes));
  }
}

TEST(Quantizer, BadInputThrowsNamingTheTensor) {
  const mpq::Format f = mpq::find_format("int4_g32");
  at::Tensor w = at::randn({4, 64});
  w[1][3] = NAN;
  try {
    mpq::quantize_rtn(w, f, {}, "blk.2.ffn_up");
    FAIL();
  } catch (const c10::ValueError& e) {
    const std::string msg = e.what_without_backtrace();
    EXPECT_NE(msg.find("blk.2.ffn_up"), std::string::npos) << msg;
    EXPECT_NE(msg.find("NaN"), std::string::npos) << msg;
  }
  EXPECT_THROW(mpq::quantize_rtn(at::randint(0, 4, {4, 64}), f), c10::TypeError);
  EXPECT_THROW(mpq::quantize_rtn(at::randn({64}), f), c10::ValueError);
  EXPECT_THROW(mpq::quantize_rtn(at::randn({0, 64}), f), c10::ValueError);
  EXPECT_THROW(mpq::quantize_rtn(at::Tensor(), f), c10::ValueError);
  EXPECT_THROW(mpq::quantize_rtn(at::full({2, 4}, 1e9), f), c10::ValueError);  // beyond fp16 scales
  mpq::RtnOptions o;
  o.grid = 0;
  EXPECT_THROW(mpq::quantize_rtn(at::randn({2, 4}), f, o), c10::ValueError);
  EXPECT_THROW(mpq::pack_codes(at::full({1, 4}, 9, at::kByte), 3), c10::ValueError);
  EXPECT_THROW(mpq::unpack_codes(at::zeros({1, 3}, at::kByte), 4, 8), c10::ValueError);
}

TEST(Quantizer, InconsistentQuantizedTensorIsRejected) {
  mpq::QuantizedTensor q = mpq::quantize_rtn(at::randn({4, 64}), mpq::find_format("int4_g32"));
  mpq::QuantizedTensor bad = q;
  bad.cols = 65;
  EXPECT_THROW(mpq::dequantize(bad), c10::ValueError);
  bad = q;
  bad.zeros = at::Tensor();
  EXPECT_THROW(mpq::dequantize(bad), c10::TypeError);
  bad = q;
  bad.scales = bad.scales.to(at::kFloat);
  EXPECT_THROW(mpq::dequantize(bad), c10::TypeError);
}
