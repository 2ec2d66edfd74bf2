"""Times transformers on the benchmark model, as examples/bench.rs times deepblocks.

    python scripts/torch_bench.py [--model ../bench-model] [--prompt-len 128] [--gen 32] [--threads 2]

bf16 weights (as stored), `torch.set_num_threads(threads)`, the prompt prefilled in one forward
pass, then `gen` greedy decode steps with transformers' KV cache. Prompt ids are random, seeded.
Prints a JSON line like the Rust bench: prefill_tok_s, decode_tok_s, peak_rss_mb (VmHWM).
"""

import argparse
import json
import time

import torch
from transformers import DeepseekV2ForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--model", default="../bench-model")
p.add_argument("--prompt-len", type=int, default=128)
p.add_argument("--gen", type=int, default=32)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
args = p.parse_args()

torch.set_num_threads(args.threads)
torch.manual_seed(0)
model = DeepseekV2ForCausalLM.from_pretrained(
    args.model, dtype=getattr(torch, args.dtype), attn_implementation=args.attn
).eval()
prompt = torch.randint(0, model.config.vocab_size, (1, args.prompt_len))


def once(steps):
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model(prompt, use_cache=True)
        prefill = time.perf_counter() - t0
        cache = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        t1 = time.perf_counter()
        for _ in range(steps):
            out = model(token, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            token = out.logits[:, -1:].argmax(-1)
        return prefill, time.perf_counter() - t1


once(min(4, args.gen))  # warm-up: page in the weights
prefill, decode = once(args.gen)


def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


print(
    json.dumps(
        {
            "prefill_tok_s": round(args.prompt_len / prefill, 2),
            "decode_tok_s": round(args.gen / decode, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "threads": args.threads,
            "dtype": args.dtype,
            "torch": torch.__version__,
        }
    )
)
