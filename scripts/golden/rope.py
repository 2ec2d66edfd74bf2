"""Golden fixture for deepblocks-rope: transformers' rotary tables and rotations.

Writes testdata/rope.safetensors. Every table comes from transformers' own code path
(`DeepseekV2RotaryEmbedding`, i.e. `ROPE_INIT_FUNCTIONS[rope_type]` plus the forward pass that turns
positions into `freqs_cis = polar(1, position * inv_freq) * attention_scaling`), so the Rust side
is checked against the real thing, not against a re-derivation.

Per variant `<v>` (rotary dim r, positions P = `<v>.positions`):
  <v>.positions [P]         the positions (int64), many of them far beyond 4096
  <v>.inv_freq  [r/2]       the inverse frequencies after scaling
  <v>.cos, <v>.sin [P, r/2] real and imaginary parts of freqs_cis (attention factor included)
  metadata <v>.attention_factor  transformers' `attention_scaling` (multiplies cos and sin)
           <v>.config            the rope parameters, as JSON

Variants: default (plain RoPE), yarn (DeepSeek-V2's parameters), yarn_mscale (mscale 1,
mscale_all_dim 0.707: a cos/sin factor != 1), yarn_mscale_only (only mscale set: transformers
falls back to mscale(factor, 1)), yarn_notrunc (truncate false, fractional ramp bounds),
yarn_equal_betas (Kimi K2's: beta_fast = beta_slow = 1), yarn_factor1, linear, llama3 (r = 128), dynamic_init / dynamic_grown / dynamic_regrown /
dynamic_reset (one DeepseekV2RotaryEmbedding with rope_type dynamic, called with growing and
then shorter sequences).

Rotations (layout [t, n, r] on the Rust side; torch's [1, n, t, r] is transposed here):
  default.q [t, 4, r], default.k [t, 1, r] -> default.q_out, default.k_out   via apply_rotary_emb
  yarn.q, yarn.k -> yarn.q_out, yarn.k_out                                   (interleaved pairs)
  half.q [t, 4, r], half.k [t, 2, r] -> half.q_out, half.k_out               via Llama's
      apply_rotary_pos_emb (rotate_half), cos/sin from LlamaRotaryEmbedding at default.positions
  metadata yarn.softmax_scale: DeepseekV2Attention(config).scaling (qk_head_dim = 32 + 64)
           default.softmax_scale: the same without rope scaling
"""

import json

import torch
from transformers import DeepseekV2Config, LlamaConfig
from transformers.models.deepseek_v2.modeling_deepseek_v2 import (
    DeepseekV2Attention,
    DeepseekV2RotaryEmbedding,
    apply_rotary_emb,
)
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from common import save_golden, seed_everything

seed_everything(0)

R = 64  # DeepSeek-V2's qk_rope_head_dim
N_HEADS = 4
FAR = [0, 1, 2, 7, 100, 4095, 4096, 4097, 10_000, 65_535, 99_999, 100_000, 100_001, 131_072, 163_839]

tensors = {}
meta = {}


def deepseek_config(rope_parameters, max_position_embeddings=163_840, r=R):
    return DeepseekV2Config(
        vocab_size=32,
        hidden_size=64,
        intermediate_size=64,
        moe_intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=N_HEADS,
        num_key_value_heads=N_HEADS,
        q_lora_rank=None,
        kv_lora_rank=16,
        qk_nope_head_dim=32,
        qk_rope_head_dim=r,
        v_head_dim=32,
        max_position_embeddings=max_position_embeddings,
        rope_parameters=dict(rope_parameters),
    )


def record(name, rotary, positions, params):
    pos = torch.tensor(positions, dtype=torch.int64)
    freqs_cis = rotary(torch.zeros(1), pos[None])[0]
    tensors[f"{name}.positions"] = pos
    tensors[f"{name}.inv_freq"] = rotary.inv_freq.clone()
    tensors[f"{name}.cos"] = freqs_cis.real.contiguous()
    tensors[f"{name}.sin"] = freqs_cis.imag.contiguous()
    meta[f"{name}.attention_factor"] = repr(float(rotary.attention_scaling))
    meta[f"{name}.config"] = json.dumps(params)
    return freqs_cis


def table(name, params, positions=FAR, max_position_embeddings=163_840, r=R):
    config = deepseek_config(params, max_position_embeddings, r)
    rotary = DeepseekV2RotaryEmbedding(config)
    return config, record(name, rotary, positions, params)


def rotations(name, config, freqs_cis):
    t = freqs_cis.shape[0]
    q = torch.randn(1, N_HEADS, t, R)
    k = torch.randn(1, 1, t, R) * 3.0
    q_out, k_out = apply_rotary_emb(q, k, freqs_cis[None])
    tensors[f"{name}.q"] = q[0].transpose(0, 1)
    tensors[f"{name}.k"] = k[0].transpose(0, 1)
    tensors[f"{name}.q_out"] = q_out[0].transpose(0, 1)
    tensors[f"{name}.k_out"] = k_out[0].transpose(0, 1)
    meta[f"{name}.softmax_scale"] = repr(float(DeepseekV2Attention(config, 0).scaling))


DEEPSEEK_YARN = {
    "rope_type": "yarn",
    "rope_theta": 10000.0,
    "factor": 40.0,
    "original_max_position_embeddings": 4096,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 0.707,
    "mscale_all_dim": 0.707,
}

with torch.no_grad():
    config, fc = table("default", {"rope_type": "default", "rope_theta": 10000.0})
    rotations("default", config, fc)
    config, fc = table("yarn", DEEPSEEK_YARN)
    rotations("yarn", config, fc)

    table("yarn_mscale", {**DEEPSEEK_YARN, "mscale": 1.0})
    only = {k: v for k, v in DEEPSEEK_YARN.items() if k != "mscale_all_dim"}
    table("yarn_mscale_only", only)
    table(
        "yarn_notrunc",
        {
            "rope_type": "yarn",
            "rope_theta": 10000.0,
            "factor": 16.0,
            "original_max_position_embeddings": 2048,
            "beta_fast": 24,
            "beta_slow": 2,
            "truncate": False,
        },
        max_position_embeddings=32_768,
        positions=[0, 1, 2, 7, 100, 2047, 2048, 10_000, 32_767],
    )
    # Kimi K2's YaRN: beta_fast = beta_slow = 1 (one correction dimension before rounding).
    table(
        "yarn_equal_betas",
        {
            "rope_type": "yarn",
            "rope_theta": 50000.0,
            "factor": 64.0,
            "original_max_position_embeddings": 4096,
            "beta_fast": 1.0,
            "beta_slow": 1.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
        max_position_embeddings=262_144,
        positions=[0, 1, 2, 7, 100, 4095, 4096, 65_535, 100_000, 262_143],
    )
    table("yarn_factor1", {**DEEPSEEK_YARN, "factor": 1.0}, max_position_embeddings=4096,
          positions=[0, 1, 2, 7, 100, 1000, 4095])
    table("linear", {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
          max_position_embeddings=16_384, positions=[0, 1, 2, 7, 100, 4095, 16_383])
    table(
        "llama3",
        {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        max_position_embeddings=131_072,
        positions=[0, 1, 2, 7, 100, 8191, 8192, 100_000, 131_071],
        r=128,
    )

    # Dynamic NTK: the table depends on the sequence length seen so far. transformers'
    # max_position_embeddings (4096 here) is the original length; it grows past it.
    dyn = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.7}
    dconfig = deepseek_config(dyn, max_position_embeddings=4096)
    drot = DeepseekV2RotaryEmbedding(dconfig)
    record("dynamic_init", drot, [0, 1, 7, 100, 4095], dyn)
    record("dynamic_grown", drot, [0, 1, 7, 100, 4095, 9000], dyn)  # seq_len 9001
    record("dynamic_regrown", drot, [5, 6000], dyn)  # 6001 < 9001: keeps the 9001 table
    record("dynamic_reset", drot, [0, 1, 7, 100], dyn)  # shorter than 4096: back to the original
    meta["dynamic.original"] = "4096"

    # Half-split layout (rotate_half), the Llama/NeoX convention, on the same positions.
    lconfig = LlamaConfig(
        hidden_size=N_HEADS * R,
        num_attention_heads=N_HEADS,
        num_key_value_heads=2,
        head_dim=R,
        max_position_embeddings=163_840,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    )
    lrot = LlamaRotaryEmbedding(lconfig)
    pos = torch.tensor(FAR, dtype=torch.int64)[None]
    q = torch.randn(1, N_HEADS, len(FAR), R)
    k = torch.randn(1, 2, len(FAR), R) * 3.0
    cos, sin = lrot(q, pos)
    q_out, k_out = apply_rotary_pos_emb(q, k, cos, sin)
    tensors["half.positions"] = pos[0]
    tensors["half.q"] = q[0].transpose(0, 1)
    tensors["half.k"] = k[0].transpose(0, 1)
    tensors["half.q_out"] = q_out[0].transpose(0, 1)
    tensors["half.k_out"] = k_out[0].transpose(0, 1)

save_golden("rope", tensors, meta)
