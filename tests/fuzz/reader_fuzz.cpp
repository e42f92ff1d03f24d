// One fuzz target per file reader of mpq, all on fuzz_driver.h's mutation loop:
//   reader_fuzz TARGET SEED ITERATIONS WORKDIR [TABLE]
// TARGET: gguf | imatrix | calibrator | candidates | plan | checkpoint. `imatrix` reads both
// imatrix formats (the seed decides: GGUF or legacy .dat). `checkpoint` also needs the candidate
// table the checkpoint's search ran on (TABLE); the checkpoint's own fingerprint and population
// size are taken from the seed, so that mutants get past those checks.
#include <cstdio>
#include <string>

#include <mpq/calibration.h>
#include <mpq/candidates.h>
#include <mpq/gguf.h>
#include <mpq/imatrix.h>
#include <mpq/plan.h>

#include "core/json.h"
#include "fuzz_driver.h"
#include "search/ga_state.h"

namespace {

void open_gguf(const std::string& path) {
  mpq::gguf::Reader r(path);
  for (const auto& [key, value] : r.metadata()) {
    if (value.type() == mpq::gguf::ValueType::kArray) (void)value.as_array().size();
  }
  for (const auto& t : r.tensors()) (void)r.read(t.name);
}

void open_imatrix(const std::string& path) {
  const mpq::Imatrix m = mpq::Imatrix::load(path);
  for (const auto& [name, e] : m.entries) (void)m.importance(name);
}

void open_calibrator(const std::string& path) {
  const mpq::Calibrator c = mpq::Calibrator::load(path);
  for (const std::string& layer : c.layers()) (void)c.stats(layer);
}

void open_candidates(const std::string& path) {
  const mpq::CandidateTable t = mpq::CandidateTable::load(path);
  t.validate();
  (void)t.to_json();
}

void open_plan(const std::string& path) {
  const std::vector<char> bytes = fuzz::read(path);
  const mpq::Plan p = mpq::Plan::from_json(std::string(bytes.begin(), bytes.end()));
  (void)p.to_json();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: reader_fuzz TARGET SEED ITERATIONS WORKDIR [TABLE]\n");
    return 2;
  }
  const std::string target = argv[1];
  const std::vector<char> seed = fuzz::read(argv[2]);
  const long iterations = std::stol(argv[3]);
  const std::string path = std::string(argv[4]) + "/mutant." + target;
  if (target == "gguf") return fuzz::run(seed, iterations, path, false, open_gguf);
  if (target == "imatrix") return fuzz::run(seed, iterations, path, false, open_imatrix);
  if (target == "calibrator") return fuzz::run(seed, iterations, path, false, open_calibrator);
  if (target == "candidates") return fuzz::run(seed, iterations, path, true, open_candidates);
  if (target == "plan") return fuzz::run(seed, iterations, path, true, open_plan);
  if (target == "checkpoint" && argc == 6) {
    namespace json = mpq::detail::json;
    namespace search = mpq::detail::search;
    const mpq::CandidateTable table = mpq::CandidateTable::load(argv[5]);
    const search::Genes genes(table);
    const json::Value doc = json::parse(std::string_view(seed.data(), seed.size()), argv[2]);
    const std::string fingerprint = json::as_string(json::member(doc, "fingerprint", "seed"), "seed");
    const int population =
        static_cast<int>(json::as_array(json::member(doc, "population", "seed"), "seed").size());
    return fuzz::run(seed, iterations, path, true, [&](const std::string& p) {
      (void)search::load_ga_state(p, table, genes, genes.max_bytes(), population, fingerprint);
    });
  }
  std::fprintf(stderr, "unknown target '%s' (or checkpoint without TABLE)\n", target.c_str());
  return 2;
}
