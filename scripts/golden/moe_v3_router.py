"""Golden fixture for deepblocks-moe: transformers' DeepseekV3TopkRouter (sigmoid scores, noaux_tc,
norm_topk_prob, routed_scaling_factor 2.5) with a random e_score_correction_bias.

Writes testdata/moe_v3_router.safetensors; the tensors are described in moe_v2_group.py.
"""

import torch
from transformers import DeepseekV3Config
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3TopkRouter

from common import save_golden, seed_everything
from moe_v2_group import E, H, K, MARGIN, N_GROUP, T, TOPK_GROUP, kth_gap


def v3_router_fixture() -> None:
    scale = 2.5
    cfg = DeepseekV3Config(
        hidden_size=H,
        n_routed_experts=E,
        num_experts_per_tok=K,
        n_group=N_GROUP,
        topk_group=TOPK_GROUP,
        routed_scaling_factor=scale,
        norm_topk_prob=True,
    )
    router = DeepseekV3TopkRouter(cfg).eval()
    with torch.no_grad():
        router.weight.normal_(0.0, 0.3)
        router.e_score_correction_bias.copy_(0.2 * torch.randn(E))
    for attempt in range(100):
        # Redraw the inputs until no token's routing hangs on a near tie.
        x = torch.randn(T, H)
        with torch.no_grad():
            choice = router(x)[0].sigmoid() + router.e_score_correction_bias
            group = choice.view(T, N_GROUP, E // N_GROUP).topk(2, dim=-1).values.sum(dim=-1)
            kept = torch.zeros_like(group).scatter_(1, group.topk(TOPK_GROUP, dim=-1).indices, 1.0)
            eligible = choice.masked_fill(~kept.repeat_interleave(E // N_GROUP, dim=1).bool(), float("-inf"))
        if kth_gap(group, TOPK_GROUP).min() > MARGIN and kth_gap(eligible, K).min() > MARGIN:
            break
    else:
        raise AssertionError("no draw without near ties")
    print(f"moe_v3_router: inputs drawn {attempt + 1} time(s)")
    with torch.no_grad():
        logits, weights, ids = router(x)
        # The same routing without the correction bias, to show that the bias matters here.
        router_nobias = DeepseekV3TopkRouter(cfg).eval()
        router_nobias.weight.copy_(router.weight)
        _, _, unbiased_ids = router_nobias(x)
    differs = sum(set(a.tolist()) != set(b.tolist()) for a, b in zip(ids, unbiased_ids))
    assert differs >= T // 4, f"the correction bias changes only {differs} of {T} tokens"
    print(f"moe_v3_router: the correction bias changes the experts of {differs} of {T} tokens")
    save_golden(
        "moe_v3_router",
        {
            "x": x,
            "gate.weight": router.weight,
            "e_score_correction_bias": router.e_score_correction_bias,
            "router_logits": logits,
            "topk_ids": ids.to(torch.int64),
            "topk_weights": weights,
            "unbiased_ids": unbiased_ids.to(torch.int64),
        },
        {
            "t": T,
            "hidden_size": H,
            "n_routed_experts": E,
            "num_experts_per_tok": K,
            "n_group": N_GROUP,
            "topk_group": TOPK_GROUP,
            "topk_method": "noaux_tc",
            "routed_scaling_factor": scale,
            "norm_topk_prob": True,
            "scoring_func": "sigmoid",
        },
    )


seed_everything(2)
v3_router_fixture()
