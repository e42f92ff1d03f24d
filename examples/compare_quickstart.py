"""`mpq compare` from Python on stories260K: the original (F16), llama.cpp's Q8_0 and Q4_K_M (with
the importance matrix) and mpq's mixed-precision file at Q4_K_M's size, each run by the real
llama.cpp: size, speed, memory, perplexity, KL divergence, MMLU; a table and three PNG plots.
`python -m mpq compare` does the same on the default model (SmolLM2-135M).
"""
import mpq
from mpq import data

r = mpq.compare(data.stories260k_path(), uniform=["Q4_K_M", "Q8_0"], mixed_bpw="match",
                out_dir="compare_stories", eval_windows=8,
                mmlu_questions=2, mmlu_shots=0, mmlu_subjects=["astronomy", "marketing"],
                speed_repetitions=1, n_prompt=128, n_gen=32,
                mixed_options={"fitness": "proxy"}, progress=False)
print(r["table"])
print(sorted(r["plots"]))              # bit_allocation, sensitivity, size_vs_ppl (PNG files)
