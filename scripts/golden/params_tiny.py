"""Tiny random DeepseekV2ForCausalLM checkpoints for deepblocks-params' header-sum test.

The parameter count deepblocks-params computes from config.json must equal the sum of the tensor
sizes in the safetensors header that `save_pretrained` writes. Two shapes of model cover the
optional parts of the architecture:

  testdata/params-tiny/        q_lora_rank set (q_a_proj/q_a_layernorm/q_b_proj), untied lm_head,
                               two dense layers first (first_k_dense_replace 2), grouped routing
  testdata/params-tiny-tied/   q_lora_rank null (plain q_proj), tie_word_embeddings (no lm_head
                               tensor in the file), two shared experts (one MLP of width 2i)

Each folder holds config.json and model.safetensors (bf16, under 100 KB). Weights are random
(std 0.08, seeded) — only the shapes matter to the count, but the checkpoint is a real one that
transformers loads. `save_pretrained` writes routed experts per expert, as the hub checkpoints
store them (`mlp.experts.{j}.gate_proj.weight`, ...); in memory transformers 5 keeps them packed
(`mlp.experts.gate_up_proj` [E, 2i, h], `mlp.experts.down_proj` [E, h, i]).
testdata/params-tiny/model-packed.safetensors is that in-memory state dict saved as is, so the
test also sees the packed layout: the count is the same either way.
"""

import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

from common import TESTDATA, seed_everything

# Biases (attention_bias, mlp_bias) are not part of the MLA family deepblocks runs: the config
# reader refuses them, so no fixture has them.
BASE = dict(
    vocab_size=64,
    hidden_size=24,
    intermediate_size=40,
    moe_intermediate_size=12,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    kv_lora_rank=16,
    qk_nope_head_dim=8,
    qk_rope_head_dim=4,
    v_head_dim=6,
    n_routed_experts=8,
    n_shared_experts=1,
    num_experts_per_tok=3,
    moe_layer_freq=1,
    routed_scaling_factor=2.0,
    max_position_embeddings=256,
    rope_parameters=dict(
        rope_type="yarn",
        rope_theta=10000.0,
        factor=4.0,
        original_max_position_embeddings=64,
        beta_fast=32.0,
        beta_slow=1.0,
        mscale=0.707,
        mscale_all_dim=0.707,
    ),
    bos_token_id=0,
    eos_token_id=1,
)

MODELS = {
    "params-tiny": dict(
        q_lora_rank=20,
        first_k_dense_replace=2,
        n_group=4,
        topk_group=2,
        topk_method="group_limited_greedy",
        tie_word_embeddings=False,
    ),
    "params-tiny-tied": dict(
        q_lora_rank=None,
        first_k_dense_replace=1,
        n_group=1,
        topk_group=1,
        topk_method="greedy",
        tie_word_embeddings=True,
        n_shared_experts=2,
    ),
}


def make(name: str, extra: dict, seed: int, packed: bool = False) -> None:
    seed_everything(seed)
    config = DeepseekV2Config(**{**BASE, **extra})
    model = DeepseekV2ForCausalLM(config).to(torch.bfloat16)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("layernorm.weight") or pname.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    out = os.path.join(TESTDATA, name)
    model.save_pretrained(out)
    counted = sum(p.numel() for p in model.parameters())  # tied parameters are yielded once
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        keys = sorted(f.keys())
        in_file = sum(_numel(f.get_slice(k).get_shape()) for k in keys)
    assert counted == in_file, (counted, in_file)
    os.remove(os.path.join(out, "generation_config.json"))  # not part of the fixture
    if packed:
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        assert any(k.endswith("mlp.experts.gate_up_proj") for k in state), sorted(state)
        assert sum(v.numel() for v in state.values()) == counted
        save_file(state, os.path.join(out, "model-packed.safetensors"))
    size = os.path.getsize(os.path.join(out, "model.safetensors"))
    print(f"wrote testdata/{name}/ ({size} bytes, {len(keys)} tensors, {counted} parameters)")


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


make("params-tiny", MODELS["params-tiny"], 0, packed=True)
make("params-tiny-tied", MODELS["params-tiny-tied"], 1)
