"""Fixtures for the block formats of deepblocks-core (`crates/core/src/quant/`).

For each format (Q8_0, Q4_0, Q5_0, Q4_K, Q6_K) writes into testdata/quants.safetensors:
  x_<F>    f32 [n]      inputs: blocks of many kinds (normal at several scales, uniform, one outlier,
                        exact halves (rounding ties), all positive, all negative, constant, zero,
                        values below f16's range)
  q_<F>    u8 [bytes]   ggml's reference quantizer's blocks for x (`quantize_row_<f>_ref`, called
                        from llama.cpp's libggml-base through ctypes)
  deq_<F>  f32 [n]      gguf-py's dequantization of those blocks (`gguf.quants.dequantize`)
For the 32-blocks, gguf-py's quantizer is checked to write the same bytes as ggml's; for all, gguf-py's
dequantizer to give ggml's `dequantize_row_<f>` bit for bit.

Needs llama.cpp built beside the project: `../shared/tools/llamacpp build DIR`, then
  LIBGGML=DIR/src/build/bin/libggml-base.so python quants.py
"""

import ctypes
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from safetensors.numpy import save_file

from common import TESTDATA

FORMATS = {"Q8_0": (T.Q8_0, 32), "Q4_0": (T.Q4_0, 32), "Q5_0": (T.Q5_0, 32), "Q4_K": (T.Q4_K, 256), "Q6_K": (T.Q6_K, 256)}
lib = ctypes.CDLL(os.environ.get("LIBGGML", "/work/llamacpp/src/build/bin/libggml-base.so"))


def blocks_of_every_kind(rng, n):
    """Inputs of n values each, concatenated, for blocks of n."""
    kinds = [
        rng.standard_normal(n),
        rng.standard_normal(n) * 1e-3,
        rng.standard_normal(n) * 1e3,
        rng.uniform(-1, 1, n),
        np.where(np.arange(n) == n // 3, 50.0, rng.standard_normal(n) * 0.1),
        np.round(rng.standard_normal(n) * 8) / 2,  # exact halves: ties in the rounding
        np.abs(rng.standard_normal(n)) + 0.5,  # all positive (min > 0)
        -np.abs(rng.standard_normal(n)) - 0.5,  # all negative
        np.full(n, 0.3),  # constant
        np.zeros(n),
        rng.standard_normal(n) * 1e-9,  # scales below f16's smallest subnormal
        rng.standard_normal(n) * 0.02,  # as trained weights
        rng.standard_normal(n) * 0.02,
    ]
    return np.concatenate(kinds).astype(np.float32)


def ggml(fn, x, qtype):
    nbytes = quants.quant_shape_to_byte_shape(x.shape, qtype)[-1]
    out = np.zeros(nbytes, dtype=np.uint8)
    f = getattr(lib, fn)
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    f(x.ctypes.data, out.ctypes.data, x.size)
    return out


def ggml_dequantize(name, q, n):
    out = np.zeros(n, dtype=np.float32)
    f = getattr(lib, f"dequantize_row_q{name[1:]}")
    f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    f(q.ctypes.data, out.ctypes.data, n)
    return out


rng = np.random.default_rng(7)
tensors = {}
for name, (qtype, block) in FORMATS.items():
    x = blocks_of_every_kind(rng, block)
    q = ggml(f"quantize_row_q{name[1:]}_ref", x, qtype)
    deq = quants.dequantize(q, qtype).reshape(-1).astype(np.float32)
    assert deq.tobytes() == ggml_dequantize(name, q, x.size).tobytes(), f"{name}: gguf-py and ggml dequantize differently"
    if block == 32:
        mine = quants.quantize(x, qtype).reshape(-1)
        assert mine.tobytes() == q.tobytes(), f"{name}: gguf-py and ggml quantize differently"
    tensors[f"x_{name}"], tensors[f"q_{name}"], tensors[f"deq_{name}"] = x, q, deq
    print(f"{name}: {x.size} values, {q.size} bytes, max |x − deq| {float(np.abs(x - deq).max()):.3g}")

path = os.path.join(TESTDATA, "quants.safetensors")
save_file(tensors, path, metadata={"numpy": np.__version__, "gguf": "gguf-py (pip)", "ggml": "llama.cpp 0c1e57098"})
print(f"wrote {path} ({os.path.getsize(path)} bytes)")
