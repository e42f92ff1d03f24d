#pragma once
// Choosing one option per tensor of a CandidateTable under a size budget: two baselines (one
// option everywhere; a multiple-choice knapsack on the additive proxy error) and a genetic search
// whose fitness is either that proxy or a caller's function, e.g. KL divergence measured on real
// tokens with a growing number of tokens per selection stage (EvoPress's multi-fidelity
// selection, Sieberling et al., 2024).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <mpq/candidates.h>

namespace mpq {

enum class BudgetKind {
  kBpw,          // bits per weight of the file: 8 * bytes / every weight of the file
  kBytes,        // bytes of the file's tensor data (fixed tensors included)
  kCompression,  // file bytes / (every weight * 2 bytes): the size relative to 16-bit weights
};

// The largest file the search may produce.
struct Budget {
  BudgetKind kind = BudgetKind::kCompression;
  double value = 0.25;

  void validate() const;  // value > 0 and finite
  std::string to_string() const;
  // The budget in bytes for `table` (rounded down: a file of max_bytes meets the budget).
  int64_t max_bytes(const CandidateTable& table) const;
  // `bytes` expressed in this budget's unit (for messages and reports).
  double in_unit(const CandidateTable& table, int64_t bytes) const;
};

// A genome with its prices.
struct Solution {
  Genome genome;
  int64_t bytes = 0;
  double bits_per_weight = 0;
  double proxy = 0;
  std::string to_string() const;
};

// Every tensor at `option`. Throws ValueError naming the first tensor it is unavailable for.
Solution uniform(const CandidateTable& table, const std::string& option);

// Minimizes the summed proxy error subject to bytes <= budget: an exact multiple-choice knapsack
// by dynamic programming over bytes in units of the greatest common divisor of the options' byte
// differences. Where that grid would exceed ~16M cells (genes x capacity) the unit is coarsened
// and every option's bytes are rounded *up* to it, so the answer always meets the budget and is
// optimal for the rounded sizes; a greedy pass then spends the bytes the rounding left over.
// Coupled tensors are one item. Throws ValueError when the budget is unreachable (stating the
// reachable range in the budget's unit).
Solution knapsack(const CandidateTable& table, const Budget& budget);

struct GaOptions {
  int population = 20;
  int generations = 12;
  std::optional<int> offspring;  // children per generation; default: population
  int tournament = 3;            // parents are the best of this many random individuals
  std::string crossover = "uniform";  // "uniform" | "single_point" (over genes in model order)
  double crossover_rate = 0.9;        // otherwise the child is a copy of its first parent
  // Per gene (coupling group); default 1 / number of genes. A child identical to a parent or to
  // an earlier child gets one more mutation, so that no evaluation is spent twice on a genome.
  std::optional<double> mutation_rate;
  int elitism = 2;  // the best of a generation always survive into the next
  uint64_t seed = 0;
  int threads = 0;  // for making children and the proxy fitness; 0: hardware concurrency
  // Multi-fidelity selection. survivors[i] children are judged at stage i: survivors[0] must be
  // the number of offspring (all are judged at stage 0), then the best survivors[i] of stage i-1
  // are judged again at stage i, so the list must not increase. Only the last stage's fitness
  // ranks the population (the initial population is judged at the last stage). Empty: one stage.
  std::vector<int> survivors;
  // The chance that a genome under the budget is greedily upgraded (best proxy gain per byte)
  // while an upgrade fits. Below 1 some genomes keep unused bytes, so they stay reachable: with
  // a fitness that is not monotone in the proxy error the best genome may leave bytes unused.
  double fill_slack = 0.5;
  bool seed_with_knapsack = true;  // the knapsack solution joins the initial population
  // After every generation the state is written here (temporary name + rename); empty: never.
  std::string checkpoint;
  // Continue from `checkpoint` when that file exists (it must come from the same table, budget
  // and options; `generations` may grow). Without the file the search starts afresh.
  bool resume = false;

  void validate() const;
  std::string to_string() const;
};

struct GenerationStats {
  int generation = 0;       // 0: the initial population
  double best = 0;          // of the population after this generation
  double median = 0;
  int64_t evaluations = 0;  // genomes judged so far, every stage counted
  double seconds = 0;       // since the search began (resumed runs include earlier time)
};

struct ParetoPoint {
  int64_t bytes = 0;
  double fitness = 0;
  Genome genome;
};

struct SearchResult {
  Genome best;
  double fitness = 0;  // of `best`, at the last stage
  int64_t bytes = 0;
  double bits_per_weight = 0;
  std::vector<GenerationStats> history;  // generation 0 (initial) .. generations
  // Non-dominated (bytes, fitness) pairs among every genome judged at the last stage, by
  // increasing bytes (and so decreasing fitness).
  std::vector<ParetoPoint> pareto;
  int64_t evaluations = 0;
  std::string to_string() const;
};

// Lower is better. Called with a batch of genomes (Genome per row) and the stage index; returns
// one finite value per genome. It may throw: the search stops with an error naming the
// generation, and the checkpoint of the last finished generation stays on disk for `resume`.
using FitnessFn = std::function<std::vector<double>(const std::vector<Genome>&, int stage)>;
// After each generation (0 = initial population): the best fitness and an estimate of the
// seconds left (NaN until a generation has been timed).
using ProgressFn =
    std::function<void(int generation, int generations, double best, double eta_seconds)>;

// Genetic search over genomes of `table` within `budget`. Children are made by tournament
// selection, crossover and mutation over coupling groups, then *repaired* into the budget: while
// over it, the gene whose downgrade costs the least proxy error per byte saved is downgraded
// (genes just mutated are spared when possible, so repair does not undo the mutation). Without
// `fitness` the proxy sum is the fitness. Deterministic for a seed, whatever `threads` is: every
// child draws from its own generator seeded by (seed, generation, child).
// Throws ValueError for an unreachable budget (stating the reachable range), bad options, or a
// fitness returning a wrong count or a non-finite value; std::runtime_error when `fitness` throws.
SearchResult genetic_search(const CandidateTable& table, const Budget& budget,
                            const GaOptions& options = {}, const FitnessFn& fitness = nullptr,
                            const ProgressFn& progress = nullptr);

}  // namespace mpq
