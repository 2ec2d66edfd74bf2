"""GGUF files written by deepblocks (`examples/quantize.rs`) against llama.cpp's own, for the shipped
tiny model: llama.cpp's converter + llama-quantize on one side, deepblocks' recipes on the other.

For each format (bf16, Q8_0, Q4_0, Q4_K_M) it prints how many tensors are byte-identical, which
tensors differ in type, the metadata keys that differ, and llama-perplexity on both files in the
same run (llama.cpp loading deepblocks' file is the check that llama.cpp runs it).

Needs llama.cpp built beside the project (`../shared/tools/llamacpp build DIR`) and the Python
packages of scripts/requirements.txt (gguf-py comes from llama.cpp's tree):
    LLAMACPP=DIR python scripts/compare/llamacpp_gguf_written.py ../shared/data/tinyshakespeare.txt

The converter does not know the tiny model's pre-tokenizer (plain byte-level BPE, GPT-2's regex);
it is converted as "gpt-2", the name deepblocks writes for it too.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LLAMA = os.environ.get("LLAMACPP", "/work/llamacpp")
SRC = os.path.join(LLAMA, "src")
BIN = os.path.join(SRC, "build", "bin")
MODEL = os.path.join(ROOT, "models", "tiny-shakespeare")
OUT = os.environ.get("OUT", "/tmp/gguf-written")
sys.path.insert(0, os.path.join(SRC, "gguf-py"))
import gguf  # noqa: E402
import numpy as np  # noqa: E402

os.makedirs(OUT, exist_ok=True)
text = open(sys.argv[1]).read()
val = os.path.join(OUT, "val.txt")
open(val, "w").write(text[int(len(text) * 0.9):])

theirs = {"bf16": os.path.join(OUT, "llamacpp-bf16.gguf")}
convert = f"""
import sys
sys.path[:0] = [{SRC!r}, {os.path.join(SRC, "gguf-py")!r}]
sys.argv = ["convert_hf_to_gguf.py", {MODEL!r}, "--outtype", "bf16", "--outfile", {theirs["bf16"]!r}]
import convert_hf_to_gguf as c
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
c.main()
"""
subprocess.run([sys.executable, "-c", convert], check=True, capture_output=True)
for q in ["Q8_0", "Q4_0", "Q4_K_M"]:
    theirs[q] = os.path.join(OUT, f"llamacpp-{q}.gguf")
    subprocess.run([os.path.join(BIN, "llama-quantize"), theirs["bf16"], theirs[q], q], check=True, capture_output=True)

ours = {}
for fmt, recipe in [("bf16", "bf16"), ("Q8_0", "q8_0"), ("Q4_0", "q4_0"), ("Q4_K_M", "q4_k_m")]:
    ours[fmt] = os.path.join(OUT, f"deepblocks-{fmt}.gguf")
    subprocess.run(
        ["cargo", "run", "-q", "--release", "--example", "quantize", "--", "--model", MODEL,
         "--recipe", recipe, "--out", ours[fmt]],
        check=True, cwd=ROOT, capture_output=True,
    )


def perplexity(path):
    run = subprocess.run(
        [os.path.join(BIN, "llama-perplexity"), "-m", path, "-f", val, "-c", "256", "-t", "2"],
        capture_output=True, text=True,
    )
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", run.stdout + run.stderr)
    return m.group(1) if m else f"failed ({run.returncode})"


print(f"| format | tensors byte-identical | types differing | metadata differing | llama-perplexity, deepblocks' file | llama.cpp's file |")
print("|---|---|---|---|---|---|")
for fmt in ["bf16", "Q8_0", "Q4_0", "Q4_K_M"]:
    a, b = gguf.GGUFReader(ours[fmt]), gguf.GGUFReader(theirs[fmt])
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    assert set(ta) == set(tb), (sorted(set(ta) ^ set(tb)))
    same, typed = 0, set()
    for name, x in ta.items():
        y = tb[name]
        if x.tensor_type != y.tensor_type:
            typed.add(f"{re.sub(r'blk[.][0-9]+[.]', 'blk.*.', name)} {x.tensor_type.name} vs {y.tensor_type.name}")
        elif np.array_equal(np.asarray(x.data).view(np.uint8), np.asarray(y.data).view(np.uint8)):
            same += 1
        else:
            typed.add(f"{name}: bytes differ")
    keys = []
    for k in sorted(set(a.fields) | set(b.fields)):
        if k.startswith("GGUF."):
            continue
        va = a.fields[k].contents() if k in a.fields else None
        vb = b.fields[k].contents() if k in b.fields else None
        if va != vb:
            keys.append(f"{k} ({str(va)[:20]} / {str(vb)[:20]})")
    print(f"| {fmt} | {same} of {len(tb)} | {'; '.join(sorted(typed)) or '—'} | {'; '.join(keys)} "
          f"| {perplexity(ours[fmt])} | {perplexity(theirs[fmt])} |")
