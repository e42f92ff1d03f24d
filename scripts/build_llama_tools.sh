#!/usr/bin/env bash
# Builds llama.cpp's own command-line tools (llama-quantize, llama-imatrix, llama-perplexity,
# llama-bench) from the llama.cpp source that the llama-cpp-python package ships in its source
# distribution, so that tests and benchmarks compare mpq with the real tools of the same llama.cpp
# version as the llama-cpp-python library. Output: build/llama-tools/bin. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=build/llama-tools
if [ -x "$OUT/bin/llama-quantize" ] && [ -x "$OUT/bin/llama-imatrix" ] && [ -x "$OUT/bin/llama-perplexity" ] \
   && [ -x "$OUT/bin/llama-bench" ]; then
  exit 0
fi
version=$($PY -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
mkdir -p "$OUT/src"
if [ ! -d "$OUT/src/llama_cpp_python-$version" ]; then
  $PY -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$OUT/src"
  tar -xzf "$OUT/src/llama_cpp_python-$version.tar.gz" -C "$OUT/src"
fi
src="$OUT/src/llama_cpp_python-$version/vendor/llama.cpp"
cmake -S "$src" -B "$OUT/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON \
  -DBUILD_SHARED_LIBS=OFF > "$OUT/configure.log"
cmake --build "$OUT/cmake" --target llama-quantize llama-imatrix llama-perplexity llama-bench -j "$(nproc)" > "$OUT/build.log"
mkdir -p "$OUT/bin"
cp "$OUT"/cmake/bin/llama-{quantize,imatrix,perplexity,bench} "$OUT/bin/"
echo "llama.cpp tools $version: $(ls "$OUT/bin")"
