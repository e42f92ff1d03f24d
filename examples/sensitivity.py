"""Sensitivity analysis on stories260K: what each (expert, format) option costs each tensor
(bytes and proxy error tr(ΔW H ΔWᵀ) for every cell, measured KL divergence for some), a ranking
into sensitive / normal / insensitive tensors, and a heatmap. The table is saved and loaded.
"""
import mpq
from mpq import data, plots, sensitivity
from mpq import model as mm

lm = mm.load_model(data.stories260k_path())
ids = data.tokenize_file(lm.tokenizer, data.data_dir() / "text" / "tinystories_valid.txt", first=100)
w = data.windows(ids, 256, 20)
options = sensitivity.option_labels(["rtn", "gptq"], ["int2_g32", "int3_g32", "int4_g32", "int8"])
cands = mpq.build_candidates(lm.model, w[:16].split(4), options, progress=False)
sensitivity.measure_kl(cands, lm.model, w[16:], tensors=["blk.0.attn_v", "blk.4.ffn_down"], progress=False)

for row in sensitivity.ranking(cands, "rtn:int2_g32")[:5]:        # the most sensitive first
    print(f"{row['tensor']:16s} {row['tier']:12s} proxy error per weight {row['error']:.3e}")
print("KL of blk.0.attn_v at rtn:int2_g32:", cands.table.cell(cands.table.tensor_index("blk.0.attn_v"),
                                                              cands.table.option_index("rtn:int2_g32"))[2])
cands.table.save("stories_table.json")
table = mpq.CandidateTable.load("stories_table.json")
print(plots.sensitivity_heatmap(table, "stories_sensitivity.png"), table)
