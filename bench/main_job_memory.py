"""Resident memory after each step of the main job on the default model (issue 18), the steps of
mpq.quantize_mixed run one by one with its quick sizes (16 + 4 windows of 256 tokens, 8 × 4
generations): the peak so far and the RSS now, after each.

    MPQ_DATA_DIR=../shared/data python bench/main_job_memory.py
    MALLOC_MMAP_THRESHOLD_=131072 MPQ_DATA_DIR=../shared/data python bench/main_job_memory.py
"""
import resource
import time

import numpy as np
import psutil

import mpq
from mpq import _C, data, evaluation, models
from mpq.export import export_gguf
from mpq.jobs._common import load_texts
from mpq.jobs._mixed import default_formats
from mpq.search import KlFitness, build_candidates, option_labels, search


def rss(tag: str) -> None:
    print(f"{tag:14s} peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024:6d} MiB, "
          f"now {psutil.Process().memory_info().rss // 2**20:6d} MiB  t={time.perf_counter():.0f} s", flush=True)


rss("import")
lm = models.load_model(None); rss("load")
t = load_texts(lm, None, None); rss("texts")
w = data.windows(t.calib_ids, 256, 20)
calib, held = w[:16], w[16:]
layers = {**models.linear_layers(lm.model), "output": lm.model.get_output_embeddings()}
cal = models.calibrate(lm.model, calib.split(4), layers=layers, progress=False,
                       calibrator=_C.Calibrator(_C.CalibratorOptions(collect_abs=False))); rss("calibrate")
c = build_candidates(lm.model, calib.split(4), option_labels(["kquant_imatrix"], default_formats(5.0)),
                     calibrator=cal, progress=False); rss("sensitivity")
print("quantized options MiB", sum(q.nbytes for q in c.quantized.values()) // 2**20)
im = cal.imatrix(chunk_size=256, datasets=["wikitext2_raw_valid.txt"], include_output=True)
cal = None; rss("imatrix+drop")
fit = KlFitness(lm.model, c, held, stages=[1, 4], batch_size=4); rss("fitness")
o = _C.GaOptions(); o.population = 8; o.generations = 4; o.survivors = [8, 2]
r = search(c, mpq.Budget("bpw", 5.0), fitness=fit, options=o, progress=False); fit.restore(); rss("search")
del fit; rss("del fitness")
g = np.asarray(r.best)
plan = {f"{n}.weight": label.split(":")[1] for n, label in c.plan(g).items()}
export_gguf(lm, "/tmp/main_job_memory.gguf", plan, quantized=c.tensors(g), imatrix=im, progress=False); rss("export")
evaluation.kl_divergence(lm.model, "/tmp/main_job_memory.gguf", t.eval_ids, protocol="p1", window=256,
                         batch_size=4, max_windows=16, progress=False); rss("kl")
