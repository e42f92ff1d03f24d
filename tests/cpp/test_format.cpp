#include <gtest/gtest.h>

#include <algorithm>

#include <mpq/error.h>
#include <mpq/format.h>

TEST(Format, ParsesCanonicalIntegerNames) {
  const mpq::Format f = mpq::find_format("int3_g64_sym");
  EXPECT_EQ(f.bits, 3);
  EXPECT_EQ(f.group_size, 64);
  EXPECT_TRUE(f.symmetric);
  EXPECT_EQ(mpq::find_format("int7").group_size, 0);  // valid without registration
  EXPECT_FALSE(mpq::find_format("int7").symmetric);
}

TEST(Format, RejectsUnknownAndNonCanonicalNames) {
  for (const char* bad : {"int9", "int1", "int4_g0", "int4_g", "int4_g32_asym", "q4", "", "int04"}) {
    EXPECT_THROW(mpq::find_format(bad), c10::ValueError) << bad;
  }
}

TEST(Format, BytesCountCodesScalesAndZeros) {
  // int4_g32 asymmetric, a 2 x 70 weight: 3 groups per row; 35 code bytes, 3 fp16 scales (6 bytes),
  // 3 four-bit zeros (2 bytes) per row.
  EXPECT_EQ(mpq::find_format("int4_g32").bytes(2, 70), 2 * (35 + 6 + 2));
  // int8_sym per channel: 64 code bytes and one fp16 scale per row.
  EXPECT_EQ(mpq::find_format("int8_sym").bytes(1, 64), 66);
  EXPECT_DOUBLE_EQ(mpq::find_format("int8_sym").bits_per_weight(64), 66 * 8.0 / 64);
}

TEST(Format, RegisterRejectsConflicts) {
  mpq::Format f{"my_int4", mpq::FormatFamily::kInteger, 4, 16, true};
  mpq::register_format(f);
  EXPECT_NO_THROW(mpq::register_format(f));  // same traits: fine
  f.bits = 5;
  EXPECT_THROW(mpq::register_format(f), c10::ValueError);
  mpq::Format lie{"int4_g32", mpq::FormatFamily::kInteger, 8, 32, false};
  EXPECT_THROW(mpq::register_format(lie), c10::ValueError);
  const auto names = mpq::list_formats();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_NE(std::find(names.begin(), names.end(), "my_int4"), names.end());
}

TEST(Format, CodebookFormatsHaveLlamaCppGeometry) {
  // name, ggml type id, bytes per 256 weights (ggml-common.h)
  const struct {
    const char* name;
    int32_t type;
    int64_t bytes;
  } kIq[] = {{"iq2_xxs", 16, 66}, {"iq2_xs", 17, 74}, {"iq3_xxs", 18, 98}, {"iq1_s", 19, 50},
             {"iq3_s", 21, 110},  {"iq2_s", 22, 82},  {"iq1_m", 29, 56}};
  for (const auto& t : kIq) {
    const mpq::Format f = mpq::find_format(t.name);
    EXPECT_EQ(f.family, mpq::FormatFamily::kGgml) << t.name;
    EXPECT_EQ(f.ggml_type, t.type) << t.name;
    EXPECT_EQ(f.group_size, 256) << t.name;
    EXPECT_EQ(f.bytes(3, 512), 3 * 2 * t.bytes) << t.name;
  }
}
