// Budgets, the gene view of a table, and the repair operators that keep every genome the search
// makes within the budget (rather than discarding children over it, which near a tight budget
// would discard nearly all of them).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <tuple>

#include <fmt/format.h>

#include <mpq/error.h>

#include "search/search_internal.h"

namespace mpq {

namespace {
const char* unit_name(BudgetKind kind) {
  switch (kind) {
    case BudgetKind::kBpw: return "bits per weight";
    case BudgetKind::kBytes: return "bytes";
    case BudgetKind::kCompression: return "compression (file / 16-bit file)";
  }
  return "?";
}
}  // namespace

void Budget::validate() const {
  MPQ_CHECK_VALUE(std::isfinite(value) && value > 0, "Budget: the ", unit_name(kind),
                  " value must be finite and > 0, got ", value);
}

std::string Budget::to_string() const {
  const char* k = kind == BudgetKind::kBpw     ? "bpw"
                  : kind == BudgetKind::kBytes ? "bytes"
                                               : "compression";
  return fmt::format("Budget(kind={}, value={})", k, value);
}

int64_t Budget::max_bytes(const CandidateTable& table) const {
  validate();
  const double weights = static_cast<double>(table.total_weights());
  double b = value;
  if (kind == BudgetKind::kBpw) b = value * weights / 8.0;
  if (kind == BudgetKind::kCompression) b = value * weights * 2.0;
  MPQ_CHECK_VALUE(b < 9.0e18, "Budget: ", to_string(), " is beyond 64-bit byte counts");
  return static_cast<int64_t>(std::floor(b));
}

double Budget::in_unit(const CandidateTable& table, int64_t bytes) const {
  const double weights = static_cast<double>(table.total_weights());
  if (kind == BudgetKind::kBpw) return 8.0 * static_cast<double>(bytes) / weights;
  if (kind == BudgetKind::kCompression) return static_cast<double>(bytes) / (2.0 * weights);
  return static_cast<double>(bytes);
}

namespace detail::search {

Genes::Genes(const CandidateTable& table) {
  table.validate();
  tensors = table.genes();
  options = table.gene_options();
  num_tensors = table.num_tensors();
  fixed_bytes = table.fixed_bytes();
  for (int g = 0; g < size(); ++g) {
    // Slots in order of increasing bytes (then proxy): slot 0 is the gene's smallest option.
    std::vector<std::pair<int64_t, double>> key;
    for (int o : options[g]) {
      int64_t b = 0;
      double p = 0;
      for (int t : tensors[g]) {
        b += table.cell_bytes(t, o);
        p += table.cell_proxy(t, o);
      }
      key.emplace_back(b, p);
    }
    std::vector<size_t> order(key.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return key[a] < key[b]; });
    std::vector<int> sorted;
    bytes.emplace_back();
    proxy.emplace_back();
    for (size_t i : order) {
      sorted.push_back(options[g][i]);
      bytes[g].push_back(key[i].first);
      proxy[g].push_back(key[i].second);
    }
    options[g] = std::move(sorted);
  }
}

int64_t Genes::min_bytes() const {
  int64_t b = fixed_bytes;
  for (const auto& gb : bytes) b += gb.front();
  return b;
}

int64_t Genes::max_bytes() const {
  int64_t b = fixed_bytes;
  for (const auto& gb : bytes) b += gb.back();
  return b;
}

int64_t Genes::bytes_of(const std::vector<int>& slots) const {
  int64_t b = fixed_bytes;
  for (int g = 0; g < size(); ++g) b += bytes[g][slots[g]];
  return b;
}

Genome Genes::expand(const std::vector<int>& slots) const {
  Genome genome(num_tensors);
  for (int g = 0; g < size(); ++g) {
    for (int t : tensors[g]) genome[t] = options[g][slots[g]];
  }
  return genome;
}

std::vector<int> Genes::slots_of(const Genome& genome) const {
  std::vector<int> slots(size());
  for (int g = 0; g < size(); ++g) {
    const auto& o = options[g];
    slots[g] = static_cast<int>(std::find(o.begin(), o.end(), genome[tensors[g][0]]) - o.begin());
    MPQ_ASSERT(slots[g] < static_cast<int>(o.size()), "genome not checked against the table");
  }
  return slots;
}

int64_t checked_capacity(const CandidateTable& table, const Genes& genes, const Budget& budget,
                         const char* who) {
  const int64_t cap = budget.max_bytes(table);
  const int64_t lo = genes.min_bytes(), hi = genes.max_bytes();
  // A budget above the largest file is met by every plan: the search then picks the best of all.
  MPQ_CHECK_VALUE(lo <= cap, who, ": ", budget.to_string(), " (", cap,
                  " bytes) is unreachable: files of this table take ", lo, " to ", hi,
                  " bytes, i.e. ",
                  unit_name(budget.kind), " from ", budget.in_unit(table, lo), " to ",
                  budget.in_unit(table, hi));
  return std::min(cap, hi);
}

namespace {

// The best move over all genes (not frozen ones unless `use_frozen`); returns {gene, slot} or
// {-1, -1}. `score(g, from, to)` returns NaN for a move that does not qualify, else a cost to
// minimize. Strict comparisons in a fixed order keep ties deterministic.
template <typename Score>
std::pair<int, int> best_move(const Genes& genes, const std::vector<int>& slots,
                              const std::vector<char>& frozen, bool use_frozen, Score&& score) {
  std::pair<int, int> best{-1, -1};
  double best_cost = std::numeric_limits<double>::infinity();
  for (int g = 0; g < genes.size(); ++g) {
    if (!use_frozen && !frozen.empty() && frozen[g]) continue;
    for (int s = 0; s < static_cast<int>(genes.options[g].size()); ++s) {
      const double c = score(g, slots[g], s);
      if (!std::isnan(c) && (best.first < 0 || c < best_cost)) {
        best = {g, s};
        best_cost = c;
      }
    }
  }
  return best;
}

}  // namespace

void repair(const Genes& genes, std::vector<int>& slots, int64_t max_bytes,
            const std::vector<char>& frozen) {
  int64_t total = genes.bytes_of(slots);
  // Proxy error added per byte saved; a smaller option that is also better costs < 0.
  auto downgrade = [&](int g, int from, int to) {
    const int64_t saved = genes.bytes[g][from] - genes.bytes[g][to];
    if (saved <= 0) return std::numeric_limits<double>::quiet_NaN();
    return (genes.proxy[g][to] - genes.proxy[g][from]) / static_cast<double>(saved);
  };
  while (total > max_bytes) {
    auto [g, s] = best_move(genes, slots, frozen, false, downgrade);
    // Frozen genes are spared only while the others can still reach the budget.
    int64_t reachable = total;
    for (int h = 0; h < genes.size(); ++h) {
      if (frozen.empty() || !frozen[h]) reachable -= genes.bytes[h][slots[h]] - genes.bytes[h][0];
    }
    if (g < 0 || reachable > max_bytes) {
      std::tie(g, s) = best_move(genes, slots, frozen, true, downgrade);
    }
    MPQ_ASSERT(g >= 0, "repair: budget unreachable after checked_capacity");
    total -= genes.bytes[g][slots[g]] - genes.bytes[g][s];
    slots[g] = s;
  }
}

void fill_slack(const Genes& genes, std::vector<int>& slots, int64_t max_bytes,
                const std::vector<char>& frozen) {
  int64_t total = genes.bytes_of(slots);
  // Minus the proxy gain per byte spent (a free upgrade counts as half a byte).
  auto upgrade = [&](int g, int from, int to) {
    const double gain = genes.proxy[g][from] - genes.proxy[g][to];
    const int64_t cost = genes.bytes[g][to] - genes.bytes[g][from];
    if (!(gain > 0) || cost > max_bytes - total) return std::numeric_limits<double>::quiet_NaN();
    return -gain / std::max(static_cast<double>(cost), 0.5);
  };
  while (true) {
    const auto [g, s] = best_move(genes, slots, frozen, false, upgrade);
    if (g < 0) return;
    total += genes.bytes[g][s] - genes.bytes[g][slots[g]];
    slots[g] = s;
  }
}

}  // namespace detail::search
}  // namespace mpq
