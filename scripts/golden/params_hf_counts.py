"""Parameter counts from transformers itself, for deepblocks-params' tests and docs/params.md.

Every model is instantiated on the meta device (`with torch.device("meta")`: shapes only, no
memory), and its parameters are counted with `numel()`. Writes:

  testdata/params/hf_counts.json
      per model: `total` (sum of numel over model.parameters(); a tied lm_head is yielded once),
      `activated` (total less the (E - k)/E share of the routed-expert tensors, i.e. routed
      experts counted k of E, embeddings included) and `tensors` (numel summed per parameter
      name with layer and expert indices replaced by `*`, as transformers names them: routed
      experts packed as `mlp.experts.gate_up_proj` / `mlp.experts.down_proj`).
      Models: DeepSeek-V2 and V2-Lite (from the hub configs in testdata/configs/, and again from
      their transformers-5 form, which must give the same numbers), DeepSeek-V3 (R1's hub config),
      Moonlight-16B-A3B-Instruct, Kimi-K2-Instruct-0905 and GLM-4.7-Flash (`buffers`: the
      e_score_correction_bias elements, not parameters to transformers), DeepSeek LLM 67B
      (LlamaConfig), and the GPT-3 family of Table 2.1 as GPT2LMHeadModel (the paper's
      convention: biases, LayerNorms, learned positions, tied unembedding) with d_model as
      printed. GPT-2's attention is d_model wide whatever the head count, but it needs n_head to
      divide n_embd, which two printed rows break (XL: 24 heads and d_model 2048; 13B: 40 heads
      and d_model 5140); those two are built with 16 and 20 heads, which changes no count.
  testdata/configs/deepseek-v2.tf5.json, testdata/configs/deepseek-v2-lite.tf5.json
      the hub configs as transformers 5 writes them back (`rope_parameters` instead of
      `rope_scaling` + `rope_theta`, plus derived `head_dim` and `qk_head_dim`).
"""

import collections
import json
import os
import re

import torch
import transformers
from transformers import (
    DeepseekV2Config,
    DeepseekV2ForCausalLM,
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
    Glm4MoeLiteConfig,
    Glm4MoeLiteForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from common import TESTDATA

OUT = os.path.join(TESTDATA, "params")
CONFIGS = os.path.join(TESTDATA, "configs")


def count(model, experts_k_of_e=None):
    tensors = collections.Counter()
    total = 0
    routed = 0
    for name, p in model.named_parameters():
        total += p.numel()
        tensors[re.sub(r"\.\d+(?=\.)", ".*", name)] += p.numel()
        if ".mlp.experts." in name:
            routed += p.numel()
    out = {"total": total}
    if experts_k_of_e is not None:
        k, e = experts_k_of_e
        assert (routed * k) % e == 0
        out["activated"] = total - routed + routed * k // e
    out["tensors"] = dict(sorted(tensors.items()))
    return out


def deepseek(name):
    with open(os.path.join(CONFIGS, f"{name}.json")) as f:
        hub = json.load(f)
    config = DeepseekV2Config(**hub)
    with torch.device("meta"):
        model = DeepseekV2ForCausalLM(config)
    result = count(model, (config.num_experts_per_tok, config.n_routed_experts))

    # The transformers-5 form of the same config must count the same.
    tf5_path = os.path.join(CONFIGS, f"{name}.tf5.json")
    config.to_json_file(tf5_path, use_diff=True)
    with open(tf5_path) as f:
        tf5 = json.load(f)
    assert "rope_parameters" in tf5 and "rope_scaling" not in tf5, sorted(tf5)
    with torch.device("meta"):
        again = DeepseekV2ForCausalLM(DeepseekV2Config(**tf5))
    assert count(again)["total"] == result["total"]
    return result


def deepseek_v3(name, config_class=DeepseekV3Config, model_class=DeepseekV3ForCausalLM):
    """A DeepSeek-V3-architecture model on the meta device: DeepSeek-V3 (R1's hub config, the
    same architecture), Moonlight and Kimi K2 (`kimi_k2`, which transformers builds as
    DeepseekV3ForCausalLM, as Moonshot's model card says), and GLM-4.7-Flash with its own
    classes. transformers builds no multi-token-prediction layer and keeps
    e_score_correction_bias as a buffer, so neither is in these counts; `buffers` lists the
    buffers' elements apart."""
    with open(os.path.join(CONFIGS, f"{name}.json")) as f:
        hub = json.load(f)
    hub.pop("quantization_config", None)  # the checkpoint's storage, not the architecture
    config = config_class(**hub)
    with torch.device("meta"):
        model = model_class(config)
    result = count(model, (config.num_experts_per_tok, config.n_routed_experts))
    buffers = collections.Counter()
    for bname, b in model.named_buffers():
        if bname.endswith("e_score_correction_bias"):
            buffers[re.sub(r"\.\d+(?=\.)", ".*", bname)] += b.numel()
    result["buffers"] = dict(buffers)
    return result


def gpt3(l, d, h):
    assert d % h == 0
    config = GPT2Config(n_layer=l, n_embd=d, n_head=h, n_positions=2048, vocab_size=50257)
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    return count(model)


def llama_67b():
    config = LlamaConfig(
        vocab_size=102400,
        hidden_size=8192,
        intermediate_size=22016,
        num_hidden_layers=95,
        num_attention_heads=64,
        num_key_value_heads=8,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    return count(model)


counts = {
    "generator": "scripts/golden/params_hf_counts.py",
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "deepseek-v2": deepseek("deepseek-v2"),
    "deepseek-v2-lite": deepseek("deepseek-v2-lite"),
    "deepseek-v3": deepseek_v3("deepseek-v3"),
    "moonlight-16b-a3b-instruct": deepseek_v3("moonlight-16b-a3b-instruct"),
    "kimi-k2-instruct-0905": deepseek_v3("kimi-k2-instruct-0905"),
    "glm-4.7-flash": deepseek_v3("glm-4.7-flash", Glm4MoeLiteConfig, Glm4MoeLiteForCausalLM),
    "deepseek-llm-67b": llama_67b(),
    "gpt3": {
        "GPT-3 Small": gpt3(12, 768, 12),
        "GPT-3 Medium": gpt3(24, 1024, 16),
        "GPT-3 Large": gpt3(24, 1536, 16),
        "GPT-3 XL": gpt3(24, 2048, 16),  # printed: 24 heads
        "GPT-3 2.7B": gpt3(32, 2560, 32),
        "GPT-3 6.7B": gpt3(32, 4096, 32),
        "GPT-3 13B": gpt3(40, 5140, 20),  # printed: 40 heads
        "GPT-3 175B": gpt3(96, 12288, 96),
    },
}
path = os.path.join(OUT, "hf_counts.json")
with open(path, "w") as f:
    json.dump(counts, f, indent=1)
    f.write("\n")
for name in (
    "deepseek-v2",
    "deepseek-v2-lite",
    "deepseek-v3",
    "moonlight-16b-a3b-instruct",
    "kimi-k2-instruct-0905",
    "glm-4.7-flash",
):
    c = counts[name]
    print(f"{name}: total {c['total']:,}, activated {c['activated']:,}")
print(f"deepseek-llm-67b: total {counts['deepseek-llm-67b']['total']:,}")
for name, c in counts["gpt3"].items():
    print(f"{name}: {c['total']:,}")
print(f"wrote {os.path.relpath(path, os.path.dirname(TESTDATA))}")
