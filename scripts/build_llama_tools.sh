#!/usr/bin/env bash
# Builds llama.cpp's own command-line tools (llama-quantize, llama-imatrix, llama-perplexity,
# llama-bench) from the llama.cpp source that the llama-cpp-python package ships in its source
# distribution, linked against the very shared libraries llama-cpp-python installed (libllama,
# libggml, libggml-cpu): the tools and mpq's llama_cpp calls then run the same compiled kernels,
# so a comparison between them differs only where their computations differ, never by which
# instruction set each build happened to pick. Output: build/llama-tools/bin. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=build/llama-tools
LIB=$($PY -c "import llama_cpp, os; print(os.path.join(os.path.dirname(llama_cpp.__file__), 'lib'))")
TOOLS="llama-quantize llama-imatrix llama-perplexity llama-bench"
built_for="$LIB $($PY -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")"
if [ -f "$OUT/bin/built-for" ] && [ "$(cat "$OUT/bin/built-for")" = "$built_for" ]; then
  exit 0
fi
version=$($PY -c "import importlib.metadata as m; print(m.version('llama_cpp_python'))")
mkdir -p "$OUT/src"
if [ ! -d "$OUT/src/llama_cpp_python-$version" ]; then
  $PY -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$OUT/src"
  tar -xzf "$OUT/src/llama_cpp_python-$version.tar.gz" -C "$OUT/src"
fi
src="$OUT/src/llama_cpp_python-$version/vendor/llama.cpp"
# Shared libraries, and a run path into llama-cpp-python's lib folder first: the tools load its
# libllama/libggml* (same sonames, same source) instead of the ones built here; their own
# libraries (libllama-common, libllama-*-impl) sit beside them ($ORIGIN).
cmake -S "$src" -B "$OUT/cmake" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON \
  -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH="$LIB;\$ORIGIN" \
  -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=OFF > "$OUT/configure.log"
cmake --build "$OUT/cmake" --target $TOOLS -j "$(nproc)" > "$OUT/build.log"
rm -rf "$OUT/bin"
mkdir -p "$OUT/bin"
cp -P "$OUT"/cmake/bin/libllama-common.so* "$OUT"/cmake/bin/libllama-*-impl.so "$OUT/bin/" 2>/dev/null || true
for t in $TOOLS; do
  cp "$OUT/cmake/bin/$t" "$OUT/bin/"
  # Every library found, and libllama/libggml* from llama-cpp-python alone.
  libs=$(ldd "$OUT/bin/$t")
  if echo "$libs" | grep -F "not found" >&2 ||
     echo "$libs" | grep -E "lib(llama|ggml[a-z-]*)\.so" | grep -v -F "$LIB/" >&2; then
    echo "build_llama_tools: $t does not load llama.cpp's libraries from $LIB" >&2
    exit 1
  fi
done
echo "$built_for" > "$OUT/bin/built-for"
echo "llama.cpp tools $version on $LIB: $TOOLS"
