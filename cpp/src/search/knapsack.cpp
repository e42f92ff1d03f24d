// The baselines: one option everywhere, and the proxy-optimal allocation under a byte budget
// (a multiple-choice knapsack: every gene takes exactly one of its options).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <mpq/error.h>
#include <mpq/search.h>

#include "search/search_internal.h"

namespace mpq {

namespace {

// Beyond this many DP cells (genes x capacity units) the byte unit is coarsened: the choice table
// is 2 bytes a cell, so 32 MB at most, and the DP takes well under a second.
constexpr int64_t kMaxCells = int64_t{1} << 24;

Solution priced(const CandidateTable& table, Genome genome) {
  Solution s;
  s.bytes = table.bytes(genome);
  s.bits_per_weight = table.bits_per_weight(genome);
  s.proxy = table.proxy(genome);
  s.genome = std::move(genome);
  return s;
}

}  // namespace

std::string Solution::to_string() const {
  return fmt::format("Solution(bytes={}, bits_per_weight={:.4f}, proxy={:.6g}, genome=[{}])", bytes,
                     bits_per_weight, proxy, fmt::join(genome, ", "));
}

Solution uniform(const CandidateTable& table, const std::string& option) {
  table.validate();
  const int o = table.option_index(option);
  for (int t = 0; t < table.num_tensors(); ++t) {
    MPQ_CHECK_VALUE(table.available(t, o), "uniform: option '", option,
                    "' is unavailable for tensor '", table.tensor_name(t), "'");
  }
  return priced(table, Genome(table.num_tensors(), o));
}

Solution knapsack(const CandidateTable& table, const Budget& budget) {
  const detail::search::Genes genes(table);
  const int64_t capacity = detail::search::checked_capacity(table, genes, budget, "knapsack") -
                           genes.min_bytes();
  const int n = genes.size();
  for (int g = 0; g < n; ++g) {
    MPQ_CHECK_VALUE(genes.options[g].size() <= 65535, "knapsack: more than 65535 options");
  }
  // Bytes above each gene's smallest option, in units of `unit`. The gcd of those differences
  // loses nothing; a coarser unit rounds them up (so a chosen set never exceeds the budget).
  int64_t unit = 0;
  for (int g = 0; g < n; ++g) {
    for (int64_t b : genes.bytes[g]) unit = std::gcd(unit, b - genes.bytes[g][0]);
  }
  unit = std::max<int64_t>(unit, 1);
  if ((capacity / unit + 1) > kMaxCells / n) {
    unit = std::max(unit, (capacity + 1) / std::max<int64_t>(kMaxCells / n - 1, 1) + 1);
  }
  const int64_t width = capacity / unit + 1;
  auto units = [&](int g, int s) {
    return (genes.bytes[g][s] - genes.bytes[g][0] + unit - 1) / unit;
  };

  // best[w]: least proxy of the genes so far within w units; choice[g][w]: the slot gene g took.
  std::vector<double> best(width, 0.0), next(width);
  std::vector<std::vector<uint16_t>> choice(n, std::vector<uint16_t>(width));
  for (int g = 0; g < n; ++g) {
    const int slots = static_cast<int>(genes.options[g].size());
    for (int64_t w = 0; w < width; ++w) {
      double v = std::numeric_limits<double>::infinity();
      uint16_t c = 0;
      for (int s = 0; s < slots; ++s) {
        const int64_t u = units(g, s);
        if (u > w) continue;
        const double candidate = best[w - u] + genes.proxy[g][s];
        if (candidate < v) {
          v = candidate;
          c = static_cast<uint16_t>(s);
        }
      }
      next[w] = v;
      choice[g][w] = c;
    }
    std::swap(best, next);
  }
  std::vector<int> slots(n);
  int64_t w = width - 1;
  for (int g = n - 1; g >= 0; --g) {
    slots[g] = choice[g][w];
    w -= units(g, slots[g]);
  }
  // Rounding up may have left bytes unused: spend them greedily.
  detail::search::fill_slack(genes, slots, genes.min_bytes() + capacity, {});
  return priced(table, genes.expand(slots));
}

}  // namespace mpq
