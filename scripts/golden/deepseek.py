"""Golden checkpoints for deepblocks-deepseek: tiny random DeepseekV2ForCausalLM models saved with
`save_pretrained` (the hub layout), plus the logits transformers computes for a token sequence.

Writes testdata/deepseek/<variant>/ with config.json, model.safetensors (or the sharded index and
shards), and golden.safetensors holding:
  input_ids [T] (int64)   the tokens
  logits [T, V]           transformers' logits for every position (f32 compute)
  logits_bf16 [T, V]      (bf16 variant only) transformers' logits computed in bf16
metadata: max_routing_margin_violation = 0 (checked: no top-k decision is within MARGIN of a tie)

Variants (the issue's (a)-(d), plus a sharded copy):
  a_lowrank_group_yarn  q_lora_rank set, group_limited_greedy (4 groups, 2 kept), routed_scaling_factor
                        16, YaRN x4 from 16 positions, T = 40 tokens (past original_max_position_embeddings)
  b_fullq_greedy        q_lora_rank null, greedy, V2-Lite-like (routed_scaling_factor 1, dense first layer)
  c_plain_tied_allmoe   plain RoPE, tie_word_embeddings, first_k_dense_replace 0 (every layer MoE)
  d_bf16                variant a's shapes in bfloat16; `logits` are transformers run in f32 on the
                        bf16 weights (what deepblocks computes: bf16 weights, f32 activations), and
                        `logits_bf16` transformers run entirely in bf16
  e_sharded             variant b saved with a small max_shard_size: an index and several shards
  g_norm_topk           norm_topk_prob true (k = 2, routed_scaling_factor 4): the case where the
                        weighting rules differ. `logits` are transformers 5's (which ignores
                        norm_topk_prob: weights ρ·s), `logits_deepseek_rule` the same model with
                        DeepSeek's rule (weights s / Σs), by patching transformers' router
  h_dynamic_ntk         dynamic NTK RoPE (factor 2; the rope_parameters' original length 16 is
                        ignored, as transformers scales from max_position_embeddings), T = 40

Weights are random: std 0.08 for matrices and embeddings, norm weights 1 + 0.2·N(0, 1), so routing
and attention are not trivial. Each variant is re-seeded until every routing decision (the k-th vs
(k+1)-th allowed expert score, the kept vs next group score) clears MARGIN, so float rounding on
the Rust side cannot flip an expert choice and the 1e-4 logit comparison is meaningful.
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import DeepseekV2Config, DeepseekV2ForCausalLM
from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2TopkRouter

from common import TESTDATA, randomise, seed_everything

OUT = os.path.join(TESTDATA, "deepseek")
MARGIN = 1e-4

BASE = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=48,
    moe_intermediate_size=16,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=4,
    kv_lora_rank=16,
    qk_nope_head_dim=8,
    qk_rope_head_dim=8,
    v_head_dim=8,
    n_routed_experts=8,
    n_shared_experts=1,
    num_experts_per_tok=2,
    moe_layer_freq=1,
    first_k_dense_replace=1,
    rms_norm_eps=1e-6,
    max_position_embeddings=64,
    bos_token_id=0,
    eos_token_id=1,
    attention_bias=False,
    tie_word_embeddings=False,
)

YARN = dict(
    rope_type="yarn",
    rope_theta=10000.0,
    factor=4.0,
    original_max_position_embeddings=16,
    beta_fast=32.0,
    beta_slow=1.0,
    mscale=0.707,
    mscale_all_dim=0.707,
)

VARIANTS = {
    "a_lowrank_group_yarn": dict(
        q_lora_rank=16,
        topk_method="group_limited_greedy",
        n_group=4,
        topk_group=2,
        routed_scaling_factor=16.0,
        rope_parameters=YARN,
        seq_len=40,
        seed=1,
    ),
    "b_fullq_greedy": dict(
        q_lora_rank=None,
        topk_method="greedy",
        n_group=1,
        topk_group=1,
        routed_scaling_factor=1.0,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        seq_len=24,
        seed=2,
    ),
    "c_plain_tied_allmoe": dict(
        q_lora_rank=12,
        topk_method="greedy",
        n_group=1,
        topk_group=1,
        routed_scaling_factor=2.5,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        tie_word_embeddings=True,
        first_k_dense_replace=0,
        seq_len=20,
        seed=3,
    ),
    "d_bf16": dict(
        q_lora_rank=16,
        topk_method="group_limited_greedy",
        n_group=4,
        topk_group=2,
        routed_scaling_factor=16.0,
        rope_parameters=YARN,
        seq_len=24,
        seed=4,
        dtype="bf16",
    ),
    "g_norm_topk": dict(
        q_lora_rank=16,
        topk_method="group_limited_greedy",
        n_group=4,
        topk_group=2,
        norm_topk_prob=True,
        routed_scaling_factor=4.0,  # a power of two: undoing it below is exact
        rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        seq_len=16,
        seed=5,
        deepseek_rule=True,
    ),
    "h_dynamic_ntk": dict(
        q_lora_rank=16,
        topk_method="greedy",
        n_group=1,
        topk_group=1,
        routed_scaling_factor=1.0,
        rope_parameters=dict(
            rope_type="dynamic", rope_theta=10000.0, factor=2.0, original_max_position_embeddings=16
        ),
        seq_len=40,
        seed=6,
    ),
}


def deepseek_rule_logits(model, ids):
    """The logits with DeepSeek's weighting rule (modeling_deepseek.py of DeepSeek-V2: normalise the
    k weights when norm_topk_prob and k > 1, otherwise scale by routed_scaling_factor)."""
    original = DeepseekV2TopkRouter.forward

    def forward(self, hidden_states):
        router_logits, weights, indices = original(self, hidden_states)
        raw = weights / self.routed_scaling_factor
        if model.config.norm_topk_prob and self.top_k > 1:
            weights = raw / (raw.sum(dim=-1, keepdim=True) + 1e-20)
        return router_logits, weights, indices

    DeepseekV2TopkRouter.forward = forward
    try:
        with torch.no_grad():
            return model(ids[None]).logits[0].float()
    finally:
        DeepseekV2TopkRouter.forward = original


def routing_margin_violations(model, cfg, ids):
    """Runs the model once and counts routing decisions closer than MARGIN to a tie."""
    bad = []
    hooks = []
    k, e = cfg.num_experts_per_tok, cfg.n_routed_experts

    def hook(module, inputs, output):
        router_logits = output[0].float()
        scores = router_logits.softmax(dim=-1)
        for s in scores:
            allowed = s.clone()
            if module.topk_method == "group_limited_greedy":
                g = s.view(module.num_group, -1).max(dim=-1).values
                gs = g.sort(descending=True).values
                if gs[module.topk_group - 1] - gs[module.topk_group] < MARGIN:
                    bad.append(("group", float(gs[module.topk_group - 1] - gs[module.topk_group])))
                keep = g.topk(module.topk_group).indices
                mask = torch.zeros(module.num_group, dtype=torch.bool)
                mask[keep] = True
                allowed = s.view(module.num_group, -1).masked_fill(~mask[:, None], -1.0).view(-1)
            ss = allowed.sort(descending=True).values
            if k < e and ss[k - 1] - ss[k] < MARGIN:
                bad.append(("expert", float(ss[k - 1] - ss[k])))

    for layer in model.model.layers:
        gate = getattr(layer.mlp, "gate", None)
        if gate is not None:
            hooks.append(gate.register_forward_hook(hook))
    with torch.no_grad():
        model(ids[None])
    for h in hooks:
        h.remove()
    return bad


def build(name, spec):
    spec = dict(spec)
    seq_len = spec.pop("seq_len")
    seed = spec.pop("seed")
    dtype = spec.pop("dtype", "f32")
    deepseek_rule = spec.pop("deepseek_rule", False)
    for attempt in range(50):
        seed_everything(seed * 1000 + attempt)
        cfg = DeepseekV2Config(**{**BASE, **spec})
        cfg._attn_implementation = "eager"
        model = DeepseekV2ForCausalLM(cfg).eval()
        randomise(model)
        if dtype == "bf16":
            # Round the parameters (not the buffers: `model.to(bf16)` would also round the rotary
            # inv_freq) to bf16, so the f32 reference below runs on exactly the checkpoint's weights.
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(torch.bfloat16).to(torch.float32))
        ids = torch.randint(2, cfg.vocab_size, (seq_len,))
        bad = routing_margin_violations(model, cfg, ids)
        if not bad:
            break
        print(f"  {name}: seed attempt {attempt} has {len(bad)} near-ties, reseeding")
    else:
        raise SystemExit(f"{name}: no seed without near-ties")

    with torch.no_grad():
        logits = model(ids[None]).logits[0].float()
    tensors = {"input_ids": ids.to(torch.int64), "logits": logits}
    if deepseek_rule:
        tensors["logits_deepseek_rule"] = deepseek_rule_logits(model, ids)
        diff = float((tensors["logits_deepseek_rule"] - logits).abs().max())
        assert diff > 1e-2, f"the rules should differ here, max |diff| = {diff}"
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    if dtype == "bf16":
        # Save the bf16 checkpoint, then run it as a user would: from_pretrained in bf16.
        model.to(torch.bfloat16).save_pretrained(folder)
        model_bf16 = DeepseekV2ForCausalLM.from_pretrained(
            folder, dtype=torch.bfloat16, attn_implementation="eager"
        ).eval()
        with torch.no_grad():
            tensors["logits_bf16"] = model_bf16(ids[None]).logits[0].float()
        model = model_bf16
    else:
        model.save_pretrained(folder)
    meta = {"variant": name, "seq_len": str(seq_len), "routing_margin": str(MARGIN), "torch": torch.__version__}
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(folder, "golden.safetensors"), metadata=meta)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"wrote testdata/deepseek/{name} ({size} bytes), logits std {float(logits.std()):.3f}")
    return model, tensors


os.makedirs(OUT, exist_ok=True)
# `python3 deepseek.py g_norm_topk` rebuilds only the variants named (and the derived folders of
# those built); no argument rebuilds everything.
wanted = sys.argv[1:] or list(VARIANTS)
models = {name: build(name, spec) for name, spec in VARIANTS.items() if name in wanted}
if "b_fullq_greedy" not in models or "a_lowrank_group_yarn" not in models or "c_plain_tied_allmoe" not in models:
    sys.exit(0)

# e: variant b as a sharded checkpoint (index + shards), same golden logits.
model_b, tensors_b = models["b_fullq_greedy"]
folder = os.path.join(OUT, "e_sharded")
shutil.rmtree(folder, ignore_errors=True)
model_b.save_pretrained(folder, max_shard_size="40KB")
shutil.copy(os.path.join(OUT, "b_fullq_greedy", "golden.safetensors"), folder)
shards = [f for f in os.listdir(folder) if f.startswith("model-")]
assert os.path.exists(os.path.join(folder, "model.safetensors.index.json")) and len(shards) >= 2, shards
print(f"wrote testdata/deepseek/e_sharded ({len(shards)} shards)")

# a: rewrite config.json to the hub form (rope_theta + rope_scaling with "type"), as the released
# DeepSeek-V2 configs are, and check transformers reads it back to the same logits.
folder = os.path.join(OUT, "a_lowrank_group_yarn")
path = os.path.join(folder, "config.json")
cfg = json.load(open(path))
rp = cfg.pop("rope_parameters")
cfg["rope_theta"] = rp.pop("rope_theta")
rp["type"] = rp.pop("rope_type")
cfg["rope_scaling"] = rp
json.dump(cfg, open(path, "w"), indent=2, sort_keys=True)
reloaded = DeepseekV2ForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
_, tensors_a = models["a_lowrank_group_yarn"]
with torch.no_grad():
    again = reloaded(tensors_a["input_ids"][None]).logits[0].float()
assert torch.equal(again, tensors_a["logits"]), "hub-form config changed the model"
print("rewrote testdata/deepseek/a_lowrank_group_yarn/config.json in the hub form (rope_scaling)")

# f: variant c with the routed experts packed as transformers 5 holds them in memory
# (mlp.experts.gate_up_proj [E, 2i, h], mlp.experts.down_proj [E, h, i]), same golden logits.
model_c, _ = models["c_plain_tied_allmoe"]
folder = os.path.join(OUT, "f_packed_experts")
shutil.rmtree(folder, ignore_errors=True)
os.makedirs(folder)
state = {k: v.contiguous() for k, v in model_c.state_dict().items() if k != "lm_head.weight"}
assert any(k.endswith("mlp.experts.gate_up_proj") for k in state), sorted(state)[:10]
save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
shutil.copy(os.path.join(OUT, "c_plain_tied_allmoe", "config.json"), folder)
shutil.copy(os.path.join(OUT, "c_plain_tied_allmoe", "golden.safetensors"), folder)
print("wrote testdata/deepseek/f_packed_experts (packed experts)")
