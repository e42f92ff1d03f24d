"""The size budget from the user's terms, and the genetic search (mpq._C.genetic_search) with a
progress bar."""
from __future__ import annotations

from .. import _C
from ._candidates import Candidates


def make_budget(target_bpw: float | None = None, target_bytes: int | None = None,
                compression: float | None = None) -> "_C.Budget":
    given = [(k, v) for k, v in (("bpw", target_bpw), ("bytes", target_bytes),
                                 ("compression", compression)) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one budget: target_bpw, target_bytes or compression "
                         f"(got {', '.join(k for k, _ in given) or 'none'})")
    return _C.Budget(given[0][0], float(given[0][1]))


def search(candidates: Candidates, budget: "_C.Budget", *, fitness="proxy",
           options: "_C.GaOptions | None" = None, progress: bool = True) -> "_C.SearchResult":
    """Runs the genetic search with a progress bar. fitness: "proxy" (the table's additive
    proxy) or a callable (genomes [n, tensors], stage) -> list of floats, e.g. a KlFitness."""
    from .._progress import progress_bar

    options = options if options is not None else _C.GaOptions()
    bar = progress_bar(total=options.generations, desc="search", unit="gen", disable=not progress)

    def report(gen, total, best, eta):
        bar.n = gen
        bar.set_postfix(best=f"{best:.4g}")
        bar.refresh()

    try:
        return _C.genetic_search(candidates.table, budget, options,
                                 fitness=None if fitness == "proxy" else fitness, progress=report)
    finally:
        bar.close()
