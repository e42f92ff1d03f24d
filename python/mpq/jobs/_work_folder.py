"""The work folder of a mixed-precision run: what it has done so far, so that a run stopped at any
point (Ctrl-C, a kill, a crash) and started again with the same arguments goes on where it was and
ends with the same file as a run that was never stopped.

    inputs.json         what the state below was made from (model, token ids, options)
    calibration.bin     the calibration statistics (until the table is complete)
    imatrix.gguf        the importance the imatrix experts weighed by (the GGUF's quantize.imatrix.*)
    table/              the sensitivity table, one file per tensor as it is done (build_candidates)
    search-<key>.ckpt   the genetic search after each generation, one per search setting (budget,
                        search options), so that another budget reuses calibration and table

Every file is written under a temporary name and renamed when complete. A folder made from other
inputs is refused with the differences named: mixing two runs' state would make a file that
neither run measured.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from ._common import write_json


def tensor_digest(tensors) -> str:
    """sha256 of the bytes, shapes and dtypes of `tensors` (an iterable of (name, tensor))."""
    h = hashlib.sha256()
    for name, t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def model_digest(model: torch.nn.Module) -> str:
    """The model's identity as its weights (whatever file or folder they came from)."""
    return tensor_digest(model.state_dict().items())


def settings_key(settings: dict) -> str:
    """A short name for a dict of settings (JSON, keys sorted)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


class WorkFolder:
    """The state of one run's calibration and table, made from `inputs` (JSON-serialisable: the
    model's digest, the token ids' digests, every option that changes a number)."""

    def __init__(self, path: str | os.PathLike, inputs: dict):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"work folder {self.path} is a file, not a folder")
        self.path.mkdir(parents=True, exist_ok=True)
        manifest = self.path / "inputs.json"
        inputs = json.loads(json.dumps(inputs))  # tuples as lists, as they read back
        if manifest.exists():
            try:
                earlier = json.loads(manifest.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"work folder {self.path}: inputs.json is not JSON ({e}); "
                                 "delete the folder or choose another --work-dir") from None
            changed = sorted(k for k in set(earlier) | set(inputs) if earlier.get(k) != inputs.get(k))
            if changed:
                detail = "; ".join(f"{k}: {_short(earlier.get(k))} then, {_short(inputs.get(k))} now"
                                   for k in changed)
                raise ValueError(f"work folder {self.path} holds the state of a run with other inputs "
                                 f"({detail}); its calibration and table do not belong to this run: "
                                 "choose another --work-dir, or delete the folder to start afresh")
        else:
            write_json(manifest, inputs)

    @property
    def calibration(self) -> Path:
        return self.path / "calibration.bin"

    @property
    def imatrix(self) -> Path:
        return self.path / "imatrix.gguf"

    @property
    def table(self) -> Path:
        return self.path / "table"

    def table_done(self) -> bool:
        return (self.table / "table.json").exists()

    def search_checkpoint(self, settings: dict) -> Path:
        return self.path / f"search-{settings_key(settings)}.ckpt"


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
