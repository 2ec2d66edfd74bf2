"""A small GGUF file written by gguf-py (`pip install gguf`), for deepblocks-core's container
reader: metadata of every value type (arrays of numbers and of strings among them) and tensors
of F32, F16 and Q8_0 (quantized by gguf-py's reference quantizer), at a non-default alignment.

Writes testdata/gguf/container.gguf and testdata/gguf/container.json (what the reader must
find: each key's type and value, each tensor's ne, type, offset and the hex of its bytes).
"""

import json
import os

import gguf
import numpy as np

from common import TESTDATA

OUT = os.path.join(TESTDATA, "gguf")
os.makedirs(OUT, exist_ok=True)
path = os.path.join(OUT, "container.gguf")

w = gguf.GGUFWriter(path, arch="deepseek2")
w.add_custom_alignment(64)
w.add_uint8("test.u8", 200)
w.add_int8("test.i8", -7)
w.add_uint16("test.u16", 65000)
w.add_int16("test.i16", -300)
w.add_uint32("test.u32", 4_000_000_000)
w.add_int32("test.i32", -123456)
w.add_float32("test.f32", 0.25)
w.add_bool("test.bool", True)
w.add_string("test.string", "héllo ✓")
w.add_array("test.ints", [1, 2, 3])
w.add_array("test.strings", ["a", "", "ünï"])
w.add_uint64("test.u64", 2**40 + 5)
w.add_int64("test.i64", -(2**40))
w.add_float64("test.f64", -1.5)

rng = np.random.default_rng(0)
f32 = rng.standard_normal((3, 5)).astype(np.float32)
f16 = rng.standard_normal((2, 4)).astype(np.float16)
q_src = rng.standard_normal((2, 64)).astype(np.float32)
q8 = gguf.quants.quantize(q_src, gguf.GGMLQuantizationType.Q8_0)
w.add_tensor("a.f32", f32)
w.add_tensor("b.f16", f16)
w.add_tensor("c.q8_0", q8, raw_shape=q8.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

reader = gguf.GGUFReader(path)
meta = {}
for field in reader.fields.values():
    if field.name.startswith("GGUF."):
        continue
    types = [t.name for t in field.types]
    value = field.contents()
    meta[field.name] = {"types": types, "value": value}
tensors = []
for t in reader.tensors:
    tensors.append(
        {
            "name": t.name,
            "ne": [int(d) for d in t.shape],
            "type": t.tensor_type.name,
            "offset": int(t.data_offset - reader.data_offset),
            "hex": bytes(t.data.tobytes()).hex(),
        }
    )
with open(os.path.join(OUT, "container.json"), "w") as f:
    json.dump({"generator": "scripts/golden/gguf_container.py", "gguf": gguf.__name__, "alignment": 64, "metadata": meta, "tensors": tensors}, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"wrote {os.path.relpath(path, os.path.dirname(TESTDATA))} ({os.path.getsize(path)} bytes)")
