#!/usr/bin/env bash
# The low-bit headline (bench/headline_lowbit.py) on the lent CUDA machine (16 cores, one H200,
# python 3.12 with torch, nvcc; no internet), in back-to-back calls on one warm machine:
#
#   bash bench/headline_gpu.sh start     # carry .carry/llama_src.tar.xz .carry/text .carry/q/part01.bin
#   bash bench/headline_gpu.sh chunk     # carry .carry/q/partNN.bin, NN = 02 ... 22
#   bash bench/headline_gpu.sh run       # assemble, check, start the headline; wait, bring back
#   bash bench/headline_gpu.sh wait      # wait more, bring back what is there
#
# start: builds mpq and llama.cpp (CUDA, sm_90, shared libraries, the same source as
# llama-cpp-python 0.3.36) in the background (setsid: they outlive the call), while the model's
# 22 chunks arrive. run: the headline in the background, then waits; every call brings back the
# rows scored so far, the plans, the imatrix and the logs ($OUT).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
S=/tmp/hl; mkdir -p $S/parts
LIMIT=${LIMIT:-570}
export CXX=/usr/bin/g++ CC=/usr/bin/gcc CUDAHOSTCXX=/usr/bin/g++ PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
say() { echo "[$(date +%T) +${SECONDS}s] $*" | tee -a $S/session.log; }
SHA=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046

bring_back() {
  cp $S/session.log $S/headline.log $OUT/ 2>/dev/null
  for f in rows.jsonl meta.json imatrix.gguf table.json; do cp $S/state/$f $OUT/ 2>/dev/null; done
  (cd $S/state 2>/dev/null && tar -czf $OUT/plans_logs.tgz plans *.log 2>/dev/null)
  tail -c 3000 $S/llama_build.log > $OUT/llama_build_tail.log 2>/dev/null
}

case "$1" in
start)
  nvidia-smi -L; nproc; free -g | head -2
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  cp .carry/q/part*.bin $S/parts/
  mkdir -p $S/text $S/llama/src && cp .carry/text/* $S/text/
  tar -xJf .carry/llama_src.tar.xz -C $S/llama/src
  rm -rf $S/src && mkdir -p $S/src && cp -r CMakeLists.txt pyproject.toml LICENSE README.md cmake cpp bindings python bench examples $S/src/
  setsid nohup bash bench/headline_gpu.sh build_llama > $S/llama_build.log 2>&1 < /dev/null &
  setsid nohup bash bench/headline_gpu.sh build_mpq > $S/mpq_build.log 2>&1 < /dev/null &
  sleep 2; say "builds started"; ls $S/parts
  ;;
build_llama)
  L=$S/llama
  cmake -S $L/src/vendor/llama.cpp -B $L/cmake -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DCMAKE_CUDA_HOST_COMPILER=/usr/bin/g++ \
    -DBUILD_SHARED_LIBS=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON || exit 1
  nice -n 5 cmake --build $L/cmake --target llama-perplexity llama-quantize -j 10 || exit 1
  mkdir -p $L/stage && cp -a $L/cmake/bin/* $L/stage/ && find $L/cmake -name "*.so*" -exec cp -a {} $L/stage/ \;
  mv $L/stage $L/bin && echo "llama.cpp built"
  ;;
build_mpq)
  cd $S/src && CMAKE_BUILD_PARALLEL_LEVEL=6 python3 -m pip install --no-build-isolation --no-deps . \
    && python3 -c "import mpq; print('mpq', mpq.__version__)" && touch $S/mpq_built
  ;;
chunk)
  cp .carry/q/part*.bin $S/parts/ && ls $S/parts | wc -l
  ;;
run)
  if [ ! -f $S/model.gguf ]; then
    cat $(ls $S/parts/part*.bin | sort) > $S/model.tmp && echo "$SHA  $S/model.tmp" | sha256sum -c - \
      && mv $S/model.tmp $S/model.gguf || { say "the model's chunks are wrong: $(ls $S/parts)"; exit 1; }
    rm -rf $S/parts
  fi
  while [ ! -f $S/mpq_built ]; do
    if ! pgrep -f build_mpq > /dev/null; then say "mpq build failed"; tail -30 $S/mpq_build.log; exit 1; fi
    sleep 5
  done
  say "mpq built; headline starts"
  setsid nohup python3 bench/headline_lowbit.py --state $S/state --device cuda --model $S/model.gguf \
    --llama-tools $S/llama/bin --text-dir $S/text --ngl 99 --threads 16 \
    --deadline $(( $(date +%s) + ${HEADLINE_SECONDS:-1000} )) ${HEADLINE_ARGS:-} > $S/headline.log 2>&1 < /dev/null &
  ;&
wait)
  while [ ! -f $S/state/done ] && [ $SECONDS -lt $LIMIT ]; do
    sleep 10
    if ! pgrep -f headline_lowbit > /dev/null; then say "headline ended"; break; fi
  done
  bring_back
  grep -v "^\[.*row " $S/headline.log | tail -25; grep -c '"tag"' $S/state/rows.jsonl 2>/dev/null
  [ -f $S/llama/bin/llama-perplexity ] || { echo "llama.cpp not built yet:"; tail -3 $S/llama_build.log; }
  ;;
esac
