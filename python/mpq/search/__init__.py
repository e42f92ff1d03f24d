"""The search: the sensitivity table (build_candidates: bytes and proxy error of every tensor x
(expert, format) option; measured KL per cell), the ranking of tensors by sensitivity, the KL
fitness of a whole plan on the assembled model, and the genetic search under a size budget.

The C++ search itself (knapsack, genetic_search, CandidateTable, Budget) is mpq._C's.
Layer: above mpq.export.
"""
from ._candidates import Candidates, build_candidates, option_labels, ranking, reachable_bpw
from ._fitness import KlFitness, measure_kl
from ._run import make_budget, search

__all__ = ["Candidates", "KlFitness", "build_candidates", "make_budget", "measure_kl",
           "option_labels", "ranking", "reachable_bpw", "search"]
