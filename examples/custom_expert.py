"""A quantization method of your own as an expert: a Python class derived from mpq.Expert,
registered by name, then used wherever the built-in experts are (here: in the sensitivity table,
next to RTN and GPTQ, and in the search over them). This one rounds to nearest after searching,
per tensor, the clipping ratio with the lowest Hessian-weighted output error.
"""
import torch

import mpq
from mpq import data, sensitivity
from mpq import model as mm


class ClipSearchRtn(mpq.Expert):
    """RTN with the clipping ratio chosen by tr(ΔW H ΔWᵀ) (needs calibration statistics)."""

    def name(self):
        return "clip_rtn"

    def needs_stats(self):
        return True

    def transforms_input(self):
        return False

    def quantize(self, layers, stats, can_scale):
        H = stats.hessian()
        out = []
        for layer in layers:
            best = None
            for ratio in (1.0, 0.95, 0.9, 0.85, 0.8):
                w = layer.weight.clamp(-ratio * layer.weight.abs().amax(1, keepdim=True),
                                       ratio * layer.weight.abs().amax(1, keepdim=True))
                q = mpq.quantize_tensor(w, layer.format.name)
                d = mpq.dequantize(q) - layer.weight
                err = float(torch.einsum("oi,ij,oj->", d, H, d))
                if best is None or err < best[0]:
                    best = (err, q)
            out.append(mpq.ExpertResult(layer.name, best[1]))
        return out


mpq.register_expert("clip_rtn", ClipSearchRtn)

lm = mm.load_model(data.stories260k_path())
ids = data.tokenize_file(lm.tokenizer, data.data_dir() / "text" / "tinystories_valid.txt", first=100)
w = data.windows(ids, 256, 16)
options = sensitivity.option_labels(["rtn", "clip_rtn"], ["int3_g32", "int4_g32", "int8"])
cands = mpq.build_candidates(lm.model, w.split(4), options, progress=False)
t = cands.table
proxy = {label: sum(t.cell(i, t.option_index(label))[1] for i in range(1, t.num_tensors))
         for label in ("rtn:int3_g32", "clip_rtn:int3_g32")}
print("summed proxy error over the linear layers:", proxy)
best = mpq.genetic_search(t, mpq.Budget("bpw", 5.0), mpq.GaOptions(population=12, generations=6))
print("clip_rtn chosen for", sum(label.startswith("clip_rtn") for label in cands.plan(best.best).values()),
      "of", t.num_tensors, "tensors")
