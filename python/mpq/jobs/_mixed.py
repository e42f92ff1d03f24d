"""The mixed-precision main job: calibrate, sensitivity, search, export, evaluate, report.

    mpq.quantize_mixed(model=None, target_bpw=4.8, out="model.gguf")
    python -m mpq quantize --target-bpw 4.8 --out model.gguf

The search picks one (expert, format) per tensor so that the GGUF file, every tensor counted,
meets the budget; the file holds exactly the bytes whose quality was measured.
"""
from __future__ import annotations

import os
import time

import numpy as np

from .. import _C, data
from .. import evaluation as evaluate
from .. import models as model_lib
from ..export import export_gguf
from ..search import KlFitness, build_candidates, make_budget, option_labels, reachable_bpw, search
from ._common import load_texts, write_json
from ._work_folder import WorkFolder, model_digest, tensor_digest

# llama.cpp's k-quants, the 32-block formats llama.cpp itself falls back to for rows that are not
# whole 256-blocks (SmolLM2's 576-wide layers, for one), and f16, its last resort for rows that
# are not whole 32-blocks either (stories260K's 172-wide ffn_down).
DEFAULT_FORMATS = ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_0", "iq4_nl", "q5_0", "f16")
# llama.cpp's codebook formats join them below LOW_BIT_BPW: there they are the better options (on
# Qwen2.5-Coder-1.5B's table the knapsack's proxy error is 31-43% lower with them at 3-4 bpw,
# docs/BENCHMARKS.md); above it they are rarely chosen and their quantizers are the slow ones.
LOW_BIT_FORMATS = ("iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs", "iq3_s", "iq4_xs")
LOW_BIT_BPW = 4.5
DEFAULT_EXPERTS = ("kquant_imatrix",)


def default_formats(bpw: float) -> tuple[str, ...]:
    """The options of a search whose budget is `bpw` bits per weight when none are given."""
    return DEFAULT_FORMATS + (LOW_BIT_FORMATS if bpw < LOW_BIT_BPW else ())


def _budget_bpw(budget: "_C.Budget", model) -> float:
    if budget.kind == _C.BudgetKind.bpw:
        return budget.value
    if budget.kind == _C.BudgetKind.compression:
        return 16.0 * budget.value
    return 8.0 * budget.value / sum(p.numel() for p in model.parameters())

# `mpq quantize` with no budget: 5 bits per weight, every tensor counted. On SmolLM2-135M the
# smallest reachable file is about 4.2 bpw (its 576-wide rows fit no 256-block k-quant) and
# llama.cpp's Q4_K_M is 6.17 bpw: 5.0 is a budget where the choice of tensors matters.
DEFAULT_BPW = 5.0

# The main job's sizes. QUICK is `mpq quantize`'s default: it finishes in minutes on a 2-core CPU
# and still ranks plans by measured KL (short windows, a small population, cheap fitness stages
# of 1 then 4 windows). THOROUGH (`--thorough`) is the run the benchmarks report.
QUICK = {"calib_windows": 16, "window": 256, "eval_windows": 16, "batch_size": 4,
         "population": 8, "generations": 4, "kl_sequences": 4, "kl_stages": (1, 4)}
THOROUGH = {"calib_windows": 32, "window": 512, "eval_windows": 40, "batch_size": 4,
            "population": 20, "generations": 12, "kl_sequences": 8, "kl_stages": (2, 8)}


def _inputs(loaded, calib, held, labels, window, batch_size) -> dict:
    """What a work folder's calibration and table are made from: every input that changes them."""
    from .. import __version__

    return {"mpq": __version__, "model": model_digest(loaded.model),
            "calibration_ids": tensor_digest([("calibration", calib), ("fitness", held)]),
            "window": window, "batch_size": batch_size, "options": list(labels),
            "device": next(loaded.model.parameters()).device.type}


def peak_rss_bytes() -> int:
    """The process's peak resident memory so far (Linux and macOS report it in different units)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _perplexities(kl) -> tuple[dict, dict]:
    """The two perplexities of a KL divergence measurement, as perplexity() reports them."""
    import math

    def one(ppl: float) -> dict:
        return evaluate.Perplexity(ppl=ppl, nll=math.log(ppl), tokens_scored=kl.tokens_scored,
                                   windows=kl.windows, window=kl.window, protocol=kl.protocol,
                                   description=kl.description, seconds=kl.seconds).to_dict()

    return one(kl.ppl_reference), one(kl.ppl_candidate)


def quantize_mixed(model: "str | model_lib.LoadedModel | None" = None, *, target_bpw: float | None = None,
                   target_bytes: int | None = None, compression: float | None = None,
                   out: str | None = None, tokenizer: str | None = None,
                   experts=DEFAULT_EXPERTS, formats=None, fitness: str = "kl",
                   ga_options: "_C.GaOptions | None" = None, kl_sequences: int = 8,
                   kl_stages: tuple[int, ...] = (2, 8), calib_text: str | None = None,
                   eval_text: str | None = None, calib_windows: int = 32, window: int | None = None,
                   eval_windows: int | None = 40, batch_size: int = 4, device: str = "cpu",
                   evaluate_model: bool = True, score_gguf: bool = True, table: str | None = None,
                   calibrator: "_C.Calibrator | None" = None, work_dir: str | None = None,
                   report: str | None = None, progress: bool = True) -> dict:
    """The whole pipeline for one budget; returns the report (also written to `report`).

    Args:
        model: HF directory, GGUF file or llama2.c checkpoint (None: the default model), or a
            LoadedModel already in memory.
        target_bpw / target_bytes / compression: the budget, exactly one (bits per weight and
            bytes count every tensor of the GGUF file; compression is relative to 16 bits).
        out: GGUF file to write (None: no export).
        experts, formats: the options of every tensor (expert × format); formats None:
            default_formats(the budget's bpw), the IQ types included below LOW_BIT_BPW.
        fitness: "kl" (KL divergence of the assembled model on calibration tokens, multi-fidelity
            over `kl_stages` sequences) or "proxy" (the additive proxy error).
        ga_options: mpq.GaOptions (population, generations, ...); its `survivors` are set from
            kl_stages for the KL fitness.
        kl_sequences: calibration windows reserved for the KL fitness (not used to calibrate).
        calib_windows, window, eval_windows, batch_size: as in mpq.quantize.
        evaluate_model: measure perplexity before and after on the evaluation text (False skips it,
            e.g. when `mpq compare` measures the GGUF file itself).
        score_gguf: with `out` and llama-cpp-python installed, "after" is the written GGUF file
            run by llama.cpp, compared token by token with the torch original (perplexity of
            both and KL divergence, the same windows: mpq.evaluation.kl_divergence); otherwise
            the searched weights are scored in torch and no KL is reported.
        table: where to save the sensitivity table (mpq.CandidateTable.load reads it back).
        calibrator: statistics of the calibration windows already gathered (every linear and
            "output"), as build_candidates takes them; None: gathered here.
        work_dir: a folder that keeps the run's state (mpq.jobs.WorkFolder: calibration, the
            table as it fills, the search after each generation): the same call after a stop
            goes on where it was and writes the same file; a folder made from another model,
            text or option set is refused. None: nothing is kept.
    """
    t0 = time.perf_counter()
    budget = make_budget(target_bpw, target_bytes, compression)
    if fitness not in ("kl", "proxy"):
        raise ValueError(f"fitness must be 'kl' or 'proxy', not {fitness!r}")
    loaded = model if isinstance(model, model_lib.LoadedModel) else \
        model_lib.load_model(model, tokenizer=tokenizer, device=device)
    texts = load_texts(loaded, calib_text, eval_text)
    calib_text, eval_text, calib_ids, eval_ids = texts.calib_text, texts.eval_text, texts.calib_ids, texts.eval_ids
    window = window or min(loaded.max_context, 512)
    windows = data.windows(calib_ids, window, calib_windows + kl_sequences)
    calib, held = windows[:calib_windows], windows[calib_windows:]
    if held.size(0) < max(kl_stages) and fitness == "kl":
        raise ValueError(f"{calib_text}: too short for {calib_windows} calibration and "
                         f"{max(kl_stages)} fitness windows of {window} tokens")

    if formats is None:
        formats = default_formats(_budget_bpw(budget, loaded.model))
    labels = option_labels(experts, formats)
    smallest, largest = reachable_bpw(loaded.model, labels)
    if _budget_bpw(budget, loaded.model) < smallest:
        raise ValueError(f"the budget {budget!r} is below the smallest file these options make of "
                         f"{loaded.name}: {smallest:.3f} bpw (every tensor counted); reachable: "
                         f"{smallest:.3f} to {largest:.3f} bpw with formats {' '.join(formats)}")
    work = None
    if work_dir is not None:
        if calibrator is not None:
            raise ValueError("give work_dir or a calibrator, not both: the work folder keeps the "
                             "calibration it made itself")
        work = WorkFolder(work_dir, _inputs(loaded, calib, held, labels, window, batch_size))
    wants_imatrix = any("imatrix" in e for e in experts)

    t_load = time.perf_counter()
    if calibrator is None and not (work and work.table_done()):
        if work and work.calibration.exists():
            calibrator = _C.Calibrator.load(os.fspath(work.calibration))
        else:
            layers = dict(model_lib.linear_layers(loaded.model))
            layers["output"] = loaded.model.get_output_embeddings()
            # The table's experts (no input transforms) read neither Σ|x| nor max|x|.
            calibrator = model_lib.calibrate(
                loaded.model, calib.split(batch_size), layers=layers, progress=progress,
                calibrator=_C.Calibrator(_C.CalibratorOptions(collect_abs=False)))
            if work:
                calibrator.save(os.fspath(work.calibration))
                # Read back from the file, whose pages can leave memory again: a 1.5B model's
                # XᵀX sums (10 GB) beside the model and the table's work do not fit in 24 GB.
                calibrator = _C.Calibrator.load(os.fspath(work.calibration))
    # The importance the imatrix experts weighed by, for the file's quantize.imatrix.* keys (as
    # llama-quantize records them): tools that read them can tell how the file was made.
    imatrix = None
    if wants_imatrix and work and work.imatrix.exists():
        imatrix = _C.Imatrix.load(os.fspath(work.imatrix))
    elif wants_imatrix:
        imatrix = calibrator.imatrix(chunk_size=window, datasets=[os.path.basename(os.fspath(calib_text))],
                                     include_output=True)
        if work:
            imatrix.save(os.fspath(work.imatrix))
    t_calib = time.perf_counter()
    cands = build_candidates(loaded.model, calib.split(batch_size), labels, calibrator=calibrator,
                             folder=work.table if work else None, progress=progress)
    if table:
        cands.table.save(os.fspath(table))
    calibrator = None  # its XᵀX sums (0.5 GB on SmolLM2) are not needed after the table
    if work and work.calibration.exists():
        os.remove(work.calibration)  # nor is its file: the table and the imatrix hold what follows
    t_sens = time.perf_counter()
    # A copy: the survivors and the checkpoint set below are this run's, not the caller's.
    options = _C.GaOptions.from_dict(ga_options.as_dict()) if ga_options is not None else _C.GaOptions()
    fit = None
    if fitness == "kl":
        fit = KlFitness(loaded.model, cands, held, stages=list(kl_stages), batch_size=batch_size)
        options.survivors = [options.offspring or options.population] + \
            [max(2, (options.offspring or options.population) // 4 ** (i + 1))
             for i in range(len(kl_stages) - 1)]
    if work:
        settings = {k: v for k, v in options.as_dict().items() if k not in ("checkpoint", "resume")}
        options.checkpoint = os.fspath(work.search_checkpoint(
            {"budget": repr(budget), "fitness": fitness, "kl_stages": list(kl_stages), "ga": settings}))
        options.resume = True
    try:
        result = search(cands, budget, fitness=fit if fit is not None else "proxy",
                        options=options, progress=progress)
    finally:
        if fit is not None:
            fit.restore()
    t_search = time.perf_counter()

    ppl = lambda desc: evaluate.perplexity(loaded.model, eval_ids, window=window, batch_size=batch_size,
                                           max_windows=eval_windows or None, progress=progress,
                                           desc=desc).to_dict()
    in_llama_cpp = bool(evaluate_model and out and score_gguf and _llama_cpp_available())
    base = ppl("ppl original") if evaluate_model and not in_llama_cpp else None
    genome = np.asarray(result.best)
    quant = kl = None
    t_export = t_search
    with cands.apply(loaded.model, genome):
        if evaluate_model and not in_llama_cpp:
            quant = ppl("ppl mixed")
        t_export = time.perf_counter()
        if out:
            plan = {f"{n}.weight": label.split(":")[1] for n, label in cands.plan(genome).items()}
            exported = export_gguf(loaded, out, plan, quantized=cands.tensors(genome), imatrix=imatrix,
                                   progress=progress)
    t_exported = time.perf_counter()
    if in_llama_cpp:
        # The file itself, in the runtime that will run it, against the original in torch: the
        # same windows feed both, and one pass gives both perplexities and the KL divergence.
        kl = evaluate.kl_divergence(loaded.model, out, eval_ids, protocol="p1", window=window,
                                    batch_size=batch_size, max_windows=eval_windows or None,
                                    progress=progress)
        base, quant = _perplexities(kl)
    t_scored = time.perf_counter()
    plan = cands.plan(genome)
    counts: dict[str, int] = {}
    for label in plan.values():
        counts[label] = counts.get(label, 0) + 1
    rep = {
        "model": {"name": loaded.name, "source": loaded.source},
        "budget": repr(budget),
        "search": {"fitness": fitness, "options": options.as_dict(), "evaluations": result.evaluations,
                   "best_fitness": result.fitness, "history": [
                       {"generation": h.generation, "best": h.best, "median": h.median,
                        "evaluations": h.evaluations, "seconds": h.seconds} for h in result.history]},
        "result": {"bits_per_weight": result.bits_per_weight, "bytes": result.bytes,
                   "proxy": cands.table.proxy(genome), "option_counts": counts, "plan": plan},
        "evaluation": {"text": eval_text, "original": base, "mixed": quant,
                       "ppl_change": quant["ppl"] / base["ppl"] - 1.0,
                       "mixed_runtime": "llama.cpp (the GGUF file)" if in_llama_cpp else "torch",
                       "kl": kl.to_dict() if kl is not None else None} if evaluate_model else None,
        "calibration": {"windows": int(calib.size(0)), "window": window,
                        "tokens": int(calib.numel()), "fitness_windows": int(held.size(0))},
        # Stages in order; "evaluation" covers both perplexity passes (and the KL divergence).
        "seconds": {"load": t_load - t0, "calibration": t_calib - t_load,
                    "sensitivity": t_sens - t_calib, "search": t_search - t_sens,
                    "export": t_exported - t_export,
                    "evaluation": (t_export - t_search) + (t_scored - t_exported),
                    "total": time.perf_counter() - t0},
        "peak_rss_bytes": peak_rss_bytes(),
    }
    if out:
        rep["gguf"] = {"path": os.fspath(out), "bytes": os.path.getsize(out),
                       "bits_per_weight": exported.bits_per_weight()}
    if report:
        write_json(report, rep)
    return rep
