// CandidateTable: prices of genomes (against sums worked out by hand), genome and table checks,
// and the JSON file.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>

#include <mpq/candidates.h>
#include <mpq/error.h>

#include "search_helpers.h"

namespace {

using mpq_test::contains;
using mpq_test::error_of;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Three tensors; q and k coupled; "b" unavailable for v.
mpq::CandidateTable small_table() {
  mpq::CandidateTable t({"a", "b", "c"});
  t.add_tensor("blk.0.attn_q.weight", 4096, "blk.0.qk");
  t.add_tensor("blk.0.attn_k.weight", 1024, "blk.0.qk");
  t.add_tensor("blk.0.attn_v.weight", 1024);
  for (int i = 0; i < 3; ++i) {
    t.set(i, 0, 100 * (i + 1), 1.0 + i, kNaN);
    t.set(i, 2, 400 * (i + 1), 0.25 * (i + 1), 0.01 * i);
  }
  t.set(0, 1, 250, 0.5, kNaN);
  t.set(1, 1, 500, 0.75, kNaN);
  t.set_fixed(64, 512);
  return t;
}

std::string temp_path(const char* name) {
  return (std::filesystem::temp_directory_path() / name).string();
}

TEST(CandidateTable, PricesAGenome) {
  const auto t = small_table();
  EXPECT_EQ(t.total_weights(), 4096 + 1024 + 1024 + 512);
  // q, k at "b" (250 + 500 bytes, 0.5 + 0.75), v at "c" (1200 bytes, 0.75); 64 fixed bytes.
  const mpq::Genome g{1, 1, 2};
  EXPECT_EQ(t.bytes(g), 250 + 500 + 1200 + 64);
  EXPECT_DOUBLE_EQ(t.proxy(g), 0.5 + 0.75 + 0.75);
  EXPECT_DOUBLE_EQ(t.bits_per_weight(g), 8.0 * 2014 / 6656);
  EXPECT_EQ(t.option_index("c"), 2);
  EXPECT_EQ(t.tensor_index("blk.0.attn_v.weight"), 2);
  EXPECT_FALSE(t.available(2, 1));
  EXPECT_TRUE(std::isnan(t.cell_kl(0, 0)));
  EXPECT_DOUBLE_EQ(t.cell_kl(2, 2), 0.02);
}

TEST(CandidateTable, GenesFollowCouplingGroups) {
  const auto t = small_table();
  EXPECT_EQ(t.genes(), (std::vector<std::vector<int>>{{0, 1}, {2}}));
  EXPECT_EQ(t.gene_options(), (std::vector<std::vector<int>>{{0, 1, 2}, {0, 2}}));
}

TEST(CandidateTable, RejectsBadGenomes) {
  const auto t = small_table();
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { t.bytes({0, 0}); }), "has 2 entries"));
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { t.proxy({0, 0, 7}); }),
                       "'blk.0.attn_v.weight' has option index 7"));
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { t.bytes({0, 0, 1}); }),
                       "option 'b' is unavailable for tensor 'blk.0.attn_v.weight'"));
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { t.bytes({0, 2, 0}); }),
                       "coupling group 'blk.0.qk'"));
}

TEST(CandidateTable, RejectsBadInput) {
  EXPECT_TRUE(contains(
      error_of<c10::ValueError>([] { mpq::CandidateTable(std::vector<std::string>{}); }),
      "at least one option"));
  EXPECT_TRUE(contains(error_of<c10::ValueError>([] { mpq::CandidateTable({"a", "a"}); }),
                       "'a' is listed twice"));
  auto t = small_table();
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { t.option_index("q9_k"); }),
                       "unknown option 'q9_k' (the table has a, b, c)"));
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { t.set("nope", "a", 1, 1, kNaN); }),
                       "unknown tensor 'nope'"));
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { t.set(0, 0, -1, 1, kNaN); }),
                       "bytes must be >= 0"));
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { t.set(0, 0, 1, kNaN, kNaN); }),
                       "proxy error must be finite"));
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { t.add_tensor("x", 0); }), "weights > 0"));
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { t.add_tensor("blk.0.attn_v.weight", 5); }),
                       "added twice"));
  EXPECT_THROW(t.cell_bytes(2, 1), c10::ValueError);
}

TEST(CandidateTable, ValidateNamesTheTensorOrGroupWithoutOptions) {
  mpq::CandidateTable t({"a", "b"});
  t.add_tensor("x", 10);
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { t.validate(); }),
                       "tensor 'x' has no available option"));
  t.set("x", "a", 5, 1, kNaN);
  t.add_tensor("y", 10, "g");
  t.add_tensor("z", 10, "g");
  t.set("y", "a", 5, 1, kNaN);
  t.set("z", "b", 5, 1, kNaN);
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { t.validate(); }),
                       "coupling group 'g' (y, z) has no option available to all"));
  EXPECT_TRUE(contains(error_of<c10::ValueError>([] { mpq::CandidateTable({"a"}).validate(); }),
                       "has no tensors"));
}

void expect_same(const mpq::CandidateTable& a, const mpq::CandidateTable& b) {
  ASSERT_EQ(a.options(), b.options());
  ASSERT_EQ(a.num_tensors(), b.num_tensors());
  EXPECT_EQ(a.fixed_bytes(), b.fixed_bytes());
  EXPECT_EQ(a.fixed_weights(), b.fixed_weights());
  for (int t = 0; t < a.num_tensors(); ++t) {
    EXPECT_EQ(a.tensor_name(t), b.tensor_name(t));
    EXPECT_EQ(a.tensor_weights(t), b.tensor_weights(t));
    EXPECT_EQ(a.tensor_group(t), b.tensor_group(t));
    for (int o = 0; o < a.num_options(); ++o) {
      ASSERT_EQ(a.available(t, o), b.available(t, o));
      if (!a.available(t, o)) continue;
      EXPECT_EQ(a.cell_bytes(t, o), b.cell_bytes(t, o));
      EXPECT_EQ(a.cell_proxy(t, o), b.cell_proxy(t, o));  // bit-exact: shortest round-trip form
      const double ka = a.cell_kl(t, o), kb = b.cell_kl(t, o);
      EXPECT_TRUE((std::isnan(ka) && std::isnan(kb)) || ka == kb);
    }
  }
}

TEST(CandidateTable, SaveLoadRoundTrip) {
  auto t = small_table();
  t.set(2, 0, int64_t{1} << 40, 1.0 / 3.0, 1e-300);  // large bytes, non-terminating decimals
  t.add_tensor("odd \"name\"\\ with\nnewline \xc3\xa9", 7);
  t.set(3, 1, 3, 0.1, kNaN);
  const std::string path = temp_path("mpq_test_table.json");
  t.save(path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  expect_same(t, mpq::CandidateTable::load(path));
  expect_same(t, mpq::CandidateTable::from_json(t.to_json()));
  std::filesystem::remove(path);
}

TEST(CandidateTable, LoadNamesTheFileAndTheRule) {
  const std::string path = temp_path("mpq_test_bad_table.json");
  auto load_text = [&](const std::string& text) {
    std::ofstream(path) << text;
    return error_of<c10::ValueError>([&] { mpq::CandidateTable::load(path); });
  };
  const std::string good = small_table().to_json();
  std::string e = load_text(good.substr(0, good.size() / 2));
  EXPECT_TRUE(contains(e, path)) << e;
  EXPECT_TRUE(contains(load_text("{\"version\": 2, \"options\": [\"a\"], \"tensors\": []}"),
                       "unsupported version"));
  EXPECT_TRUE(contains(load_text("{\"version\": 1, \"options\": [\"a\"], \"tensors\": [], "
                                 "\"colour\": 1}"),
                       "unknown key \"colour\""));
  e = load_text("{\"version\": 1, \"options\": [\"a\", \"b\"], \"tensors\": [{\"name\": \"x\", "
                "\"weights\": 4, \"bytes\": [1], \"proxy\": [1], \"kl\": [null]}]}");
  EXPECT_TRUE(contains(e, "tensor 'x'") && contains(e, "\"bytes\" has 1 entries for 2 options"))
      << e;
  e = load_text("{\"version\": 1, \"options\": [\"a\"], \"tensors\": [{\"name\": \"x\", "
                "\"weights\": 4, \"bytes\": [-3], \"proxy\": [1], \"kl\": [null]}]}");
  EXPECT_TRUE(contains(e, path) && contains(e, "bytes must be >= 0")) << e;
  e = load_text("{\"version\": 1, \"options\": [\"a\"], \"tensors\": []}");
  EXPECT_TRUE(contains(e, "has no tensors")) << e;
  std::filesystem::remove(path);
  EXPECT_THROW(mpq::CandidateTable::load(path), mpq::IoError);
}

}  // namespace
