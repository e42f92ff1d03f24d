"""CandidateTable, the baselines and the genetic search through Python, checked against brute-force
enumeration written here with numpy (independent of the C++ search)."""
import itertools
import json
import math

import numpy as np
import pytest

import mpq


def random_table(seed, tensors=6, options=4, groups=False, unavailable=0.0, fixed=(0, 0)):
    """Bytes and proxy drawn independently; with groups, tensors 1-2 and 4-5 are coupled."""
    rng = np.random.default_rng(seed)
    t = mpq.CandidateTable([f"opt{o}" for o in range(options)])
    for i in range(tensors):
        group = "g12" if groups and i in (1, 2) else "g45" if groups and i in (4, 5) else ""
        t.add_tensor(f"blk.{i}.w", 1000 + 10 * i, group=group)
        keep = rng.integers(options)
        for o in range(options):
            b, p = int(rng.integers(1, 101)), float(rng.uniform(0, 10))
            if o != keep and not groups and rng.uniform() < unavailable:
                continue
            t.set(i, f"opt{o}", bytes=b, proxy=p)
    t.set_fixed(*fixed)
    return t


def feasible(t):
    """Every genome respecting availability and coupling: (genomes [n, T], bytes [n], proxy [n])."""
    b, p = t.bytes_matrix(), t.proxy_matrix()
    groups = [t.tensor_group(i) for i in range(t.num_tensors)]
    rows = []
    for g in itertools.product(range(t.num_options), repeat=t.num_tensors):
        if any(b[i, o] < 0 for i, o in enumerate(g)):
            continue
        by_group = {}
        if any(by_group.setdefault(name, o) != o for name, o in zip(groups, g) if name):
            continue
        rows.append(g)
    genomes = np.array(rows)
    idx = np.arange(t.num_tensors)
    return genomes, b[idx, genomes].sum(1) + t.fixed_bytes, p[idx, genomes].sum(1)


def bytes_budget(t, frac):
    _, b, _ = feasible(t)
    return mpq.Budget("bytes", math.floor(b.min() + frac * (b.max() - b.min())))


def test_table_prices_and_json_readable_by_python(tmp_path):
    t = random_table(0, groups=True, fixed=(64, 500))
    g = [0, 1, 1, 2, 3, 3]
    b, p = t.bytes_matrix(), t.proxy_matrix()
    assert t.bytes(g) == sum(b[i, o] for i, o in enumerate(g)) + 64
    assert t.proxy(g) == pytest.approx(sum(p[i, o] for i, o in enumerate(g)))
    assert t.bits_per_weight(np.array(g)) == pytest.approx(8 * t.bytes(g) / t.total_weights)
    assert t.total_weights == sum(1000 + 10 * i for i in range(6)) + 500
    assert t.genes() == [[0], [1, 2], [3], [4, 5]]
    with pytest.raises(ValueError, match="coupling group 'g12'"):
        t.bytes([0, 1, 2, 0, 0, 0])
    with pytest.raises(ValueError, match="has 3 entries, the table has 6"):
        t.bytes([0, 0, 0])
    with pytest.raises(ValueError, match="unknown option 'q4_k'"):
        t.set(0, "q4_k", bytes=1, proxy=1.0)
    with pytest.raises(ValueError, match="at least one option"):
        mpq.CandidateTable([])

    path = tmp_path / "table.json"
    t.set_kl("blk.0.w", "opt1", 0.125)
    t.save(str(path))
    doc = json.loads(path.read_text())
    assert doc["options"] == t.options and doc["fixed_bytes"] == 64
    assert doc["tensors"][0]["kl"][1] == 0.125 and doc["tensors"][0]["kl"][0] is None
    assert doc["tensors"][1]["group"] == "g12"
    u = mpq.CandidateTable.load(str(path))
    assert (u.bytes_matrix() == t.bytes_matrix()).all()
    np.testing.assert_array_equal(u.proxy_matrix(), t.proxy_matrix())
    np.testing.assert_array_equal(u.kl_matrix(), t.kl_matrix())
    assert "CandidateTable(tensors=6, genes=4" in repr(u)

    path.write_text(path.read_text().replace('"version": 1', '"version": 7'))
    with pytest.raises(ValueError, match=f"{path}.*unsupported version"):
        mpq.CandidateTable.load(str(path))
    with pytest.raises(OSError):
        mpq.CandidateTable.load(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("seed", range(8))
def test_knapsack_matches_brute_force(seed):
    t = random_table(seed, groups=seed % 2 == 0, unavailable=0.3 * (seed % 3 == 1))
    genomes, b, p = feasible(t)
    for frac in (0.0, 0.3, 0.7, 1.0):
        budget = bytes_budget(t, frac)
        s = mpq.knapsack(t, budget)
        assert s.bytes <= budget.max_bytes(t)
        assert s.proxy == pytest.approx(p[b <= budget.max_bytes(t)].min(), abs=1e-9)


def test_uniform_and_budget_kinds():
    t = random_table(1, fixed=(10, 24))
    s = mpq.uniform(t, "opt3")
    assert s.genome == [3] * 6 and s.bytes == t.bytes(s.genome)
    assert mpq.Budget("bpw", 4.0).max_bytes(t) == math.floor(4.0 * t.total_weights / 8)
    assert mpq.Budget().max_bytes(t) == math.floor(0.25 * 2 * t.total_weights)
    assert mpq.Budget(mpq.BudgetKind.bytes, 99).max_bytes(t) == 99
    with pytest.raises(ValueError, match="kind must be"):
        mpq.Budget("bits", 4)
    _, b, _ = feasible(t)
    with pytest.raises(ValueError, match=rf"unreachable: files of this table take {b.min()} to {b.max()} bytes"):
        mpq.knapsack(t, mpq.Budget("bytes", b.min() - 1))


def coupled_cost(genomes, p):
    """Summed proxy plus 1.5 per pair of neighbouring tensors at different options."""
    idx = np.arange(genomes.shape[1])
    return p[idx, genomes].sum(1) + 1.5 * (np.diff(genomes, axis=1) != 0).sum(1)


@pytest.mark.parametrize("seed", range(4))
def test_python_fitness_finds_brute_force_optimum(seed):
    t = random_table(50 + seed, groups=seed % 2 == 1)
    budget = bytes_budget(t, 0.3)
    cap = budget.max_bytes(t)
    p = t.proxy_matrix()
    seen = []

    def fitness(genomes, stage):
        assert genomes.dtype == np.int32 and genomes.shape[1] == 6
        for g in genomes:  # every genome judged respects budget and coupling
            t.check_genome(g)
            assert t.bytes(g) <= cap
        seen.append(len(genomes))
        return coupled_cost(genomes, p)

    opts = mpq.GaOptions(population=16, generations=25, seed=seed,
                         crossover="single_point" if seed % 2 else "uniform")
    r = mpq.genetic_search(t, budget, opts, fitness=fitness)
    genomes, b, _ = feasible(t)
    ok = genomes[b <= cap]
    assert r.fitness == pytest.approx(coupled_cost(ok, p).min(), abs=1e-9)
    assert r.evaluations == sum(seen) == 16 * 26
    assert len(r.history) == 26 and r.history[-1].best == r.fitness
    assert [q.bytes for q in r.pareto] == sorted(q.bytes for q in r.pareto)
    assert r.pareto[-1].fitness == r.fitness


def test_stages_are_called_with_right_indexes_and_counts():
    t = random_table(3)
    calls = []

    def fitness(genomes, stage):
        calls.append((stage, len(genomes)))
        return [t.proxy(g) for g in genomes]

    opts = mpq.GaOptions(population=10, generations=2, offspring=12, survivors=[12, 6, 3])
    r = mpq.genetic_search(t, bytes_budget(t, 0.5), opts, fitness=fitness)
    assert calls == [(2, 10)] + [(0, 12), (1, 6), (2, 3)] * 2
    assert r.evaluations == 10 + 2 * 21


def test_deterministic_across_threads_and_progress():
    t = random_table(4, tensors=10, options=5, groups=True)  # too many genomes to enumerate
    b = t.bytes_matrix()
    budget = mpq.Budget("bytes", (b.min(1).sum() + b.max(1).sum()) // 2)  # within reach
    ticks = []
    a = mpq.genetic_search(t, budget, mpq.GaOptions(generations=6, seed=9, threads=1),
                           progress=lambda g, n, best, eta: ticks.append((g, n)))
    b = mpq.genetic_search(t, budget, mpq.GaOptions(generations=6, seed=9, threads=2))
    assert ticks == [(g, 6) for g in range(7)]
    assert a.best == b.best and a.fitness == b.fitness
    assert [h.median for h in a.history] == [h.median for h in b.history]


def test_raising_fitness_keeps_checkpoint_and_resumes(tmp_path):
    t = random_table(8, groups=True)
    budget = bytes_budget(t, 0.4)
    ckpt = tmp_path / "ga.json"
    opts = mpq.GaOptions(population=12, generations=5, seed=2, checkpoint=str(ckpt), resume=True)
    whole = mpq.genetic_search(t, budget, mpq.GaOptions(population=12, generations=5, seed=2),
                               fitness=lambda g, s: [t.proxy(x) + 0.01 * x[0] for x in g])
    calls = []

    def flaky(genomes, stage):
        calls.append(stage)
        if len(calls) == 4:
            raise KeyError("tokenizer exploded")
        return [t.proxy(x) + 0.01 * x[0] for x in genomes]

    with pytest.raises(RuntimeError, match=r"generation 3 .*KeyError: 'tokenizer exploded'") as info:
        mpq.genetic_search(t, budget, opts, fitness=flaky)
    assert isinstance(info.value.__cause__, KeyError)
    state = json.loads(ckpt.read_text())  # Python can read the checkpoint
    assert state["generation"] == 2 and len(state["population"]) == 12

    resumed = mpq.genetic_search(t, budget, opts, fitness=lambda g, s: [t.proxy(x) + 0.01 * x[0] for x in g])
    assert resumed.best == whole.best and resumed.fitness == whole.fitness
    assert [h.best for h in resumed.history] == [h.best for h in whole.history]
    assert resumed.evaluations == whole.evaluations


def test_nan_fitness_and_bad_returns_are_value_errors():
    t = random_table(2)
    budget = bytes_budget(t, 0.5)
    with pytest.raises(ValueError, match=r"fitness of genome 0 in generation 0 \(stage 0\) is nan"):
        mpq.genetic_search(t, budget, fitness=lambda g, s: [math.nan] * len(g))
    with pytest.raises(RuntimeError, match="1-D sequence of floats"):
        mpq.genetic_search(t, budget, fitness=lambda g, s: "no")
    with pytest.raises(ValueError, match="returned 2 values for 20 genomes"):
        mpq.genetic_search(t, budget, fitness=lambda g, s: [0.0, 1.0])
    with pytest.raises(ValueError, match="crossover must be"):
        mpq.GaOptions(crossover="two_point")
    assert "GaOptions(population=20, generations=12, offspring=None" in repr(mpq.GaOptions())


def test_interrupts_and_progress_errors_pass_through_unchanged():
    t = random_table(6)
    budget = bytes_budget(t, 0.5)

    def interrupted(genomes, stage):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        mpq.genetic_search(t, budget, fitness=interrupted)

    def progress(generation, generations, best, eta):
        if generation == 2:
            raise StopIteration("enough")

    with pytest.raises(StopIteration, match="enough"):
        mpq.genetic_search(t, budget, progress=progress)
