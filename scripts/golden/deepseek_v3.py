"""Golden checkpoints of the DeepSeek-V3 family for deepblocks-deepseek: tiny random
DeepseekV3ForCausalLM models saved with `save_pretrained`, plus the logits transformers 5 computes.

Writes testdata/deepseek/<variant>/ with config.json, model.safetensors and golden.safetensors:
  input_ids [T] (int64)   the tokens
  logits [T, V]           transformers' logits for every position (f32)

Variants:
  v3_groups_bias_mtp  deepseek_v3: q_lora_rank set, noaux_tc over 4 groups of 4 (2 kept), a random
                      e_score_correction_bias, norm_topk_prob with routed_scaling_factor 2.5, YaRN x4
                      from 16 positions (T = 40, past it), rope_interleave true, a dense first layer,
                      and one multi-token-prediction layer in the file (num_nextn_predict_layers 1:
                      tensors model.layers.3.*, which transformers ignores and so must we)
  v3_fp8_blocks       v3_groups_bias_mtp's shapes (no MTP layer) stored as DeepSeek-V3's FP8 checkpoints
                      are: every projection of attention, dense MLP, shared and routed experts (one
                      tensor per expert) as F8_E4M3 with a `weight_scale_inv` per 8 x 12 block (the
                      edges partial), embeddings, router gates, norms and lm_head unquantized, and
                      quantization_config naming the block; `logits` are transformers' on the
                      dequantized weights
  glm_flash_vdim      glm4_moe_lite (Glm4MoeLiteForCausalLM): v_head_dim 12 beside qk_nope_head_dim 8,
                      the layer schedule from mlp_layer_types (dense, sparse, sparse), noaux_tc over 2
                      groups (1 kept) with a correction bias, routed_scaling_factor 1.8, an MTP
                      layer in the file, and rms_norm_eps 0.02 (the latent norms keep 1e-6 in
                      transformers, as in every family: a large ε shows a model that does not)
  k2_halfsplit_k1     model_type kimi_k2 (config.json rewritten after saving; the weights run on
                      DeepseekV3ForCausalLM, as Kimi K2's do): full q_proj, one group, one expert per
                      token with norm_topk_prob (transformers normalises it to weight ρ),
                      rope_interleave false (rotate_half pairs), plain RoPE, every layer MoE

Weights are random (std 0.08; norms 1 + 0.2·N(0, 1); the correction bias 0.05·N(0, 1)). Each
variant is re-seeded until every routing decision clears MARGIN: the k-th against the (k+1)-th
allowed biased score, the kept group's top-two sum against the next group's.
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM, Glm4MoeLiteConfig, Glm4MoeLiteForCausalLM

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
    n_routed_experts=16,
    n_shared_experts=1,
    rms_norm_eps=1e-6,
    max_position_embeddings=64,
    bos_token_id=0,
    eos_token_id=1,
    attention_bias=False,
    tie_word_embeddings=False,
)

VARIANTS = {
    "v3_groups_bias_mtp": dict(
        q_lora_rank=16,
        n_group=4,
        topk_group=2,
        num_experts_per_tok=3,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
        first_k_dense_replace=1,
        rope_interleave=True,
        rope_parameters=dict(
            rope_type="yarn",
            rope_theta=10000.0,
            factor=4.0,
            original_max_position_embeddings=16,
            beta_fast=32.0,
            beta_slow=1.0,
            mscale=1.0,
            mscale_all_dim=1.0,
        ),
        num_nextn_predict_layers=1,
        seq_len=40,
        seed=11,
    ),
    "glm_flash_vdim": dict(
        arch="glm",
        q_lora_rank=16,
        v_head_dim=12,
        n_group=2,
        topk_group=1,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        routed_scaling_factor=1.8,
        mlp_layer_types=["dense", "sparse", "sparse"],
        # Large, so that a latent norm given it instead of transformers' fixed 1e-6 shows.
        rms_norm_eps=0.02,
        rope_interleave=True,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        num_nextn_predict_layers=1,
        seq_len=24,
        seed=14,
    ),
    "k2_halfsplit_k1": dict(
        q_lora_rank=None,
        n_group=1,
        topk_group=1,
        num_experts_per_tok=1,
        norm_topk_prob=True,
        routed_scaling_factor=1.5,
        first_k_dense_replace=0,
        rope_interleave=False,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0),
        num_nextn_predict_layers=0,
        seq_len=20,
        seed=12,
        model_type="kimi_k2",
    ),
}


def routing_margin_violations(model, cfg, ids):
    """Runs the model once and lists routing decisions closer than MARGIN to a tie, recomputing
    transformers' DeepseekV3TopkRouter selection from its logits."""
    bad = []
    hooks = []
    k, e = cfg.num_experts_per_tok, cfg.n_routed_experts

    def hook(module, inputs, output):
        scores = output[0].float().sigmoid()
        for s in scores:
            c = s + module.e_score_correction_bias
            groups = c.view(module.num_group, -1)
            g = groups.topk(2, dim=-1).values.sum(dim=-1)
            if module.num_group > module.topk_group:
                gs = g.sort(descending=True).values
                if gs[module.topk_group - 1] - gs[module.topk_group] < MARGIN:
                    bad.append(("group", float(gs[module.topk_group - 1] - gs[module.topk_group])))
            keep = g.topk(module.topk_group).indices
            mask = torch.zeros(module.num_group, dtype=torch.bool)
            mask[keep] = True
            allowed = groups.masked_fill(~mask[:, None], float("-inf")).view(-1)
            ss = allowed.sort(descending=True).values
            if k < e and torch.isfinite(ss[k]) and ss[k - 1] - ss[k] < MARGIN:
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


def add_mtp_layer(folder, cfg):
    """Appends one multi-token-prediction layer's tensors (DeepSeek-V3's names: a decoder layer
    plus enorm, hnorm, eh_proj and the shared head) as layer num_hidden_layers, as the released
    checkpoints store it."""
    path = os.path.join(folder, "model.safetensors")
    state = load_file(path)
    last = cfg.num_hidden_layers - 1
    mtp = cfg.num_hidden_layers
    h = cfg.hidden_size
    extra = {}
    for name, t in state.items():
        prefix = f"model.layers.{last}."
        if name.startswith(prefix):
            extra[f"model.layers.{mtp}." + name[len(prefix) :]] = 0.08 * torch.randn_like(t.float())
    extra[f"model.layers.{mtp}.enorm.weight"] = torch.ones(h)
    extra[f"model.layers.{mtp}.hnorm.weight"] = torch.ones(h)
    extra[f"model.layers.{mtp}.eh_proj.weight"] = 0.08 * torch.randn(h, 2 * h)
    extra[f"model.layers.{mtp}.shared_head.norm.weight"] = torch.ones(h)
    extra[f"model.layers.{mtp}.shared_head.head.weight"] = 0.08 * torch.randn(cfg.vocab_size, h)
    state.update(extra)
    save_file({k: v.contiguous() for k, v in state.items()}, path, metadata={"format": "pt"})
    return len(extra)


FP8_BLOCK = (8, 12)


def quantize_fp8(w, block):
    """DeepSeek-V3's block FP8: per block, scale_inv = amax / 448 (1 for an all-zero block),
    codes = w / scale_inv in float8_e4m3fn. Returns (codes, scale_inv, dequantized)."""
    bo, bi = block
    rows, cols = w.shape
    gr, gc = -(-rows // bo), -(-cols // bi)
    scale = torch.ones(gr, gc)
    for a in range(gr):
        for b in range(gc):
            amax = w[a * bo : (a + 1) * bo, b * bi : (b + 1) * bi].abs().max()
            if amax > 0:
                scale[a, b] = amax / 448.0
    full = scale.repeat_interleave(bo, 0)[:rows].repeat_interleave(bi, 1)[:, :cols]
    codes = (w / full).to(torch.float8_e4m3fn)
    return codes, scale, codes.to(torch.float32) * full


def fp8_checkpoint(name, spec):
    """A model of `spec` whose projections are stored in FP8 blocks, with transformers' logits on
    the dequantized weights."""
    spec = dict(spec)
    seq_len = spec.pop("seq_len")
    seed = spec.pop("seed")
    for attempt in range(50):
        seed_everything(seed * 1000 + attempt)
        cfg = DeepseekV3Config(**{**BASE, **spec})
        cfg._attn_implementation = "eager"
        model = DeepseekV3ForCausalLM(cfg).eval()
        randomise(model, bias_std=0.05)
        state = {}
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if pname.endswith("mlp.experts.gate_up_proj") or pname.endswith("mlp.experts.down_proj"):
                    for j in range(p.shape[0]):
                        base = pname.rsplit(".", 1)[0] + f".{j}"
                        if pname.endswith("gate_up_proj"):
                            # Stored per expert, as the hub checkpoints are: gate and up apart.
                            i = p.shape[1] // 2
                            for part, rows in (("gate_proj", slice(0, i)), ("up_proj", slice(i, 2 * i))):
                                codes, scale, deq = quantize_fp8(p[j, rows].float(), FP8_BLOCK)
                                p[j, rows].copy_(deq)
                                state[f"{base}.{part}.weight"] = codes
                                state[f"{base}.{part}.weight_scale_inv"] = scale
                        else:
                            codes, scale, deq = quantize_fp8(p[j].float(), FP8_BLOCK)
                            p[j].copy_(deq)
                            state[f"{base}.down_proj.weight"] = codes
                            state[f"{base}.down_proj.weight_scale_inv"] = scale
                elif pname.endswith("_proj.weight") and p.dim() == 2:
                    codes, scale, deq = quantize_fp8(p.float(), FP8_BLOCK)
                    p.copy_(deq)
                    state[pname] = codes
                    state[pname + "_scale_inv"] = scale
                else:
                    state[pname] = p.detach().clone()
            for bname, b in model.named_buffers():
                if bname.endswith("e_score_correction_bias"):
                    state[bname] = b.detach().clone()
        ids = torch.randint(2, cfg.vocab_size, (seq_len,))
        if not routing_margin_violations(model, cfg, ids):
            break
    else:
        raise SystemExit(f"{name}: no seed without near-ties")
    with torch.no_grad():
        logits = model(ids[None]).logits[0].float()
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    c = cfg.to_diff_dict()
    c["quantization_config"] = {
        "quant_method": "fp8",
        "fmt": "e4m3",
        "activation_scheme": "dynamic",
        "weight_block_size": list(FP8_BLOCK),
    }
    c.pop("_attn_implementation", None)
    json.dump(c, open(os.path.join(folder, "config.json"), "w"), indent=2, sort_keys=True)
    tensors = {"input_ids": ids.to(torch.int64), "logits": logits}
    meta = {"variant": name, "seq_len": str(seq_len), "fp8_block": str(FP8_BLOCK), "torch": torch.__version__}
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(folder, "golden.safetensors"), metadata=meta)
    n8 = sum(1 for v in state.values() if v.dtype == torch.float8_e4m3fn)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"wrote testdata/deepseek/{name} ({size} bytes, {n8} FP8 tensors), logits std {float(logits.std()):.3f}")


def build(name, spec):
    spec = dict(spec)
    seq_len = spec.pop("seq_len")
    seed = spec.pop("seed")
    model_type = spec.pop("model_type", None)
    config_class, model_class = (
        (Glm4MoeLiteConfig, Glm4MoeLiteForCausalLM) if spec.pop("arch", "v3") == "glm" else (DeepseekV3Config, DeepseekV3ForCausalLM)
    )
    for attempt in range(50):
        seed_everything(seed * 1000 + attempt)
        cfg = config_class(**{**BASE, **spec})
        cfg._attn_implementation = "eager"
        model = model_class(cfg).eval()
        randomise(model, bias_std=0.05)
        ids = torch.randint(2, cfg.vocab_size, (seq_len,))
        bad = routing_margin_violations(model, cfg, ids)
        if not bad:
            break
        print(f"  {name}: seed attempt {attempt} has {len(bad)} near-ties, reseeding")
    else:
        raise SystemExit(f"{name}: no seed without near-ties")

    with torch.no_grad():
        logits = model(ids[None]).logits[0].float()
    folder = os.path.join(OUT, name)
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder)
    if getattr(cfg, "num_nextn_predict_layers", 0):
        n = add_mtp_layer(folder, cfg)
        reloaded = model_class.from_pretrained(folder, attn_implementation="eager").eval()
        with torch.no_grad():
            again = reloaded(ids[None]).logits[0].float()
        assert torch.equal(again, logits), "the MTP tensors changed transformers' model"
        print(f"  {name}: added {n} MTP tensors, transformers ignores them")
    if model_type:
        path = os.path.join(folder, "config.json")
        c = json.load(open(path))
        c["model_type"] = model_type
        json.dump(c, open(path, "w"), indent=2, sort_keys=True)
    tensors = {"input_ids": ids.to(torch.int64), "logits": logits}
    meta = {"variant": name, "seq_len": str(seq_len), "routing_margin": str(MARGIN), "torch": torch.__version__}
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(folder, "golden.safetensors"), metadata=meta)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"wrote testdata/deepseek/{name} ({size} bytes), logits std {float(logits.std()):.3f}")


os.makedirs(OUT, exist_ok=True)
wanted = sys.argv[1:] or list(VARIANTS) + ["v3_fp8_blocks"]
for name, spec in VARIANTS.items():
    if name in wanted:
        build(name, spec)
if "v3_fp8_blocks" in wanted:
    fp8_spec = dict(VARIANTS["v3_groups_bias_mtp"], num_nextn_predict_layers=0, seq_len=24, seed=13)
    fp8_checkpoint("v3_fp8_blocks", fp8_spec)
