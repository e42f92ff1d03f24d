"""The low-bit headline: mpq's searched GGUF files against llama.cpp's own mixes of the same or
larger size, at 2.5-4 bits per weight, on Qwen2.5-Coder-1.5B-Instruct, scored in llama.cpp.

One run, resumable: every step writes its result under --state and is skipped when the result is
there (rows.jsonl gets one line per scored file).

1. Calibration on WikiText-2 valid (--calib-windows × 512 tokens): mpq's Calibrator, and from it
   llama.cpp's importance matrix (imatrix.gguf), which llama-quantize reads.
2. llama.cpp's mixes (--mixes), made by llama-quantize itself with that imatrix from an F32 file
   of the reference weights (the dequantized Q4_K_M; llama-quantize makes it too), run in a
   background pool while the torch side works.
3. The sensitivity table: every tensor (token_embd and output included) × kquant_imatrix ×
   --formats, the very bytes llama-quantize would write for that type with that imatrix.
4. At each budget in --budgets (bits per weight, every tensor counted): the knapsack on the proxy
   and the genetic search with KL fitness (multi-fidelity over --stages windows of held-out
   WikiText-2 valid, windows the calibration never saw); uniform rows (--uniform) from the same
   table. Each plan is exported to GGUF (plans/<tag>.json is the plan).
5. Scoring in llama.cpp, on the exported bytes: llama-perplexity's protocol on WikiText-2 test
   (--chunks of 512 tokens), with --kl-divergence against the F32 reference (mean KLD, same-top
   rate); mpq's torch perplexity of the same plan beside it (with llama.cpp's activation rounding
   simulated) for the searched rows.

    python bench/headline_lowbit.py --state /tmp/hl --device cuda --llama-tools /path/to/bin
    python bench/headline_lowbit.py --state /tmp/hl --table-only   # print the table of rows.jsonl

The reference weights are the dequantized Q4_K_M file's: requantizing them at 4.5+ bpw is nearly
lossless, so the budgets stay under that.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import queue
import re
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import torch

import mpq
from mpq import data, evaluation, models, search
from mpq.export import export_gguf

FORMATS = ("iq2_xxs", "iq2_xs", "iq2_s", "q2_k", "iq3_xxs", "iq3_s", "q3_k", "iq4_xs", "q4_k",
           "q5_k", "q6_k")
MIXES = ("IQ2_XXS", "IQ2_M", "IQ3_XXS", "IQ3_M", "Q2_K", "Q3_K_M")
AT_MIXES = ("IQ2_M", "IQ3_XXS", "IQ3_M", "IQ2_XXS")
UNIFORM = ("iq2_s", "iq3_xxs", "iq4_xs")
WINDOW = 512


def log(*a) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


class State:
    """The run's folder: step results and rows, appended as they come."""

    def __init__(self, root: str):
        self.root = Path(root)
        for d in ("plans", "gguf"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.rows_path = self.root / "rows.jsonl"
        self.lock = threading.Lock()

    def rows(self) -> dict[str, dict]:
        if not self.rows_path.exists():
            return {}
        return {r["tag"]: r for r in map(json.loads, self.rows_path.read_text().splitlines()) if r}

    def add(self, row: dict) -> None:
        with self.lock, open(self.rows_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        log("row", json.dumps(row))

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)


def run(cmd: list, log_path: Path, timeout: float = 900) -> str:
    """Runs a llama.cpp tool; its output goes to log_path; raises with the tail on failure."""
    cmd = [str(c) for c in cmd]
    with open(log_path, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    out = log_path.read_text(errors="replace")
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{out[-2000:]}")
    return out


def llama_stats(out: str) -> dict:
    """Mean PPL(Q), mean KLD, same-top rate ... from llama-perplexity --kl-divergence's summary."""
    def stat(label: str) -> float | None:
        m = re.search(re.escape(label) + r"\s*:\s*(-?[0-9.]+)(?:\s*±\s*([0-9.]+))?", out)
        return float(m.group(1)) if m else None
    return {"ppl": stat("Mean PPL(Q)"), "ppl_base": stat("Mean PPL(base)"), "kld": stat("Mean    KLD"),
            "kld_p99": stat("99.0%   KLD"), "kld_max": stat("Maximum KLD"), "same_top": stat("Same top p"),
            "ln_ppl_ratio": stat("Mean ln(PPL(Q)/PPL(base))")}


class Llama:
    """The llama.cpp side: F32 reference, the mixes (llama-quantize), the scoring (llama-perplexity)."""

    def __init__(self, args, st: State):
        self.args, self.st = args, st
        self.bin = Path(args.llama_tools)
        self.f32 = st.path("gguf", "f32.gguf")
        self.base = st.path("base.kld")
        self.text = Path(args.text_dir) / "wikitext2_raw_test.txt"

    def wait_for_tools(self) -> None:
        while not (self.bin / "llama-perplexity").exists() or not (self.bin / "llama-quantize").exists():
            time.sleep(5)

    def make_f32(self) -> None:
        if not self.f32.exists():
            tmp = self.f32.with_suffix(".tmp")
            run([self.bin / "llama-quantize", "--allow-requantize", self.args.model, tmp, "F32", self.args.threads],
                self.st.path("f32.log"))
            tmp.rename(self.f32)

    def make_mix(self, mix: str) -> Path:
        out = self.st.path("gguf", f"mix-{mix}.gguf")
        if not out.exists():
            tmp = out.with_suffix(".tmp")
            t = time.perf_counter()
            run([self.bin / "llama-quantize", "--imatrix", self.st.path("imatrix.gguf"), self.f32, tmp, mix,
                 max(1, self.args.threads // 2)], self.st.path(f"quantize-{mix}.log"))
            tmp.rename(out)
            log(f"llama-quantize {mix}: {time.perf_counter() - t:.0f} s")
        return out

    def common(self) -> list:
        return ["-c", WINDOW, "-b", WINDOW, "--chunks", self.args.chunks, "-fa", "off",
                "-ngl", self.args.ngl, "-t", self.args.threads]

    def make_base(self) -> None:
        if not self.base.exists():
            tmp = self.base.with_suffix(".tmp")
            run([self.bin / "llama-perplexity", "-m", self.f32, "-f", self.text, *self.common(),
                 "--kl-divergence-base", tmp], self.st.path("base.log"))
            tmp.rename(self.base)

    def score(self, path: Path) -> dict:
        t = time.perf_counter()
        out = run([self.bin / "llama-perplexity", "-m", path, *self.common(), "--kl-divergence-base", self.base,
                   "--kl-divergence"], self.st.path(f"score-{path.stem}.log"))
        s = llama_stats(out)
        s.update(evaluation.gguf_file_stats(path))
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
        s["sha256"] = h.hexdigest()
        s["score_seconds"] = round(time.perf_counter() - t, 1)
        return s


def check_device_dequant(cands, device: str) -> dict:
    """Every format's device dequantization against the CPU's, bit for bit, on one tensor each
    (the search dequantizes on the device). A mismatch switches the search to CPU dequantization,
    and says so in meta.json."""
    if device == "cpu":
        return {}
    out = {}
    for (name, label), q in cands.quantized.items():
        fmt = label.split(":")[1]
        if fmt in out:
            continue
        cpu = mpq.dequantize(q)
        try:
            dev = mpq.dequantize(q.to(device)).cpu()
            out[fmt] = bool(torch.equal(cpu, dev))
        except Exception as e:
            out[fmt] = f"{type(e).__name__}: {e}"
    if not all(v is True for v in out.values()):
        log(f"device dequantization differs from the CPU's: {out}; dequantizing on the CPU")
        cands.dequantized = lambda n, lab, dev: mpq.dequantize(cands.quantized[(n, lab)]).to(dev)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="the Q4_K_M GGUF (default: mpq.data.qwen_coder_path())")
    ap.add_argument("--state", required=True, help="the run's folder (resumable)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--llama-tools", default=None, help="folder of llama-quantize and llama-perplexity")
    ap.add_argument("--text-dir", default=None, help="WikiText-2 raw (default: the data folder's text/)")
    ap.add_argument("--budgets", type=float, nargs="*", default=[2.5, 3.0, 3.5, 4.0])
    ap.add_argument("--formats", nargs="+", default=list(FORMATS))
    ap.add_argument("--mixes", nargs="*", default=list(MIXES))
    ap.add_argument("--uniform", nargs="*", default=list(UNIFORM))
    ap.add_argument("--at-mixes", nargs="*", default=list(AT_MIXES),
                    help="mixes at whose exact size GA-KL runs too, while time is left")
    ap.add_argument("--calib-windows", type=int, default=128)
    ap.add_argument("--stages", type=int, nargs="+", default=[2, 8, 24], help="KL fitness windows per stage")
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--offspring", type=int, default=32)
    ap.add_argument("--generations", type=int, default=60)
    ap.add_argument("--search-seconds", type=float, default=None,
                    help="end each GA after the 10 generations in which this time is passed")
    ap.add_argument("--tag-suffix", default="", help="appended to the GA rows' tags (a second setting)")
    ap.add_argument("--state-gib", type=float, default=1.0, help="the KL fitness's block states (GiB)")
    ap.add_argument("--chunks", type=int, default=64, help="llama-perplexity chunks of 512 tokens")
    ap.add_argument("--torch-windows", type=int, default=None, help="torch perplexity windows (default --chunks)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--ngl", type=int, default=0, help="llama.cpp layers on the GPU")
    ap.add_argument("--deadline", type=float, default=None, help="unix time after which no new search starts")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    st = State(args.state)
    if args.table_only:
        print_table(st)
        return
    args.model = args.model or os.fspath(data.qwen_coder_path(required=True))
    args.text_dir = args.text_dir or os.fspath(data.data_dir() / "text")
    args.llama_tools = args.llama_tools or os.fspath(Path(evaluation.find_llama_tool("llama-perplexity")).parent)
    torch.manual_seed(0)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # the search's forward passes; scores come from llama.cpp
    t0 = time.perf_counter()
    secs: dict[str, float] = {}
    done = st.rows()

    loaded = models.load_model(args.model, device=args.device)
    secs["load"] = time.perf_counter() - t0
    log(f"loaded {loaded.name} on {args.device} in {secs['load']:.0f} s")
    text = Path(args.text_dir)
    valid = data.tokenize_file(loaded.tokenizer, text / "wikitext2_raw_valid.txt")
    fit_windows = max(args.stages)
    wins = data.windows(valid, WINDOW, args.calib_windows + fit_windows)
    if wins.size(0) < args.calib_windows + fit_windows:
        raise SystemExit(f"WikiText-2 valid holds only {wins.size(0)} windows of {WINDOW}")
    calib, held = wins[:args.calib_windows], wins[args.calib_windows:]
    test = data.tokenize_file(loaded.tokenizer, text / "wikitext2_raw_test.txt")

    # 1. Calibration and the imatrix.
    t = time.perf_counter()
    layers = models.linear_layers(loaded.model, include_output=True)
    if "output" not in layers:
        layers["output"] = loaded.model.get_output_embeddings()
    cal = models.calibrate(loaded.model, calib.split(8), layers=layers, progress=False)
    im_path = st.path("imatrix.gguf")
    if not im_path.exists():
        # The output head's entry too (llama-imatrix --process-output): the table quantizes output
        # with it, so the file rebuilds the same bytes, and llama-quantize's mixes get it as well.
        cal.imatrix(chunk_size=WINDOW, datasets=["wikitext2_raw_valid.txt"], include_output=True).save(os.fspath(im_path))
    secs["calibration"] = time.perf_counter() - t
    log(f"calibration: {secs['calibration']:.0f} s")

    # 2. llama.cpp's side in the background: the F32 reference and its base log-probs, the mixes,
    # and a scorer that runs llama-perplexity on each file as it becomes ready (torch and
    # llama.cpp share the GPU; neither needs all of it).
    lc = Llama(args, st)
    pool = cf.ThreadPoolExecutor(2)

    f32_ready = threading.Event()

    def reference() -> None:
        lc.wait_for_tools()
        lc.make_f32()
        f32_ready.set()
        lc.make_base()
        if "f32" not in done:
            st.add({"tag": "f32", "method": "reference (F32)", **lc.score(lc.f32)})

    ref_job = pool.submit(reference)
    # The mixes wait for the table: both are CPU-bound IQ quantizing (minutes per format on 16
    # cores), and the table gates every search while the mixes can finish during them.
    table_done = threading.Event()
    mix_jobs = {m: pool.submit(lambda m=m: (f32_ready.wait(), table_done.wait(), lc.make_mix(m))[2])
                for m in args.mixes if f"mix-{m}" not in done}
    to_score: queue.Queue = queue.Queue()

    def scorer() -> None:
        ref_job.result()
        while (item := to_score.get()) is not None:
            tag, path, extra = item
            try:
                st.add({"tag": tag, **extra, **lc.score(path)})
            except Exception as e:  # one file's failure is reported and the others still scored
                log(f"scoring {tag} failed: {e}")
        log("scorer done")

    score_thread = threading.Thread(target=scorer, daemon=True)
    score_thread.start()
    for m, job in mix_jobs.items():
        job.add_done_callback(lambda j, m=m: to_score.put(
            (f"mix-{m}", j.result(), {"method": f"llama.cpp {m} (imatrix)", "budget": None})))

    # 3. The table.
    t = time.perf_counter()
    labels = search.option_labels(["kquant_imatrix"], args.formats)
    try:
        # A restarted run reads the rows already quantized (the long part) from the folder.
        cands = search.build_candidates(loaded.model, calib.split(8), labels, calibrator=cal,
                                        folder=st.path(f"candidates-{len(labels)}"), progress=False)
    finally:
        table_done.set()  # the mixes go on even if the table failed
    table = cands.table
    table.save(os.fspath(st.path("table.json")))
    secs["table"] = time.perf_counter() - t
    log(f"table: {table.num_tensors} tensors × {table.num_options} options in {secs['table']:.0f} s")
    lowest = np.asarray([min((table.cell(i, o)[0], o) for o in range(table.num_options) if table.available(i, o))[1]
                         for i in range(table.num_tensors)], dtype=np.int32)
    meta = {"model": loaded.name, "source": args.model, "device": args.device, "formats": args.formats,
            "calib_windows": args.calib_windows, "window": WINDOW, "stages": args.stages,
            "population": args.population, "offspring": args.offspring, "generations": args.generations,
            "chunks": args.chunks, "smallest_bpw": table.bits_per_weight(lowest),
            "torch": torch.__version__, "mpq": mpq.__version__}
    st.path("meta.json").write_text(json.dumps(meta, indent=1))

    meta["device_dequant"] = check_device_dequant(cands, args.device)
    st.path("meta.json").write_text(json.dumps(meta, indent=1))
    judge = search.KlFitness(loaded.model, cands, held, stages=args.stages, batch_size=4,
                             state_bytes=int(args.state_gib * 2**30))
    torch_windows = args.torch_windows or args.chunks

    def torch_ppl(genome) -> dict:
        plan = {n: label.split(":")[1] for n, label in cands.plan(genome).items()}
        with cands.apply(loaded.model, genome):
            plain = evaluation.perplexity(loaded.model, test, protocol="llama.cpp", window=WINDOW, batch_size=8,
                                          max_windows=torch_windows, progress=False).ppl
            with mpq.llama_cpp_activations(loaded.model, plan):
                act = evaluation.perplexity(loaded.model, test, protocol="llama.cpp", window=WINDOW,
                                            batch_size=8, max_windows=torch_windows, progress=False).ppl
        return {"torch_ppl": plain, "torch_ppl_llama_act": act}

    def export(tag: str, genome, extra: dict) -> None:
        plan = {f"{n}.weight": label.split(":")[1] for n, label in cands.plan(genome).items()}
        st.path("plans", f"{tag}.json").write_text(json.dumps(plan, indent=0))
        path = st.path("gguf", f"{tag}.gguf")
        if not path.exists():
            export_gguf(loaded, path, plan, quantized=cands.tensors(genome), progress=False)
        extra = {**extra, "table_bpw": table.bits_per_weight(genome), "proxy": table.proxy(genome),
                 "fitness_kl": judge.kl(genome)}
        judge.restore()
        extra.update(torch_ppl(genome))
        to_score.put((tag, path, extra))

    orig_ppl = evaluation.perplexity(loaded.model, test, protocol="llama.cpp", window=WINDOW, batch_size=8,
                                     max_windows=torch_windows, progress=False).ppl
    meta["torch_ppl_reference"] = orig_ppl
    # 4. The searches: knapsack and GA-KL at each budget; then, while time is left, GA-KL at the
    # exact size of each llama.cpp mix already made (the fairest comparison: same bytes).
    def ga(tag: str, budget, extra: dict) -> None:
        tag += args.tag_suffix
        if tag in done:
            return
        opts = mpq.GaOptions(population=args.population, offspring=args.offspring, generations=args.generations)
        opts.survivors = [args.offspring] + [max(2, args.offspring // 4 ** i) for i in range(1, len(args.stages))]
        opts.checkpoint = os.fspath(st.path(f"{tag}.ckpt"))
        opts.resume = True  # from the checkpoint when there is one
        t = time.perf_counter()
        judged, applying = judge.seconds, judge.apply_seconds
        # Within --search-seconds: the search runs in steps of 10 generations, each resumed from
        # the last one's checkpoint (the same course as one run of as many generations), and
        # ends after the step in which the time is up.
        step = 10 if args.search_seconds else args.generations
        gens = min(step, args.generations)
        while True:
            opts.generations = gens
            r = search.search(cands, budget, fitness=judge, options=opts, progress=False)
            if gens >= args.generations or (args.search_seconds and time.perf_counter() - t > args.search_seconds):
                break
            gens = min(gens + step, args.generations)
        judge.restore()
        secs[tag] = time.perf_counter() - t
        log(f"{tag}: {secs[tag]:.0f} s, {gens} generations, {r.evaluations} evaluations, KL {r.fitness:.4f}; "
            f"fitness {judge.seconds - judged:.0f} s, of which applying plans {judge.apply_seconds - applying:.0f} s")
        export(tag, np.asarray(r.best), {**extra, "search_seconds": round(secs[tag], 1), "evaluations": r.evaluations,
                                         "generations": gens, "stages": args.stages, "offspring": args.offspring,
                                         "population": args.population,
                                         "fitness_seconds": round(judge.seconds - judged, 1),
                                         "apply_seconds": round(judge.apply_seconds - applying, 1),
                                         "history": [(h.generation, h.best, h.evaluations) for h in r.history]})

    def late() -> bool:  # the first search always runs: without one the run shows nothing
        return args.deadline is not None and time.time() > args.deadline and \
            any(k.startswith("ga-") for k in secs)

    # The knapsack rows first: they take seconds, and each GA row needs its knapsack row beside it.
    for b in args.budgets:
        if f"knapsack-{b}" not in done:
            t = time.perf_counter()
            k = mpq.knapsack(table, mpq.Budget("bpw", b))
            export(f"knapsack-{b}", np.asarray(k.genome), {"method": "knapsack (proxy)", "budget": b,
                                                           "search_seconds": round(time.perf_counter() - t, 1)})
    for b in args.budgets:
        if late():
            log(f"GA at {b} bpw: skipped (deadline)")
            continue
        ga(f"ga-kl-{b}", mpq.Budget("bpw", b), {"method": "GA (KL)", "budget": b})
    for m in args.at_mixes:
        path = st.path("gguf", f"mix-{m}.gguf")  # renamed into place when complete
        if late() or not path.exists():
            log(f"GA at {m}'s size: skipped ({'deadline' if late() else 'mix not ready'})")
            continue
        nbytes = evaluation.gguf_file_stats(path)["tensor_bytes"]
        ga(f"ga-kl-at-{m}", mpq.Budget("bytes", nbytes), {"method": f"GA (KL) at {m}'s size", "budget": m})
    # Uniform rows from the same table (llama-quantize --pure would write the same bytes).
    for fmt in args.uniform:
        tag = f"uniform-{fmt}"
        if tag in done:
            continue
        o = table.option_index(f"kquant_imatrix:{fmt}")
        genome = np.full(table.num_tensors, o, dtype=np.int32)
        export(tag, genome, {"method": f"uniform {fmt}", "budget": None})

    meta["seconds"] = secs
    st.path("meta.json").write_text(json.dumps(meta, indent=1))
    del judge
    torch.cuda.empty_cache() if args.device.startswith("cuda") else None

    # 5. The rest of the scoring.
    for m, job in mix_jobs.items():
        job.result()  # its callback queued it
    ref_job.result()
    to_score.put(None)
    score_thread.join()
    pool.shutdown()
    st.path("done").write_text("")
    log(f"done in {time.perf_counter() - t0:.0f} s")
    print_table(st)


def print_table(st: State) -> None:
    """Rows by size; each searched row against the smallest llama.cpp mix at least as large."""
    rows = sorted(st.rows().values(), key=lambda r: r.get("bpw", 99))
    mixes = [r for r in rows if r["tag"].startswith("mix-")]
    print("\n| file | method | bpw | size MiB | PPL (llama.cpp) | mean KLD | same top % | torch PPL (act) | vs mix |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        vs = ""
        if r["tag"].startswith(("ga-", "knapsack-")):
            bigger = [m for m in mixes if m["tensor_bytes"] >= r["tensor_bytes"]]
            if bigger and r.get("ppl") and r.get("kld"):
                m = bigger[0]
                vs = f"{m['tag'][4:]}: PPL {100 * (r['ppl'] / m['ppl'] - 1):+.1f}%, KLD {100 * (r['kld'] / m['kld'] - 1):+.1f}%"
        torch_ppl = f"{r['torch_ppl_llama_act']:.3f}" if "torch_ppl_llama_act" in r else ""
        print(f"| {r['tag']} | {r['method']} | {r.get('bpw', 0):.3f} | {r.get('tensor_bytes', 0) / 2**20:.1f} | "
              f"{r.get('ppl') or 0:.4f} | {r.get('kld') or 0:.5f} | {r.get('same_top') or 0:.2f} | {torch_ppl} | {vs} |")


if __name__ == "__main__":
    main()
