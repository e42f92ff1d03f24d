#include "search/ga_state.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <fmt/format.h>

#include <mpq/error.h>

#include "core/byte_io.h"
#include "core/json.h"

namespace mpq::detail::search {

namespace json = detail::json;

void sort_population(std::vector<Individual>& population) {
  std::stable_sort(population.begin(), population.end(),
                   [](const Individual& a, const Individual& b) { return a.fitness < b.fitness; });
}

void add_to_pareto(std::vector<ParetoEntry>& front, int64_t bytes, double fitness,
                   const std::vector<int>& slots) {
  for (const auto& p : front) {
    if (p.bytes <= bytes && p.fitness <= fitness) return;
  }
  std::erase_if(front,
                [&](const ParetoEntry& p) { return p.bytes >= bytes && p.fitness >= fitness; });
  auto at = std::lower_bound(front.begin(), front.end(), bytes,
                             [](const ParetoEntry& p, int64_t b) { return p.bytes < b; });
  front.insert(at, ParetoEntry{bytes, fitness, slots});
}

std::string ga_fingerprint(const CandidateTable& table, const Budget& budget,
                           const GaOptions& options) {
  GaOptions course = options;
  course.generations = 0;
  course.threads = 0;
  course.checkpoint.clear();
  course.resume = false;
  const std::string text = table.to_json() + budget.to_string() + course.to_string();
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ull;
  return fmt::format("{:016x}", h);
}

bool checkpoint_exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}

namespace {

void write_genome(std::string& out, const Genome& genome) {
  out += '[';
  for (size_t i = 0; i < genome.size(); ++i) {
    if (i) out += ',';
    json::write_int(out, genome[i]);
  }
  out += ']';
}

}  // namespace

void save_ga_state(const std::string& path, const GaState& state, const Genes& genes,
                   const std::string& fingerprint) {
  std::string out = "{\n  \"version\": 1,\n  \"kind\": \"mpq.genetic_search checkpoint\",\n";
  out += "  \"fingerprint\": \"" + fingerprint + "\",\n  \"generation\": ";
  json::write_int(out, state.generation);
  out += ",\n  \"evaluations\": ";
  json::write_int(out, state.evaluations);
  out += ",\n  \"population\": [";
  for (size_t i = 0; i < state.population.size(); ++i) {
    out += i ? ",\n    {\"fitness\": " : "\n    {\"fitness\": ";
    json::write_double(out, state.population[i].fitness);
    out += ", \"genome\": ";
    write_genome(out, genes.expand(state.population[i].slots));
    out += '}';
  }
  out += "\n  ],\n  \"history\": [";
  for (size_t i = 0; i < state.history.size(); ++i) {
    const GenerationStats& h = state.history[i];
    out += fmt::format("{}\n    {{\"generation\": {}, \"best\": ", i ? "," : "", h.generation);
    json::write_double(out, h.best);
    out += ", \"median\": ";
    json::write_double(out, h.median);
    out += fmt::format(", \"evaluations\": {}, \"seconds\": ", h.evaluations);
    json::write_double(out, h.seconds);
    out += '}';
  }
  out += "\n  ],\n  \"pareto\": [";
  for (size_t i = 0; i < state.pareto.size(); ++i) {
    out += fmt::format("{}\n    {{\"bytes\": {}, \"fitness\": ", i ? "," : "",
                       state.pareto[i].bytes);
    json::write_double(out, state.pareto[i].fitness);
    out += ", \"genome\": ";
    write_genome(out, genes.expand(state.pareto[i].slots));
    out += '}';
  }
  out += "\n  ]\n}\n";
  write_file_atomic(path, std::vector<char>(out.begin(), out.end()), "genetic_search checkpoint");
}

GaState load_ga_state(const std::string& path, const CandidateTable& table, const Genes& genes,
                      int64_t max_bytes, int population, const std::string& fingerprint) {
  const std::vector<char> bytes = read_file(path, "genetic_search checkpoint");
  const std::string what = "checkpoint " + path;
  const json::Value doc = json::parse(std::string_view(bytes.data(), bytes.size()), what);
  json::check_keys(doc, {"version", "kind", "fingerprint", "generation", "evaluations",
                         "population", "history", "pareto"}, what);
  MPQ_CHECK_VALUE(json::as_int(json::member(doc, "version", what), what) == 1, what,
                  ": unsupported version (this reader knows 1)");
  MPQ_CHECK_VALUE(json::as_string(json::member(doc, "fingerprint", what), what) == fingerprint,
                  what, ": written by a different search (the table, budget or options other than "
                  "generations/threads differ); delete it or search without resume");
  // A genome must fit the table and the budget; returns its slots.
  auto genome = [&](const json::Value& v) {
    Genome g;
    for (const json::Value& x : json::as_array(v, what)) {
      g.push_back(static_cast<int>(json::as_int(x, 0, std::numeric_limits<int>::max(), what)));
    }
    try {
      table.check_genome(g);
    } catch (const c10::ValueError& e) {
      MPQ_CHECK_VALUE(false, what, ": at byte ", v.offset, ": ", e.what_without_backtrace());
    }
    std::vector<int> slots = genes.slots_of(g);
    MPQ_CHECK_VALUE(genes.bytes_of(slots) <= max_bytes, what, ": at byte ", v.offset,
                    ": a genome over the budget");
    return slots;
  };
  auto finite = [&](const json::Value& v) {
    const double f = json::as_double(v, what);
    MPQ_CHECK_VALUE(std::isfinite(f), what, ": at byte ", v.offset, ": expected a finite number");
    return f;
  };

  GaState s;
  constexpr int64_t kMaxGeneration = std::numeric_limits<int>::max() - 1;
  constexpr int64_t kMaxCount = std::numeric_limits<int64_t>::max();
  s.generation = static_cast<int>(
      json::as_int(json::member(doc, "generation", what), 0, kMaxGeneration, what));
  s.evaluations = json::as_int(json::member(doc, "evaluations", what), 0, kMaxCount, what);
  for (const json::Value& p : json::as_array(json::member(doc, "population", what), what)) {
    json::check_keys(p, {"fitness", "genome"}, what);
    s.population.push_back({genome(json::member(p, "genome", what)),
                            finite(json::member(p, "fitness", what))});
  }
  MPQ_CHECK_VALUE(static_cast<int>(s.population.size()) == population, what, ": holds ",
                  s.population.size(), " individuals, the search has ", population);
  for (const json::Value& h : json::as_array(json::member(doc, "history", what), what)) {
    json::check_keys(h, {"generation", "best", "median", "evaluations", "seconds"}, what);
    s.history.push_back(
        {static_cast<int>(json::as_int(json::member(h, "generation", what), 0, kMaxGeneration, what)),
         finite(json::member(h, "best", what)), finite(json::member(h, "median", what)),
         json::as_int(json::member(h, "evaluations", what), 0, kMaxCount, what),
         finite(json::member(h, "seconds", what))});
  }
  MPQ_CHECK_VALUE(static_cast<int>(s.history.size()) == s.generation + 1, what, ": history has ",
                  s.history.size(), " generations, expected ", s.generation + 1);
  for (const json::Value& p : json::as_array(json::member(doc, "pareto", what), what)) {
    json::check_keys(p, {"bytes", "fitness", "genome"}, what);
    std::vector<int> slots = genome(json::member(p, "genome", what));
    add_to_pareto(s.pareto, genes.bytes_of(slots), finite(json::member(p, "fitness", what)), slots);
  }
  s.seconds_before = s.history.back().seconds;
  return s;
}

}  // namespace mpq::detail::search
