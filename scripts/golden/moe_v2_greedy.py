"""Golden fixture for deepblocks-moe: transformers' DeepseekV2Moe with greedy routing and
routed_scaling_factor 1 (DeepSeek-V2-Lite's setting), weights stored as bf16 and run in f32.

Writes testdata/moe_v2_greedy.safetensors; the tensors are described in moe_v2_group.py.
"""

from common import seed_everything
from moe_v2_group import v2_fixture

seed_everything(1)
v2_fixture("moe_v2_greedy", "greedy", 1.0, bf16_weights=True)
