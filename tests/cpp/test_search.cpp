// Budgets, the baselines and the genetic search, checked against brute-force enumeration of every
// genome of small random tables (search_helpers.h).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <set>

#include <mpq/error.h>
#include <mpq/search.h>

#include "search_helpers.h"

namespace {

using mpq_test::brute_force;
using mpq_test::contains;
using mpq_test::error_of;
using mpq_test::random_table;
using mpq_test::ref_bytes;
using mpq_test::ref_proxy;
using mpq_test::TableSpec;

// The smallest and largest files of a table, by enumeration.
std::pair<int64_t, int64_t> byte_range(const mpq::CandidateTable& t) {
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = 0;
  mpq_test::for_each_genome(t, [&](const mpq::Genome& g) {
    lo = std::min(lo, ref_bytes(t, g));
    hi = std::max(hi, ref_bytes(t, g));
  });
  return {lo, hi};
}

// A budget between the smallest and the largest file, at `frac` of the way.
mpq::Budget budget_at(const mpq::CandidateTable& t, double frac) {
  const auto [lo, hi] = byte_range(t);
  return {mpq::BudgetKind::kBytes, std::floor(lo + frac * (hi - lo))};
}

void expect_valid(const mpq::CandidateTable& t, const mpq::Genome& g, int64_t max_bytes) {
  EXPECT_NO_THROW(t.check_genome(g));
  EXPECT_LE(ref_bytes(t, g), max_bytes);
}

TEST(Budget, MaxBytesPerKind) {
  mpq::CandidateTable t({"a"});
  t.add_tensor("x", 1000);
  t.set_fixed(10, 24);  // 1024 weights in all
  EXPECT_EQ((mpq::Budget{mpq::BudgetKind::kBpw, 4.5}.max_bytes(t)), 576);  // 4.5 * 1024 / 8
  EXPECT_EQ((mpq::Budget{mpq::BudgetKind::kBytes, 777.9}.max_bytes(t)), 777);
  EXPECT_EQ((mpq::Budget{}.max_bytes(t)), 512);  // 0.25 of 2 bytes per weight
  EXPECT_THROW((mpq::Budget{mpq::BudgetKind::kBpw, -1}.validate()), c10::ValueError);
  EXPECT_THROW((mpq::Budget{mpq::BudgetKind::kBpw, NAN}.max_bytes(t)), c10::ValueError);
}

TEST(Uniform, EveryTensorAtOneOption) {
  auto t = random_table({.tensors = 4, .options = 3, .fixed_bytes = 5, .fixed_weights = 40}, 1);
  const mpq::Solution s = mpq::uniform(t, "opt2");
  EXPECT_EQ(s.genome, (mpq::Genome{2, 2, 2, 2}));
  EXPECT_EQ(s.bytes, ref_bytes(t, s.genome));
  EXPECT_DOUBLE_EQ(s.proxy, ref_proxy(t, s.genome));
  EXPECT_DOUBLE_EQ(s.bits_per_weight, 8.0 * s.bytes / (4000 + 10 * 6 + 40));
  t.set_unavailable(3, 1);
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { mpq::uniform(t, "opt1"); }),
                       "unavailable for tensor 't3'"));
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { mpq::uniform(t, "q4_k"); }),
                       "unknown option 'q4_k'"));
}

TEST(Knapsack, MatchesBruteForceOnRandomTables) {
  for (uint32_t seed = 0; seed < 40; ++seed) {
    const TableSpec spec{.tensors = 6, .options = 4, .unavailable = seed % 2 ? 0.3 : 0.0,
                         .groups = seed % 3 == 0, .fixed_bytes = 17};
    const auto t = random_table(spec, seed);
    for (double frac : {0.0, 0.2, 0.5, 0.9, 1.0}) {
      const mpq::Budget budget = budget_at(t, frac);
      const int64_t cap = budget.max_bytes(t);
      const mpq::Solution s = mpq::knapsack(t, budget);
      expect_valid(t, s.genome, cap);
      const auto best = brute_force(t, cap, [&](const mpq::Genome& g) { return ref_proxy(t, g); });
      ASSERT_TRUE(best.has_value());
      EXPECT_NEAR(s.proxy, *best, 1e-9) << "seed " << seed << " frac " << frac;
    }
  }
}

// Byte counts too large for a byte-exact grid: the unit is coarsened, options are rounded up.
// The answer still meets the budget, and (the documented gap) is at least as good as the best
// genome of a budget smaller by one unit per gene.
TEST(Knapsack, CoarseGridStaysWithinBudgetAndGap) {
  for (uint32_t seed = 0; seed < 10; ++seed) {
    const TableSpec spec{.tensors = 6, .options = 4, .max_bytes = int64_t{1} << 40};
    const auto t = random_table(spec, 100 + seed);
    const mpq::Budget budget = budget_at(t, 0.5);
    const int64_t cap = budget.max_bytes(t);
    const mpq::Solution s = mpq::knapsack(t, budget);
    expect_valid(t, s.genome, cap);
    const auto [lo, hi] = byte_range(t);
    const int64_t genes = 6, unit = (cap - lo + 1) / ((int64_t{1} << 24) / genes - 1) + 1;
    const auto tighter = brute_force(t, cap - genes * unit, [&](const mpq::Genome& g) {
      return ref_proxy(t, g);
    });
    if (tighter) EXPECT_LE(s.proxy, *tighter + 1e-9) << "seed " << seed;
  }
}

TEST(Knapsack, UnreachableBudgetStatesTheRange) {
  const auto t = random_table({.fixed_weights = 0}, 3);
  const auto [lo, hi] = byte_range(t);
  std::string e = error_of<c10::ValueError>(
      [&] { mpq::knapsack(t, {mpq::BudgetKind::kBytes, static_cast<double>(lo - 1)}); });
  EXPECT_TRUE(contains(e, "unreachable") && contains(e, std::to_string(lo) + " to " +
                                                          std::to_string(hi) + " bytes")) << e;
  e = error_of<c10::ValueError>([&] { mpq::knapsack(t, {mpq::BudgetKind::kBpw, 0.01}); });
  EXPECT_TRUE(contains(e, "bits per weight from")) << e;
  // Above the largest file every plan fits: the best one is the answer, not an error.
  EXPECT_LE(mpq::knapsack(t, {mpq::BudgetKind::kBpw, 64.0}).bytes, hi);
}

mpq::GaOptions quick(uint64_t seed) {
  mpq::GaOptions o;
  o.population = 16;
  o.generations = 25;
  o.seed = seed;
  o.threads = 1;
  return o;
}

// A fitness that is not a sum over tensors, so the knapsack cannot solve it: neighbouring
// tensors at different options interact.
double coupled_cost(const mpq::CandidateTable& t, const mpq::Genome& g) {
  double c = ref_proxy(t, g);
  for (size_t i = 1; i < g.size(); ++i) c += g[i] == g[i - 1] ? 0.0 : 1.5;
  return c;
}

mpq::FitnessFn batch_of(const mpq::CandidateTable& t, int64_t cap, int* calls = nullptr) {
  return [&t, cap, calls](const std::vector<mpq::Genome>& genomes, int stage) {
    std::vector<double> f;
    for (const auto& g : genomes) {
      expect_valid(t, g, cap);  // every genome the search judges respects budget and coupling
      f.push_back(coupled_cost(t, g));
    }
    if (calls) ++*calls;
    return f;
  };
}

// The searches below start from random repaired genomes (no knapsack seed) on tables of 4^8
// genomes. The greedy repair alone often lands on the optimum, so each test also checks that
// generation 0 missed it on some tables: the evolution, not the initialisation, found those.
TEST(GeneticSearch, FindsBruteForceOptimumOfProxyWithoutKnapsackSeed) {
  int missed_at_start = 0;
  for (uint32_t seed = 0; seed < 8; ++seed) {
    const auto t = random_table({.tensors = 8, .unavailable = 0.2, .groups = seed % 2 == 1},
                                200 + seed);
    const mpq::Budget budget = budget_at(t, 0.3);
    const auto best = brute_force(t, budget.max_bytes(t), [&](const mpq::Genome& g) {
      return ref_proxy(t, g);
    });
    auto o = quick(seed);
    o.seed_with_knapsack = false;
    o.fill_slack = 0;
    o.crossover = seed % 3 == 0 ? "single_point" : "uniform";
    const mpq::SearchResult r = mpq::genetic_search(t, budget, o);
    expect_valid(t, r.best, budget.max_bytes(t));
    EXPECT_NEAR(r.fitness, *best, 1e-9) << "seed " << seed;
    EXPECT_DOUBLE_EQ(r.fitness, t.proxy(r.best));
    o.generations = 0;
    missed_at_start += mpq::genetic_search(t, budget, o).fitness > *best + 1e-9;
  }
  EXPECT_GE(missed_at_start, 2);
}

TEST(GeneticSearch, FindsBruteForceOptimumOfNonAdditiveFitness) {
  int missed_at_start = 0;
  for (uint32_t seed = 0; seed < 8; ++seed) {
    const auto t = random_table({.tensors = 8, .groups = seed % 2 == 0}, 300 + seed);
    const mpq::Budget budget = budget_at(t, 0.3);
    const int64_t cap = budget.max_bytes(t);
    auto o = quick(seed);
    o.generations = 40;
    o.seed_with_knapsack = false;
    o.crossover = seed % 2 ? "single_point" : "uniform";
    const mpq::SearchResult r = mpq::genetic_search(t, budget, o, batch_of(t, cap));
    const auto best = brute_force(t, cap, [&](const mpq::Genome& g) { return coupled_cost(t, g); });
    EXPECT_NEAR(r.fitness, *best, 1e-9) << "seed " << seed;
    EXPECT_EQ(r.bytes, ref_bytes(t, r.best));
    EXPECT_DOUBLE_EQ(r.bits_per_weight, t.bits_per_weight(r.best));
    // The Pareto front: sorted, non-dominated, each point priced right, the best at its end.
    ASSERT_FALSE(r.pareto.empty());
    for (size_t i = 0; i < r.pareto.size(); ++i) {
      const auto& p = r.pareto[i];
      expect_valid(t, p.genome, cap);
      EXPECT_EQ(p.bytes, ref_bytes(t, p.genome));
      EXPECT_DOUBLE_EQ(p.fitness, coupled_cost(t, p.genome));
      if (i) EXPECT_TRUE(p.bytes > r.pareto[i - 1].bytes && p.fitness < r.pareto[i - 1].fitness);
    }
    EXPECT_DOUBLE_EQ(r.pareto.back().fitness, r.fitness);
    o.generations = 0;
    missed_at_start += mpq::genetic_search(t, budget, o, batch_of(t, cap)).fitness > *best + 1e-9;
  }
  EXPECT_GE(missed_at_start, 2);
}

TEST(GeneticSearch, HistoryAndProgress) {
  const auto t = random_table({}, 7);
  auto o = quick(1);
  o.generations = 5;
  std::vector<int> seen;
  const auto r = mpq::genetic_search(t, budget_at(t, 0.5), o, nullptr,
                                     [&](int g, int n, double best, double eta) {
                                       EXPECT_EQ(n, 5);
                                       EXPECT_TRUE(g == 0 ? std::isnan(eta) : eta >= 0);
                                       seen.push_back(g);
                                     });
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 3, 4, 5}));
  ASSERT_EQ(r.history.size(), 6u);
  EXPECT_EQ(r.history[0].evaluations, 16);  // the initial population
  EXPECT_EQ(r.evaluations, 16 + 5 * 16);
  for (size_t g = 1; g < r.history.size(); ++g) {
    EXPECT_LE(r.history[g].best, r.history[g - 1].best);  // elitism: never worse
    EXPECT_LE(r.history[g].best, r.history[g].median);
  }
  EXPECT_EQ(r.history.back().best, r.fitness);
}

void expect_same_result(const mpq::SearchResult& a, const mpq::SearchResult& b) {
  EXPECT_EQ(a.best, b.best);
  EXPECT_EQ(a.fitness, b.fitness);
  EXPECT_EQ(a.evaluations, b.evaluations);
  ASSERT_EQ(a.history.size(), b.history.size());
  for (size_t g = 0; g < a.history.size(); ++g) {
    EXPECT_EQ(a.history[g].best, b.history[g].best);
    EXPECT_EQ(a.history[g].median, b.history[g].median);
    EXPECT_EQ(a.history[g].evaluations, b.history[g].evaluations);
  }
  ASSERT_EQ(a.pareto.size(), b.pareto.size());
  for (size_t i = 0; i < a.pareto.size(); ++i) EXPECT_EQ(a.pareto[i].genome, b.pareto[i].genome);
}

TEST(GeneticSearch, DeterministicForASeedWhateverTheThreads) {
  const auto t = random_table({.tensors = 12, .options = 5, .groups = true}, 11);
  const auto budget = mpq::Budget{mpq::BudgetKind::kBytes, 400};
  auto o = quick(42);
  o.generations = 8;
  const auto one = mpq::genetic_search(t, budget, o);
  o.threads = 2;
  expect_same_result(one, mpq::genetic_search(t, budget, o));
  o.threads = 3;
  expect_same_result(one, mpq::genetic_search(t, budget, o));
  o.seed = 43;
  EXPECT_NE(one.history[1].median, mpq::genetic_search(t, budget, o).history[1].median);
}

TEST(GeneticSearch, MultiFidelityStagesJudgeTheRightCounts) {
  const auto t = random_table({}, 5);
  auto o = quick(3);
  o.generations = 3;
  o.offspring = 12;
  o.survivors = {12, 5, 2};
  std::vector<std::pair<int, size_t>> calls;
  auto fit = [&](const std::vector<mpq::Genome>& genomes, int stage) {
    calls.emplace_back(stage, genomes.size());
    std::vector<double> f;
    for (const auto& g : genomes) f.push_back(ref_proxy(t, g) + 0.1 * (2 - stage));
    return f;
  };
  const auto r = mpq::genetic_search(t, budget_at(t, 0.5), o, fit);
  std::vector<std::pair<int, size_t>> expected{{2, 16}};  // the initial population, last stage
  for (int g = 0; g < 3; ++g) expected.insert(expected.end(), {{0, 12}, {1, 5}, {2, 2}});
  EXPECT_EQ(calls, expected);
  EXPECT_EQ(r.evaluations, 16 + 3 * (12 + 5 + 2));
  EXPECT_DOUBLE_EQ(r.fitness, ref_proxy(t, r.best));  // ranked by the last stage only
}

TEST(GeneticSearch, RejectsBadInput) {
  const auto t = random_table({}, 9);
  const auto budget = budget_at(t, 0.5);
  const int64_t cap = budget.max_bytes(t);
  auto o = quick(0);
  o.survivors = {8, 4};
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { mpq::genetic_search(t, budget, o); }),
                       "survivors[0] must be the number of offspring (16)"));
  o.survivors = {16, 4, 8};
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { mpq::genetic_search(t, budget, o); }),
                       "must not increase"));
  o = quick(0);
  o.crossover = "two_point";
  EXPECT_THROW(mpq::genetic_search(t, budget, o), c10::ValueError);
  o = quick(0);
  const auto [lo, hi] = byte_range(t);
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] {
                         mpq::genetic_search(t, {mpq::BudgetKind::kBytes, lo - 1.0}, o);
                       }),
                       "unreachable"));
  EXPECT_LE(mpq::genetic_search(t, {mpq::BudgetKind::kBytes, hi + 1.0}, o).bytes, hi);
  int calls = 0;
  auto nan_in_gen2 = [&](const std::vector<mpq::Genome>& g, int) {
    std::vector<double> f = batch_of(t, cap)(g, 0);
    if (++calls == 3) f[1] = std::nan("");
    return f;
  };
  std::string e =
      error_of<c10::ValueError>([&] { mpq::genetic_search(t, budget, o, nan_in_gen2); });
  EXPECT_TRUE(contains(e, "fitness of genome 1 in generation 2 (stage 0) is nan")) << e;
  auto short_batch = [&](const std::vector<mpq::Genome>& g, int) { return std::vector<double>(1); };
  e = error_of<c10::ValueError>([&] { mpq::genetic_search(t, budget, o, short_batch); });
  EXPECT_TRUE(contains(e, "returned 1 values for 16 genomes")) << e;
}

TEST(GeneticSearch, ResumeFromCheckpointRepeatsTheUninterruptedRun) {
  const auto t = random_table({.tensors = 8, .options = 4, .groups = true}, 21);
  const auto budget = budget_at(t, 0.4);
  const int64_t cap = budget.max_bytes(t);
  const auto dir = std::filesystem::temp_directory_path();
  const std::string path = (dir / "mpq_test_ga_checkpoint.json").string();
  std::filesystem::remove(path);
  auto o = quick(5);
  o.generations = 6;
  const auto whole = mpq::genetic_search(t, budget, o, batch_of(t, cap));

  o.checkpoint = path;
  o.resume = true;
  int calls = 0;
  auto failing = [&](const std::vector<mpq::Genome>& g, int s) {
    if (++calls == 5) throw std::runtime_error("GPU fell off the bus");
    return batch_of(t, cap)(g, s);
  };
  const std::string e =
      error_of<std::runtime_error>([&] { mpq::genetic_search(t, budget, o, failing); });
  EXPECT_TRUE(contains(e, "failed in generation 4") && contains(e, "GPU fell off the bus") &&
              contains(e, "checkpoint of generation 3")) << e;
  ASSERT_TRUE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

  int resumed_calls = 0;
  const auto resumed = mpq::genetic_search(t, budget, o, batch_of(t, cap, &resumed_calls));
  EXPECT_EQ(resumed_calls, 3);  // generations 4, 5 and 6 only
  expect_same_result(whole, resumed);

  // The checkpoint belongs to this search: other options are refused, not silently mixed.
  o.population = 10;
  EXPECT_TRUE(contains(error_of<c10::ValueError>([&] { mpq::genetic_search(t, budget, o); }),
                       "written by a different search"));
  std::filesystem::remove(path);
}

}  // namespace
