"""Builds and runs the C++ side against the *installed* mpq package: the GoogleTest suite
(tests/cpp) and an external consumer project (tests/consumer) that find_package(mpq)s it."""
import os
import shutil
import subprocess
import sys

import pytest

import mpq

from conftest import REPO


def cmake_build(source, build, extra=()):
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = ["cmake", "-S", str(source), "-B", str(build), *generator,
                 "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_PREFIX_PATH={mpq.cmake_prefix_path}",
                 f"-DPython3_EXECUTABLE={sys.executable}", *extra]
    for cmd in (configure, ["cmake", "--build", str(build), "--parallel"]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"


def test_googletest_suite():
    build = REPO / "build" / "cpp-tests"
    extra = []
    if os.environ.get("MPQ_GTEST_SOURCE_DIR"):
        extra.append(f"-DGTEST_SOURCE_DIR={os.environ['MPQ_GTEST_SOURCE_DIR']}")
    cmake_build(REPO / "tests" / "cpp", build, extra)
    r = subprocess.run([str(build / "mpq_tests")], capture_output=True, text=True, timeout=600)
    print(r.stdout[-6000:])
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert "[  PASSED  ]" in r.stdout and "FAILED" not in r.stdout


def test_consumer_links_installed_library(tmp_path):
    build = REPO / "build" / "consumer"
    cmake_build(REPO / "tests" / "consumer", build)
    r = subprocess.run([str(build / "consumer")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "QuantizedTensor(format='int4_g32', shape=[256, 512]" in r.stdout
    assert "bad input is reported: unknown quantization format 'int9'" in r.stdout
    # It ran against the installed libmpq, not a build tree.
    ldd = subprocess.run(["ldd", str(build / "consumer")], capture_output=True, text=True).stdout
    libmpq = [l for l in ldd.splitlines() if "libmpq" in l]
    assert libmpq and os.path.dirname(mpq.__file__) in libmpq[0], ldd
