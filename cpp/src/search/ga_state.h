#pragma once
// The state of a genetic search between generations, and its checkpoint file (JSON, so that a
// person or Python's json module can read it; written to a temporary name, then renamed).
#include <cstdint>
#include <string>
#include <vector>

#include <mpq/candidates.h>
#include <mpq/search.h>

#include "search/search_internal.h"

namespace mpq::detail::search {

struct Individual {
  std::vector<int> slots;
  double fitness = 0;
};

struct ParetoEntry {
  int64_t bytes = 0;
  double fitness = 0;
  std::vector<int> slots;
};

struct GaState {
  int generation = -1;  // the last finished generation
  int64_t evaluations = 0;
  double seconds_before = 0;  // time spent by the runs before a resume
  std::vector<Individual> population;  // sorted by fitness
  std::vector<GenerationStats> history;
  std::vector<ParetoEntry> pareto;  // by increasing bytes, decreasing fitness
};

// Stable: equal fitness keeps the earlier individual first.
void sort_population(std::vector<Individual>& population);
// Adds (bytes, fitness) unless a point with no more bytes and no worse fitness is there; removes
// the points it dominates.
void add_to_pareto(std::vector<ParetoEntry>& front, int64_t bytes, double fitness,
                   const std::vector<int>& slots);

// Identifies a search: the table, the budget and every option that changes its course (not
// generations, threads or the checkpoint path). A checkpoint only resumes the search it came from.
std::string ga_fingerprint(const CandidateTable& table, const Budget& budget,
                           const GaOptions& options);

bool checkpoint_exists(const std::string& path);
void save_ga_state(const std::string& path, const GaState& state, const Genes& genes,
                   const std::string& fingerprint);
// Throws ValueError naming the file for a checkpoint of another search or a corrupt one.
GaState load_ga_state(const std::string& path, const CandidateTable& table, const Genes& genes,
                      int64_t max_bytes, int population, const std::string& fingerprint);

}  // namespace mpq::detail::search
