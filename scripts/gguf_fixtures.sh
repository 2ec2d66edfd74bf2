#!/usr/bin/env bash
# GGUF fixtures converted by llama.cpp's own convert_hf_to_gguf.py (through ../shared/tools/llamacpp,
# which builds llama.cpp outside the repository): the tiny golden checkpoints as llama.cpp users get
# them. Run from the repository root with LLAMACPP=DIR (where `llamacpp build DIR` put llama.cpp) and a
# Python with torch, transformers, safetensors and numpy first on PATH.
set -euo pipefail
LLAMACPP=${LLAMACPP:-/work/llamacpp}
TOOL=${TOOL:-../shared/tools/llamacpp}
mkdir -p testdata/gguf
# Random weights, no tokenizer: --no-vocab writes tokenizer model "none". The default outtype is
# bf16 for the matrices (norms and router gates stay f32).
"$TOOL" convert "$LLAMACPP" testdata/deepseek/a_lowrank_group_yarn testdata/gguf/a_lowrank_group_yarn.gguf --no-vocab
# The same file quantized by llama.cpp's llama-quantize: what deepblocks' recipes, written as GGUF by
# `examples/quantize.rs`, must equal tensor by tensor (crates/deepseek/tests/gguf.rs).
for q in Q8_0 Q4_0 Q4_K_M; do
  "$TOOL" quantize "$LLAMACPP" testdata/gguf/a_lowrank_group_yarn.gguf "testdata/gguf/a_lowrank_group_yarn.$q.gguf" "$q" >/dev/null
done
# DeepSeek-V3's routing (sigmoid, noaux_tc with exp_probs_b, groups): golden checkpoint
# v3_groups_bias_mtp, its config given the hub's `scoring_func` and `topk_method` keys, which
# transformers 5 does not write back and llama.cpp's converter reads (without them it writes no
# expert_gating_func, which llama.cpp then takes for softmax). The converter leaves the MTP layer out.
tmp=$(mktemp -d)
cp -r testdata/deepseek/v3_groups_bias_mtp/. "$tmp"
python3 - "$tmp/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(scoring_func="sigmoid", topk_method="noaux_tc")
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
"$TOOL" convert "$LLAMACPP" "$tmp" testdata/gguf/v3_groups_bias.gguf --no-vocab
rm -rf "$tmp"
