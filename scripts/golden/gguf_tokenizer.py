"""The shipped model's tokenizer as llama.cpp's converter writes it into GGUF, without the
weights, and the ids Hugging Face `tokenizers` gives for sample texts.

    LLAMACPP=DIR python scripts/golden/gguf_tokenizer.py

Converts models/tiny-shakespeare with llama.cpp's own convert_hf_to_gguf.py (from DIR/src, where
`../shared/tools/llamacpp build DIR` put it; its byte-level BPE is declared "gpt-2", whose
pre-tokenizer it uses: the converter does not know its hash), then copies the `general.*` and
`tokenizer.*` metadata — and no tensor — into testdata/gguf/tiny-tokenizer.gguf, and writes
testdata/gguf/tiny-tokenizer.json with each sample text's ids.
"""

import json
import os
import subprocess
import sys
import tempfile

import gguf
from tokenizers import Tokenizer

from common import ROOT, TESTDATA

LLAMA = os.environ.get("LLAMACPP", "/work/llamacpp")
SRC = os.path.join(LLAMA, "src")
MODEL = os.path.join(ROOT, "models", "tiny-shakespeare")
OUT = os.path.join(TESTDATA, "gguf")

tmp = os.path.join(tempfile.mkdtemp(), "tiny.gguf")
convert = f"""
import sys
sys.path[:0] = [{SRC!r}, {os.path.join(SRC, "gguf-py")!r}]
sys.argv = ["convert_hf_to_gguf.py", {MODEL!r}, "--outtype", "bf16", "--outfile", {tmp!r}]
import convert_hf_to_gguf as c
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
c.main()
"""
subprocess.run([sys.executable, "-c", convert], check=True, capture_output=True)

reader = gguf.GGUFReader(tmp)
path = os.path.join(OUT, "tiny-tokenizer.gguf")
w = gguf.GGUFWriter(path, arch="deepseek2")
for field in reader.fields.values():
    name = field.name
    if name.startswith("GGUF.") or name == "general.architecture":
        continue
    if not (name.startswith("general.") or name.startswith("tokenizer.")):
        continue
    value = field.contents()
    vtype = field.types[0]
    if vtype == gguf.GGUFValueType.ARRAY:
        w.add_key_value(name, value, vtype, sub_type=field.types[1])
    else:
        w.add_key_value(name, value, vtype)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()

tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
texts = [
    "ROMEO:\nBut, soft! what light through yonder window breaks?",
    "  leading spaces, tabs\tand\nnewlines\n\n",
    "Ünïcödé, 你好, 🚀 and numbers 12345 67.89",
    "<｜begin▁of▁sentence｜>special tokens<｜end▁of▁sentence｜> inside",
    "",
]
cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in texts]
with open(os.path.join(OUT, "tiny-tokenizer.json"), "w") as f:
    json.dump({"generator": "scripts/golden/gguf_tokenizer.py", "cases": cases}, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes) and {len(cases)} cases")
