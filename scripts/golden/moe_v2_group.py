"""Golden fixture for deepblocks-moe: transformers' DeepseekV2Moe with group-limited routing.

This script writes testdata/moe_v2_group.safetensors and holds the helpers its two siblings use:
moe_v2_greedy.py (testdata/moe_v2_greedy.safetensors) and moe_v3_router.py
(testdata/moe_v3_router.safetensors). The three fixtures (all tensors f32 unless noted; names follow
transformers 5's modules):

testdata/moe_v2_group.safetensors    DeepseekV2Moe, topk_method "group_limited_greedy",
                                     routed_scaling_factor 16 (DeepSeek-V2's setting), f32 weights
testdata/moe_v2_greedy.safetensors   DeepseekV2Moe, topk_method "greedy", routed_scaling_factor 1
                                     (DeepSeek-V2-Lite's setting), weights stored as bf16 and run in f32
  x [t, h]                                    input hidden states
  gate.weight [e, h]                          router weight
  experts.gate_up_proj [e, 2i, h]             transformers-5 packed experts (gate rows, then up rows)
  experts.down_proj [e, h, i]
  shared_experts.{gate,up,down}_proj.weight   the shared MLP, width i * n_shared_experts
  router_logits [t, e], topk_ids [t, k] (I64), topk_weights [t, k], out [t, h]
  greedy_ids [t, k] (I64, group fixture only)  plain top-k, to show the group limit changes routing
  metadata: the router and MLP configuration

testdata/moe_v3_router.safetensors   DeepseekV3TopkRouter (sigmoid, noaux_tc, norm_topk_prob,
                                     routed_scaling_factor 2.5) with a random e_score_correction_bias
  x [t, h], gate.weight [e, h], e_score_correction_bias [e], router_logits [t, e],
  topk_ids [t, k] (I64), topk_weights [t, k], unbiased_ids [t, k] (I64: selection without the bias)

torch.topk(sorted=False) leaves the order of the k ids unspecified, so the Rust tests compare the ids as
sets and match weights by id. The scripts redraw the inputs until no token's selection is decided by a
near tie (a gap under 1e-4 between the k-th and (k+1)-th candidate, or between the last kept and the first
dropped group), so the comparison cannot depend on tie-breaking or rounding. Each asserts that its
routing is not trivial: the group limit (or the correction bias) changes the experts of at least a
quarter of the tokens.
"""

import torch
from transformers import DeepseekV2Config
from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Moe

from common import save_golden, seed_everything

T, H, I, E, K = 32, 64, 16, 16, 4
N_GROUP, TOPK_GROUP, N_SHARED = 4, 2, 2
MARGIN = 1e-4


def kth_gap(values: torch.Tensor, k: int) -> torch.Tensor:
    """Per row: (k-th largest) - ((k+1)-th largest)."""
    top = values.topk(k + 1, dim=-1).values
    return top[:, k - 1] - top[:, k]


def init_moe(moe: DeepseekV2Moe, gate_std: float) -> None:
    with torch.no_grad():
        moe.gate.weight.normal_(0.0, gate_std)
        moe.experts.gate_up_proj.normal_(0.0, 0.08)
        moe.experts.down_proj.normal_(0.0, 0.08)
        for lin in (moe.shared_experts.gate_proj, moe.shared_experts.up_proj, moe.shared_experts.down_proj):
            lin.weight.normal_(0.0, 0.08)


def v2_fixture(name: str, method: str, scale: float, bf16_weights: bool) -> None:
    cfg = DeepseekV2Config(
        hidden_size=H,
        moe_intermediate_size=I,
        n_routed_experts=E,
        num_experts_per_tok=K,
        n_group=N_GROUP,
        topk_group=TOPK_GROUP,
        topk_method=method,
        routed_scaling_factor=scale,
        n_shared_experts=N_SHARED,
        hidden_act="silu",
        norm_topk_prob=False,
    )
    moe = DeepseekV2Moe(cfg).eval()
    init_moe(moe, gate_std=0.3)
    if bf16_weights:
        # The checkpoint is bf16; torch runs in f32 on the exactly widened values, as the Rust
        # kernels do (they widen bf16 in registers and accumulate in f32).
        with torch.no_grad():
            for p in moe.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))
    for attempt in range(100):
        # Redraw the inputs until no token's routing hangs on a near tie.
        x = torch.randn(T, H)
        with torch.no_grad():
            scores = moe.gate(x)[0].softmax(dim=-1)
            if method == "group_limited_greedy":
                group = scores.view(T, N_GROUP, E // N_GROUP).max(dim=-1).values
                kept = torch.zeros_like(group).scatter_(1, group.topk(TOPK_GROUP, dim=-1).indices, 1.0)
                eligible = scores.masked_fill(~kept.repeat_interleave(E // N_GROUP, dim=1).bool(), 0.0)
                ok = kth_gap(group, TOPK_GROUP).min() > MARGIN and kth_gap(eligible, K).min() > MARGIN
            else:
                ok = kth_gap(scores, K).min() > MARGIN
        if ok:
            break
    else:
        raise AssertionError("no draw without near ties")
    print(f"{name}: inputs drawn {attempt + 1} time(s)")
    with torch.no_grad():
        logits, weights, ids = moe.gate(x)
        out = moe(x)
        greedy_ids = logits.softmax(dim=-1).topk(K, dim=-1).indices
    tensors = {
        "x": x,
        "router_logits": logits,
        "topk_ids": ids.to(torch.int64),
        "topk_weights": weights,
        "out": out,
    }
    for key, value in moe.state_dict().items():
        tensors[key] = value.to(torch.bfloat16) if bf16_weights else value
    if method == "group_limited_greedy":
        differs = sum(
            set(a.tolist()) != set(b.tolist()) for a, b in zip(ids, greedy_ids)
        )
        assert differs >= T // 4, f"the group limit changes only {differs} of {T} tokens"
        print(f"{name}: the group limit changes the experts of {differs} of {T} tokens")
        tensors["greedy_ids"] = greedy_ids.to(torch.int64)
    save_golden(
        name,
        tensors,
        {
            "t": T,
            "hidden_size": H,
            "moe_intermediate_size": I,
            "n_routed_experts": E,
            "num_experts_per_tok": K,
            "n_group": N_GROUP,
            "topk_group": TOPK_GROUP,
            "topk_method": method,
            "routed_scaling_factor": scale,
            "n_shared_experts": N_SHARED,
            "norm_topk_prob": False,
            "scoring_func": "softmax",
        },
    )


if __name__ == "__main__":
    seed_everything(0)
    v2_fixture("moe_v2_group", "group_limited_greedy", 16.0, bf16_weights=False)
