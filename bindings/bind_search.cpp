#include <memory>
#include <stdexcept>

#include <mpq/search.h>

#include <pybind11/numpy.h>

#include "bind.h"
#include "bind_options.h"

namespace mpq::bindings {
namespace {

BudgetKind kind_of(const py::object& kind) {
  if (!py::isinstance<py::str>(kind)) return kind.cast<BudgetKind>();
  const auto k = kind.cast<std::string>();
  if (k == "bpw") return BudgetKind::kBpw;
  if (k == "bytes") return BudgetKind::kBytes;
  if (k == "compression") return BudgetKind::kCompression;
  throw py::value_error("Budget: kind must be 'bpw', 'bytes' or 'compression', got '" + k + "'");
}

// A Python exception raised inside a callback the search made. The search runs without the GIL,
// so the exception cannot travel through it as a Python exception: it is kept here and raised
// again once the search has unwound.
struct PendingError {
  std::shared_ptr<py::error_already_set> error;
  bool in_fitness = false;

  // Called with the GIL held, inside the callback's catch.
  [[noreturn]] void keep(py::error_already_set& e, bool fitness) {
    const std::string type = py::str(e.type().attr("__name__"));
    const std::string message = py::str(e.value());
    error = std::make_shared<py::error_already_set>(std::move(e));
    in_fitness = fitness;
    throw std::runtime_error(type + ": " + message);
  }
};

py::array_t<int32_t> genomes_array(const std::vector<Genome>& genomes, int tensors) {
  py::array_t<int32_t> out(
      {static_cast<py::ssize_t>(genomes.size()), static_cast<py::ssize_t>(tensors)});
  auto a = out.mutable_unchecked<2>();
  for (size_t i = 0; i < genomes.size(); ++i) {
    for (int t = 0; t < tensors; ++t) a(i, t) = genomes[i][t];
  }
  return out;
}

SearchResult run_search(const CandidateTable& table, const Budget& budget,
                        const GaOptions& options, const py::object& fitness,
                        const py::object& progress) {
  PendingError pending;
  FitnessFn fit;
  if (!fitness.is_none()) {
    fit = [&](const std::vector<Genome>& genomes, int stage) {
      py::gil_scoped_acquire gil;
      try {
        py::object r = fitness(genomes_array(genomes, table.num_tensors()), stage);
        auto values = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(r);
        if (!values || values.ndim() != 1) {
          throw py::value_error("the fitness function must return a 1-D sequence of floats, got " +
                                std::string(py::str(py::repr(r))).substr(0, 200));
        }
        return std::vector<double>(values.data(), values.data() + values.size());
      } catch (py::error_already_set& e) {
        pending.keep(e, true);
      } catch (const py::builtin_exception& e) {
        throw std::runtime_error(e.what());
      }
    };
  }
  ProgressFn prog;
  if (!progress.is_none()) {
    prog = [&](int generation, int generations, double best, double eta) {
      py::gil_scoped_acquire gil;
      try {
        progress(generation, generations, best, eta);
      } catch (py::error_already_set& e) {
        pending.keep(e, false);
      }
    };
  }
  try {
    py::gil_scoped_release release;
    return genetic_search(table, budget, options, fit, prog);
  } catch (const std::exception& e) {
    if (!pending.error) throw;
    // A fitness failure becomes a RuntimeError naming the generation, caused by the original;
    // KeyboardInterrupt and the progress callback's exceptions pass through unchanged.
    if (pending.in_fitness && pending.error->matches(PyExc_Exception)) {
      py::raise_from(*pending.error, PyExc_RuntimeError, e.what());
      throw py::error_already_set();
    }
    pending.error->restore();
    throw py::error_already_set();
  }
}

}  // namespace

void bind_search(py::module_& m) {
  py::enum_<BudgetKind>(m, "BudgetKind")
      .value("bpw", BudgetKind::kBpw)
      .value("bytes", BudgetKind::kBytes)
      .value("compression", BudgetKind::kCompression);

  py::class_<Budget>(m, "Budget", "The largest file the search may produce.")
      .def(py::init([](const py::object& kind, double value) {
             Budget b{kind_of(kind), value};
             b.validate();
             return b;
           }),
           py::arg("kind") = "compression", py::arg("value") = 0.25,
           "Args:\n    kind: 'bpw' (bits per weight), 'bytes' or 'compression' (file bytes / "
           "(weights * 2)).\n    value: the limit (> 0).")
      .def_readwrite("kind", &Budget::kind)
      .def_readwrite("value", &Budget::value)
      .def("validate", &Budget::validate)
      .def("max_bytes", &Budget::max_bytes, py::arg("table"), "The budget in bytes for a table.")
      .def("in_unit", &Budget::in_unit, py::arg("table"), py::arg("bytes"),
           "`bytes` in this budget's unit.")
      .def("__repr__", &Budget::to_string);

  py::class_<Solution>(m, "Solution", "A genome and its prices.")
      .def_readonly("genome", &Solution::genome)
      .def_readonly("bytes", &Solution::bytes)
      .def_readonly("bits_per_weight", &Solution::bits_per_weight)
      .def_readonly("proxy", &Solution::proxy)
      .def("__repr__", &Solution::to_string);

  m.def("uniform", &uniform, py::arg("table"), py::arg("option"),
        "Every tensor at `option` (ValueError naming a tensor it is unavailable for).");
  m.def("knapsack", &knapsack, py::arg("table"), py::arg("budget"),
        py::call_guard<py::gil_scoped_release>(),
        R"(The allocation of least summed proxy error within the budget (multiple-choice knapsack,
exact by dynamic programming over bytes unless the byte grid must be coarsened; see search.h).)");

  py::class_<GaOptions> ga(m, "GaOptions", "Options of genetic_search (see search.h).");
  def_options(ga, field("population", &GaOptions::population),
              field("generations", &GaOptions::generations), field("offspring", &GaOptions::offspring),
              field("tournament", &GaOptions::tournament), field("crossover", &GaOptions::crossover),
              field("crossover_rate", &GaOptions::crossover_rate),
              field("mutation_rate", &GaOptions::mutation_rate), field("elitism", &GaOptions::elitism),
              field("seed", &GaOptions::seed), field("threads", &GaOptions::threads),
              field("survivors", &GaOptions::survivors), field("fill_slack", &GaOptions::fill_slack),
              field("seed_with_knapsack", &GaOptions::seed_with_knapsack),
              field("checkpoint", &GaOptions::checkpoint), field("resume", &GaOptions::resume));

  py::class_<GenerationStats>(m, "GenerationStats")
      .def_readonly("generation", &GenerationStats::generation)
      .def_readonly("best", &GenerationStats::best)
      .def_readonly("median", &GenerationStats::median)
      .def_readonly("evaluations", &GenerationStats::evaluations)
      .def_readonly("seconds", &GenerationStats::seconds)
      .def("__repr__", [](const GenerationStats& s) {
        return "GenerationStats(generation=" + std::to_string(s.generation) +
               ", best=" + std::to_string(s.best) + ", median=" + std::to_string(s.median) +
               ", evaluations=" + std::to_string(s.evaluations) + ")";
      });

  py::class_<ParetoPoint>(m, "ParetoPoint")
      .def_readonly("bytes", &ParetoPoint::bytes)
      .def_readonly("fitness", &ParetoPoint::fitness)
      .def_readonly("genome", &ParetoPoint::genome)
      .def("__repr__", [](const ParetoPoint& p) {
        return "ParetoPoint(bytes=" + std::to_string(p.bytes) +
               ", fitness=" + std::to_string(p.fitness) + ")";
      });

  py::class_<SearchResult>(m, "SearchResult")
      .def_readonly("best", &SearchResult::best)
      .def_readonly("fitness", &SearchResult::fitness)
      .def_readonly("bytes", &SearchResult::bytes)
      .def_readonly("bits_per_weight", &SearchResult::bits_per_weight)
      .def_readonly("history", &SearchResult::history)
      .def_readonly("pareto", &SearchResult::pareto)
      .def_readonly("evaluations", &SearchResult::evaluations)
      .def("__repr__", &SearchResult::to_string);

  m.def("genetic_search", &run_search, py::arg("table"), py::arg("budget"),
        py::arg("options") = GaOptions{}, py::arg("fitness") = py::none(),
        py::arg("progress") = py::none(),
        R"(Genetic search for one option per tensor within the budget (runs without the GIL).

Args:
    table: CandidateTable.
    budget: Budget.
    options: GaOptions.
    fitness: None (the table's summed proxy error) or fitness(genomes, stage) -> floats, lower
        is better; genomes is an int32 array [n, tensors] of option indices, stage the
        multi-fidelity stage (0 = cheapest). Called with the GIL held.
    progress: None or progress(generation, generations, best, eta_seconds).

Returns:
    SearchResult: best genome, its fitness, bytes, bits per weight, history, Pareto front.

Raises:
    ValueError: unreachable budget (with the reachable range), bad options, NaN fitness.
    RuntimeError: the fitness function raised (its exception is the __cause__); the checkpoint of
        the last finished generation is kept for resume.)");
}

}  // namespace mpq::bindings
