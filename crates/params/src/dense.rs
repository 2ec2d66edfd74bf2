//! Dense Llama-style decoders ([`DenseArchitecture`], `model_type` `llama`): the baseline
//! DeepSeek-V2 is compared against (DeepSeek LLM 67B is a Llama-architecture model with GQA).
//!
//! Per layer: `q_proj [n·d_h, h]`, `k_proj`/`v_proj [n_kv·d_h, h]`, `o_proj [h, n·d_h]`, a gated
//! MLP `gate_proj`/`up_proj [I, h]`, `down_proj [h, I]`, and two RMSNorms `[h]`; plus
//! `embed_tokens [V, h]`, the final norm and `lm_head [V, h]` unless tied.

use deepblocks_config::DenseArchitecture;

use crate::error::{Error, Result};
use crate::flops::AttentionDims;
use crate::kv::{KvCache, KvLayout};
use crate::model::Accounting;
use crate::tree::{Component, Kind};

/// The parameter tree of a dense decoder: `embed_tokens`, `self_attn` (per projection), `mlp`, `norms`,
/// `lm_head`.
pub fn dense_tree(arch: &DenseArchitecture) -> Result<Component> {
    let (h, l, i) = (
        arch.hidden_size as u64,
        arch.num_hidden_layers as u64,
        arch.intermediate_size as u64,
    );
    let of = |what: &str| Error::Overflow {
        what: what.to_string(),
    };
    let q = (arch.num_attention_heads as u64)
        .checked_mul(arch.head_dim as u64)
        .ok_or_else(|| of("q_proj"))?;
    let kv = (arch.num_key_value_heads as u64)
        .checked_mul(arch.head_dim as u64)
        .ok_or_else(|| of("k_proj"))?;
    let layer = |name: &str| format!("model.layers.*.{name}");
    let lin = |name: &str, shape: &[u64], ckpt: &str| {
        Component::tensor(name, Kind::Linear, shape, l)
            .map(|c| c.with_checkpoint(layer(&format!("{ckpt}.weight"))))
    };
    let bias = |name: &str, len: u64, ckpt: &str| {
        Component::tensor(&format!("{name}.bias"), Kind::Bias, &[len], l)
            .map(|c| c.with_checkpoint(layer(&format!("{ckpt}.bias"))))
    };
    let mut attn = vec![
        lin("q_proj", &[q, h], "self_attn.q_proj")?,
        lin("k_proj", &[kv, h], "self_attn.k_proj")?,
        lin("v_proj", &[kv, h], "self_attn.v_proj")?,
        lin("o_proj", &[h, q], "self_attn.o_proj")?,
    ];
    if arch.attention_bias {
        for (name, len) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv), ("o_proj", h)] {
            attn.push(bias(name, len, &format!("self_attn.{name}"))?);
        }
    }
    let mut mlp = vec![
        lin("gate_proj", &[i, h], "mlp.gate_proj")?,
        lin("up_proj", &[i, h], "mlp.up_proj")?,
        lin("down_proj", &[h, i], "mlp.down_proj")?,
    ];
    if arch.mlp_bias {
        for (name, len) in [("gate_proj", i), ("up_proj", i), ("down_proj", h)] {
            mlp.push(bias(name, len, &format!("mlp.{name}"))?);
        }
    }
    let norm = |name: &str, copies: u64, ckpt: String| {
        Component::tensor(name, Kind::Norm, &[h], copies).map(|c| c.with_checkpoint(ckpt))
    };
    let mut top = vec![
        Component::tensor(
            "embed_tokens",
            Kind::Embedding,
            &[arch.vocab_size as u64, h],
            1,
        )?
        .with_checkpoint("model.embed_tokens.weight"),
        Component::group("self_attn", attn)?,
        Component::group("mlp", mlp)?,
        Component::group(
            "norms",
            vec![
                norm("input_layernorm", l, layer("input_layernorm.weight"))?,
                norm(
                    "post_attention_layernorm",
                    l,
                    layer("post_attention_layernorm.weight"),
                )?,
                norm("norm", 1, "model.norm.weight".into())?,
            ],
        )?,
    ];
    if !arch.tie_word_embeddings {
        top.push(
            Component::tensor("lm_head", Kind::Linear, &[arch.vocab_size as u64, h], 1)?
                .with_checkpoint("lm_head.weight"),
        );
    }
    Component::group("Llama", top)
}

/// The KV cache: MHA, GQA or MQA by the number of key/value heads.
pub fn dense_kv_cache(arch: &DenseArchitecture) -> Result<KvCache> {
    Ok(KvCache::new(
        arch.num_hidden_layers as u64,
        KvLayout::from_heads(
            arch.num_attention_heads as u64,
            arch.num_key_value_heads as u64,
            arch.head_dim as u64,
        )?,
    ))
}

/// The attention sizes for the FLOP count.
pub fn dense_attention_dims(arch: &DenseArchitecture) -> AttentionDims {
    AttentionDims {
        layers: arch.num_hidden_layers as u64,
        heads: arch.num_attention_heads as u64,
        qk_head_dim: arch.head_dim as u64,
        v_head_dim: arch.head_dim as u64,
    }
}

/// Everything the accounting reports, named `name`.
pub fn dense_accounting(arch: &DenseArchitecture, name: &str) -> Result<Accounting> {
    Ok(Accounting {
        name: name.to_string(),
        tree: dense_tree(arch)?,
        attention: dense_attention_dims(arch),
        kv: dense_kv_cache(arch)?,
        max_position_embeddings: arch.max_position_embeddings as u64,
        routed_experts: 0,
        tied_unembedding: if arch.tie_word_embeddings {
            (arch.vocab_size as u64).saturating_mul(arch.hidden_size as u64)
        } else {
            0
        },
    })
}
