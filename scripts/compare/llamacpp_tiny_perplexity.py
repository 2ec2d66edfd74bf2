"""llama.cpp's perplexity of the shipped tiny model at bf16, Q8_0, Q4_0 and Q4_K_M, beside
deepblocks' (`examples/perplexity.rs`), on the held-out 10% of tinyshakespeare.txt.

Needs llama.cpp built beside the project (`../shared/tools/llamacpp build DIR`):
    LLAMACPP=DIR python llamacpp_tiny_perplexity.py ../../../shared/data/tinyshakespeare.txt

llama.cpp's converter does not know the tiny model's pre-tokenizer (plain byte-level BPE, GPT-2's
regex); it is converted as "gpt-2", which splits the same way. llama-perplexity scores the second
half of each 256-token chunk; deepblocks scores every prediction of 257-token windows. So the
absolute figures differ by construction; compare each engine's quantized figure with its own bf16.
Weight repacking is off (`--no-repack`): with it, this llama.cpp build aborts on the quantized files
(GGML_ASSERT(*cur_backend_id != -1) in ggml-backend.cpp), as llama-bench does on the bench model.
"""

import json
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LLAMA = os.environ.get("LLAMACPP", "/work/llamacpp")
SRC = os.path.join(LLAMA, "src")
BIN = os.path.join(SRC, "build", "bin")
MODEL = os.path.join(ROOT, "models", "tiny-shakespeare")
OUT = os.environ.get("OUT", "/tmp/tiny-gguf")
text_path = sys.argv[1]

os.makedirs(OUT, exist_ok=True)
val = os.path.join(OUT, "val.txt")
t = open(text_path).read()
open(val, "w").write(t[int(len(t) * 0.9) :])

bf16 = os.path.join(OUT, "tiny-bf16.gguf")
convert = f"""
import sys
sys.path[:0] = [{SRC!r}, {os.path.join(SRC, "gguf-py")!r}]
sys.argv = ["convert_hf_to_gguf.py", {MODEL!r}, "--outtype", "bf16", "--outfile", {bf16!r}]
import convert_hf_to_gguf as c
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
c.main()
"""
subprocess.run([sys.executable, "-c", convert], check=True, capture_output=True)

results = {}
for q in ["bf16", "Q8_0", "Q4_0", "Q4_K_M"]:
    path = bf16 if q == "bf16" else os.path.join(OUT, f"tiny-{q}.gguf")
    if q != "bf16":
        subprocess.run([os.path.join(BIN, "llama-quantize"), bf16, path, q], check=True, capture_output=True)
    run = subprocess.run(
        [os.path.join(BIN, "llama-perplexity"), "-m", path, "-f", val, "-c", "256", "-t", "2", "-b", "256", "--no-repack"],
        capture_output=True,
        text=True,
    )
    m = re.search(r"Final estimate: PPL = ([0-9.]+)", run.stdout + run.stderr)
    llama = float(m.group(1)) if m else None
    if m is None:
        print(f"{q}: llama-perplexity failed:\n{(run.stdout + run.stderr)[-2000:]}", file=sys.stderr)
    recipe = {"bf16": None, "Q8_0": "q8_0", "Q4_0": "q4_0", "Q4_K_M": "q4_k_m"}[q]
    cmd = [os.path.join(ROOT, "target", "release", "examples", "perplexity"), "--model", MODEL, "--file", val, "--ctx", "257"]
    if recipe:
        cmd += ["--quant", recipe]
    ours = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    results[q] = {"llama.cpp": llama, "deepblocks": ours["perplexity"]}
    print(q, results[q], flush=True)

base = results["bf16"]
for q, r in results.items():
    rel = {k: (r[k] / base[k] - 1) * 100 if r[k] and base[k] else None for k in r}
    cell = lambda k: "failed" if r[k] is None else f"{r[k]:.4f} ({rel[k]:+.2f}%)"
    print(f"{q:7s} llama.cpp {cell('llama.cpp')}  deepblocks {cell('deepblocks')}")
