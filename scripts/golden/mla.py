"""Golden fixture for deepblocks-mla: transformers' DeepseekV2Attention on tiny random configs.

Writes testdata/mla.safetensors with, per variant <v>:
  <v>.x [T, h]            the input hidden states (positions 0..T)
  <v>.out [T, h]          DeepseekV2Attention's output with a causal mask (eager attention)
  <v>.<checkpoint name>   every weight, named as in a checkpoint without the layer prefix:
                          q_proj.weight | q_a_proj.weight, q_a_layernorm.weight, q_b_proj.weight;
                          kv_a_proj_with_mqa.weight, kv_a_layernorm.weight, kv_b_proj.weight, o_proj.weight
  metadata <v>.config      the config fields the Rust side needs, as JSON
           <v>.scaling     the attention's softmax scale

Variants:
  lowrank_yarn  q_lora_rank 24, YaRN x4 from 16 positions (mscale = mscale_all_dim = 0.707),
                T = 40 > original_max_position_embeddings, so the interpolated frequencies matter
  full_rope     q_lora_rank None (a plain q_proj), plain RoPE, T = 21
  yarn_mscale   q_lora_rank 24, YaRN with mscale 1.0 and mscale_all_dim 0.707: a cos/sin factor != 1
"""

import json

import torch
from transformers import DeepseekV2Config
from transformers.models.deepseek_v2.modeling_deepseek_v2 import (
    DeepseekV2Attention,
    DeepseekV2RotaryEmbedding,
)

from common import save_golden, seed_everything

seed_everything(0)

H, N, C, D, R, V = 64, 4, 32, 16, 8, 12


def make(q_lora_rank, rope_parameters, max_pos):
    cfg = DeepseekV2Config(
        vocab_size=32,
        hidden_size=H,
        intermediate_size=64,
        moe_intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=N,
        num_key_value_heads=N,
        q_lora_rank=q_lora_rank,
        kv_lora_rank=C,
        qk_nope_head_dim=D,
        qk_rope_head_dim=R,
        v_head_dim=V,
        max_position_embeddings=max_pos,
        rope_parameters=rope_parameters,
        rms_norm_eps=1e-6,
        attention_bias=False,
    )
    cfg._attn_implementation = "eager"
    return cfg


variants = {
    "lowrank_yarn": (
        make(
            24,
            {
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 16,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "mscale": 0.707,
                "mscale_all_dim": 0.707,
            },
            64,
        ),
        40,
    ),
    "full_rope": (make(None, {"rope_type": "default", "rope_theta": 10000.0}, 64), 21),
    "yarn_mscale": (
        make(
            24,
            {
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 16,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "mscale": 1.0,
                "mscale_all_dim": 0.707,
            },
            64,
        ),
        33,
    ),
}

tensors, meta = {}, {}
for name, (cfg, T) in variants.items():
    attn = DeepseekV2Attention(cfg, layer_idx=0).eval()
    rotary = DeepseekV2RotaryEmbedding(cfg)
    with torch.no_grad():
        for pname, p in attn.named_parameters():
            if "layernorm" in pname:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
        x = torch.randn(1, T, H)
        pos = torch.arange(T)[None]
        freqs = rotary(x, pos)
        mask = torch.full((T, T), float("-inf")).triu(1)[None, None]
        out, _ = attn(x, attention_mask=mask, position_embeddings=freqs)
    tensors[f"{name}.x"] = x[0]
    tensors[f"{name}.out"] = out[0]
    for pname, p in attn.named_parameters():
        tensors[f"{name}.{pname}"] = p
    meta[f"{name}.scaling"] = repr(attn.scaling)
    rp = cfg.rope_parameters
    meta[f"{name}.config"] = json.dumps(
        {
            "hidden_size": H,
            "num_heads": N,
            "q_lora_rank": cfg.q_lora_rank,
            "kv_lora_rank": C,
            "qk_nope_head_dim": D,
            "qk_rope_head_dim": R,
            "v_head_dim": V,
            "rms_norm_eps": cfg.rms_norm_eps,
            "max_position_embeddings": cfg.max_position_embeddings,
            "rope_parameters": dict(rp),
            "seq_len": T,
        }
    )
    print(name, "out std", float(out.std()), "scaling", attn.scaling)

save_golden("mla", tensors, meta)
