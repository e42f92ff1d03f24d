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


def test_libmpq_uses_the_shared_libstdcxx():
    """A compiler that links libstdc++ statically (seen: a wrapper g++ on a GPU image) puts a second
    copy of the C++ runtime into libmpq; formatting an error message then crashed inside
    std::ostream. libmpq must export no libstdc++ internals."""
    import os
    import shutil
    import subprocess

    if shutil.which("nm") is None:
        pytest.skip("needs binutils' nm")
    lib = os.path.join(os.path.dirname(mpq.__file__), "lib", "libmpq.so")
    symbols = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True,
                             check=True).stdout
    assert "_ZN3mpq12quantize_rtn" in symbols  # the table is readable: the check means something
    # std::ostream's number formatting and std::locale live in libstdc++.so, never in libmpq.
    assert "_ZNSo9_M_insert" not in symbols and "_ZNSt6locale" not in symbols
