"""Golden fixture for deepblocks-norm: transformers' DeepseekV2RMSNorm on f32 and bf16 inputs.

Writes testdata/rmsnorm.safetensors:
  x_f32 [t, h], weight_f32 [h], out_f32 [t, h]          f32 input, f32 weight
  x_bf16 [t, h], weight_bf16 [h], out_bf16 [t, h]       bf16 input, bf16 weight (the model in bf16)
  metadata: eps
"""

import torch
from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2RMSNorm

from common import save_golden, seed_everything

seed_everything(0)
t, h, eps = 7, 96, 1e-6

norm = DeepseekV2RMSNorm(h, eps=eps)
with torch.no_grad():
    # Weights away from 1 and inputs with varied scales per row, so the test could fail.
    norm.weight.copy_(1.0 + 0.5 * torch.randn(h))
    x = torch.randn(t, h) * torch.logspace(-2, 2, t).unsqueeze(1)
    out_f32 = norm(x)

    norm_bf16 = DeepseekV2RMSNorm(h, eps=eps).to(torch.bfloat16)
    norm_bf16.weight.copy_(norm.weight.to(torch.bfloat16))
    x_bf16 = x.to(torch.bfloat16)
    out_bf16 = norm_bf16(x_bf16)
    assert out_bf16.dtype == torch.bfloat16

save_golden(
    "rmsnorm",
    {
        "x_f32": x,
        "weight_f32": norm.weight,
        "out_f32": out_f32,
        "x_bf16": x_bf16,
        "weight_bf16": norm_bf16.weight,
        "out_bf16": out_bf16,
    },
    {"eps": eps},
)
