#pragma once
// What the knapsack and the genetic search share: the table seen gene by gene (a gene is a
// coupling group; an ungrouped tensor is a gene of its own) and the budget repair operators.
// A gene's value is a *slot*: an index into the options available to all of its tensors.
#include <cstdint>
#include <string>
#include <vector>

#include <mpq/candidates.h>
#include <mpq/search.h>

namespace mpq::detail::search {

struct Genes {
  explicit Genes(const CandidateTable& table);  // validates the table

  int size() const { return static_cast<int>(tensors.size()); }
  // Per gene: its tensors, its options (table column indices), and per slot the summed bytes and
  // proxy error of the gene's tensors.
  std::vector<std::vector<int>> tensors;
  std::vector<std::vector<int>> options;
  std::vector<std::vector<int64_t>> bytes;
  std::vector<std::vector<double>> proxy;
  int num_tensors = 0;
  int64_t fixed_bytes = 0;

  int64_t min_bytes() const;  // the smallest file (fixed bytes included)
  int64_t max_bytes() const;  // the largest
  int64_t bytes_of(const std::vector<int>& slots) const;
  Genome expand(const std::vector<int>& slots) const;
  // The inverse of expand for a genome that passed CandidateTable::check_genome.
  std::vector<int> slots_of(const Genome& genome) const;
};

// The budget in bytes, after checking that some genome meets it and that not every genome does
// (a budget above the largest file is almost certainly a mistake in its unit). The error states
// the reachable range in the budget's unit. `who` prefixes the message.
int64_t checked_capacity(const CandidateTable& table, const Genes& genes, const Budget& budget,
                         const char* who);

// While over `max_bytes`, downgrades the gene whose move to a smaller option costs the least proxy
// error per byte saved. Genes marked in `frozen` (may be empty) are touched only when the others
// cannot reach the budget. Always ends within the budget when the budget is reachable.
void repair(const Genes& genes, std::vector<int>& slots, int64_t max_bytes,
            const std::vector<char>& frozen);

// While some upgrade (lower proxy error) fits in the bytes left, takes the one with the best
// proxy gain per byte spent. Genes in `frozen` are left alone.
void fill_slack(const Genes& genes, std::vector<int>& slots, int64_t max_bytes,
                const std::vector<char>& frozen);

}  // namespace mpq::detail::search
