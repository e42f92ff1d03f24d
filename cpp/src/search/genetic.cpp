// The genetic search. One generation: tournament selection, crossover and mutation over genes
// (coupling groups), repair into the budget, then multi-fidelity selection of the children, then
// elitist replacement. Every random draw of child i in generation g comes from a generator seeded
// by (seed, g, i), so children can be made on any number of threads and a resumed search repeats
// the uninterrupted one exactly (no generator state needs saving).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>
#include <numeric>
#include <set>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <mpq/error.h>
#include <mpq/search.h>

#include "search/ga_state.h"
#include "search/search_internal.h"

namespace mpq {

void GaOptions::validate() const {
  MPQ_CHECK_VALUE(population >= 1, "GaOptions: population must be >= 1, got ", population);
  MPQ_CHECK_VALUE(generations >= 0, "GaOptions: generations must be >= 0, got ", generations);
  MPQ_CHECK_VALUE(!offspring || *offspring >= 1, "GaOptions: offspring must be >= 1, got ",
                  offspring.value_or(0));
  MPQ_CHECK_VALUE(tournament >= 1, "GaOptions: tournament must be >= 1, got ", tournament);
  MPQ_CHECK_VALUE(crossover == "uniform" || crossover == "single_point",
                  "GaOptions: crossover must be 'uniform' or 'single_point', got '", crossover,
                  "'");
  MPQ_CHECK_VALUE(crossover_rate >= 0 && crossover_rate <= 1,
                  "GaOptions: crossover_rate must be in [0, 1], got ", crossover_rate);
  MPQ_CHECK_VALUE(!mutation_rate || (*mutation_rate >= 0 && *mutation_rate <= 1),
                  "GaOptions: mutation_rate must be in [0, 1], got ", mutation_rate.value_or(0));
  MPQ_CHECK_VALUE(elitism >= 0 && elitism <= population, "GaOptions: elitism must be in [0, ",
                  "population = ", population, "], got ", elitism);
  MPQ_CHECK_VALUE(fill_slack >= 0 && fill_slack <= 1,
                  "GaOptions: fill_slack must be in [0, 1], got ", fill_slack);
  MPQ_CHECK_VALUE(threads >= 0, "GaOptions: threads must be >= 0, got ", threads);
  const int children = offspring.value_or(population);
  for (size_t i = 0; i < survivors.size(); ++i) {
    MPQ_CHECK_VALUE(survivors[i] >= 1, "GaOptions: survivors[", i, "] must be >= 1, got ",
                    survivors[i]);
    MPQ_CHECK_VALUE(i > 0 || survivors[0] == children, "GaOptions: survivors[0] must be the ",
                    "number of offspring (", children, "): every child is judged at stage 0; got ",
                    survivors[0]);
    MPQ_CHECK_VALUE(i == 0 || survivors[i] <= survivors[i - 1], "GaOptions: survivors must not ",
                    "increase (stage ", i, " judges the best of stage ", i - 1, "), got [",
                    fmt::format("{}", fmt::join(survivors, ", ")), "]");
  }
  MPQ_CHECK_VALUE(!resume || !checkpoint.empty(), "GaOptions: resume needs a checkpoint path");
}

std::string GaOptions::to_string() const {
  auto b = [](bool v) { return v ? "True" : "False"; };
  return fmt::format(
      "GaOptions(population={}, generations={}, offspring={}, tournament={}, crossover='{}', "
      "crossover_rate={}, mutation_rate={}, elitism={}, seed={}, threads={}, survivors=[{}], "
      "fill_slack={}, seed_with_knapsack={}, checkpoint='{}', resume={})",
      population, generations, offspring ? std::to_string(*offspring) : "None", tournament,
      crossover, crossover_rate, mutation_rate ? fmt::format("{}", *mutation_rate) : "None",
      elitism, seed, threads, fmt::join(survivors, ", "), fill_slack, b(seed_with_knapsack),
      checkpoint, b(resume));
}

std::string SearchResult::to_string() const {
  return fmt::format("SearchResult(fitness={:.6g}, bytes={}, bits_per_weight={:.4f}, "
                     "generations={}, evaluations={}, pareto={} points)",
                     fitness, bytes, bits_per_weight, history.empty() ? 0 : history.size() - 1,
                     evaluations, pareto.size());
}

namespace detail::search {
namespace {

// splitmix64 (Steele et al.): a tiny generator with well-mixed output, identical on every
// platform (std:: distributions are not).
class Rng {
 public:
  explicit Rng(uint64_t state) : s_(state) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int below(int n) {  // uniform in [0, n); the bias of the multiply-shift is below 2^-32 here
    const auto wide = static_cast<unsigned __int128>(next()) * static_cast<uint64_t>(n);
    return static_cast<int>(wide >> 64);
  }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t s_;
};

Rng rng_for(uint64_t seed, uint64_t generation, uint64_t child, uint64_t attempt) {
  Rng r(seed);
  for (uint64_t v : {generation, child, attempt}) r = Rng(r.next() ^ (v * 0xD1B54A32D192ED03ull));
  return r;
}

// Runs f(i) for i in [0, n) on up to `threads` threads; rethrows the first failure by index.
template <typename F>
void parallel_for(int n, int threads, F&& f) {
  const int t = std::max(1, std::min(threads, n));
  if (t == 1) {
    for (int i = 0; i < n; ++i) f(i);
    return;
  }
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::thread> pool;
  for (int k = 0; k < t; ++k) {
    pool.emplace_back([&, k] {
      for (int i = k; i < n; i += t) {
        try {
          f(i);
        } catch (...) {
          errors[i] = std::current_exception();
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

class Search {
 public:
  Search(const CandidateTable& table, const Budget& budget, const GaOptions& options,
         const FitnessFn& fitness, const ProgressFn& progress)
      : table_(table), genes_(table), options_(options), fitness_(fitness), progress_(progress) {
    options_.validate();
    max_bytes_ = checked_capacity(table, genes_, budget, "genetic_search");
    offspring_ = options_.offspring.value_or(options_.population);
    mutation_rate_ = options_.mutation_rate.value_or(1.0 / genes_.size());
    stages_ = options_.survivors.empty() ? std::vector<int>{offspring_} : options_.survivors;
    threads_ = options_.threads > 0
                   ? options_.threads
                   : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    fingerprint_ = ga_fingerprint(table, budget, options_);
  }

  SearchResult run() {
    start_ = std::chrono::steady_clock::now();
    const bool resumed = options_.resume && checkpoint_exists(options_.checkpoint);
    if (resumed) {
      state_ = load_ga_state(options_.checkpoint, table_, genes_, max_bytes_, options_.population,
                             fingerprint_);
      first_generation_ = state_.generation + 1;
    } else {
      initial_population();
      finish_generation(0);
    }
    for (int g = state_.generation + 1; g <= options_.generations; ++g) {
      next_generation(g);
      finish_generation(g);
    }
    return result();
  }

 private:
  // ------------------------------------------------------------------------------- fitness
  std::vector<double> judge(const std::vector<std::vector<int>>& batch, int stage, int generation) {
    std::vector<double> values(batch.size());
    if (!fitness_) {
      parallel_for(static_cast<int>(batch.size()), threads_,
                   [&](int i) { values[i] = table_.proxy(genes_.expand(batch[i])); });
    } else {
      std::vector<Genome> genomes;
      for (const auto& s : batch) genomes.push_back(genes_.expand(s));
      try {
        values = fitness_(genomes, stage);
      } catch (const std::exception& e) {
        const c10::Error* ce = dynamic_cast<const c10::Error*>(&e);
        throw std::runtime_error(fmt::format("genetic_search: the fitness function failed in "
                                             "generation {} (stage {}, {} genomes){}: {}",
                                             generation, stage, batch.size(), kept(generation),
                                             ce ? ce->what_without_backtrace() : e.what()));
      }
      MPQ_CHECK_VALUE(values.size() == batch.size(), "genetic_search: the fitness function "
                      "returned ", values.size(), " values for ", batch.size(), " genomes in "
                      "generation ", generation, " (stage ", stage, ")", kept(generation));
    }
    for (size_t i = 0; i < values.size(); ++i) {
      MPQ_CHECK_VALUE(std::isfinite(values[i]), "genetic_search: the fitness of genome ", i,
                      " in generation ", generation, " (stage ", stage, ") is ", values[i],
                      "; fitness must be finite", kept(generation));
    }
    state_.evaluations += static_cast<int64_t>(batch.size());
    return values;
  }

  // Where a failed search can be resumed from.
  std::string kept(int generation) const {
    if (options_.checkpoint.empty() || generation == 0) return "";
    return fmt::format(" [the checkpoint of generation {} in {} is kept; resume=True continues "
                       "from it]", generation - 1, options_.checkpoint);
  }

  void record_pareto(const std::vector<int>& slots, double fitness) {
    add_to_pareto(state_.pareto, genes_.bytes_of(slots), fitness, slots);
  }

  // ------------------------------------------------------------------------------- making genomes
  void finish_child(std::vector<int>& slots, const std::vector<char>& frozen, Rng& rng) const {
    repair(genes_, slots, max_bytes_, frozen);
    if (rng.unit() < options_.fill_slack) fill_slack(genes_, slots, max_bytes_, frozen);
  }

  std::vector<int> random_genome(Rng& rng) const {
    std::vector<int> slots(genes_.size());
    for (int g = 0; g < genes_.size(); ++g) {
      slots[g] = rng.below(static_cast<int>(genes_.options[g].size()));
    }
    finish_child(slots, {}, rng);
    return slots;
  }

  // Moves gene g to another slot (uniformly); false when it has only one.
  bool mutate_gene(std::vector<int>& slots, int g, Rng& rng) const {
    const int n = static_cast<int>(genes_.options[g].size());
    if (n < 2) return false;
    const int s = rng.below(n - 1);
    slots[g] = s >= slots[g] ? s + 1 : s;
    return true;
  }

  int tournament(Rng& rng) const {
    int best = rng.below(options_.population);
    for (int k = 1; k < options_.tournament; ++k) {
      best = std::min(best, rng.below(options_.population));  // the population is sorted
    }
    return best;
  }

  std::vector<int> make_child(int generation, int index) const {
    Rng rng = rng_for(options_.seed, generation, index, 0);
    const auto& a = state_.population[tournament(rng)].slots;
    const auto& b = state_.population[tournament(rng)].slots;
    std::vector<int> child = a;
    const int n = genes_.size();
    if (rng.unit() < options_.crossover_rate) {
      if (options_.crossover == "uniform") {
        for (int g = 0; g < n; ++g) {
          if (rng.next() & 1) child[g] = b[g];
        }
      } else if (n > 1) {
        const int cut = 1 + rng.below(n - 1);
        std::copy(b.begin() + cut, b.end(), child.begin() + cut);
      }
    }
    std::vector<char> frozen(n, 0);
    for (int g = 0; g < n; ++g) {
      if (rng.unit() < mutation_rate_) frozen[g] = mutate_gene(child, g, rng);
    }
    finish_child(child, frozen, rng);
    return child;
  }

  // A copy of a genome already judged would waste an evaluation: mutate it once more (with its
  // own generator, so the result does not depend on threads), a few times at most.
  void make_unique(std::vector<int>& child, std::set<std::vector<int>>& seen, int generation,
                   int index) const {
    for (int attempt = 1; attempt <= 8 && seen.count(child); ++attempt) {
      Rng rng = rng_for(options_.seed, generation, index, attempt);
      std::vector<char> frozen(genes_.size(), 0);
      const int g = rng.below(genes_.size());
      frozen[g] = mutate_gene(child, g, rng);
      finish_child(child, frozen, rng);
    }
    seen.insert(child);
  }

  // ------------------------------------------------------------------------------- generations
  void initial_population() {
    std::vector<std::vector<int>> pool;
    std::set<std::vector<int>> seen;
    if (options_.seed_with_knapsack) {
      pool.push_back(genes_.slots_of(knapsack(table_, budget_from_bytes()).genome));
      seen.insert(pool.back());
    }
    for (int i = static_cast<int>(pool.size()); i < options_.population; ++i) {
      Rng rng = rng_for(options_.seed, 0, i, 0);
      std::vector<int> g = random_genome(rng);
      for (int attempt = 1; attempt <= 8 && seen.count(g); ++attempt) {
        Rng retry = rng_for(options_.seed, 0, i, attempt);
        g = random_genome(retry);
      }
      seen.insert(g);
      pool.push_back(std::move(g));
    }
    const int last = static_cast<int>(stages_.size()) - 1;
    const std::vector<double> f = judge(pool, last, 0);
    for (size_t i = 0; i < pool.size(); ++i) {
      record_pareto(pool[i], f[i]);
      state_.population.push_back({pool[i], f[i]});
    }
    sort_population(state_.population);
    state_.generation = 0;
  }

  Budget budget_from_bytes() const {
    return Budget{BudgetKind::kBytes, static_cast<double>(max_bytes_)};
  }

  void next_generation(int generation) {
    std::vector<std::vector<int>> children(offspring_);
    parallel_for(offspring_, threads_, [&](int i) { children[i] = make_child(generation, i); });
    std::set<std::vector<int>> seen;
    for (const auto& ind : state_.population) seen.insert(ind.slots);
    for (int i = 0; i < offspring_; ++i) make_unique(children[i], seen, generation, i);

    // Multi-fidelity: each stage judges the best `stages_[s]` of the previous stage's ranking.
    std::vector<int> alive(offspring_);
    std::iota(alive.begin(), alive.end(), 0);
    std::vector<double> f;
    for (int s = 0; s < static_cast<int>(stages_.size()); ++s) {
      if (s > 0) {
        std::vector<int> order(alive.size());
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return f[a] < f[b]; });
        std::vector<int> keep;
        for (int k = 0; k < stages_[s]; ++k) keep.push_back(alive[order[k]]);
        alive = std::move(keep);
      }
      std::vector<std::vector<int>> batch;
      for (int i : alive) batch.push_back(children[i]);
      f = judge(batch, s, generation);
    }
    std::vector<Individual> judged;
    for (size_t k = 0; k < alive.size(); ++k) {
      record_pareto(children[alive[k]], f[k]);
      judged.push_back({children[alive[k]], f[k]});
    }
    sort_population(judged);

    // Elitist replacement: the best parents, then the children, then (when the last stage keeps
    // fewer children than there are places) the next best parents.
    std::vector<Individual> next(state_.population.begin(),
                                 state_.population.begin() + options_.elitism);
    for (auto& c : judged) {
      if (static_cast<int>(next.size()) < options_.population) next.push_back(std::move(c));
    }
    for (int i = options_.elitism; static_cast<int>(next.size()) < options_.population; ++i) {
      next.push_back(state_.population[i]);
    }
    sort_population(next);
    state_.population = std::move(next);
    state_.generation = generation;
  }

  void finish_generation(int generation) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::vector<double> f;
    for (const auto& ind : state_.population) f.push_back(ind.fitness);
    state_.history.push_back({generation, f.front(), median(f), state_.evaluations,
                              state_.seconds_before + elapsed});
    if (!options_.checkpoint.empty()) {
      save_ga_state(options_.checkpoint, state_, genes_, fingerprint_);
    }
    if (progress_) {
      const int done = generation - first_generation_ + 1;
      const double eta = generation == 0 || done <= 0
                             ? std::numeric_limits<double>::quiet_NaN()
                             : elapsed / done * (options_.generations - generation);
      progress_(generation, options_.generations, f.front(), eta);
    }
  }

  SearchResult result() const {
    SearchResult r;
    const Individual& best = state_.population.front();
    r.best = genes_.expand(best.slots);
    r.fitness = best.fitness;
    r.bytes = table_.bytes(r.best);
    r.bits_per_weight = table_.bits_per_weight(r.best);
    r.history = state_.history;
    for (const auto& p : state_.pareto) {
      r.pareto.push_back({p.bytes, p.fitness, genes_.expand(p.slots)});
    }
    r.evaluations = state_.evaluations;
    return r;
  }

  const CandidateTable& table_;
  const Genes genes_;
  GaOptions options_;
  const FitnessFn& fitness_;
  const ProgressFn& progress_;
  int64_t max_bytes_ = 0;
  int offspring_ = 0;
  double mutation_rate_ = 0;
  std::vector<int> stages_;
  int threads_ = 1;
  std::string fingerprint_;
  std::chrono::steady_clock::time_point start_;
  int first_generation_ = 1;
  GaState state_;
};

}  // namespace
}  // namespace detail::search

SearchResult genetic_search(const CandidateTable& table, const Budget& budget,
                            const GaOptions& options, const FitnessFn& fitness,
                            const ProgressFn& progress) {
  return detail::search::Search(table, budget, options, fitness, progress).run();
}

}  // namespace mpq
