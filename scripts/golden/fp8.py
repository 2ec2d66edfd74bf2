"""Fixtures for FP8 E4M3 (`crates/core/src/quant/fp8.rs`), written with torch's float8_e4m3fn.

testdata/fp8.safetensors:
  values      f32 [256]   every code's value (code i at index i; NaN for 0x7f and 0xff)
  x           f32 [n]     inputs to f32 → e4m3: zeros, every code's value, the midpoints between
                          neighbouring codes and one f32 ulp either side (rounding ties), values
                          past 448 (torch saturates them to ±448), infinities, NaN,
                          tiny values, normals at several scales and random f32 bit patterns
  x_codes     u8 [n]      torch's `x.to(torch.float8_e4m3fn)`, as bytes
  For each block shape <B> (128x128, as DeepSeek-V3; 7x20, edge blocks and widths not a multiple of 16):
  w_<B>       f32 [r, c]  a matrix (trained-like normals, an outlier, an all-zero block)
  codes_<B>   u8 [r, c]   the block-absmax quantization: scale = amax / 448 (1 for an all-zero
                          block), code = e4m3(clamp(w / scale, ±448))
  scales_<B>  f32 [ceil(r / bo), ceil(c / bi)]
  deq_<B>     f32 [r, c]  code values times their block's scale, in f32

    python scripts/golden/fp8.py
"""

import numpy as np
import torch

from common import save_golden, seed_everything

seed_everything(0)
E4M3 = torch.float8_e4m3fn
MAX = 448.0


def to_codes(x):
    return x.to(E4M3).view(torch.uint8)


values = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(E4M3).to(torch.float32)

finite = values[~torch.isnan(values)].unique().sort().values  # ascending, −448 … 448
mid = (finite[1:].double() + finite[:-1].double()) / 2  # exact in f32 (one more mantissa bit)
mid = mid.to(torch.float32)
up = torch.nextafter(mid, torch.full_like(mid, float("inf")))
down = torch.nextafter(mid, torch.full_like(mid, -float("inf")))
special = torch.tensor(
    [0.0, -0.0, 448.0, 449.0, 463.99, 464.0, 464.01, 479.0, 480.0, 1e6, -464.0, -465.0,
     float("inf"), -float("inf"), float("nan"), 2.0**-9, 2.0**-10, 2.0**-11, 1e-30, -1e-30,
     2.0**-6, 2.0**-6 - 2.0**-10, 1.5 * 2.0**-9, 3.0 * 2.0**-10],
    dtype=torch.float32,
)
g = torch.Generator().manual_seed(0)
normals = torch.cat([torch.randn(4096, generator=g) * s for s in (1e-4, 0.02, 1.0, 100.0)])
bits = np.random.default_rng(0).integers(0, 2**32, size=20000, dtype=np.uint64).astype(np.uint32)
random_bits = torch.from_numpy(bits.view(np.float32).copy())
x = torch.cat([finite, mid, up, down, special, normals, random_bits]).to(torch.float32)

tensors = {"values": values, "x": x, "x_codes": to_codes(x)}


def quantize(w, bo, bi):
    r, c = w.shape
    gr, gc = -(-r // bo), -(-c // bi)
    pad = torch.zeros(gr * bo, gc * bi, dtype=torch.float32)
    pad[:r, :c] = w.abs()
    amax = pad.view(gr, bo, gc, bi).amax(dim=(1, 3))
    scales = torch.where(amax > 0, amax / MAX, torch.ones_like(amax))
    full = scales.repeat_interleave(bo, 0).repeat_interleave(bi, 1)[:r, :c]
    codes = to_codes((w / full).clamp(-MAX, MAX))
    deq = codes.view(E4M3).to(torch.float32) * full
    return codes, scales, deq


for (r, c), (bo, bi) in [((200, 150), (128, 128)), ((30, 50), (7, 20))]:
    w = torch.randn(r, c, generator=g) * 0.02
    w[5, 7] = 3.0  # an outlier sets its block's scale
    w[bo : 2 * bo, :bi] = 0.0  # an all-zero block
    codes, scales, deq = quantize(w, bo, bi)
    name = f"{bo}x{bi}"
    tensors.update({f"w_{name}": w, f"codes_{name}": codes, f"scales_{name}": scales, f"deq_{name}": deq})

path = save_golden("fp8", tensors, {"torch": torch.__version__})
print(f"wrote {path}: {x.numel()} conversions, {len(tensors)} tensors")
