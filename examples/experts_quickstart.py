"""The README's experts quickstart (tests/python/test_examples.py keeps the two identical)."""
import mpq
from mpq import model as mm, data, evaluate

lm = mm.load_model(data.stories260k_path())
text = data.data_dir() / "text" / "tinystories_valid.txt"
calib = data.tokenize_file(lm.tokenizer, text, first=100)[:16 * 256].view(16, 256)
held_out = data.tokenize_file(lm.tokenizer, text, skip=100, first=200)
plan = {name: ("gptq", "int4_g32") for name in mm.linear_layers(lm.model)}
plan["blk.0.ffn_down"] = ("awq", "int8")              # any expert, any format, per layer
result = mpq.quantize_sequential(lm.model, calib.split(4), plan,   # one block at a time
                                 experts={"gptq": mpq.make_expert("gptq", act_order=True)})
print(result.results["blk.0.attn_q"])                 # its errors: weight MSE, tr(ΔW H ΔWᵀ)
print(evaluate.perplexity(lm.model, held_out, window=256, progress=False)["ppl"])
