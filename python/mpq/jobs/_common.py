"""What every job shares: the default texts of a model, the held-out split of one TinyStories
file, and writing a report so that a crash never leaves half a file."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from .. import data
from ..models import LoadedModel


def default_texts(loaded: LoadedModel) -> tuple[str, str]:
    """TinyStories for llama2.c models (trained on it), WikiText-2 (valid to calibrate, test to
    evaluate) for everything else."""
    d = data.data_dir() / "text"
    if loaded.source.endswith(".bin"):
        ts = str(d / "tinystories_valid.txt")
        return ts, ts
    return str(d / "wikitext2_raw_valid.txt"), str(d / "wikitext2_raw_test.txt")


@dataclass
class Texts:
    """Calibration and evaluation token ids. When one TinyStories file serves both, the first
    `stories` stories calibrate and the rest evaluate: never evaluate on calibration text."""

    calib_text: str
    eval_text: str
    calib_ids: torch.Tensor
    eval_ids: torch.Tensor
    shared_file: bool  # one TinyStories file split by stories


def load_texts(loaded: LoadedModel, calib_text: str | None, eval_text: str | None,
               stories: int = 100) -> Texts:
    default_calib, default_eval = default_texts(loaded)
    calib_text, eval_text = calib_text or default_calib, eval_text or default_eval
    shared = os.path.abspath(calib_text) == os.path.abspath(eval_text) and data.is_tinystories(calib_text)
    calib_ids = data.tokenize_file(loaded.tokenizer, calib_text, first=stories if shared else None)
    eval_ids = data.tokenize_file(loaded.tokenizer, eval_text, skip=stories if shared else 0)
    return Texts(calib_text, eval_text, calib_ids, eval_ids, shared)


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """Writes under a temporary name and renames it when complete; on any failure the temporary
    file is removed and `path` is left as it was."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
