#!/usr/bin/env bash
# The experts-vs-peers matrix on one CUDA GPU (the lent H200: python 3.12, torch 2.11, transformers
# 5.17, no internet). Run from the repository root with .carry/ carried:
#   .carry/peer_wheels   llm-compressor 0.14.0.1 and the packages that machine lacks (cp312)
#   .carry/data          ../shared/data's text/ and models/
# and, for SmolLM2, its GGUF at $SMOLLM2_GGUF (mpq's default model, dequantized to float32 HF).
#
#   bash bench/peers/gpu_matrix.sh stories|smollm2-peers|smollm2-eval OUT_DIR
# (SmolLM2 in two steps, each inside one 10-minute call; the peers' results stay in /tmp/mpq_bench.)
#
# Every method gets the same calibration rows; bench/experts_vs_peers.py scores them all with one
# protocol (WikiText-2 / TinyStories windows of 512, every window) and writes OUT_DIR/<model>.json.
set -uo pipefail
which=$1; out=$2; mkdir -p "$out"
W=/tmp/mpq_bench; mkdir -p $W/runs
export MPQ_DATA_DIR=$PWD/.carry/data PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
if [ ! -d /tmp/peer_site/llmcompressor ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/peer_site .carry/peer_wheels/*.whl
fi
python3 -c "import mpq" 2>/dev/null || {
  CXX=/usr/bin/g++ CC=/usr/bin/gcc python3 -m pip install -q --no-build-isolation --no-deps . > "$out/build.log" 2>&1 || { tail -20 "$out/build.log"; exit 1; }
}

peer() {  # peer NAME ARGS...: llm-compressor via run_peer.py, on the GPU
  local name=$1; shift
  [ -f $W/runs/$name.json ] && return
  PYTHONPATH=/tmp/peer_site python3 bench/peers/run_peer.py --impl llmcompressor --device cuda \
    --model "$model" --calib "$calib" --out $W/runs/$name.safetensors --json $W/runs/$name.json "$@" \
    > "$out/$name.log" 2>&1 || echo "peer $name failed: $(grep -E 'Error|Exception|SystemExit' "$out/$name.log" | tail -1)"
}

if [ "$which" = stories ]; then
  # stories260K: 64-wide attention, 172-wide MLP, so per-channel weights (no group divides both).
  model=$W/stories260K; calib=$W/calib_stories.pt
  [ -f "$calib" ] || python3 - <<PY
import torch
from mpq import data
from mpq.model import load_model
m = load_model("$MPQ_DATA_DIR/models/stories260K.bin")
m.model.save_pretrained("$model")
stories = data.split_stories(data.read_text("$MPQ_DATA_DIR/text/tinystories_valid.txt"))[:100]
ids = [t for s in stories for t in m.tokenizer.encode(s, bos=True)]
torch.save(torch.tensor(ids[:64 * 256]).view(64, 256), "$calib")
PY
  peer lc_gptq_w4 --method gptq --bits 4 --group-size -1
  peer lc_gptq_w3 --method gptq --bits 3 --group-size -1
  peer lc_gptq_w3_static --method gptq --bits 3 --group-size -1 --act-order static
  peer lc_awq_w4 --method awq --bits 4 --group-size -1 --asym
  peer lc_awq_w3 --method awq --bits 3 --group-size -1 --asym
  peer lc_sq_w8a8 --method smoothquant --alpha 0.5
  R=$W/runs
  python3 bench/experts_vs_peers.py --device cuda --model "$model" --tokenizer "$MPQ_DATA_DIR/models/tok512.bin" \
    --text "$MPQ_DATA_DIR/text/tinystories_valid.txt" --calib "$calib" --windows 0 --window 256 --json "$out/stories.json" \
    --mpq rtn:int4_sym gptq:int4_sym rtn:int3_sym gptq:int3_sym gptq:int3_sym:act_order awq:int4 awq:int3 \
          smoothquant:int8_sym:w8a8 \
    --peer "llm-compressor GPTQ W4=$R/lc_gptq_w4.safetensors" "llm-compressor GPTQ W3=$R/lc_gptq_w3.safetensors" \
           "llm-compressor GPTQ W3 act-order=$R/lc_gptq_w3_static.safetensors" \
           "llm-compressor AWQ W4=$R/lc_awq_w4.safetensors" "llm-compressor AWQ W3=$R/lc_awq_w3.safetensors" \
           "llm-compressor SmoothQuant W8A8=$R/lc_sq_w8a8.safetensors:w8a8"
  exit
fi

# SmolLM2-135M-Instruct. llm-compressor refuses group 128 on its 576-wide inputs (576 = 4.5 x 128),
# so the peer rows use group 64; mpq also runs group 128 (its last group holds 64 columns).
model=$W/smollm2; calib=$W/calib_smollm2.pt
[ -f $model/config.json ] || python3 -c "from mpq.model import load_model; m = load_model('${SMOLLM2_GGUF:-}'); \
m.model.save_pretrained('$model'); m.tokenizer.tok.save_pretrained('$model')"
[ -f "$calib" ] || python3 bench/peers/make_calib.py --model $model --text "$MPQ_DATA_DIR/text/wikitext2_raw_valid.txt" \
  --n 128 --seq-len 1024 --out "$calib"
peer lc_gptq_w4g128 --method gptq --bits 4 --group-size 128
peer lc_gptq_w4g64 --method gptq --bits 4 --group-size 64
peer lc_gptq_w4g64_static --method gptq --bits 4 --group-size 64 --act-order static
peer lc_gptq_w3g64 --method gptq --bits 3 --group-size 64
peer lc_gptq_w3g64_static --method gptq --bits 3 --group-size 64 --act-order static
peer lc_awq_w4g64 --method awq --bits 4 --group-size 64 --asym
peer lc_awq_w3g64 --method awq --bits 3 --group-size 64 --asym
peer lc_sq_w8a8 --method smoothquant --alpha 0.5
[ "$which" = smollm2-peers ] && exit
R=$W/runs
python3 bench/experts_vs_peers.py --device cuda --model "$model" --calib "$calib" --windows 0 --json "$out/smollm2.json" \
  --mpq rtn:int4_g64_sym gptq:int4_g64_sym gptq:int4_g64_sym:act_order gptq:int3_g64_sym gptq:int3_g64_sym:act_order \
        awq:int4_g64 awq:int3_g64 smoothquant:int8_sym:w8a8 gptq:int4_g128_sym gptq:int3_g128_sym:act_order \
        kquant_imatrix:iq4_nl gptq:iq4_nl gptq:iq4_nl:act_order awq:iq4_nl \
  --peer "llm-compressor GPTQ W4 g128=$R/lc_gptq_w4g128.safetensors" \
         "llm-compressor GPTQ W4 g64=$R/lc_gptq_w4g64.safetensors" \
         "llm-compressor GPTQ W4 g64 act-order=$R/lc_gptq_w4g64_static.safetensors" \
         "llm-compressor GPTQ W3 g64=$R/lc_gptq_w3g64.safetensors" \
         "llm-compressor GPTQ W3 g64 act-order=$R/lc_gptq_w3g64_static.safetensors" \
         "llm-compressor AWQ W4 g64=$R/lc_awq_w4g64.safetensors" \
         "llm-compressor AWQ W3 g64=$R/lc_awq_w3g64.safetensors" \
         "llm-compressor SmoothQuant W8A8=$R/lc_sq_w8a8.safetensors:w8a8"
