"""Writes DeepSeek-V2-Lite's real shapes with all its layers, random bf16 weights, one shard per layer.

    python scripts/make_full_lite.py [--out ../full-lite] [--layers 27]

The config is testdata/configs/deepseek-v2-lite.json as DeepSeek ships it; the tensor names and
shapes are the checkpoint's (per-expert matrices, `q_proj` without a query latent), derived from
the config here rather than from a transformers model, so nothing larger than one layer is ever in
memory: 15.7B parameters, about 31.4 GB on disk. Weights are N(0, 0.02) (norms 1), seeded per
tensor; only the shapes matter (speed and peak memory, docs/performance.md). Not committed.
"""

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
p = argparse.ArgumentParser()
p.add_argument("--out", default=os.path.join(ROOT, "..", "full-lite"))
p.add_argument("--layers", type=int, default=None, help="default: the config's 27")
args = p.parse_args()

src = os.path.join(ROOT, "testdata", "configs", "deepseek-v2-lite.json")
c = json.load(open(src))
if args.layers is not None:
    c["num_hidden_layers"] = args.layers
os.makedirs(args.out, exist_ok=True)
json.dump(c, open(os.path.join(args.out, "config.json"), "w"), indent=2)

h, heads = c["hidden_size"], c["num_attention_heads"]
nope, rope, v = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
rank = c["kv_lora_rank"]
assert c["q_lora_rank"] is None, "this script writes the q_proj layout of V2-Lite"


def attention(i):
    a = f"model.layers.{i}.self_attn."
    return {
        a + "q_proj.weight": (heads * (nope + rope), h),
        a + "kv_a_proj_with_mqa.weight": (rank + rope, h),
        a + "kv_a_layernorm.weight": (rank,),
        a + "kv_b_proj.weight": (heads * (nope + v), rank),
        a + "o_proj.weight": (h, heads * v),
    }


def mlp(prefix, width):
    return {
        prefix + "gate_proj.weight": (width, h),
        prefix + "up_proj.weight": (width, h),
        prefix + "down_proj.weight": (h, width),
    }


def layer(i):
    t = {
        f"model.layers.{i}.input_layernorm.weight": (h,),
        f"model.layers.{i}.post_attention_layernorm.weight": (h,),
    }
    t.update(attention(i))
    m = f"model.layers.{i}.mlp."
    if i < c["first_k_dense_replace"]:
        t.update(mlp(m, c["intermediate_size"]))
    else:
        w = c["moe_intermediate_size"]
        t[m + "gate.weight"] = (c["n_routed_experts"], h)
        for e in range(c["n_routed_experts"]):
            t.update(mlp(f"{m}experts.{e}.", w))
        t.update(mlp(m + "shared_experts.", w * c["n_shared_experts"]))
    return t


shards = [{"model.embed_tokens.weight": (c["vocab_size"], h)}]
shards += [layer(i) for i in range(c["num_hidden_layers"])]
shards.append({"model.norm.weight": (h,), "lm_head.weight": (c["vocab_size"], h)})

weight_map, total, seed = {}, 0, 0
for s, shapes in enumerate(shards):
    name = f"model-{s + 1:05d}-of-{len(shards):05d}.safetensors"
    tensors = {}
    for k, shape in shapes.items():
        if k.endswith("norm.weight"):
            tensors[k] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            g = torch.Generator().manual_seed(seed)
            tensors[k] = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
        seed += 1
        weight_map[k] = name
        total += tensors[k].numel()
    save_file(tensors, os.path.join(args.out, name), metadata={"format": "pt"})
    del tensors
    print(f"{name}: {len(shapes)} tensors, {total:,} parameters so far", flush=True)

index = {"metadata": {"total_size": 2 * total}, "weight_map": weight_map}
json.dump(index, open(os.path.join(args.out, "model.safetensors.index.json"), "w"), indent=1)
print(f"{total:,} parameters, {2 * total / 1e9:.2f} GB in bf16; wrote {os.path.abspath(args.out)}")
