//! The parameter tree of an MLA-family model, counted from its [`Architecture`].
//!
//! Per layer (DeepSeek-V2 report §2.1–2.2; tensor names from the checkpoint):
//!
//! ```text
//! attention  q_proj [n(d+r), h]             when q_lora_rank is null, else
//!            q_a_proj [q, h], q_b_proj [n(d+r), q]
//!            kv_a_proj_with_mqa [c+r, h], kv_b_proj [n(d+v), c], o_proj [h, n·v]
//! dense MLP  gate_proj, up_proj [I, h], down_proj [h, I]                 (dense layers)
//! MoE        gate [E, h]; shared_experts gate/up [s·i, h], down [h, s·i];
//!            E routed experts, each gate/up [i, h], down [h, i]           (MoE layers)
//! norms      input_layernorm [h], post_attention_layernorm [h], q_a_layernorm [q], kv_a_layernorm [c]
//! ```
//!
//! plus `embed_tokens [V, h]`, the final `norm [h]` and `lm_head [V, h]` (absent when
//! `tie_word_embeddings`). Which layers are MoE is [`Architecture::layer_kind`], the rule the
//! model runs by.

use deepblocks_config::{Architecture, Ffn, QueryProjection, TopkSelection};

use crate::error::{Error, Result};
use crate::flops::AttentionDims;
use crate::kv::{KvCache, KvLayout};
use crate::model::Accounting;
use crate::tree::{Component, Kind};

/// `usize` → `u64` (lossless on every platform Rust supports up to 64 bits).
fn n(x: usize) -> u64 {
    x as u64
}

/// The parameter tree: `embed_tokens`, `self_attn` (per projection), `mlp` (dense layers),
/// `mlp.gate` (router), `mlp.shared_experts`, `mlp.experts` (routed), `norms`, `lm_head`. Empty
/// groups (no dense layer, no shared expert, a tied `lm_head`) are left out.
///
/// # Errors
/// [`Error::Config`] for a description that does not validate; [`Error::Overflow`] for a count
/// past 64 bits.
pub fn mla_tree(arch: &Architecture) -> Result<Component> {
    arch.validate()?;
    let a = &arch.attention;
    let h = n(arch.hidden_size);
    let l = n(arch.num_hidden_layers);
    let heads = n(a.num_attention_heads);
    let (d, r, v, c) = (
        n(a.qk_nope_head_dim),
        n(a.qk_rope_head_dim),
        n(a.v_head_dim),
        n(a.kv_lora_rank),
    );
    // A validated description's single tensors fit in a usize (so in u64); only the copies
    // below can overflow.
    let q_out = heads * (d + r);
    let kv_out = heads * (d + v);
    let o_in = heads * v;

    let layer = |name: &str| format!("model.layers.*.{name}");
    let lin = |name: &str, shape: &[u64], copies: u64, ckpt: &str| {
        Component::tensor(name, Kind::Linear, shape, copies)
            .map(|c| c.with_checkpoint(layer(&format!("{ckpt}.weight"))))
    };
    let norm = |name: &str, len: u64, copies: u64, ckpt: &str| {
        Component::tensor(name, Kind::Norm, &[len], copies).map(|c| c.with_checkpoint(ckpt))
    };

    let mut top = vec![
        Component::tensor("embed_tokens", Kind::Embedding, &[n(arch.vocab_size), h], 1)?
            .with_checkpoint("model.embed_tokens.weight"),
    ];

    // Attention, per projection.
    let mut attn = Vec::new();
    let mut norms = vec![
        norm("input_layernorm", h, l, &layer("input_layernorm.weight"))?,
        norm(
            "post_attention_layernorm",
            h,
            l,
            &layer("post_attention_layernorm.weight"),
        )?,
    ];
    match a.q_proj {
        QueryProjection::Full => attn.push(lin("q_proj", &[q_out, h], l, "self_attn.q_proj")?),
        QueryProjection::LowRank { q_lora_rank } => {
            let q = n(q_lora_rank);
            attn.push(lin("q_a_proj", &[q, h], l, "self_attn.q_a_proj")?);
            attn.push(lin("q_b_proj", &[q_out, q], l, "self_attn.q_b_proj")?);
            norms.push(norm(
                "q_a_layernorm",
                q,
                l,
                &layer("self_attn.q_a_layernorm.weight"),
            )?);
        }
    }
    attn.push(lin(
        "kv_a_proj_with_mqa",
        &[c + r, h],
        l,
        "self_attn.kv_a_proj_with_mqa",
    )?);
    attn.push(lin("kv_b_proj", &[kv_out, c], l, "self_attn.kv_b_proj")?);
    attn.push(lin("o_proj", &[h, o_in], l, "self_attn.o_proj")?);
    norms.push(norm(
        "kv_a_layernorm",
        c,
        l,
        &layer("self_attn.kv_a_layernorm.weight"),
    )?);
    top.push(Component::group("self_attn", attn)?);

    // A gated MLP of width `width` (dense layers, shared experts).
    let mlp = |group: &str, prefix: &str, width: u64, copies: u64| -> Result<Component> {
        let proj =
            |name: &str, shape: &[u64]| lin(name, shape, copies, &format!("{prefix}.{name}"));
        Component::group(
            group,
            vec![
                proj("gate_proj", &[width, h])?,
                proj("up_proj", &[width, h])?,
                proj("down_proj", &[h, width])?,
            ],
        )
    };

    let dense = n(arch.dense_layers());
    if dense > 0 {
        top.push(mlp("mlp", "mlp", n(arch.intermediate_size), dense)?);
    }
    if let Ffn::Moe(moe) = &arch.ffn {
        let m = n(arch.moe_layers());
        if m > 0 {
            let (e, k, i) = (
                n(moe.n_routed_experts),
                n(moe.num_experts_per_tok),
                n(moe.moe_intermediate_size),
            );
            top.push(
                Component::tensor("mlp.gate", Kind::Router, &[e, h], m)?
                    .with_checkpoint(layer("mlp.gate.weight")),
            );
            if let TopkSelection::NoauxTc { .. } = moe.routing.topk_method {
                // noaux_tc's selection bias, one per expert (DeepSeek-V3).
                top.push(
                    Component::tensor("mlp.gate.e_score_correction_bias", Kind::Bias, &[e], m)?
                        .with_checkpoint(layer("mlp.gate.e_score_correction_bias")),
                );
            }
            if moe.n_shared_experts > 0 {
                let width = n(moe.n_shared_experts) * i;
                top.push(mlp("mlp.shared_experts", "mlp.shared_experts", width, m)?);
            }
            let copies = m.checked_mul(e).ok_or_else(|| Error::Overflow {
                what: "mlp.experts".into(),
            })?;
            let active = m * k; // k <= e
            let expert = |name: &str, shape: &[u64]| {
                Component::routed(name, shape, copies, active)
                    .map(|c| c.with_checkpoint(layer(&format!("mlp.experts.*.{name}.weight"))))
            };
            top.push(Component::group(
                "mlp.experts",
                vec![
                    expert("gate_proj", &[i, h])?,
                    expert("up_proj", &[i, h])?,
                    expert("down_proj", &[h, i])?,
                ],
            )?);
        }
    }
    norms.push(norm("norm", h, 1, "model.norm.weight")?);
    top.push(Component::group("norms", norms)?);
    if !arch.tie_word_embeddings {
        top.push(
            Component::tensor("lm_head", Kind::Linear, &[n(arch.vocab_size), h], 1)?
                .with_checkpoint("lm_head.weight"),
        );
    }
    Component::group(arch.family.model_type(), top)
}

/// The multi-token-prediction layers a DeepSeek-V3-style checkpoint stores after the decoder
/// layers (`num_nextn_predict_layers`, at `model.layers.{num_hidden_layers}…`), which inference
/// does not run and transformers does not build — so they are counted here, apart from
/// [`mla_tree`]. Each is a decoder layer of the MoE kind (`self_attn`, `mlp.*`, its norms) plus
/// `enorm` and `hnorm` `[h]`, `eh_proj` `[h, 2h]`, `shared_head.norm` `[h]`, and the copies of
/// `embed_tokens` and `shared_head.head` `[V, h]` the checkpoint holds (DeepSeek-V3 §2.2).
/// `None` when the config declares none.
///
/// # Errors
/// As [`mla_tree`].
pub fn mtp_tree(arch: &Architecture) -> Result<Option<Component>> {
    let m = arch.num_nextn_predict_layers;
    if m == 0 {
        return Ok(None);
    }
    let mut one = arch.clone();
    one.num_hidden_layers = m;
    one.tie_word_embeddings = true; // its head is `shared_head.head`, below
    if let Ffn::Moe(moe) = &mut one.ffn {
        moe.first_k_dense_replace = 0;
    }
    let layers = mla_tree(&one)?;
    let (h, v, copies) = (n(arch.hidden_size), n(arch.vocab_size), n(m));
    let mtp = |name: &str| format!("model.layers.*.{name}");
    let mut parts: Vec<Component> = layers
        .children()
        .iter()
        .filter(|c| c.name() != "embed_tokens")
        .cloned()
        .collect();
    // The layer's own norms only: the final `norm` belongs to the main model.
    if let Some(norms) = parts.iter_mut().find(|c| c.name() == "norms") {
        let kept: Vec<Component> = norms
            .children()
            .iter()
            .filter(|c| c.name() != "norm")
            .cloned()
            .collect();
        *norms = Component::group("norms", kept)?;
    }
    for name in ["enorm", "hnorm", "shared_head.norm"] {
        parts.push(
            Component::tensor(name, Kind::Norm, &[h], copies)?
                .with_checkpoint(mtp(&format!("{name}.weight"))),
        );
    }
    parts.push(
        Component::tensor("eh_proj", Kind::Linear, &[h, 2 * h], copies)?
            .with_checkpoint(mtp("eh_proj.weight")),
    );
    parts.push(
        Component::tensor("embed_tokens", Kind::Embedding, &[v, h], copies)?
            .with_checkpoint(mtp("embed_tokens.weight")),
    );
    parts.push(
        Component::tensor("shared_head.head", Kind::Linear, &[v, h], copies)?
            .with_checkpoint(mtp("shared_head.head.weight")),
    );
    Ok(Some(Component::group("mtp", parts)?))
}

/// The KV cache: MLA's latent and RoPE key in every layer.
pub fn mla_kv_cache(arch: &Architecture) -> KvCache {
    KvCache::new(
        n(arch.num_hidden_layers),
        KvLayout::Mla {
            kv_lora_rank: n(arch.attention.kv_lora_rank),
            qk_rope_head_dim: n(arch.attention.qk_rope_head_dim),
        },
    )
}

/// The attention sizes for the FLOP count (expanded heads: `d + d^R` and `d_v`).
pub fn mla_attention_dims(arch: &Architecture) -> AttentionDims {
    let a = &arch.attention;
    AttentionDims {
        layers: n(arch.num_hidden_layers),
        heads: n(a.num_attention_heads),
        qk_head_dim: n(a.qk_nope_head_dim).saturating_add(n(a.qk_rope_head_dim)),
        v_head_dim: n(a.v_head_dim),
    }
}

/// Everything the accounting reports for an MLA-family model, named `name`.
///
/// # Errors
/// As [`mla_tree`].
pub fn mla_accounting(arch: &Architecture, name: &str) -> Result<Accounting> {
    Ok(Accounting {
        name: name.to_string(),
        tree: mla_tree(arch)?,
        attention: mla_attention_dims(arch),
        kv: mla_kv_cache(arch),
        max_position_embeddings: n(arch.max_position_embeddings),
        routed_experts: match (&arch.ffn, arch.moe_layers()) {
            (Ffn::Moe(m), layers) if layers > 0 => n(m.n_routed_experts),
            _ => 0,
        },
        tied_unembedding: if arch.tie_word_embeddings {
            n(arch.vocab_size) * n(arch.hidden_size)
        } else {
            0
        },
    })
}
