"""The README's Python quickstart (tests/python/test_examples.py keeps the two identical)."""
import torch, mpq
from mpq import model as mm, data, evaluate

w = torch.randn(1024, 1024)
q = mpq.quantize_rtn(w, "int4_g128", mpq.RtnOptions(mse_clip=True), name="demo")
print(q, q.nbytes, mpq.find_format("int4_g128").bits_per_weight(1024))
err = (mpq.dequantize(q) - w).pow(2).mean()

lm = mm.load_model()                       # stories260K; or a HF directory: mm.load_model("path/to/Qwen3-0.6B")
ids = data.tokenize_file(lm.tokenizer, data.data_dir() / "text" / "tinystories_valid.txt", first=50)
cal = mm.calibrate(lm.model, data.windows(ids, 256).split(8), progress=False)
H = cal.stats("blk.0.attn_q").hessian()    # GPTQ's Hessian, (2/N) XᵀX
with mm.apply_quantization(lm.model, {name: "int4_g32" for name in mm.linear_layers(lm.model)}):
    print(evaluate.perplexity(lm.model, ids, window=256, progress=False)["ppl"])
# leaving the block restores the original weights
