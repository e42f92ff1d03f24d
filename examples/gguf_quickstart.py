"""The README's second Python quickstart (tests/python/test_examples.py keeps the two identical)."""
import mpq
from mpq import model as mm, data, export

lm = mm.load_model(data.stories260k_path())
ids = data.tokenize_file(lm.tokenizer, data.data_dir() / "text" / "tinystories_valid.txt", first=50)
cal = mm.calibrate(lm.model, data.windows(ids, 256).split(8), progress=False)
imatrix = cal.imatrix(chunk_size=256)               # llama.cpp's importance matrix
imatrix.save("imatrix.gguf")                        # llama-quantize --imatrix reads it
plan = mpq.llama_cpp_mix("Q4_K_M", export.model_spec(lm.model))   # llama-quantize's choices
print(plan.bits_per_weight(export.model_spec(lm.model)), plan.tensor_type_lines()[:80])
report = export.export_gguf(lm, "stories-q4_k_m.gguf", plan, imatrix=imatrix, progress=False)
back = mm.load_model("stories-q4_k_m.gguf")          # GGUF import (dequantized)
