#!/usr/bin/env bash
# Builds mpq against the CUDA torch of a GPU machine and runs the C++ and Python tests there
# (the CUDA cases of the `device` fixture and of the GoogleTest suite run when a GPU is present).
# Used on the lent H200 (torch 2.11 + CUDA 13, no internet): GoogleTest comes as a source tree in
# .carry/googletest, Eigen as .carry/eigen3 (+ its CMake files), the shared data as .carry/data.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/share/eigen3/cmake/Eigen3Config.cmake ] && [ -d .carry/eigen3 ]; then
  cp -r .carry/eigen3 /usr/include/ && mkdir -p /usr/share/eigen3 && cp -r .carry/eigen3cmake /usr/share/eigen3/cmake
fi
# The system compiler: the image's default CXX (/opt/gcc/bin/g++) links libstdc++ statically,
# which puts a second C++ runtime next to torch's and crashes (see tests/python/test_import.py).
export CXX=/usr/bin/g++ CC=/usr/bin/gcc
export MPQ_GTEST_SOURCE_DIR=${MPQ_GTEST_SOURCE_DIR:-$PWD/.carry/googletest}
export MPQ_DATA_DIR=${MPQ_DATA_DIR:-$PWD/.carry/data}
OUT=${OUT:-/tmp}
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
( time python3 -m pip install --no-build-isolation --no-deps . ) > "$OUT/build.log" 2>&1; tail -4 "$OUT/build.log"
python3 -m pytest tests/python -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -8
./build/cpp-tests/mpq_tests 2>&1 | tee "$OUT/gtest.log" | grep -E "PASSED|FAILED"
for f in int8 int4_g32; do python3 -m mpq quantize --device cuda --format "$f" -q --report "$OUT/$f.json"; done
