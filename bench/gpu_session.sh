#!/usr/bin/env bash
# The GPU measurements of docs/BENCHMARKS.md, on the lent CUDA machine (python 3.12, torch with
# CUDA, nvcc, no internet), in two calls of at most 10 minutes on one warm machine:
#
#   bash bench/gpu_session.sh 1    # carry .carry/{smol.part1,llama_src.tar.xz,peer_wheels,data}
#   bash bench/gpu_session.sh 2    # carry .carry/smol.part2
#
# Call 1: builds mpq (its CUDA kernel included) and, in the background, llama.cpp with CUDA from
# the source llama-cpp-python 0.3.36 ships (shared libraries + tools, so that llama_cpp's Python
# code runs on them through LLAMA_CPP_LIB_PATH); runs the CUDA tests; times GPTQ per layer against
# llm-compressor (bench/gptq_gpu.py) and profiles one layer; runs the search at Qwen3 scale
# (bench/search_scale.py). Call 2: SmolLM2-135M (its 98 MB GGUF travels in two parts, over the
# 64 MiB a call may carry): the headline search on the GPU (bench/mixed_precision.py) and
# `mpq compare` with llama.cpp on the GPU. Each step checks the time left and says what it skipped.
# Results: $OUT (the call's output folder).
set -uo pipefail
part=$1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
S=/tmp/mpqgpu; mkdir -p $S
LIMIT=${LIMIT:-570}  # seconds this call may use
left() { echo $((LIMIT - SECONDS)); }
say() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a "$OUT/session.log"; }
export CXX=/usr/bin/g++ CC=/usr/bin/gcc CUDAHOSTCXX=/usr/bin/g++ PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export MPQ_DATA_DIR=$S/data MPQ_LLAMA_TOOLS=$S/llama/bin LLAMA_CPP_LIB_PATH=$S/llama/bin
LLAMA=$S/llama

build_llama() {  # llama.cpp with CUDA: libllama + ggml as shared libraries, and the tools
  [ -x $LLAMA/bin/llama-bench ] && [ -f $LLAMA/bin/libllama.so ] && return 0
  mkdir -p $LLAMA/src
  [ -d $LLAMA/src/vendor ] || tar -xJf .carry/llama_src.tar.xz -C $LLAMA/src
  local gen=""; command -v ninja > /dev/null && gen="-G Ninja"
  [ -f $LLAMA/cmake/CMakeCache.txt ] || cmake -S $LLAMA/src/vendor/llama.cpp -B $LLAMA/cmake $gen \
    -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCMAKE_CUDA_HOST_COMPILER=/usr/bin/g++ -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON \
    > $OUT/llama_configure.log 2>&1 || { tail -20 $OUT/llama_configure.log; return 1; }
  nice -n 5 cmake --build $LLAMA/cmake --target llama llama-bench llama-perplexity llama-quantize llama-imatrix \
    -j "${1:-12}" > $OUT/llama_build.log 2>&1 || { tail -20 $OUT/llama_build.log; return 1; }
  mkdir -p $LLAMA/bin
  cp -a $LLAMA/cmake/bin/* $LLAMA/bin/ 2>/dev/null
  find $LLAMA/cmake -name "*.so*" -exec cp -a {} $LLAMA/bin/ \;
  ls $LLAMA/bin > $OUT/llama_bin.txt
}

build_mpq() {
  python3 -c "import mpq" 2>/dev/null && return 0
  say "building mpq"
  CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install --no-build-isolation --no-deps . > $OUT/mpq_build.log 2>&1 \
    || { tail -30 $OUT/mpq_build.log; return 1; }
  grep -h "mpq: CUDA kernels" build/*/CMakeFiles/CMakeConfigureLog.yaml build/*/CMakeCache.txt 2>/dev/null | head -2
  python3 -c "import mpq; from mpq import _build_info as b; print('mpq', mpq.__version__, 'CUDA kernels:', b.CUDA_KERNELS)"
}

llama_python() {  # llama_cpp's Python code (pure Python) from the same source, on PYTHONPATH
  [ -d $S/py/llama_cpp ] || { mkdir -p $S/py && cp -r $LLAMA/src/llama_cpp $S/py/; }
  [ -d $S/py/diskcache ] || python3 -m pip install -q --no-index --no-deps --target $S/py $S/wheels/diskcache-*.whl
}

gptq_bench() {  # GPTQ per layer against llm-compressor's, and where one layer's time goes
  say "GPTQ per layer vs llm-compressor"
  python3 -m pip install -q --no-index --no-deps --no-compile --target $S/peer_site $S/wheels/*.whl > /dev/null 2>&1
  PYTHONPATH=$S/peer_site timeout 150 python3 bench/gptq_gpu.py --device cuda --reps 9 2>&1 | tee $OUT/gptq_gpu.jsonl | tail -6
  say "GPTQ's inverse factor four ways"
  timeout 90 python3 bench/inverse_factor.py --device cuda 2>&1 | tee $OUT/inverse_factor.jsonl
  say "GPTQ profile (int4_g128): where each layer's time goes"
  timeout 90 python3 - > $OUT/gptq_profile.txt 2>&1 <<'PY'
import sys, torch, mpq
sys.path.insert(0, "bench")
from gptq_gpu import hessian
from torch.profiler import profile, ProfilerActivity
torch.backends.cuda.matmul.allow_tf32 = False
for name, (rows, cols) in {"attn_q": (4096, 2560), "ffn_gate/up": (9728, 2560),
                           "ffn_down": (2560, 9728)}.items():
    h = hessian(cols, 128 * 2048, torch.device("cuda"))
    w = (torch.randn(rows, cols) * 0.02).cuda()
    for _ in range(2):
        mpq.gptq_quantize(w, h, "int4_g128")
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        mpq.gptq_quantize(w, h, "int4_g128"); torch.cuda.synchronize()
    print("=====", name, rows, cols)
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14))
PY
  grep -E "=====|Self CUDA time total|gptq_block|potrf|trsm|gemm|Self CPU time total" $OUT/gptq_profile.txt | cut -c1-60,100-220 | head -40
}

if [ "$part" = gptq ]; then  # a third call (carry .carry/peer_wheels): GPTQ on CUDA only
  mkdir -p $S/wheels && cp .carry/peer_wheels/*.whl $S/wheels/ && cp -r .carry/data $S/
  build_mpq || exit 1
  timeout 120 python3 -m pytest -q -rs -p no:cacheprovider tests/python/test_import.py tests/python/test_experts.py \
    tests/python/test_sequential.py tests/python/test_quantizer.py -k "libstdcxx or gptq or device or cuda" 2>&1 \
    | tail -8 | tee $OUT/pytest.txt
  gptq_bench
  exit 0
fi

if [ "$part" = 1 ]; then
  nvidia-smi -L; nproc
  python3 -c "import torch, transformers; print('torch', torch.__version__, torch.version.cuda, 'transformers', transformers.__version__)"
  cp .carry/smol.part1 $S/ && cp -r .carry/data $S/ && cp -r .carry/peer_wheels $S/wheels
  ( build_llama 10; echo "llama.cpp build rc=$?" >> $OUT/session.log ) &
  LLAMA_PID=$!
  build_mpq || exit 1
  say "CUDA tests"
  timeout 240 python3 -m pytest -q -rs -p no:cacheprovider tests/python/test_import.py tests/python/test_format.py \
    "tests/python/test_experts.py" tests/python/test_sensitivity.py tests/python/test_sequential.py \
    -k "import or libstdcxx or register or gptq or device" 2>&1 | tail -15 | tee $OUT/pytest.txt
  gptq_bench
  for size in 0.6b 1.7b 4b; do
    need=$([ $size = 4b ] && echo 200 || echo 90)
    if [ "$(left)" -lt $need ]; then say "search scale $size: skipped ($(left) s left)"; continue; fi
    say "search scale $size"
    timeout $(( $(left) - 20 )) python3 bench/search_scale.py --size $size --device cuda 2>&1 | tail -3 | tee -a $S/search_scale.jsonl
  done
  say "waiting for llama.cpp ($(left) s left)"
  while kill -0 $LLAMA_PID 2>/dev/null && [ "$(left)" -gt 15 ]; do sleep 5; done
  tail -3 $OUT/llama_build.log; cat $OUT/session.log | tail -3
  cp $S/search_scale.jsonl $OUT/ 2>/dev/null
  exit 0
fi

# ---- call 2
cat $S/smol.part1 .carry/smol.part2 > $S/smollm2.gguf && sha256sum $S/smollm2.gguf
build_mpq || exit 1
say "llama.cpp build"
build_llama 16 || say "llama.cpp build failed"
llama_python
export PYTHONPATH=$S/py
python3 -c "import llama_cpp; print('llama_cpp', llama_cpp.__version__, llama_cpp.llama_supports_gpu_offload())"
if [ "$(left)" -gt 200 ]; then
  say "mpq compare on the GPU"
  timeout 250 python3 -m mpq compare --model $S/smollm2.gguf --device cuda --n-gpu-layers 99 \
    --mmlu-questions 2 --out-dir $S/compare -q 2>&1 | tail -25
  cp $S/compare/compare.* $S/compare/*.png $OUT/ 2>/dev/null
else
  say "mpq compare: skipped ($(left) s left)"
fi
say "headline search on the GPU"
timeout $(( $(left) - 10 )) python3 bench/mixed_precision.py --model $S/smollm2.gguf --device cuda \
  --eval-windows 24 --budgets 4.5 5.5 --json $OUT/headline_gpu.json 2>&1 | grep -v "it/s\]" | tail -22
if ! grep -q '"size": "4b"' $S/search_scale.jsonl 2>/dev/null && [ "$(left)" -gt 200 ]; then
  timeout $(( $(left) - 10 )) python3 bench/search_scale.py --size 4b --device cuda | tee -a $S/search_scale.jsonl
fi
cp $S/search_scale.jsonl $OUT/ 2>/dev/null
say "done"
