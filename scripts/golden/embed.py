"""Golden fixture for deepblocks-embed: torch's nn.Embedding / nn.Linear (what transformers'
DeepseekV2ForCausalLM uses for `model.embed_tokens` and `lm_head`) and F.cosine_similarity.

Writes testdata/embed.safetensors, readable both as a fixture and as a checkpoint:
  model.embed_tokens.weight [V, h] bf16    lm_head.weight [V, h] bf16 (separate, untied)
  embed_f32 [V, h] f32                     the f32 matrix the bf16 one was rounded from
  ids [t] i64                              token ids (including 0 and V-1)
  x_f32 [t, h]                             nn.Embedding(f32)(ids)
  x_bf16 [t, h]                            nn.Embedding(bf16)(ids), widened
  hidden [t, h] f32                        hidden states for the unembedding
  logits_tied [t, V]                       hidden @ embed_f32.T (tied, f32)
  logits_lm_head [t, V]                    hidden @ lm_head.float().T (bf16 weight widened, f32 math)
  cos_query [V]                            F.cosine_similarity(E_f32, hidden[0]) over rows
  nearest_query [k] i64                    topk of cos_query
  analogy_abc [3] i64, analogy_ids [k] i64 rows nearest to E[a] - E[b] + E[c], a, b, c excluded
  analogy_cos [k]                          their similarities
"""

import torch
import torch.nn.functional as F

from common import save_golden, seed_everything

seed_everything(0)
V, h, t, k = 97, 40, 7, 5  # awkward sizes: not multiples of the SIMD widths

embed = torch.nn.Embedding(V, h)
lm_head = torch.nn.Linear(h, V, bias=False)
with torch.no_grad():
    embed.weight.normal_(0.0, 0.08)
    lm_head.weight.normal_(0.0, 0.08)
    ids = torch.tensor([0, 5, V - 1, 5, 42, 13, 77])
    x_f32 = embed(ids)
    embed_bf16 = torch.nn.Embedding(V, h).to(torch.bfloat16)
    embed_bf16.weight.copy_(embed.weight.to(torch.bfloat16))
    x_bf16 = embed_bf16(ids).float()
    lm_bf16 = lm_head.weight.to(torch.bfloat16)

    hidden = torch.randn(t, h)
    logits_tied = F.linear(hidden, embed.weight)
    logits_lm_head = F.linear(hidden, lm_bf16.float())

    cos_query = F.cosine_similarity(embed.weight, hidden[0:1], dim=1)
    nearest_query = torch.topk(cos_query, k).indices

    a, b, c = 10, 20, 30
    q = embed.weight[a] - embed.weight[b] + embed.weight[c]
    cos = F.cosine_similarity(embed.weight, q[None], dim=1)
    cos[[a, b, c]] = -float("inf")
    top = torch.topk(cos, k)

save_golden(
    "embed",
    {
        "model.embed_tokens.weight": embed_bf16.weight,
        "lm_head.weight": lm_bf16,
        "embed_f32": embed.weight,
        "ids": ids,
        "x_f32": x_f32,
        "x_bf16": x_bf16,
        "hidden": hidden,
        "logits_tied": logits_tied,
        "logits_lm_head": logits_lm_head,
        "cos_query": cos_query,
        "nearest_query": nearest_query,
        "analogy_abc": torch.tensor([a, b, c]),
        "analogy_ids": top.indices,
        "analogy_cos": top.values,
    },
    {"vocab": V, "hidden": h},
)
