"""`mpq compare`: is the mixed model better, smaller and faster? One table and three pictures.

The original model (exported as an F16 GGUF), llama.cpp's uniform mixes (e.g. Q4_K_M, made by
mpq byte-identically to llama-quantize, with the importance matrix by default), mpq's
mixed-precision GGUF at the size of the first uniform mix, and any GGUF files given, all measured
the same way, every file run by the real llama.cpp:

- size: file bytes, bits per weight over every tensor of the file;
- speed: llama-bench's pp512 and tg128 tokens/s, load time and memory (mpq.evaluate.gguf_speed);
- quality against the original torch model on held-out text, fed the same token ids:
  perplexity under llama-perplexity's protocol (ctx 512, second half of each window scored), KL
  divergence of the next-token distribution and the fraction of tokens whose top-1 prediction
  agrees (mpq.evaluate.kl_divergence); MMLU accuracy (mpq.evaluate.mmlu).

Pictures (PNG): size vs perplexity with the Pareto front, the bits per weight each tensor got in
the mixed and uniform files, and the sensitivity heatmap the search worked from.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import _C, data, export
from .. import evaluation as evaluate
from .. import models as model_lib
from ..evaluation import gguf_file_stats
from ..quant import gguf_formats
from . import _plots as plots
from ._common import load_texts, write_json
from ._mixed import quantize_mixed


@dataclass
class CompareRow:
    """One GGUF file's measurements (None where a measurement was switched off)."""

    label: str
    kind: str  # original | uniform | mixed | given
    path: str
    file_bytes: int
    bpw: float
    ppl: float
    ppl_original: float
    kl_mean: float
    kl_p99: float
    same_top: float
    mmlu: float | None = None
    load_seconds: float | None = None
    pp_tokens_per_s: float | None = None
    tg_tokens_per_s: float | None = None
    model_rss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


COLUMNS = ("model", "size MiB", "bpw", "load s", "pp t/s", "tg t/s", "memory MiB", "ppl", "Δppl",
           "KL", "KL p99", "same top-1", "MMLU")


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def to_markdown(rows: list[CompareRow]) -> str:
    """The comparison as a markdown table (– where a measurement was switched off)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        mib = lambda b: None if b is None else b / 2 ** 20
        cells = [r.label, _fmt(mib(r.file_bytes), ".1f"), _fmt(r.bpw, ".3f"), _fmt(r.load_seconds, ".3f"),
                 _fmt(r.pp_tokens_per_s, ".1f"), _fmt(r.tg_tokens_per_s, ".1f"),
                 _fmt(mib(r.model_rss_bytes), ".0f"), _fmt(r.ppl, ".4f"),
                 _fmt(100 * (r.ppl / r.ppl_original - 1), "+.2f") + "%", _fmt(r.kl_mean, ".5f"),
                 _fmt(r.kl_p99, ".4f"), _fmt(None if r.same_top is None else 100 * r.same_top, ".2f") + "%",
                 _fmt(None if r.mmlu is None else 100 * r.mmlu, ".1f") + ("%" if r.mmlu is not None else "")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def compare(model: str | os.PathLike | None = None, *, ggufs: list[str] = (),
            uniform: list[str] = ("Q4_K_M",), mixed_bpw: float | str | None = "match",
            out_dir: str | os.PathLike = "mpq_compare", imatrix: bool = True,
            calib_text: str | None = None, eval_text: str | None = None, calib_windows: int = 32,
            window: int = 512, eval_windows: int = 20, mmlu_questions: int | None = 5,
            mmlu_shots: int = 5, mmlu_subjects: list[str] | None = None, speed: bool = True,
            speed_repetitions: int = 3, n_prompt: int = 512, n_gen: int = 128,
            n_threads: int | None = None, n_gpu_layers: int = 0,
            mixed_options: dict | None = None, tokenizer: str | None = None,
            device: str = "cpu", progress: bool = True) -> dict:
    """Builds the files to compare and measures them all the same way (see the module docstring).

    Args:
        model: the original (HF directory, GGUF file or llama2.c checkpoint; None: the default).
        ggufs: more GGUF files of the same model to put in the table.
        uniform: llama.cpp mixes to make (names as llama-quantize takes them).
        mixed_bpw: budget of mpq's mixed file in bits per weight; "match" takes the size of the
            first uniform file, None makes no mixed file.
        out_dir: where the GGUF files, compare.json/.md/.csv and the PNGs go.
        imatrix: give the uniform mixes the importance matrix of the calibration text (as
            `llama-quantize --imatrix`); the mixed search always uses it.
        calib_text, eval_text: calibration and held-out text (defaults as `mpq quantize`).
        calib_windows, window: calibration windows of `window` tokens.
        eval_windows: windows of 512 tokens for perplexity and KL (llama-perplexity's protocol).
        mmlu_questions, mmlu_shots, mmlu_subjects: MMLU test questions per subject (None: all),
            shots, subjects (None: all 57); mmlu_questions=0 skips MMLU.
        speed, speed_repetitions, n_prompt, n_gen: llama-bench runs (speed=False skips them).
        n_threads, n_gpu_layers: llama.cpp settings for every measurement.
        mixed_options: more keyword arguments for mpq.quantize_mixed (fitness, ga_options, ...).
        device: where the torch side runs (calibration, search, the reference logits); llama.cpp
            uses the GPU through n_gpu_layers.
        progress: progress bars.

    Returns:
        The report (also written to out_dir/compare.json): rows, the markdown table, plot paths.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for g in ggufs:
        if not os.path.isfile(g):
            raise FileNotFoundError(f"GGUF file {g} does not exist")
    if mixed_bpw is not None and mixed_bpw != "match" and not float(mixed_bpw) > 0:
        raise ValueError(f"mixed_bpw must be a positive number, 'match' or None, not {mixed_bpw!r}")
    if mixed_bpw == "match" and not uniform:
        raise ValueError("mixed_bpw='match' takes the size of the first uniform mix: give one, or a number")
    if eval_windows < 1:
        raise ValueError(f"eval_windows must be at least 1, got {eval_windows}")
    unknown = [m for m in uniform if m.upper() not in _C.llama_cpp_mix_names()]
    if unknown:
        raise ValueError(f"unknown llama.cpp mix {unknown[0]!r} (known: {', '.join(_C.llama_cpp_mix_names())})")

    loaded = model if isinstance(model, model_lib.LoadedModel) else \
        model_lib.load_model(model, tokenizer=tokenizer, device=device)
    texts = load_texts(loaded, calib_text, eval_text)
    calib_text, eval_text, calib_ids, eval_ids = texts.calib_text, texts.eval_text, texts.calib_ids, texts.eval_ids
    window = min(window, loaded.max_context)
    eval_window = min(512, loaded.max_context)  # llama-perplexity's context, unless the model's is shorter

    files: list[tuple[str, str, str]] = []  # (label, kind, path)
    path = out / "original-f16.gguf"
    export.export_gguf(loaded, path, "f16", progress=progress)
    files.append(("original (F16)", "original", str(path)))
    spec = export.model_spec(loaded.model)
    # One calibration pass feeds the mixes' importance matrix and the search's table (the same
    # windows quantize_mixed takes; "output" is the tied embedding's statistics there).
    cal = imat = None
    if (uniform and imatrix) or mixed_bpw is not None:
        layers = {**model_lib.linear_layers(loaded.model), "output": loaded.model.get_output_embeddings()}
        cal = model_lib.calibrate(loaded.model, data.windows(calib_ids, window, calib_windows).split(4),
                                  layers=layers, progress=progress)
        imat = cal.imatrix(chunk_size=window) if uniform and imatrix else None
    for mix in uniform:
        path = out / f"uniform-{mix.lower()}.gguf"
        export.export_gguf(loaded, path, _C.llama_cpp_mix(mix, spec, imatrix=imat is not None), imatrix=imat,
                           progress=progress)
        files.append((f"{mix.upper()}{' (imatrix)' if imat is not None else ''}", "uniform", str(path)))
    mixed_report, table_path = None, None
    if mixed_bpw is not None:
        target = gguf_file_stats(files[1][2])["bpw"] if mixed_bpw == "match" else float(mixed_bpw)
        path, table_path = out / f"mixed-{target:.2f}bpw.gguf", out / "sensitivity_table.json"
        opts = {"calib_windows": calib_windows, "window": window, **(mixed_options or {})}
        same_windows = (opts["calib_windows"], opts["window"]) == (calib_windows, window)
        mixed_report = quantize_mixed(loaded, target_bpw=target, out=str(path), calib_text=calib_text,
                                      eval_text=eval_text, evaluate_model=False, table=str(table_path),
                                      calibrator=cal if same_windows else None, progress=progress, **opts)
        files.append((f"mpq mixed {mixed_report['result']['bits_per_weight']:.2f} bpw", "mixed", str(path)))
    files += [(Path(g).stem, "given", os.fspath(g)) for g in ggufs]

    bos = getattr(loaded.tokenizer, "bos_id", None)
    rows = []
    for label, kind, path in files:
        kl = evaluate.kl_divergence(loaded.model, path, eval_ids, protocol="llama.cpp", window=eval_window,
                                    bos_id=bos, max_windows=eval_windows, n_threads=n_threads,
                                    n_gpu_layers=n_gpu_layers, progress=progress)
        stats = gguf_file_stats(path)
        row = CompareRow(label, kind, path, stats["file_bytes"], stats["bpw"], kl.ppl_candidate,
                         kl.ppl_reference, kl.kl_mean, kl.kl_p99, kl.same_top,
                         details={"kl": kl.to_dict()})
        if mmlu_questions != 0:
            m = evaluate.mmlu(path, loaded.tokenizer, shots=mmlu_shots, subjects=mmlu_subjects,
                              max_questions=mmlu_questions, n_threads=n_threads,
                              n_gpu_layers=n_gpu_layers, progress=progress)
            row.mmlu = m.accuracy
            row.details["mmlu"] = m.to_dict()
        if speed:
            s = evaluate.gguf_speed(path, n_prompt=n_prompt, n_gen=n_gen, repetitions=speed_repetitions,
                                    n_threads=n_threads, n_gpu_layers=n_gpu_layers)
            row.load_seconds, row.pp_tokens_per_s, row.tg_tokens_per_s = \
                s.load_seconds, s.pp_tokens_per_s, s.tg_tokens_per_s
            row.model_rss_bytes, row.peak_rss_bytes = s.model_rss_bytes, s.peak_rss_bytes
            row.details["speed"] = s.to_dict()
        rows.append(row)

    pictures = {"size_vs_ppl": plots.size_vs_quality(
        [{"label": r.label, "bpw": r.bpw, "ppl": r.ppl} for r in rows], out / "size_vs_ppl.png")}
    allocations = {r.label: gguf_formats(r.path) for r in rows if r.kind in ("uniform", "mixed")}
    if allocations:
        pictures["bit_allocation"] = plots.format_grid(allocations, out / "bit_allocation.png")
    if table_path is not None:
        pictures["sensitivity"] = plots.sensitivity_heatmap(_C.CandidateTable.load(str(table_path)),
                                                            out / "sensitivity.png")
    table = to_markdown(rows)
    report = {
        "model": {"name": loaded.name, "source": loaded.source},
        "protocol": {"text": eval_text, "windows": eval_windows,
                     "perplexity": evaluate.describe_protocol("llama.cpp", eval_window, bos),
                     "mmlu": None if mmlu_questions == 0 else
                     {"shots": mmlu_shots, "questions_per_subject": mmlu_questions,
                      "subjects": mmlu_subjects or "all 57"},
                     "speed": None if not speed else {"n_prompt": n_prompt, "n_gen": n_gen,
                                                      "repetitions": speed_repetitions}},
        "rows": [r.to_dict() for r in rows], "table": table, "plots": pictures,
        "mixed": mixed_report, "seconds": time.perf_counter() - t0,
    }
    write_json(out / "compare.json", report)
    (out / "compare.md").write_text(table)
    return report

