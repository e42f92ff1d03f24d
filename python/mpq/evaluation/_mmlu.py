"""MMLU (Hendrycks et al., "Measuring Massive Multitask Language Understanding"), k-shot, scored
as the original evaluate.py of hendrycks/test scores it.

Prompt: "The following are multiple choice questions (with answers) about{ subject words}.\\n\\n"
(the original's format_subject puts a space before every word, hence two spaces after "about";
lm-evaluation-harness uses one), then k examples from the subject's dev split, each
"question\\nA. ...\\nB. ...\\nC. ...\\nD. ...\\nAnswer: X\\n\\n", then the test question ending in
"Answer:". The prediction is the letter whose token " A", " B", " C" or " D" has the highest
log-probability at the next position (the original read the log-probabilities of " A".." D"
from GPT-3). Tokenizers that split " A" into a space and a letter are scored by the
log-likelihood of each answer's tokens instead (see answer_tokens).
When a prompt exceeds the model's context, shots are dropped one by one from the end, as the
original does; a 0-shot prompt still too long keeps its BOS and its last tokens.

Categories follow categories.py of hendrycks/test (subject -> subcategory -> STEM, humanities,
social sciences, other); lm-evaluation-harness differs in one subject, anatomy, which it counts
as STEM. Overall accuracy is the micro average over questions, as the original's
"weighted_accuracy".
"""
from __future__ import annotations

import csv
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .. import data
from ._logits import default_threads, forward_accepts, is_gguf_path, is_llama, open_gguf

LETTERS = ("A", "B", "C", "D")

CATEGORIES: dict[str, tuple[str, ...]] = {
    "STEM": (
        "abstract_algebra", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics", "computer_security",
        "conceptual_physics", "electrical_engineering", "elementary_mathematics",
        "high_school_biology", "high_school_chemistry", "high_school_computer_science",
        "high_school_mathematics", "high_school_physics", "high_school_statistics",
        "machine_learning"),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history",
        "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
        "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
        "world_religions"),
    "social sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
        "sociology", "us_foreign_policy"),
    "other": (
        "anatomy", "business_ethics", "clinical_knowledge", "college_medicine", "global_facts",
        "human_aging", "management", "marketing", "medical_genetics", "miscellaneous",
        "nutrition", "professional_accounting", "professional_medicine", "virology"),
}
SUBJECT_CATEGORY = {s: c for c, subjects in CATEGORIES.items() for s in subjects}
SUBJECTS = tuple(sorted(SUBJECT_CATEGORY))


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, str, str, str]
    answer: str  # "A".."D"


def mmlu_dir(data_dir: str | os.PathLike | None = None) -> Path:

    return Path(data_dir) if data_dir is not None else data.data_dir() / "mmlu"


def load_questions(subject: str, split: str = "test", data_dir: str | os.PathLike | None = None) -> list[Question]:
    """One subject's questions from <data_dir>/<split>/<subject>_<split>.csv (no header row;
    columns question, A, B, C, D, answer)."""
    path = mmlu_dir(data_dir) / split / f"{subject}_{split}.csv"
    if not path.is_file():
        raise ValueError(f"MMLU subject '{subject}': {path} does not exist")
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.reader(f)):
            if len(row) != 6 or row[5] not in LETTERS:
                raise ValueError(f"{path}, row {i + 1}: expected question, A, B, C, D, answer letter")
            out.append(Question(row[0], tuple(row[1:5]), row[5]))
    return out


def format_example(q: Question, with_answer: bool) -> str:
    text = q.question + "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))
    text += "\nAnswer:"
    return text + f" {q.answer}\n\n" if with_answer else text


def build_prompt(subject: str, shots: list[Question], q: Question) -> str:
    words = "".join(" " + w for w in subject.split("_"))
    header = f"The following are multiple choice questions (with answers) about {words}.\n\n"
    return header + "".join(format_example(s, True) for s in shots) + format_example(q, False)


def answer_tokens(encode) -> tuple[list[int], list[list[tuple[int, int]]]]:
    """How the answers " A".." D" are scored after a prompt ending in "Answer:".

    Returns (chain, letters): `chain` is the token ids appended to every prompt, and letters[i]
    the (offset, token id) pairs whose log-probabilities sum to the log-likelihood of answer i,
    offset 0 being the position after "Answer:" and offset j the position after chain[:j].

    Where " A".." D" are one token each (most BPE vocabularies), chain is empty and the answer
    is the letter token with the highest log-probability (equivalently logit) after "Answer:",
    as in the original. Where some answer is several tokens (a space, then the letter: small
    SentencePiece vocabularies), the log-likelihood of each answer's tokens is compared; this
    needs the multi-token answers to share their leading tokens (the chain), and raises
    ValueError otherwise.
    """
    base = encode("\nAnswer:")
    conts = []
    for letter in LETTERS:
        full = encode(f"\nAnswer: {letter}")
        if full[:len(base)] != base or len(full) == len(base):
            raise ValueError(f"the tokenizer merges 'Answer:' with ' {letter}'; MMLU scoring needs them apart")
        conts.append(full[len(base):])
    chain = max((c[:-1] for c in conts), key=len)
    if any(c[:-1] != chain[:len(c) - 1] for c in conts) or len({tuple(c) for c in conts}) != 4:
        raise ValueError(f"the tokenizer splits the answers ' A'..' D' as {conts}; MMLU scoring needs "
                         "them to differ in one final token after shared leading tokens")
    return chain, [list(enumerate(c)) for c in conts]


def _answer_scores(logprobs: torch.Tensor, letters: list[list[tuple[int, int]]]) -> torch.Tensor:
    """[n, len(chain) + 1, vocab] log-probabilities -> [n, 4] answer log-likelihoods."""
    return torch.stack([sum(logprobs[:, j, t] for j, t in pairs) for pairs in letters], dim=1)


@dataclass
class MmluResult:
    shots: int
    accuracy: float  # micro average over all questions
    correct: int
    questions: int
    subjects: list[dict]  # subject, category, questions, correct, accuracy
    categories: dict[str, dict]  # category -> questions, correct, accuracy
    seconds: float
    shots_dropped: int  # prompts that lost shots to fit the context
    cut: int  # 0-shot prompts cut from the left to fit
    scoring: str
    # per question: subject, index, answer, prediction, shots, scores (the four answers' log-likelihoods)
    predictions: list[dict] = field(default_factory=list, repr=False)

    def table(self) -> list[dict]:
        """Per-subject rows, then one per category and "all"."""
        rows = [dict(r) for r in self.subjects]
        rows += [{"subject": f"[{c}]", "category": c, **v} for c, v in self.categories.items()]
        rows.append({"subject": "[all]", "category": "", "questions": self.questions,
                     "correct": self.correct, "accuracy": self.accuracy})
        return rows

    def to_markdown(self) -> str:
        lines = ["| subject | category | questions | correct | accuracy |", "| --- | --- | ---: | ---: | ---: |"]
        for r in self.table():
            lines.append(f"| {r['subject']} | {r['category']} | {r['questions']} | {r['correct']} | "
                         f"{100 * r['accuracy']:.1f}% |")
        return "\n".join(lines) + "\n"

    def to_csv(self, path: str | os.PathLike) -> None:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["subject", "category", "questions", "correct", "accuracy"])
            w.writeheader()
            w.writerows(self.table())

    def to_dict(self) -> dict:
        return asdict(self)


def _accuracy(correct: int, n: int) -> float:
    return correct / n if n else float("nan")


def _fit(ids_for_k, k: int, max_context: int, bos_id: int | None) -> tuple[list[int], int, bool]:
    """The prompt's ids with as many of its k shots as fit in max_context, the shots kept, and
    whether a 0-shot prompt had to be cut from the left."""
    ids = ids_for_k(k)
    while len(ids) > max_context and k > 0:
        k -= 1
        ids = ids_for_k(k)
    if len(ids) <= max_context:
        return ids, k, False
    head = [ids[0]] if bos_id is not None and ids[0] == bos_id else []
    return head + ids[len(ids) - max_context + len(head):], 0, True


def _common_prefix(rows: list[list[int]]) -> int:
    n = min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != rows[0][i] for r in rows):
            return i
    return n


def _torch_scores(model, prompts: list[list[int]], groups: list[list[int]], chain: list[int], letters,
                  batch_size: int, prefix_cache: bool, progress: bool) -> torch.Tensor:
    """Answer log-likelihoods [n, 4], batch by batch within each group (a subject's prompts).

    With prefix_cache (transformers models), the tokens all prompts of a group share (header and
    shots) run once and their KV cache is copied for every batch, which then runs only the
    questions. Rows (prompt + chain) are sorted by length and padded on the right: a causal
    model's logits at a position do not depend on later positions, so padding needs no mask.
    """
    import copy

    from .._progress import progress_bar


    device = next(model.parameters()).device
    keep = forward_accepts(model, "logits_to_keep")
    prefix_cache = prefix_cache and keep and forward_accepts(model, "past_key_values")
    k = len(chain) + 1  # positions read per prompt
    out = torch.empty(len(prompts), len(LETTERS))
    bar = progress_bar(total=len(prompts), desc="mmlu", unit="question", disable=not progress)
    with torch.no_grad():
        for group in groups:
            # At least one token of every prompt stays outside the cache, so logits are computed.
            shared = min(_common_prefix([prompts[i] for i in group]), min(len(prompts[i]) for i in group) - 1)
            cache = None
            if prefix_cache and shared >= 32:
                prefix = torch.tensor([prompts[group[0]][:shared]], device=device)
                cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1).past_key_values
            else:
                shared = 0
            order = sorted(group, key=lambda i: -len(prompts[i]))
            for b in range(0, len(order), batch_size):
                idx = order[b:b + batch_size]
                rows = [prompts[i][shared:] + chain for i in idx]
                ids = torch.zeros(len(rows), len(rows[0]), dtype=torch.long)
                for r, row in enumerate(rows):
                    ids[r, :len(row)] = torch.tensor(row)
                # read[r, j]: the position whose logits score offset j of row r
                read = torch.tensor([[len(row) - k + j for j in range(k)] for row in rows])
                if keep:
                    positions = torch.unique(read)  # sorted; the head runs only where answers are read
                    kwargs = {"logits_to_keep": positions.to(device), "use_cache": cache is not None}
                    if cache is not None:
                        past = copy.deepcopy(cache)
                        past.batch_repeat_interleave(len(rows))
                        kwargs["past_key_values"] = past
                    logits = model(input_ids=ids.to(device), **kwargs).logits
                    read = torch.searchsorted(positions, read)
                else:
                    logits = model(ids.to(device)).logits
                picked = logits[torch.arange(len(rows))[:, None], read.to(device)]
                out[idx] = _answer_scores(torch.log_softmax(picked.float(), -1), letters).cpu()
                bar.update(len(idx))
    bar.close()
    return out


def _llama_scores(llm, prompts: list[list[int]], chain: list[int], letters, progress: bool) -> torch.Tensor:
    """Answer log-likelihoods [n, 4] in llama.cpp. Consecutive prompts of a subject share their
    shots: the KV cache of the longest common prefix is kept, as llama-cpp-python's generate()
    does; the chain's tokens are then evaluated one at a time."""
    import llama_cpp
    import numpy as np
    from .._progress import progress_bar

    n_vocab = llm.n_vocab()

    def last_logits() -> torch.Tensor:
        ptr = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return torch.from_numpy(np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy())

    out = torch.empty(len(prompts), len(LETTERS))
    prev: list[int] = []
    for i, ids in enumerate(progress_bar(prompts, desc="mmlu", unit="question", disable=not progress)):
        common = 0
        for a, b in zip(prev, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # at least one token to evaluate for fresh logits
        llm.n_tokens = common  # eval() drops the cache beyond n_tokens
        llm.eval(ids[common:])
        rows = [last_logits()]
        for t in chain:
            llm.eval([t])
            rows.append(last_logits())
        out[i] = _answer_scores(torch.log_softmax(torch.stack(rows)[None].float(), -1), letters)[0]
        prev = ids + chain
    return out


def mmlu(model, tokenizer=None, *, shots: int = 5, subjects: list[str] | None = None,
         max_questions: int | None = None, batch_size: int = 8, max_context: int | None = None,
         prefix_cache: bool = True, data_dir: str | os.PathLike | None = None, n_gpu_layers: int = 0,
         n_threads: int | None = None, progress: bool = True) -> MmluResult:
    """MMLU accuracy, k-shot, as the original evaluate.py scores it (see the module docstring).

    Args:
        model: a torch causal LM, a GGUF file (run in llama.cpp through llama-cpp-python) or a
            llama_cpp.Llama (opened with enough n_ctx for the longest prompt).
        tokenizer: mpq tokenizer (encode(text, bos=True) -> ids). Required for torch models; for
            GGUF files None uses llama.cpp's own tokenizer, and a tokenizer given feeds llama.cpp
            exactly the ids a torch model gets.
        shots: examples from the dev split before each question (0..5).
        subjects: subset of the 57 subjects (default all, sorted).
        max_questions: the first N test questions of each subject (fast runs, CI).
        batch_size: prompts per forward pass (torch models).
        max_context: token limit of a prompt (default: the model's context).
        prefix_cache: torch (transformers) models: run the tokens a subject's prompts share (the
            header and shots) once per subject and reuse their KV cache; llama.cpp always reuses
            the cache of the previous prompt's common prefix.
        data_dir: the mmlu folder (default: <shared data>/mmlu).
        n_gpu_layers, n_threads: for a GGUF file opened here.
        progress: show a progress bar.

    Returns:
        MmluResult: per-subject and per-category accuracy, overall (micro) accuracy, run time,
        .table() / .to_markdown() / .to_csv(path).
    """

    start = time.perf_counter()
    if not 0 <= shots <= 5:
        raise ValueError(f"shots must be 0..5 (the dev split has 5 examples per subject), got {shots}")
    subjects = list(subjects) if subjects is not None else list(SUBJECTS)
    unknown = [s for s in subjects if s not in SUBJECT_CATEGORY]
    if unknown:
        raise ValueError(f"unknown MMLU subjects: {', '.join(unknown)}")

    llm = None
    if isinstance(model, torch.nn.Module):
        if tokenizer is None:
            raise ValueError("a torch model needs its tokenizer")
        context = int(model.config.max_position_embeddings) if hasattr(model, "config") else None
    elif is_gguf_path(model) or is_llama(model):
        import llama_cpp

        # The vocabulary alone first: prompts are tokenized before the context is sized to them.
        llm = model if is_llama(model) else open_gguf(model, n_ctx=512, vocab_only=True, logits_all=False)
        info = llm.metadata  # a vocab-only model reports n_ctx_train 0; the metadata has it
        context = int(info.get(f"{info.get('general.architecture')}.context_length", 0)) or None
    else:
        raise TypeError(f"expected a torch model, a .gguf path or a llama_cpp.Llama, got {type(model).__name__}")
    if tokenizer is not None:
        encode, bos_id = tokenizer.encode, tokenizer.bos_id
    else:
        vocab = llm
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(vocab.model)))
        bos_id = vocab.token_bos() if add_bos else None

        def encode(text, bos=True):  # special=False: question text never holds control tokens
            return vocab.tokenize(text.encode("utf-8"), add_bos=bos, special=False)
    max_context = max_context or context
    if max_context is None:
        raise ValueError("the model does not state its context; pass max_context=")

    chain, letters = answer_tokens(lambda t: encode(t, bos=False))
    prompts, meta = [], []
    dropped = cut = 0
    for subject in subjects:
        dev = load_questions(subject, "dev", data_dir)[:shots]
        test = load_questions(subject, "test", data_dir)[:max_questions]
        for i, q in enumerate(test):
            ids, k, was_cut = _fit(lambda k: encode(build_prompt(subject, dev[:k], q), bos=True),
                                   shots, max_context - len(chain), bos_id)
            dropped += k < shots
            cut += was_cut
            prompts.append(ids)
            meta.append((subject, i, q.answer, k))

    if llm is None:
        groups = [[i for i, m in enumerate(meta) if m[0] == subject] for subject in subjects]
        scores = _torch_scores(model, prompts, groups, chain, letters, batch_size, prefix_cache, progress)
    else:
        if not is_llama(model):
            llm = open_gguf(model, n_ctx=max(64, max(len(p) for p in prompts) + len(chain)), logits_all=False,
                            n_gpu_layers=n_gpu_layers, n_threads=n_threads or default_threads())
        scores = _llama_scores(llm, prompts, chain, letters, progress)

    predicted = scores.argmax(-1).tolist()
    per_subject: dict[str, list[int]] = {s: [0, 0] for s in subjects}
    predictions = []
    for (subject, i, answer, k), p, row in zip(meta, predicted, scores.tolist()):
        per_subject[subject][0] += 1
        per_subject[subject][1] += LETTERS[p] == answer
        predictions.append({"subject": subject, "index": i, "answer": answer, "prediction": LETTERS[p],
                            "shots": k, "scores": row})
    rows = [{"subject": s, "category": SUBJECT_CATEGORY[s], "questions": n, "correct": c,
             "accuracy": _accuracy(c, n)} for s, (n, c) in per_subject.items()]
    cats = {}
    for cat in CATEGORIES:
        n = sum(r["questions"] for r in rows if r["category"] == cat)
        c = sum(r["correct"] for r in rows if r["category"] == cat)
        if n:
            cats[cat] = {"questions": n, "correct": c, "accuracy": _accuracy(c, n)}
    total, correct = len(meta), sum(r["correct"] for r in rows)
    ids = [[t for _, t in pairs] for pairs in letters]
    how = (f"argmax of the log-probabilities of the tokens ' A'..' D' ({[i[0] for i in ids]}) after 'Answer:'"
           if not chain else f"argmax of the log-likelihoods of ' A'..' D' as tokens {ids}")
    return MmluResult(shots=shots, accuracy=_accuracy(correct, total), correct=correct, questions=total,
                      subjects=rows, categories=cats, seconds=time.perf_counter() - start,
                      shots_dropped=dropped, cut=cut,
                      scoring=how,
                      predictions=predictions)
