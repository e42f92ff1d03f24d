#!/usr/bin/env bash
# Runs the peer comparison matrix on SmolLM2-135M, one run_peer.py process at a time (the
# timings share the machine's cores, so runs never overlap). A run whose .json exists is
# skipped; a failed run leaves its .log (the refusal or error is the result).
#
#   bash run_matrix.sh [OUT_DIR]      (default /work/bench_models/peer_runs)
# Env: MODEL (HF dir, transformers 5), MODEL_TF4 (its transformers-4 view), CALIB.
set -u
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/work/bench_models/peer_runs}
MODEL=${MODEL:-/work/bench_models/smollm2-135m}
MODEL_TF4=${MODEL_TF4:-/work/bench_models/smollm2-135m-tf4}
CALIB=${CALIB:-/work/bench_models/calib_wt2_32x512.pt}
mkdir -p "$out"

run() {  # run NAME VENV MODEL ARGS...
  local name=$1 venv=$2 model=$3; shift 3
  [ -f "$out/$name.json" ] && { echo "skip $name"; return; }
  echo "run  $name: $*"
  "$venv/bin/python" -u "$here/run_peer.py" --model "$model" --calib "$CALIB" \
    --out "$out/$name.safetensors" --json "$out/$name.json" "$@" > "$out/$name.log" 2>&1 \
    || echo "FAIL $name: $(grep -E '^[A-Za-z]*(Error|Exception|Exit)' "$out/$name.log" | tail -1)"
}

LC=/work/venv_peers; TF4=/work/venv_peers_tf4
# llm-compressor refuses group 128 on 576-wide layers: its GPTQ runs use group 64.
run lc_gptq_w4g128        $LC  $MODEL --impl llmcompressor --method gptq --bits 4 --group-size 128
run lc_gptq_w4g64         $LC  $MODEL --impl llmcompressor --method gptq --bits 4 --group-size 64
run lc_gptq_w4g64_static  $LC  $MODEL --impl llmcompressor --method gptq --bits 4 --group-size 64 --act-order static
run lc_gptq_w3g64         $LC  $MODEL --impl llmcompressor --method gptq --bits 3 --group-size 64
run lc_gptq_w3g64_static  $LC  $MODEL --impl llmcompressor --method gptq --bits 3 --group-size 64 --act-order static
run lc_awq_w4g64          $LC  $MODEL --impl llmcompressor --method awq --bits 4 --group-size 64 --asym
run lc_sq_w8a8_a05        $LC  $MODEL --impl llmcompressor --method smoothquant --alpha 0.5
run lc_sq_w8a8_a05_gptq   $LC  $MODEL --impl llmcompressor --method smoothquant --alpha 0.5 --w8-solver gptq
run gm_gptq_w4g128        $LC  $MODEL --impl gptqmodel --method gptq --bits 4 --group-size 128
run gm_gptq_w4g128_desc   $LC  $MODEL --impl gptqmodel --method gptq --bits 4 --group-size 128 --act-order desc
run gm_gptq_w3g128        $LC  $MODEL --impl gptqmodel --method gptq --bits 3 --group-size 128
run gm_gptq_w3g128_desc   $LC  $MODEL --impl gptqmodel --method gptq --bits 3 --group-size 128 --act-order desc
run gm_gptq_w4g128_gar    $LC  $MODEL --impl gptqmodel --method gptq --bits 4 --group-size 128 --act-order gar
run gm_gptq_w4g64         $LC  $MODEL --impl gptqmodel --method gptq --bits 4 --group-size 64
run gm_awq_w4g64          $LC  $MODEL --impl gptqmodel --method awq --bits 4 --group-size 64 --asym
run ag_gptq_w4g128_desc   $TF4 $MODEL_TF4 --impl autogptq --method gptq --bits 4 --group-size 128 --act-order desc
run ag_gptq_w3g128_desc   $TF4 $MODEL_TF4 --impl autogptq --method gptq --bits 3 --group-size 128 --act-order desc
run ag_gptq_w4g64         $TF4 $MODEL_TF4 --impl autogptq --method gptq --bits 4 --group-size 64
run ag_gptq_w3g64         $TF4 $MODEL_TF4 --impl autogptq --method gptq --bits 3 --group-size 64
run ag_gptq_w4g64_static  $TF4 $MODEL_TF4 --impl autogptq --method gptq --bits 4 --group-size 64 --act-order static
run aw_awq_w4g128         $TF4 $MODEL_TF4 --impl autoawq --method awq --bits 4 --group-size 128 --asym
run aw_awq_w4g64          $TF4 $MODEL_TF4 --impl autoawq --method awq --bits 4 --group-size 64 --asym
