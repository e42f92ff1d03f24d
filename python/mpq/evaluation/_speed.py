"""Speed and size of a GGUF file in the real llama.cpp.

Prompt processing (pp: n_prompt tokens in one batch) and generation (tg: n_gen tokens one at a
time) in tokens per second, as llama-bench measures them: random tokens, an empty KV cache before
each repetition, one warm-up run first; the median over repetitions is reported with every
sample. The llama-bench binary is used when found (scripts/build_llama_tools.sh builds it),
otherwise the same measurement runs through llama-cpp-python. Load time and memory always come
from child processes that only load the model: the wall time of Llama(...) and the growth of the
process's resident memory over the load and the evaluation of one token (by then every weight
has been read, whether mmapped or repacked); the peak resident set (ru_maxrss) of the benchmark
process is reported too. Size counts every tensor of the file (embeddings, norms and output
included): bits per weight = 8 × tensor bytes / tensor elements.

The same code runs a CUDA (or Metal) build of llama.cpp: pass n_gpu_layers.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ._logits import default_threads

TOOLS_ENV = "MPQ_LLAMA_TOOLS"


@dataclass
class GgufSpeed:
    path: str
    file_bytes: int
    tensor_bytes: int
    tensor_elements: int
    bpw: float  # 8 × tensor_bytes / tensor_elements, every tensor of the file
    n_prompt: int
    n_gen: int
    pp_tokens_per_s: float | None  # median over repetitions
    tg_tokens_per_s: float | None
    load_seconds: float  # median over repetitions
    model_rss_bytes: int  # growth of resident memory over loading and a first token (median)
    peak_rss_bytes: int | None  # peak resident set of the benchmark process
    tool: str  # "llama-bench" or "llama-cpp-python"
    n_threads: int
    n_gpu_layers: int
    repetitions: int
    pp_samples: list[float] = field(default_factory=list)
    tg_samples: list[float] = field(default_factory=list)
    load_samples: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def gguf_file_stats(path: str | os.PathLike) -> dict:
    """file_bytes, tensor_bytes, tensor_elements, tensors and bpw of a GGUF file, from its
    tensor table (mpq's GGUF reader)."""
    from .. import _C

    path = os.fspath(path)
    reader = _C.gguf.Reader(path)
    nbytes = sum(int(t.nbytes) for t in reader.tensors)
    elements = 0
    for t in reader.tensors:
        n = 1
        for d in t.shape:
            n *= int(d)
        elements += n
    return {"file_bytes": os.path.getsize(path), "tensor_bytes": nbytes, "tensor_elements": elements,
            "tensors": len(reader.tensors), "bpw": 8.0 * nbytes / elements}


def find_llama_tool(name: str) -> Path | None:
    """A llama.cpp tool: in $MPQ_LLAMA_TOOLS, on PATH, or in build/llama-tools/bin of the checkout
    (scripts/build_llama_tools.sh) or of the current directory."""
    places = []
    if os.environ.get(TOOLS_ENV):
        places.append(Path(os.environ[TOOLS_ENV]))
    on_path = shutil.which(name)
    if on_path:
        places.append(Path(on_path).parent)
    places += [Path(__file__).resolve().parents[2] / "build" / "llama-tools" / "bin",
               Path.cwd() / "build" / "llama-tools" / "bin"]
    for d in places:
        if (d / name).is_file() and os.access(d / name, os.X_OK):
            return d / name
    return None


def _maxrss_bytes(ru_maxrss: int) -> int:
    return ru_maxrss if sys.platform == "darwin" else ru_maxrss * 1024  # Linux reports KiB


def _run(cmd: list[str], timeout: float) -> tuple[str, str, int]:
    """Runs cmd; returns stdout, stderr and the child's peak resident set in bytes."""
    import tempfile

    import threading

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # wait4: the child's own resource usage
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode == -9:
            raise TimeoutError(f"{Path(cmd[0]).name} ran past {timeout} s and was stopped")
        out.seek(0), err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}): {stderr[-2000:]}")
    return stdout, stderr, _maxrss_bytes(usage.ru_maxrss)


# Runs in a child process: loads the model (timed), optionally runs pp/tg as llama-bench does.
_CHILD = r"""
import json, os, resource, sys, time
args = json.loads(sys.argv[1])
import llama_cpp, numpy as np
def rss():  # resident now (Linux), else the peak so far
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
before = rss()
t0 = time.perf_counter()
llm = llama_cpp.Llama(args["path"], n_ctx=args["n_ctx"], n_batch=args["n_batch"], n_ubatch=args["n_ubatch"],
                      n_threads=args["n_threads"], n_gpu_layers=args["n_gpu_layers"], verbose=False)
load = time.perf_counter() - t0
rng = np.random.default_rng(0)
n_vocab = llm.n_vocab()
bos = llm.token_bos() if llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm.model)) else None
llm.eval([bos if bos is not None else 0])
grown = rss() - before
def first():
    return bos if bos is not None else int(rng.integers(n_vocab))
def pp():
    llm.reset()
    toks = [first()] + rng.integers(n_vocab, size=args["n_prompt"] - 1).tolist()
    t = time.perf_counter(); llm.eval(toks); return time.perf_counter() - t
def tg():
    llm.reset()
    tok, t = first(), time.perf_counter()
    for _ in range(args["n_gen"]):
        llm.eval([tok]); tok = int(rng.integers(n_vocab))
    return time.perf_counter() - t
out = {"load": load, "model_rss_bytes": grown, "pp": [], "tg": []}
for name, fn, n in (("pp", pp, args["n_prompt"]), ("tg", tg, args["n_gen"])):
    if n > 0 and args["reps"] > 0:
        fn()  # warm-up, as llama-bench
        out[name] = [n / fn() for _ in range(args["reps"])]
print(json.dumps(out))
"""


def _child(path: str, n_prompt: int, n_gen: int, reps: int, n_threads: int, n_gpu_layers: int,
           timeout: float) -> tuple[dict, int]:
    n_batch = max(min(n_prompt, 2048), 1)
    args = {"path": path, "n_ctx": max(n_prompt + n_gen, 64), "n_batch": n_batch, "n_ubatch": min(n_batch, 512),
            "n_threads": n_threads, "n_gpu_layers": n_gpu_layers, "n_prompt": n_prompt, "n_gen": n_gen,
            "reps": reps}
    stdout, _, peak = _run([sys.executable, "-c", _CHILD, json.dumps(args)], timeout)
    return json.loads(stdout.strip().splitlines()[-1]), peak


def _llama_bench(tool: Path, path: str, n_prompt: int, n_gen: int, reps: int, n_threads: int,
                 n_gpu_layers: int, timeout: float) -> tuple[list[float], list[float], int]:
    cmd = [str(tool), "-m", path, "-r", str(reps), "-t", str(n_threads), "-ngl", str(n_gpu_layers),
           "-o", "json", "-p", str(n_prompt), "-n", str(n_gen)]
    stdout, _, peak = _run(cmd, timeout)
    pp, tg = [], []
    for test in json.loads(stdout):
        if test["n_prompt"] > 0 and test["n_gen"] == 0:
            pp = [float(x) for x in test["samples_ts"]]
        elif test["n_gen"] > 0 and test["n_prompt"] == 0:
            tg = [float(x) for x in test["samples_ts"]]
    return pp, tg, peak


def gguf_speed(path: str | os.PathLike, *, n_prompt: int = 512, n_gen: int = 128, repetitions: int = 5,
               n_threads: int | None = None, n_gpu_layers: int = 0, tool: str = "auto",
               timeout: float = 1800) -> GgufSpeed:
    """Speed, load time, memory and size of a GGUF file in llama.cpp (see the module docstring).

    Args:
        path: the GGUF file.
        n_prompt, n_gen: pp and tg sizes (llama-bench's pp512 and tg128 by default; 0 skips one).
        repetitions: timed runs of each (median reported) and load measurements.
        n_threads: CPU threads (default: the CPUs this process may use).
        n_gpu_layers: layers offloaded to the GPU (CUDA/Metal builds of llama.cpp).
        tool: "llama-bench", "llama-cpp-python" or "auto" (llama-bench when found).
        timeout: seconds per child process.
    """

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"GGUF file {path} does not exist")
    if repetitions < 1 or n_prompt < 0 or n_gen < 0:
        raise ValueError("repetitions must be >= 1 and n_prompt, n_gen >= 0")
    if tool not in ("auto", "llama-bench", "llama-cpp-python"):
        raise ValueError(f"tool must be auto, llama-bench or llama-cpp-python, got '{tool}'")
    bench = find_llama_tool("llama-bench") if tool != "llama-cpp-python" else None
    if tool == "llama-bench" and bench is None:
        raise ValueError("llama-bench not found: build it with scripts/build_llama_tools.sh or set "
                         f"{TOOLS_ENV} to the folder that holds it")
    n_threads = n_threads or default_threads()
    stats = gguf_file_stats(path)

    loads, load_rss = [], []
    if bench is not None:
        pp, tg, peak = _llama_bench(bench, path, n_prompt, n_gen, repetitions, n_threads, n_gpu_layers, timeout)
        for _ in range(repetitions):
            r, _ = _child(path, 0, 0, 0, n_threads, n_gpu_layers, timeout)
            loads.append(r["load"])
            load_rss.append(r["model_rss_bytes"])
    else:
        pp, tg, peaks = [], [], []
        for _ in range(repetitions):
            # One child per repetition, so load time is measured in fresh processes; each runs
            # its pp and tg once after a warm-up.
            r, p = _child(path, n_prompt, n_gen, 1, n_threads, n_gpu_layers, timeout)
            loads.append(r["load"])
            load_rss.append(r["model_rss_bytes"])
            pp += r["pp"]
            tg += r["tg"]
            peaks.append(p)
        peak = max(peaks)
    med = lambda xs: statistics.median(xs) if xs else None
    return GgufSpeed(
        path=path, file_bytes=stats["file_bytes"], tensor_bytes=stats["tensor_bytes"],
        tensor_elements=stats["tensor_elements"], bpw=stats["bpw"], n_prompt=n_prompt, n_gen=n_gen,
        pp_tokens_per_s=med(pp), tg_tokens_per_s=med(tg), load_seconds=statistics.median(loads),
        model_rss_bytes=int(statistics.median(load_rss)), peak_rss_bytes=peak,
        tool="llama-bench" if bench is not None else "llama-cpp-python", n_threads=n_threads,
        n_gpu_layers=n_gpu_layers, repetitions=repetitions, pp_samples=pp, tg_samples=tg,
        load_samples=loads)
