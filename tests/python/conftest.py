import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _data_dir() -> Path:
    import mpq.data

    return mpq.data.data_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _data_dir()


def _devices():
    yield "cpu"
    yield pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                        reason="needs a CUDA GPU (none on this machine)"))
    mps = getattr(torch.backends, "mps", None)
    yield pytest.param("mps", marks=pytest.mark.skipif(not (mps and mps.is_available()),
                                                       reason="needs an Apple MPS device (none on this machine)"))


@pytest.fixture(params=list(_devices()))
def device(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def stories(data_dir):
    """stories260K and its tokenizer, loaded once."""
    import mpq.model

    return mpq.model.load_model(data_dir / "models" / "stories260K.bin",
                                tokenizer=data_dir / "models" / "tok512.bin")
