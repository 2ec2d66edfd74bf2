"""Shared helpers for the golden-fixture scripts in this folder.

Every script `scripts/golden/<name>.py` writes `testdata/<name>.safetensors` (or a folder
`testdata/<name>/` for whole checkpoints) and is deterministic: it seeds torch itself.
"""

import os
import random

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TESTDATA = os.path.join(ROOT, "testdata")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def save_golden(name: str, tensors: dict, metadata: dict | None = None) -> str:
    """Writes testdata/<name>.safetensors with contiguous CPU tensors and string metadata."""
    os.makedirs(TESTDATA, exist_ok=True)
    path = os.path.join(TESTDATA, f"{name}.safetensors")
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    meta["generator"] = f"scripts/golden/{name}.py"
    meta["torch"] = torch.__version__
    import transformers

    meta["transformers"] = transformers.__version__
    save_file(clean, path, metadata=meta)
    size = os.path.getsize(path)
    print(f"wrote {os.path.relpath(path, ROOT)} ({size} bytes, {len(clean)} tensors)")
    return path


def randomise(model, bias_std=None):
    """Random weights for a tiny golden model: matrices and embeddings 0.08·N(0, 1), norm weights
    1 + 0.2·N(0, 1), so routing and attention are not trivial; with `bias_std`, the routers'
    e_score_correction_bias buffers bias_std·N(0, 1), drawn after every parameter (left alone
    otherwise: transformers' DeepSeek-V2 has them too, unused, and the V2 fixtures were drawn
    without them)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p, dtype=torch.float32))
            else:
                p.copy_(0.08 * torch.randn_like(p, dtype=torch.float32))
        for name, b in model.named_buffers() if bias_std is not None else []:
            if name.endswith("e_score_correction_bias"):
                b.copy_(bias_std * torch.randn_like(b))
