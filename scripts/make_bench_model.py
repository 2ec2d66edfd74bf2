"""Writes the benchmark model: DeepSeek-V2-Lite's shapes cut to 4 layers, random bf16 weights.

    python scripts/make_bench_model.py [--out ../bench-model]

hidden 2048, 16 heads, q_proj (no query latent), kv_lora_rank 512, qk_nope 128, qk_rope 64, v 128,
a dense first layer of width 10944, then MoE layers of 64 experts of width 1408 (6 per token,
greedy) with 2 shared experts, vocab 102400, YaRN as V2-Lite: about 2.25B parameters, 4.5 GB in
bf16. Weights are N(0, 0.02) (norms 1), seeded; only the shapes matter for speed. The folder is
not committed (see docs/performance.md); the Rust `bench` example and scripts/torch_bench.py both
read it.
"""

import argparse
import json
import os

import torch
from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
p = argparse.ArgumentParser()
p.add_argument("--out", default=os.path.join(ROOT, "..", "bench-model"))
p.add_argument("--layers", type=int, default=4)
args = p.parse_args()

lite = json.load(open(os.path.join(ROOT, "testdata", "configs", "deepseek-v2-lite.json")))
lite["num_hidden_layers"] = args.layers
rope = lite.pop("rope_scaling")
rope["rope_type"] = rope.pop("type")
rope["rope_theta"] = lite.pop("rope_theta")
lite["rope_parameters"] = rope
for k in ("architectures", "model_type", "torch_dtype", "auto_map"):
    lite.pop(k, None)
config = DeepseekV2Config(**lite)

torch.manual_seed(0)
torch.set_default_dtype(torch.bfloat16)
with torch.no_grad():
    model = DeepseekV2ForCausalLM(config)
    for name, t in model.named_parameters():
        if "norm" in name:
            t.fill_(1.0)
        else:
            t.normal_(0.0, 0.02)
n = sum(t.numel() for t in model.parameters())
print(f"{n:,} parameters, {2 * n / 1e9:.2f} GB in bf16")
model.save_pretrained(args.out)
print(f"wrote {os.path.abspath(args.out)}")
