"""Peak resident memory after each step of the main job on the default model (issue 18).

    MPQ_DATA_DIR=../shared/data python bench/main_job_memory.py

ru_maxrss after load, calibration (4 windows of 256 tokens), sensitivity (the default formats).
"""
import resource, time, torch
def rss(tag): print(tag, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss//1024, "MiB peak", flush=True)
rss("import")
import mpq
from mpq import models, data
from mpq.jobs._common import load_texts
lm = models.load_model(None); rss("load")
t = load_texts(lm, None, None); rss("texts")
w = data.windows(t.calib_ids, 256, 6)
cal = models.calibrate(lm.model, w[:4].split(4), layers={**models.linear_layers(lm.model), "output": lm.model.get_output_embeddings()}, progress=False, calibrator=mpq.Calibrator(mpq.CalibratorOptions(collect_abs=False))); rss("calib")
from mpq.search import build_candidates, option_labels, KlFitness
from mpq.jobs._mixed import DEFAULT_FORMATS
c = build_candidates(lm.model, w[:4].split(4), option_labels(["kquant_imatrix"], DEFAULT_FORMATS), calibrator=cal, progress=False); rss("sensitivity")
print("quantized bytes MiB", sum(q.nbytes for q in c.quantized.values())//2**20)
f = KlFitness(lm.model, c, w[4:6], stages=[1,2], batch_size=4); rss("fitness ref")
