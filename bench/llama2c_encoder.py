"""The llama2.c tokenizer's encoder on text it cannot split into words (a vocabulary piece with a
space after its first byte): mpq's heap merge against run.c's rescan-per-merge loop, same ids.
    python3 bench/llama2c_encoder.py"""
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "python"))
from test_bad_input import naive_merge, tokenizer_file
from mpq import data, models as mm
tok0 = mm.Llama2cTokenizer(data.default_tokenizer_path())
pieces = list(tok0.pieces) + [b"a b"]  # a piece with a space after its first byte: no per-word split
p = tokenizer_file(pathlib.Path("/tmp/tokspace.bin"), pieces, list(tok0.scores) + [-1e9])
tok = mm.Llama2cTokenizer(p)
assert not tok._split_words
text = data.read_text(data.data_dir() / "text" / "tinystories_valid.txt")[:16000]
def t(f):
    xs = []
    for _ in range(3):
        a = time.perf_counter(); r = f(); xs.append(time.perf_counter() - a)
    return statistics.median(xs), r
heap, ids = t(lambda: tok.encode(text, bos=False))
ids0 = []
for ch in (" " + text):
    b = ch.encode(); ids0 += [tok._ids[b]] if b in tok._ids else [x + 3 for x in b]
naive, ref = t(lambda: naive_merge(tok, ids0))
print(f"16,000 characters: heap {heap:.3f} s, run.c's rescan {naive:.2f} s, ratio {naive/heap:.0f}x, same ids: {ids == ref}")
