import pytest

import mpq
from mpq import _build_info


def test_version_and_paths():
    import os
    assert mpq.__version__ == _build_info.MPQ_VERSION
    assert os.path.isfile(os.path.join(mpq.cmake_prefix_path, "mpq", "mpqConfig.cmake"))
    assert os.path.isfile(os.path.join(mpq.include_dir, "mpq", "mpq.h"))


def test_torch_mismatch_says_what_to_do(monkeypatch):
    monkeypatch.setattr(_build_info, "TORCH_VERSION", "1.0.0+old")
    with pytest.raises(ImportError, match=r"compiled against torch 1\.0\.0\+old.*Rebuild mpq"):
        mpq._check_torch()
