//! llama.cpp's `deepseek2` GGUF metadata read into the architecture description: every key its
//! converter (`convert_hf_to_gguf.py`, `DeepseekV2Model`) writes for the MLA family.
//!
//! | GGUF key (`deepseek2.` …) | description field |
//! |---|---|
//! | `block_count`, `context_length`, `embedding_length`, `vocab_size` (else `token_embd`'s rows) | layers, positions, `h`, `V` |
//! | `attention.head_count`, `attention.q_lora_rank` (0 or absent: a full `q_proj`), `attention.kv_lora_rank` | `n`, the query projection, `c` |
//! | `rope.dimension_count`; `attention.key_length_mla` and `value_length_mla` (the converter's split `attn_k_b`/`attn_v_b` layout), else `key_length` and `value_length` | `r`; `d = key_length_mla − r`, `v` |
//! | `attention.layer_norm_rms_epsilon`, `rope.freq_base` | ε, θ |
//! | `rope.scaling.type` `yarn` with `factor`, `original_context_length`, `yarn_beta_fast` / `yarn_beta_slow` (default 32 / 1), `yarn_log_multiplier` (= 0.1 · `mscale_all_dim`) | YaRN, `mscale` = `mscale_all_dim` (llama.cpp keeps one; DeepSeek's configs set both alike) |
//! | `feed_forward_length`, `leading_dense_block_count`, `expert_count`, `expert_used_count`, `expert_feed_forward_length`, `expert_shared_count` | the dense width and the MoE |
//! | `expert_group_count` / `expert_group_used_count` (> 1 groups: group-limited), `expert_weights_scale`, `expert_weights_norm`, `expert_gating_func` (1 softmax, 2 sigmoid: V3's `noaux_tc`) | the routing rule |
//! | `nextn_predict_layers` | multi-token-prediction layers |
//! | `tokenizer.ggml.bos_token_id`, `eos_token_id` | bos, eos |
//!
//! `tie_word_embeddings` is the absence of `output.weight`.

use deepblocks_config::{
    Architecture, DeepSeekMoe, Family, Ffn, MlaAttention, QueryProjection, Rope, RoutingRule,
    ScoringFunc, TopkSelection,
};
use deepblocks_core::gguf::{GgufFile, GgufValue};
use deepblocks_rope::{RopeScaling, YarnScaling};

use crate::{Error, Result};

/// The architecture of a `deepseek2` GGUF file.
///
/// # Errors
/// [`Error::GgufMetadata`] naming the key: another architecture, a missing or mistyped key, a
/// value the description does not hold; and the description's own validation.
pub fn architecture_from_gguf(file: &GgufFile) -> Result<Architecture> {
    let path = file.path().display().to_string();
    let bad = |key: &str, reason: String| Error::GgufMetadata {
        path: path.clone(),
        key: key.to_string(),
        reason,
    };
    let arch = file
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| bad("general.architecture", "missing".into()))?;
    if arch != "deepseek2" {
        return Err(bad(
            "general.architecture",
            format!("{arch:?}: only llama.cpp's deepseek2 (the MLA family) is read"),
        ));
    }
    let key = |k: &str| format!("deepseek2.{k}");
    let opt_u = |k: &str| -> Result<Option<usize>> {
        match file.get(&key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|u| usize::try_from(u).ok())
                .map(Some)
                .ok_or_else(|| bad(&key(k), format!("{v:?} is not a count"))),
        }
    };
    let u = |k: &str| opt_u(k)?.ok_or_else(|| bad(&key(k), "missing".into()));
    let opt_f = |k: &str| -> Result<Option<f64>> {
        match file.get(&key(k)) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(&key(k), format!("{v:?} is not a number"))),
        }
    };
    let id = |k: &str| -> Result<Option<u32>> {
        match file.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|u| u32::try_from(u).ok())
                .map(Some)
                .ok_or_else(|| bad(k, format!("{v:?} is not a token id"))),
        }
    };

    let hidden_size = u("embedding_length")?;
    let r = u("rope.dimension_count")?;
    let (qk, v) = match (
        opt_u("attention.key_length_mla")?,
        opt_u("attention.value_length_mla")?,
    ) {
        (Some(k), Some(v)) => (k, v),
        _ => (u("attention.key_length")?, u("attention.value_length")?),
    };
    let d = qk.checked_sub(r).ok_or_else(|| {
        bad(
            &key("attention.key_length"),
            format!("{qk} is less than rope.dimension_count {r}"),
        )
    })?;
    let attention = MlaAttention {
        num_attention_heads: u("attention.head_count")?,
        q_proj: match opt_u("attention.q_lora_rank")? {
            None | Some(0) => QueryProjection::Full,
            Some(q_lora_rank) => QueryProjection::LowRank { q_lora_rank },
        },
        kv_lora_rank: u("attention.kv_lora_rank")?,
        qk_nope_head_dim: d,
        qk_rope_head_dim: r,
        v_head_dim: v,
    };
    let scaling = match file.get(&key("rope.scaling.type")).map(GgufValue::as_str) {
        None | Some(Some("none")) => RopeScaling::None,
        Some(Some("yarn")) => {
            let factor = opt_f("rope.scaling.factor")?
                .ok_or_else(|| bad(&key("rope.scaling.factor"), "missing".into()))?;
            let mut y = YarnScaling::new(factor, u("rope.scaling.original_context_length")?);
            y.beta_fast = opt_f("rope.scaling.yarn_beta_fast")?.unwrap_or(y.beta_fast);
            y.beta_slow = opt_f("rope.scaling.yarn_beta_slow")?.unwrap_or(y.beta_slow);
            // llama.cpp stores 0.1 · mscale_all_dim and applies it to both factors.
            if let Some(m) = opt_f("rope.scaling.yarn_log_multiplier")?.filter(|&m| m != 0.0) {
                y.mscale = Some(m / 0.1);
                y.mscale_all_dim = Some(m / 0.1);
            }
            RopeScaling::Yarn(y)
        }
        Some(other) => {
            return Err(bad(
                &key("rope.scaling.type"),
                format!("{other:?}: only yarn (or none) is read from GGUF"),
            ));
        }
    };
    let rope = Rope {
        rope_theta: opt_f("rope.freq_base")?.unwrap_or(10_000.0),
        scaling,
    };
    let sigmoid = match opt_u("expert_gating_func")? {
        None | Some(1) => false,
        Some(2) => true,
        Some(other) => {
            return Err(bad(
                &key("expert_gating_func"),
                format!("{other}: known are 1 (softmax) and 2 (sigmoid)"),
            ));
        }
    };
    let family = if sigmoid {
        Family::DeepseekV3
    } else {
        Family::DeepseekV2
    };
    let ffn = match opt_u("expert_count")?.filter(|&e| e > 0) {
        None => Ffn::Dense,
        Some(n_routed_experts) => {
            let groups = opt_u("expert_group_count")?.unwrap_or(1);
            let used = opt_u("expert_group_used_count")?.unwrap_or(groups);
            let topk_method = match (sigmoid, groups) {
                (true, _) => TopkSelection::NoauxTc {
                    n_group: groups,
                    topk_group: used,
                },
                (false, 0 | 1) => TopkSelection::Greedy,
                (false, _) => TopkSelection::GroupLimitedGreedy {
                    n_group: groups,
                    topk_group: used,
                },
            };
            let norm_topk_prob = match file.get(&key("expert_weights_norm")) {
                None => false,
                Some(GgufValue::Bool(b)) => *b,
                Some(other) => {
                    return Err(bad(
                        &key("expert_weights_norm"),
                        format!("{other:?} is not a boolean"),
                    ));
                }
            };
            Ffn::Moe(DeepSeekMoe {
                n_routed_experts,
                num_experts_per_tok: u("expert_used_count")?,
                moe_intermediate_size: u("expert_feed_forward_length")?,
                n_shared_experts: opt_u("expert_shared_count")?.unwrap_or(0),
                first_k_dense_replace: opt_u("leading_dense_block_count")?.unwrap_or(0),
                moe_layer_freq: 1,
                routing: RoutingRule {
                    scoring_func: if sigmoid {
                        ScoringFunc::Sigmoid
                    } else {
                        ScoringFunc::Softmax
                    },
                    topk_method,
                    norm_topk_prob,
                    routed_scaling_factor: opt_f("expert_weights_scale")?.unwrap_or(1.0) as f32,
                    weighting: family.weighting(),
                },
            })
        }
    };
    let vocab_size = match opt_u("vocab_size")? {
        Some(v) => v,
        None => file
            .tensor("token_embd.weight")
            .and_then(|t| t.ne.get(1).copied())
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                bad(
                    &key("vocab_size"),
                    "missing, and no token_embd.weight".into(),
                )
            })?,
    };
    let arch = Architecture {
        family,
        vocab_size,
        hidden_size,
        num_hidden_layers: u("block_count")?,
        max_position_embeddings: u("context_length")?,
        rms_norm_eps: opt_f("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6) as f32,
        attention,
        rope,
        intermediate_size: opt_u("feed_forward_length")?.unwrap_or(0),
        ffn,
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        bos_token_id: id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: id("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
        rope_interleave: true,
        num_nextn_predict_layers: opt_u("nextn_predict_layers")?.unwrap_or(0),
        quantization: None,
    };
    arch.validate()?;
    Ok(arch)
}

/// The tokenizer of a GGUF file (`tokenizer.ggml.*`, and `tokenizer.chat_template`), as
/// [`deepblocks_tokenize::Tokenizer::from_gguf_vocab`] builds it.
///
/// # Errors
/// [`Error::GgufMetadata`] naming a missing or mistyped key; the tokenizer's own errors.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<deepblocks_tokenize::Tokenizer> {
    let path = file.path().display().to_string();
    let bad = |key: &str, reason: &str| Error::GgufMetadata {
        path: path.clone(),
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let string = |key: &str| file.get(key).and_then(GgufValue::as_str);
    let strings = |key: &str| -> Result<Vec<String>> {
        match file.get(key) {
            None => Ok(Vec::new()),
            Some(GgufValue::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(key, "not a list of strings"))
                })
                .collect(),
            Some(_) => Err(bad(key, "not a list of strings")),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    if tokens.is_empty() {
        return Err(bad(
            "tokenizer.ggml.tokens",
            "missing: the file holds no vocabulary",
        ));
    }
    let merges = strings("tokenizer.ggml.merges")?;
    let token_types: Vec<i32> = match file.get("tokenizer.ggml.token_type") {
        None => Vec::new(),
        Some(GgufValue::Array(items)) => items
            .iter()
            .map(|v| match v {
                GgufValue::I32(t) => Ok(*t),
                _ => Err(bad("tokenizer.ggml.token_type", "not a list of INT32")),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad("tokenizer.ggml.token_type", "not a list")),
    };
    let id = |key: &str| -> Result<Option<u32>> {
        match file.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|u| u32::try_from(u).ok())
                .map(Some)
                .ok_or_else(|| bad(key, "not a token id")),
        }
    };
    let vocab = deepblocks_tokenize::GgufVocab {
        model: string("tokenizer.ggml.model").unwrap_or(""),
        pre: string("tokenizer.ggml.pre").unwrap_or("default"),
        tokens: &tokens,
        token_types: &token_types,
        merges: &merges,
        bos_id: id("tokenizer.ggml.bos_token_id")?,
        eos_id: id("tokenizer.ggml.eos_token_id")?,
        chat_template: string("tokenizer.chat_template"),
    };
    Ok(deepblocks_tokenize::Tokenizer::from_gguf_vocab(&vocab)?)
}
