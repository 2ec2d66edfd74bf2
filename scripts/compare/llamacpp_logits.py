"""llama.cpp's own logits for GGUF fixtures, for crates/deepseek/tests/gguf.rs.

Compiles a small C program against llama.cpp's public API (`llama.h`, built beside the project by
`../shared/tools/llamacpp build DIR`; nothing of llama.cpp is committed), runs each file on the
token ids of golden checkpoint (a) (its `golden.safetensors` `input_ids`), one batch, logits at
every position, CPU, 1 thread, weight repacking off (`use_extra_bufts = false`, as
`llama-bench --repack 0`).

llama.cpp scores an expert group by the sum of its two best experts whatever the model (DeepSeek-V3's
rule), where DeepSeek-V2's `group_limited_greedy` takes the best one (transformers, DeepSeek's own
code, deepblocks): on the grouped fixture its logits are far from transformers'. So the files
compared are the fixture with routing over all experts (`expert_group_count` 1, its only change:
`a_lowrank_greedy.gguf`) and llama-quantize's Q8_0 and Q4_0 of it, written here (its Q4_K_M holds
Q5_1, which deepblocks refuses: llama.cpp's 8-expert rule for `attn_output`); the grouped file's
logits are kept to show the difference. Writes

  testdata/gguf/a_lowrank_greedy{,.Q8_0,.Q4_0}.gguf
  testdata/gguf/llamacpp_logits.safetensors
      input_ids [t] (int64)
      <file>.logits [t, V] (f32) for those three files, a_lowrank_group_yarn.gguf and
      v3_groups_bias.gguf (DeepSeek-V3's routing, on which the engines agree; the same ids)

Run from the repository root:
    LLAMACPP=DIR python scripts/compare/llamacpp_logits.py
"""

import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file, save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LLAMA = os.environ.get("LLAMACPP", "/work/llamacpp")
SRC = os.path.join(LLAMA, "src")
BIN = os.path.join(SRC, "build", "bin")
GGUF = os.path.join(ROOT, "testdata", "gguf")
FIXTURES = [
    "a_lowrank_group_yarn.gguf",
    "a_lowrank_greedy.gguf",
    "a_lowrank_greedy.Q8_0.gguf",
    "a_lowrank_greedy.Q4_0.gguf",
    "v3_groups_bias.gguf",
]

sys.path.insert(0, os.path.join(SRC, "gguf-py"))
import gguf  # noqa: E402
from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata  # noqa: E402

greedy = os.path.join(GGUF, "a_lowrank_greedy.gguf")
reader = gguf.GGUFReader(os.path.join(GGUF, "a_lowrank_group_yarn.gguf"), "r")
writer = gguf.GGUFWriter(greedy, arch="deepseek2", endianess=reader.endianess)
one = MetadataDetails(gguf.GGUFValueType.UINT32, 1)
copy_with_new_metadata(
    reader, writer,
    {"deepseek2.expert_group_count": one, "deepseek2.expert_group_used_count": one}, [],
)
for q in ["Q8_0", "Q4_0"]:
    subprocess.run([os.path.join(BIN, "llama-quantize"), greedy, greedy.replace(".gguf", f".{q}.gguf"), q],
                   check=True, capture_output=True)

PROGRAM = r"""
#include "llama.h"
#include <stdio.h>
#include <stdlib.h>

/* argv: model.gguf out.f32 n_vocab id... */
int main(int argc, char ** argv) {
    if (argc < 5) return 1;
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.use_extra_bufts = false;
    struct llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 2;
    int n = argc - 4, V = atoi(argv[3]);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n < 16 ? 16 : n;
    cp.n_batch = cp.n_ctx;
    cp.n_ubatch = cp.n_ctx;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) return 3;
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = atoi(argv[4 + i]);
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b) != 0) return 4;
    FILE * f = fopen(argv[2], "wb");
    for (int i = 0; i < n; i++) fwrite(llama_get_logits_ith(ctx, i), sizeof(float), V, f);
    fclose(f);
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
"""

with tempfile.TemporaryDirectory() as tmp:
    c = os.path.join(tmp, "logits.c")
    exe = os.path.join(tmp, "logits")
    open(c, "w").write(PROGRAM)
    subprocess.run(
        ["gcc", "-O2", c, "-o", exe, f"-I{os.path.join(SRC, 'include')}",
         f"-I{os.path.join(SRC, 'ggml', 'include')}", f"-L{BIN}", "-lllama", f"-Wl,-rpath,{BIN}"],
        check=True,
    )
    golden = load_file(os.path.join(ROOT, "testdata", "deepseek", "a_lowrank_group_yarn", "golden.safetensors"))
    ids = golden["input_ids"].astype(np.int64).reshape(-1)
    vocab = golden["logits"].shape[-1]
    out = {"input_ids": ids}
    for name in FIXTURES:
        dst = os.path.join(tmp, name + ".f32")
        run = subprocess.run([exe, os.path.join(GGUF, name), dst, str(vocab)] + [str(i) for i in ids],
                             capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"{name}: exit {run.returncode}\n{run.stderr[-2000:]}")
        logits = np.fromfile(dst, dtype=np.float32).reshape(len(ids), vocab)
        out[f"{name}.logits"] = logits
        print(f"{name}: logits {logits.shape}, |max| {np.abs(logits).max():.3f}")
    path = os.path.join(GGUF, "llamacpp_logits.safetensors")
    save_file(out, path, metadata={"generator": "scripts/compare/llamacpp_logits.py"})
    print(f"wrote {os.path.relpath(path, ROOT)}")
