"""Makes a transformers-4.x readable copy of an HF directory saved by transformers 5.

AutoGPTQ and AutoAWQ only run with transformers 4.x, which does not know two transformers-5
conventions in the saved files:
  * config.json: `rope_parameters: {rope_theta, rope_type}` -> 4.x wants top-level `rope_theta`
    (without it 4.x silently uses 10000 instead of SmolLM2's 100000); `dtype` -> `torch_dtype`.
  * tokenizer_config.json: `tokenizer_class: TokenizersBackend` -> `PreTrainedTokenizerFast`.
Weights and tokenizer.json are symlinked, so the numbers are identical.

    python3 make_tf4_model_dir.py SRC_DIR DST_DIR
"""
import json
import os
import sys

src, dst = (os.path.abspath(p) for p in sys.argv[1:3])
os.makedirs(dst, exist_ok=True)
for name in os.listdir(src):
    target = os.path.join(dst, name)
    if name in ("config.json", "tokenizer_config.json") or os.path.lexists(target):
        continue
    os.symlink(os.path.join(src, name), target)

cfg = json.load(open(os.path.join(src, "config.json")))
rope = cfg.pop("rope_parameters", None) or {}
if "rope_theta" in rope:
    cfg["rope_theta"] = rope["rope_theta"]
if rope.get("rope_type", "default") != "default":  # a scaled RoPE would need rope_scaling too
    raise SystemExit(f"rope_type {rope['rope_type']} is not handled")
cfg["rope_scaling"] = None
if "dtype" in cfg:
    cfg["torch_dtype"] = cfg.pop("dtype")
json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=2)

tcfg = json.load(open(os.path.join(src, "tokenizer_config.json")))
if tcfg.get("tokenizer_class") == "TokenizersBackend":
    tcfg["tokenizer_class"] = "PreTrainedTokenizerFast"
tcfg.pop("backend", None)
json.dump(tcfg, open(os.path.join(dst, "tokenizer_config.json"), "w"), indent=2)
print(f"{dst}: transformers-4 view of {src}")
