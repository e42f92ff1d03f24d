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
# The GPU machine has no llama-cpp-python/gguf peers: run the suites that need none of them.
python3 -m pytest -q -rs -p no:cacheprovider tests/python/test_{format,quantizer,calibration,ggml_device,model,llama2c,evaluate,cpp,import}.py \
  2>&1 | tee "$OUT/pytest.log" | tail -8
./build/cpp-tests/mpq_tests 2>&1 | tee "$OUT/gtest.log" | grep -E "PASSED|FAILED"
for f in int8 int4_g32; do
  python3 -m mpq quantize --model .carry/data/models/stories260K.bin --device cuda --format "$f" -q --report "$OUT/$f.json"
done
python3 - <<'PY'
import time, torch, mpq
x = torch.randn(4096, 4096)
for fmt in ("q4_k", "q6_k", "iq4_xs"):
    blocks = mpq.quantize_ggml(x, fmt).cuda()
    mpq.dequantize_ggml(blocks, fmt, 4096); torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20): mpq.dequantize_ggml(blocks, fmt, 4096)
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t) / 20 * 1e3
    same = torch.equal(mpq.dequantize_ggml(blocks, fmt, 4096).cpu(), mpq.dequantize_ggml(blocks.cpu(), fmt, 4096))
    print(f"cuda dequantize {fmt} 4096x4096: {ms:.3f} ms, bit-identical to CPU: {same}")
PY
