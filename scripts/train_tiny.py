"""Trains the small model deepblocks ships: models/tiny-shakespeare/.

A DeepSeek-V2-architecture model (MLA with a low-rank query and YaRN, DeepSeekMoE with a shared
expert and group-limited routing, a dense first layer), trained with transformers on CPU on
tinyshakespeare, with a byte-level BPE tokenizer trained on the same text.

    python scripts/train_tiny.py [--data ../shared/data/tinyshakespeare.txt] [--minutes 45]

Data: the first 90% of the characters train (tokenizer and model); the last 10% are held out.
Every --eval-every steps the model is scored on the first --eval-windows windows of the held-out
text and the best weights so far are kept (early stopping: with 8.5M parameters and ~300K training
tokens the model starts memorising after a few epochs). The reported perplexity is over all
held-out windows, the early-stopping ones included.
Writes:
  models/tiny-shakespeare/config.json, model.safetensors (bf16), tokenizer.json,
      tokenizer_config.json, training.json (the run: steps, losses, timings, validation perplexity)
  testdata/tiny_shakespeare_ppl.safetensors: a held-out slice (tokens [W, T]) and transformers'
      mean negative log-likelihood on it, computed in f32 on the saved bf16 weights; the Rust test
      checks deepblocks' forward pass gives the same perplexity (relative difference <= 1e-3).
"""

import argparse
import json
import math
import os
import random
import time

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
OUT = os.path.join(ROOT, "models", "tiny-shakespeare")
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"

p = argparse.ArgumentParser()
p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))
p.add_argument("--minutes", type=float, default=50.0, help="wall-clock budget for the training loop")
p.add_argument("--max-steps", type=int, default=4000)
p.add_argument("--vocab", type=int, default=4096)
p.add_argument("--seq", type=int, default=256)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--lr", type=float, default=2e-3)
p.add_argument("--seed", type=int, default=1234)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--eval-every", type=int, default=100)
p.add_argument("--eval-windows", type=int, default=40)
p.add_argument("--patience", type=int, default=4, help="evaluations without improvement before stopping")
args = p.parse_args()

random.seed(args.seed)
torch.manual_seed(args.seed)
torch.set_num_threads(args.threads)

text = open(args.data, encoding="utf-8").read()
split = int(len(text) * 0.9)
train_text, val_text = text[:split], text[split:]
print(f"data: {len(text):,} chars; train {len(train_text):,}, held out {len(val_text):,}")

# --- tokenizer: byte-level BPE on the training text -------------------------------------------
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(
    vocab_size=args.vocab,
    min_frequency=2,
    special_tokens=[BOS, EOS],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    show_progress=False,
)
tok.train_from_iterator(train_text.splitlines(keepends=True), trainer)
vocab = tok.get_vocab_size()
train_ids = torch.tensor(tok.encode(train_text).ids, dtype=torch.long)
val_ids = torch.tensor(tok.encode(val_text).ids, dtype=torch.long)
assert tok.decode(tok.encode(val_text[:2000]).ids) == val_text[:2000], "tokenizer does not round-trip"
print(f"tokenizer: vocab {vocab}; train {len(train_ids):,} tokens, held out {len(val_ids):,} tokens")

# --- model ---------------------------------------------------------------------------------------
config = DeepseekV2Config(
    vocab_size=vocab,
    hidden_size=256,
    intermediate_size=768,
    moe_intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    q_lora_rank=128,
    kv_lora_rank=64,
    qk_nope_head_dim=32,
    qk_rope_head_dim=16,
    v_head_dim=32,
    n_routed_experts=8,
    n_shared_experts=1,
    num_experts_per_tok=2,
    n_group=4,
    topk_group=2,
    topk_method="group_limited_greedy",
    routed_scaling_factor=1.0,
    norm_topk_prob=False,
    first_k_dense_replace=1,
    moe_layer_freq=1,
    max_position_embeddings=4 * args.seq,
    rope_parameters=dict(
        rope_type="yarn",
        rope_theta=10000.0,
        factor=4.0,
        original_max_position_embeddings=args.seq,
        beta_fast=32.0,
        beta_slow=1.0,
        mscale=0.707,
        mscale_all_dim=0.707,
    ),
    rms_norm_eps=1e-6,
    bos_token_id=tok.token_to_id(BOS),
    eos_token_id=tok.token_to_id(EOS),
    tie_word_embeddings=False,
    initializer_range=0.02,
)
config._attn_implementation = "sdpa"
model = DeepseekV2ForCausalLM(config)
n_params = sum(p.numel() for p in model.parameters())
print(f"model: {n_params:,} parameters ({2 * n_params / 1e6:.1f} MB in bf16)")

opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
warmup = 100


def lr_at(step, total, elapsed, budget):
    """Linear warmup, then cosine decay to 10% over whichever runs out first: steps or time."""
    if step < warmup:
        return args.lr * (step + 1) / warmup
    frac = min(1.0, max((step - warmup) / max(1, total - warmup), elapsed / budget))
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def batch():
    starts = torch.randint(0, len(train_ids) - args.seq - 1, (args.batch,))
    x = torch.stack([train_ids[s : s + args.seq] for s in starts])
    y = torch.stack([train_ids[s + 1 : s + args.seq + 1] for s in starts])
    return x, y


@torch.no_grad()
def nll(m, ids, windows):
    """Mean next-token NLL over `windows` non-overlapping windows of args.seq + 1 tokens."""
    m.eval()
    total, count = 0.0, 0
    for w in range(windows):
        chunk = ids[w * (args.seq + 1) : (w + 1) * (args.seq + 1)]
        if len(chunk) < 2:
            break
        logits = m(chunk[None, :-1]).logits[0].float()
        total += torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum").item()
        count += len(chunk) - 1
    m.train()
    return total / count


budget = args.minutes * 60
started = time.time()
losses = []
evals = []
best = (float("inf"), 0, None)  # (held-out nll, step, state dict)
step = 0
model.train()
# The schedule decays over max_steps or the time budget, whichever ends first.
while step < args.max_steps:
    lr = lr_at(step, args.max_steps, time.time() - started, budget)
    for g in opt.param_groups:
        g["lr"] = lr
    x, y = batch()
    logits = model(x).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    losses.append(loss.item())
    step += 1
    elapsed = time.time() - started
    if step % 50 == 0 or step == 1:
        avg = sum(losses[-50:]) / len(losses[-50:])
        print(f"step {step:5d}  loss {avg:.3f}  lr {lr:.2e}  {elapsed / 60:5.1f} min", flush=True)
    if step % args.eval_every == 0:
        held = nll(model, val_ids, args.eval_windows)
        evals.append((step, round(held, 4)))
        print(f"step {step:5d}  held-out nll {held:.3f} (ppl {math.exp(held):.1f})", flush=True)
        if held < best[0]:
            best = (held, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
        elif len(evals) - 1 - [s for s, _ in evals].index(best[1]) >= args.patience:
            print(f"no improvement for {args.patience} evaluations: stopping at step {step}")
            break
    if elapsed > budget:
        print(f"time budget reached after {step} steps")
        break
train_minutes = (time.time() - started) / 60
if best[2] is not None:
    model.load_state_dict(best[2])
    print(f"keeping the weights of step {best[1]} (held-out nll {best[0]:.3f})")
final_train_loss = sum(losses[-100:]) / len(losses[-100:])

# --- save (bf16), tokenizer --------------------------------------------------------------------
os.makedirs(OUT, exist_ok=True)
model.to(torch.bfloat16).save_pretrained(OUT)
gen_cfg = os.path.join(OUT, "generation_config.json")
if os.path.exists(gen_cfg):
    os.remove(gen_cfg)
tok.save(os.path.join(OUT, "tokenizer.json"))
json.dump(
    {
        "bos_token": BOS,
        "eos_token": EOS,
        "add_bos_token": False,
        "model_max_length": config.max_position_embeddings,
        "tokenizer_class": "PreTrainedTokenizerFast",
    },
    open(os.path.join(OUT, "tokenizer_config.json"), "w"),
    indent=2,
)

# --- evaluation on the saved bf16 weights, f32 compute (what deepblocks runs) ----------------
evaluated = DeepseekV2ForCausalLM.from_pretrained(OUT, dtype=torch.float32, attn_implementation="eager").eval()
windows_all = len(val_ids) // (args.seq + 1)
val_nll = nll(evaluated, val_ids, windows_all)
print(f"validation: {windows_all} windows of {args.seq} predictions, nll {val_nll:.4f}, perplexity {math.exp(val_nll):.2f}")

slice_windows = 2
slice_ids = val_ids[: slice_windows * (args.seq + 1)].view(slice_windows, args.seq + 1)
slice_nll = nll(evaluated, val_ids, slice_windows)
save_file(
    {"tokens": slice_ids.to(torch.int64).contiguous(), "nll": torch.tensor([slice_nll], dtype=torch.float64)},
    os.path.join(ROOT, "testdata", "tiny_shakespeare_ppl.safetensors"),
    metadata={
        "what": "held-out windows of models/tiny-shakespeare's validation text; nll = mean next-token NLL",
        "perplexity": repr(math.exp(slice_nll)),
        "generator": "scripts/train_tiny.py",
        "torch": torch.__version__,
    },
)

record = {
    "data": "tinyshakespeare.txt: first 90% of characters for training (tokenizer and model), last 10% held out",
    "tokenizer": {"type": "byte-level BPE", "vocab_size": vocab, "special_tokens": [BOS, EOS]},
    "parameters": n_params,
    "steps": step,
    "kept_step": best[1],
    "early_stopping_windows": args.eval_windows,
    "held_out_nll_every_eval": evals,
    "batch": args.batch,
    "seq_len": args.seq,
    "tokens_seen": step * args.batch * args.seq,
    "lr": args.lr,
    "seed": args.seed,
    "threads": args.threads,
    "train_minutes": round(train_minutes, 1),
    "final_train_loss": round(final_train_loss, 4),
    "train_loss_at_kept_step": round(sum(losses[max(0, best[1] - 100) : best[1]]) / max(1, len(losses[max(0, best[1] - 100) : best[1]])), 4),
    "validation_windows": windows_all,
    "validation_nll": round(val_nll, 4),
    "validation_perplexity": round(math.exp(val_nll), 2),
    "slice_perplexity": math.exp(slice_nll),
    "loss_every_50_steps": [round(sum(losses[i : i + 50]) / len(losses[i : i + 50]), 4) for i in range(0, len(losses), 50)],
    "torch": torch.__version__,
}
json.dump(record, open(os.path.join(OUT, "training.json"), "w"), indent=2)
print(json.dumps({k: v for k, v in record.items() if k != "loss_every_50_steps"}, indent=2))
