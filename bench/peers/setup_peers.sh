#!/usr/bin/env bash
# Sets up the peer libraries for run_peer.py on a CPU machine (idempotent; versions pinned).
#
#   /work/venv_peers      llm-compressor 0.14.0.1 (+ compressed-tensors 0.19.0) and GPTQModel 7.6.0,
#                         transformers 5.17.0 (llm-compressor 0.14.0.1 wants >=5.15,<=5.17)
#   /work/venv_peers_tf4  AutoGPTQ 0.7.1 and AutoAWQ 0.2.9, transformers 4.51.3 (AutoGPTQ needs 4.x:
#                         5.x removed transformers.modeling_utils.no_init_weights; AutoAWQ 0.2.9
#                         needs >=4.51 for its qwen3 import)
# Both use --system-site-packages so the system torch 2.13.0+cpu is shared; torch==2.13.0 is
# passed to every install so pip can never swap in a CUDA build.
# Also makes the model directories and the 32 x 512 calibration file, and the GPU wheel set.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
models=/work/bench_models
TORCH="torch==2.13.0"

if [ ! -x /work/venv_peers/bin/python ]; then python3 -m venv --system-site-packages /work/venv_peers; fi
# gptqmodel 7.7.0 needs torch>=2.14.1, so 7.6.0 (torch>=2.8, transformers>=5.14) is the newest
# that runs on torch 2.13; it pins numpy==2.2.6, which llm-compressor accepts.
/work/venv_peers/bin/pip install -q "$TORCH" "transformers==5.17.0" "llmcompressor==0.14.0.1" \
  "compressed-tensors==0.19.0" "gptqmodel==7.6.0" "numpy==2.2.6"

if [ ! -x /work/venv_peers_tf4/bin/python ]; then python3 -m venv --system-site-packages /work/venv_peers_tf4; fi
# datasets/peft pinned to versions that work with huggingface_hub 0.x (transformers 4.51's).
/work/venv_peers_tf4/bin/pip install -q "$TORCH" "transformers==4.51.3" "datasets==3.6.0" \
  "peft==0.13.2" "auto-gptq==0.7.1" "autoawq==0.2.9"
# AutoAWQ declares triton, but with triton importable its WQLinear_GEMM forward takes the
# Triton path even on CPU and fails (torch.cuda device context on a CPU tensor); without it,
# the torch dequantize fallback runs.
/work/venv_peers_tf4/bin/pip uninstall -q -y triton 2>/dev/null || true

# Model: SmolLM2-135M-Instruct from mpq's default GGUF, dequantized to float32 (mpq.model.load_model;
# mpq does not export load_model at the top level).
if [ ! -f $models/smollm2-135m/config.json ]; then
  python3 -c "from mpq.model import load_model; m = load_model(); \
m.model.save_pretrained('$models/smollm2-135m'); m.tokenizer.tok.save_pretrained('$models/smollm2-135m')"
fi
[ -f $models/smollm2-135m-tf4/config.json ] || python3 "$here/make_tf4_model_dir.py" $models/smollm2-135m $models/smollm2-135m-tf4
[ -f $models/calib_wt2_32x512.pt ] || python3 "$here/make_calib.py" --model $models/smollm2-135m \
  --n 32 --seq-len 512 --out $models/calib_wt2_32x512.pt

# Wheels for gpu_matrix.sh on the GPU machine (python 3.12, torch 2.11, transformers 5.17; it lacks
# these): llm-compressor's oneshot needs datasets, which needs dill and multiprocess.
w=$repo/.carry/peer_wheels
mkdir -p "$w"
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$w" \
  llmcompressor==0.14.0.1 compressed-tensors==0.19.0 loguru==0.7.3 pydantic==2.13.4 pydantic_core==2.46.4 \
  annotated-types==0.7.0 typing-inspection==0.4.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
echo "peers ready"
