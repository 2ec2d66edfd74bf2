//! DeepSeek-V2 (`model_type` `deepseek_v2`): the config read from `config.json` and its
//! parameter tree.
//!
//! Per layer (DeepSeek-V2 report §2.1–2.2; tensor names from the checkpoint):
//!
//! ```text
//! attention  q_proj [n(d+r), h]             when q_lora_rank is null, else
//!            q_a_proj [q, h], q_b_proj [n(d+r), q]
//!            kv_a_proj_with_mqa [c+r, h], kv_b_proj [n(d+v), c], o_proj [h, n·v]
//! dense MLP  gate_proj, up_proj [I, h], down_proj [h, I]                 (first layers)
//! MoE        gate [E, h]; shared_experts gate/up [s·i, h], down [h, s·i];
//!            E routed experts, each gate/up [i, h], down [h, i]           (other layers)
//! norms      input_layernorm [h], post_attention_layernorm [h], q_a_layernorm [q], kv_a_layernorm [c]
//! ```
//!
//! plus `embed_tokens [V, h]`, the final `norm [h]` and `lm_head [V, h]` (absent when
//! `tie_word_embeddings`). Biases: `q_a_proj`, `kv_a_proj_with_mqa` and `o_proj` when
//! `attention_bias`; the dense and shared-expert MLPs when `mlp_bias` (transformers 5).
//!
//! A layer `i` is MoE when `n_routed_experts` is set, `i ≥ first_k_dense_replace` and
//! `i % moe_layer_freq == 0` — DeepSeek's rule. transformers ignores `moe_layer_freq`; the two
//! agree for every released config (`moe_layer_freq` 1).

use serde_json::Value;

use crate::error::{Error, Result};
use crate::fields::{Fields, GENERIC_KEYS};
use crate::flops::AttentionDims;
use crate::kv::{KvCache, KvLayout};
use crate::model::Accounting;
use crate::rope::{Rope, read_rope};
use crate::tree::{Component, Kind};

/// The query projection: full rank, or low rank through a normalised latent (`q_lora_rank`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QProj {
    /// `q_proj [n(d+r), h]` (`q_lora_rank: null`, as in DeepSeek-V2-Lite).
    Full,
    /// `q_a_proj [q, h]`, `q_a_layernorm [q]`, `q_b_proj [n(d+r), q]`.
    LowRank {
        /// `q`, the query latent (`q_lora_rank`, 1536 in DeepSeek-V2).
        q_lora_rank: u64,
    },
}

/// How routed experts are picked (`topk_method`). Only the group constraint matters to the
/// count: it is validated against the expert numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopkMethod {
    /// Top-k over all experts.
    Greedy,
    /// Keep the `topk_group` groups (of `n_group`) with the best expert, then top-k inside them.
    GroupLimitedGreedy {
        /// Groups the experts are split into.
        n_group: u64,
        /// Groups kept per token.
        topk_group: u64,
    },
}

/// DeepSeekMoE settings (report §2.2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeConfig {
    /// `E`, routed experts per MoE layer (`n_routed_experts`).
    pub n_routed_experts: u64,
    /// `k`, routed experts per token (`num_experts_per_tok`).
    pub num_experts_per_tok: u64,
    /// `i`, intermediate size of one expert (`moe_intermediate_size`).
    pub moe_intermediate_size: u64,
    /// Shared experts, fused into one MLP of width `n_shared_experts·i` (0 when none).
    pub n_shared_experts: u64,
    /// Expert selection.
    pub topk_method: TopkMethod,
    /// Weight scale of the routed output (no effect on the count).
    pub routed_scaling_factor: f64,
}

/// The feed-forward part of the non-dense layers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ffn {
    /// Every layer is a dense MLP (`n_routed_experts: null`).
    Dense,
    /// Layers past `first_k_dense_replace` (every `moe_layer_freq`-th) are MoE.
    Moe(MoeConfig),
}

/// A DeepSeek-V2 config as the count needs it. Field names follow `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeepSeekV2Config {
    /// `V`.
    pub vocab_size: u64,
    /// `h`.
    pub hidden_size: u64,
    /// `I`, the dense MLP's intermediate size (used by the first `first_k_dense_replace` layers).
    pub intermediate_size: u64,
    /// `l`.
    pub num_hidden_layers: u64,
    /// `n_h`.
    pub num_attention_heads: u64,
    /// Key/value heads as transformers reads them (no effect on MLA's count or cache).
    pub num_key_value_heads: u64,
    /// The query projection.
    pub q_proj: QProj,
    /// `d_c`, the KV latent.
    pub kv_lora_rank: u64,
    /// `d`, the no-RoPE part of a query/key head.
    pub qk_nope_head_dim: u64,
    /// `d^R`, the RoPE part of a query head and the shared RoPE key.
    pub qk_rope_head_dim: u64,
    /// `d_v`, a value head.
    pub v_head_dim: u64,
    /// Dense or MoE feed-forward.
    pub ffn: Ffn,
    /// Leading layers that stay dense.
    pub first_k_dense_replace: u64,
    /// Every `moe_layer_freq`-th layer (after the dense ones) is MoE.
    pub moe_layer_freq: u64,
    /// `lm_head` shares `embed_tokens` (and is not stored).
    pub tie_word_embeddings: bool,
    /// Biases on `q_a_proj`, `kv_a_proj_with_mqa` and `o_proj` (never on `q_proj`, `q_b_proj` or
    /// `kv_b_proj`).
    pub attention_bias: bool,
    /// Biases on the dense and shared-expert MLPs.
    pub mlp_bias: bool,
    /// The longest context the model is configured for.
    pub max_position_embeddings: u64,
    /// RoPE base and scaling.
    pub rope: Rope,
}

const DEEPSEEK_V2_KEYS: &[&str] = &[
    "attention_dropout",
    "aux_loss_alpha",
    "ep_size",
    "hidden_act",
    "norm_topk_prob",
    "output_router_logits",
    "pretraining_tp",
    "rms_norm_eps",
    "router_aux_loss_coef",
    "seq_aux",
];

impl DeepSeekV2Config {
    /// Reads a `config.json` text (hub or transformers-5 form).
    pub fn from_json_str(text: &str) -> Result<DeepSeekV2Config> {
        let value: Value = serde_json::from_str(text)?;
        Self::from_json(&value)
    }

    /// Reads a parsed `config.json`. `model_type`, when present, must be `deepseek_v2`.
    pub fn from_json(value: &Value) -> Result<DeepSeekV2Config> {
        let mut f = Fields::new(value, "", "deepseek_v2")?;
        if let Some(t) = f.opt_str("model_type")?
            && t != "deepseek_v2"
        {
            return Err(Error::invalid("model_type", t, "expected deepseek_v2"));
        }
        let vocab_size = f.size("vocab_size")?;
        let hidden_size = f.size("hidden_size")?;
        let num_hidden_layers = f.size("num_hidden_layers")?;
        let num_attention_heads = f.size("num_attention_heads")?;
        let num_key_value_heads = f.size_or("num_key_value_heads", num_attention_heads)?;
        // Absent would be ambiguous (transformers defaults it to 1536): require it, null or a size.
        if !f.has("q_lora_rank") {
            return Err(Error::MissingField {
                field: "q_lora_rank".into(),
            });
        }
        let q_proj = match f.opt_size("q_lora_rank")? {
            None => QProj::Full,
            Some(q_lora_rank) => QProj::LowRank { q_lora_rank },
        };
        let kv_lora_rank = f.size("kv_lora_rank")?;
        let qk_nope_head_dim = f.size("qk_nope_head_dim")?;
        let qk_rope_head_dim = f.size("qk_rope_head_dim")?;
        let v_head_dim = f.size("v_head_dim")?;
        let first_k_dense_replace = f.u64_or("first_k_dense_replace", 0)?;
        let moe_layer_freq = f.size_or("moe_layer_freq", 1)?;
        let tie_word_embeddings = f.bool_or("tie_word_embeddings", false)?;
        let attention_bias = f.bool_or("attention_bias", false)?;
        let mlp_bias = f.bool_or("mlp_bias", false)?;
        let max_position_embeddings = f.size("max_position_embeddings")?;
        let rope = read_rope(&mut f, 10_000.0, "deepseek_v2")?;

        // Sums of head sizes used below; checked once here.
        let qk_head_dim = checked_add(qk_nope_head_dim, qk_rope_head_dim, "qk_head_dim")?;
        checked_add(
            qk_nope_head_dim,
            v_head_dim,
            "qk_nope_head_dim + v_head_dim",
        )?;
        checked_add(
            kv_lora_rank,
            qk_rope_head_dim,
            "kv_lora_rank + qk_rope_head_dim",
        )?;

        // Derived fields transformers 5 writes back: they must agree.
        if let Some(qk) = f.opt_u64("qk_head_dim")?
            && qk != qk_head_dim
        {
            return Err(Error::invalid(
                "qk_head_dim",
                qk,
                format!("must equal qk_nope_head_dim + qk_rope_head_dim = {qk_head_dim}"),
            ));
        }
        if let Some(hd) = f.opt_u64("head_dim")?
            && hd != qk_rope_head_dim
        {
            return Err(Error::invalid(
                "head_dim",
                hd,
                format!("transformers sets it to qk_rope_head_dim = {qk_rope_head_dim}"),
            ));
        }
        // transformers' DeepseekV2Config.validate_architecture refuses this; so do we, so that a
        // config counted here also loads in the oracle.
        if !hidden_size.is_multiple_of(num_attention_heads) {
            return Err(Error::invalid(
                "num_attention_heads",
                num_attention_heads,
                format!("must divide hidden_size = {hidden_size}"),
            ));
        }
        if !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(Error::invalid(
                "num_key_value_heads",
                num_key_value_heads,
                format!("must divide num_attention_heads = {num_attention_heads}"),
            ));
        }

        let ffn = match f.opt_size("n_routed_experts")? {
            None => {
                f.ignore(&[
                    "num_experts_per_tok",
                    "moe_intermediate_size",
                    "n_shared_experts",
                    "n_group",
                    "topk_group",
                    "topk_method",
                    "scoring_func",
                    "routed_scaling_factor",
                ]);
                Ffn::Dense
            }
            Some(e) => Ffn::Moe(read_moe(&mut f, e)?),
        };
        let dense_layers = count_dense_layers(
            num_hidden_layers,
            first_k_dense_replace,
            moe_layer_freq,
            &ffn,
        );
        let intermediate_size = if dense_layers > 0 {
            f.size("intermediate_size")?
        } else {
            f.u64_or("intermediate_size", 0)?
        };
        f.ignore(GENERIC_KEYS);
        f.ignore(DEEPSEEK_V2_KEYS);
        if let Some(act) = f.opt_str("hidden_act")?
            && act.is_empty()
        {
            return Err(Error::invalid(
                "hidden_act",
                "\"\"",
                "must name an activation",
            ));
        }
        f.finish()?;

        let config = DeepSeekV2Config {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            q_proj,
            kv_lora_rank,
            qk_nope_head_dim,
            qk_rope_head_dim,
            v_head_dim,
            ffn,
            first_k_dense_replace,
            moe_layer_freq,
            tie_word_embeddings,
            attention_bias,
            mlp_bias,
            max_position_embeddings,
            rope,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the invariants [`from_json`](Self::from_json) establishes, for a config built by
    /// hand: sizes of at least 1, `k ≤ E`, head sums that fit in 64 bits. [`tree`](Self::tree)
    /// calls it.
    pub fn validate(&self) -> Result<()> {
        let mut sizes = vec![
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
            ("moe_layer_freq", self.moe_layer_freq),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let QProj::LowRank { q_lora_rank } = self.q_proj {
            sizes.push(("q_lora_rank", q_lora_rank));
        }
        if self.dense_layers() > 0 {
            sizes.push(("intermediate_size", self.intermediate_size));
        }
        if let Ffn::Moe(m) = &self.ffn {
            sizes.push(("n_routed_experts", m.n_routed_experts));
            sizes.push(("num_experts_per_tok", m.num_experts_per_tok));
            sizes.push(("moe_intermediate_size", m.moe_intermediate_size));
            if m.num_experts_per_tok > m.n_routed_experts {
                return Err(Error::invalid(
                    "num_experts_per_tok",
                    m.num_experts_per_tok,
                    format!("cannot exceed n_routed_experts = {}", m.n_routed_experts),
                ));
            }
        }
        if let Some((field, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(Error::invalid(field, 0, "must be at least 1"));
        }
        checked_add(
            self.qk_nope_head_dim,
            self.qk_rope_head_dim,
            "qk_nope_head_dim + qk_rope_head_dim",
        )?;
        checked_add(
            self.qk_nope_head_dim,
            self.v_head_dim,
            "qk_nope_head_dim + v_head_dim",
        )?;
        checked_add(
            self.kv_lora_rank,
            self.qk_rope_head_dim,
            "kv_lora_rank + qk_rope_head_dim",
        )?;
        Ok(())
    }

    /// Whether layer `i` is MoE (DeepSeek's rule, see the [module docs](self)).
    pub fn is_moe_layer(&self, i: u64) -> bool {
        matches!(self.ffn, Ffn::Moe(_))
            && i >= self.first_k_dense_replace
            && i.is_multiple_of(self.moe_layer_freq)
    }

    /// Number of MoE layers.
    pub fn moe_layers(&self) -> u64 {
        self.num_hidden_layers
            - count_dense_layers(
                self.num_hidden_layers,
                self.first_k_dense_replace,
                self.moe_layer_freq,
                &self.ffn,
            )
    }

    /// Number of dense-MLP layers.
    pub fn dense_layers(&self) -> u64 {
        self.num_hidden_layers - self.moe_layers()
    }

    /// The parameter tree: `embed_tokens`, `self_attn` (per projection), `mlp` (dense layers),
    /// `mlp.gate` (router), `mlp.shared_experts`, `mlp.experts` (routed), `norms`, `lm_head`.
    /// Empty groups (no dense layer, no shared expert, a tied `lm_head`) are left out.
    pub fn tree(&self) -> Result<Component> {
        self.validate()?;
        let h = self.hidden_size;
        let l = self.num_hidden_layers;
        let n = self.num_attention_heads;
        let (d, r, v, c) = (
            self.qk_nope_head_dim,
            self.qk_rope_head_dim,
            self.v_head_dim,
            self.kv_lora_rank,
        );
        let mul = |a: u64, b: u64, what: &str| {
            a.checked_mul(b).ok_or_else(|| Error::Overflow {
                what: what.to_string(),
            })
        };
        let q_out = mul(n, d + r, "q_b_proj")?;
        let kv_out = mul(n, d + v, "kv_b_proj")?;
        let o_in = mul(n, v, "o_proj")?;

        let layer = |name: &str| format!("model.layers.*.{name}");
        let lin = |name: &str, shape: &[u64], copies: u64, ckpt: &str| {
            Component::tensor(name, Kind::Linear, shape, copies)
                .map(|c| c.with_checkpoint(layer(&format!("{ckpt}.weight"))))
        };
        let bias = |name: &str, len: u64, copies: u64, ckpt: &str| {
            Component::tensor(name, Kind::Bias, &[len], copies)
                .map(|c| c.with_checkpoint(layer(&format!("{ckpt}.bias"))))
        };
        let norm = |name: &str, len: u64, copies: u64, ckpt: &str| {
            Component::tensor(name, Kind::Norm, &[len], copies).map(|c| c.with_checkpoint(ckpt))
        };

        let mut top = vec![
            Component::tensor("embed_tokens", Kind::Embedding, &[self.vocab_size, h], 1)?
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
        match self.q_proj {
            QProj::Full => attn.push(lin("q_proj", &[q_out, h], l, "self_attn.q_proj")?),
            QProj::LowRank { q_lora_rank: q } => {
                attn.push(lin("q_a_proj", &[q, h], l, "self_attn.q_a_proj")?);
                if self.attention_bias {
                    attn.push(bias("q_a_proj.bias", q, l, "self_attn.q_a_proj")?);
                }
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
        if self.attention_bias {
            attn.push(bias(
                "kv_a_proj_with_mqa.bias",
                c + r,
                l,
                "self_attn.kv_a_proj_with_mqa",
            )?);
        }
        attn.push(lin("kv_b_proj", &[kv_out, c], l, "self_attn.kv_b_proj")?);
        attn.push(lin("o_proj", &[h, o_in], l, "self_attn.o_proj")?);
        if self.attention_bias {
            attn.push(bias("o_proj.bias", h, l, "self_attn.o_proj")?);
        }
        norms.push(norm(
            "kv_a_layernorm",
            c,
            l,
            &layer("self_attn.kv_a_layernorm.weight"),
        )?);
        top.push(Component::group("self_attn", attn)?);

        // A gated MLP of width `width` (dense layers, shared experts).
        let mlp = |group: &str, prefix: &str, width: u64, copies: u64| -> Result<Component> {
            let mut parts = vec![
                lin(
                    "gate_proj",
                    &[width, h],
                    copies,
                    &format!("{prefix}.gate_proj"),
                )?,
                lin("up_proj", &[width, h], copies, &format!("{prefix}.up_proj"))?,
                lin(
                    "down_proj",
                    &[h, width],
                    copies,
                    &format!("{prefix}.down_proj"),
                )?,
            ];
            if self.mlp_bias {
                parts.push(bias(
                    "gate_proj.bias",
                    width,
                    copies,
                    &format!("{prefix}.gate_proj"),
                )?);
                parts.push(bias(
                    "up_proj.bias",
                    width,
                    copies,
                    &format!("{prefix}.up_proj"),
                )?);
                parts.push(bias(
                    "down_proj.bias",
                    h,
                    copies,
                    &format!("{prefix}.down_proj"),
                )?);
            }
            Component::group(group, parts)
        };

        let dense = self.dense_layers();
        if dense > 0 {
            top.push(mlp("mlp", "mlp", self.intermediate_size, dense)?);
        }
        if let Ffn::Moe(moe) = self.ffn {
            let m = self.moe_layers();
            if m > 0 {
                let (e, k, i) = (
                    moe.n_routed_experts,
                    moe.num_experts_per_tok,
                    moe.moe_intermediate_size,
                );
                top.push(
                    Component::tensor("mlp.gate", Kind::Router, &[e, h], m)?
                        .with_checkpoint(layer("mlp.gate.weight")),
                );
                if moe.n_shared_experts > 0 {
                    let width = mul(moe.n_shared_experts, i, "shared_experts")?;
                    top.push(mlp("mlp.shared_experts", "mlp.shared_experts", width, m)?);
                }
                let copies = mul(m, e, "mlp.experts")?;
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
        if !self.tie_word_embeddings {
            top.push(
                Component::tensor("lm_head", Kind::Linear, &[self.vocab_size, h], 1)?
                    .with_checkpoint("lm_head.weight"),
            );
        }
        Component::group("DeepSeek-V2", top)
    }

    /// The KV cache: MLA's latent and RoPE key in every layer.
    pub fn kv_cache(&self) -> KvCache {
        KvCache::new(
            self.num_hidden_layers,
            KvLayout::Mla {
                kv_lora_rank: self.kv_lora_rank,
                qk_rope_head_dim: self.qk_rope_head_dim,
            },
        )
    }

    /// The attention sizes for the FLOP count (expanded heads: `d + d^R` and `d_v`).
    pub fn attention_dims(&self) -> AttentionDims {
        AttentionDims {
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            qk_head_dim: self.qk_nope_head_dim.saturating_add(self.qk_rope_head_dim),
            v_head_dim: self.v_head_dim,
        }
    }

    /// Everything the accounting reports, named `name`.
    pub fn accounting(&self, name: &str) -> Result<Accounting> {
        Ok(Accounting {
            name: name.to_string(),
            tree: self.tree()?,
            attention: self.attention_dims(),
            kv: self.kv_cache(),
            max_position_embeddings: self.max_position_embeddings,
            routed_experts: match self.ffn {
                Ffn::Moe(m) if self.moe_layers() > 0 => m.n_routed_experts,
                _ => 0,
            },
            tied_unembedding: if self.tie_word_embeddings {
                self.vocab_size.saturating_mul(self.hidden_size)
            } else {
                0
            },
        })
    }
}

fn checked_add(a: u64, b: u64, what: &str) -> Result<u64> {
    a.checked_add(b).ok_or_else(|| Error::Overflow {
        what: what.to_string(),
    })
}

/// Layers in `[0, l)` that are dense: all when there are no routed experts, otherwise those
/// below `first_k` and those not a multiple of `freq`.
fn count_dense_layers(l: u64, first_k: u64, freq: u64, ffn: &Ffn) -> u64 {
    match ffn {
        Ffn::Dense => l,
        Ffn::Moe(_) => {
            let start = first_k.min(l);
            // Multiples of `freq` in [start, l). (`validate` refuses freq 0.)
            let freq = freq.max(1);
            let moe = l.div_ceil(freq) - start.div_ceil(freq);
            l - moe
        }
    }
}

fn read_moe(f: &mut Fields<'_>, e: u64) -> Result<MoeConfig> {
    let k = f.size("num_experts_per_tok")?;
    if k > e {
        return Err(Error::invalid(
            "num_experts_per_tok",
            k,
            format!("cannot exceed n_routed_experts = {e}"),
        ));
    }
    let moe_intermediate_size = f.size("moe_intermediate_size")?;
    // Absent or null: no shared experts (DeepSeek's code); 0 likewise.
    let n_shared_experts = f.opt_u64("n_shared_experts")?.unwrap_or(0);
    let method = f.opt_str("topk_method")?.unwrap_or("greedy");
    let n_group = f.opt_size("n_group")?;
    let topk_group = f.opt_size("topk_group")?;
    if let Some(g) = n_group
        && !e.is_multiple_of(g)
    {
        return Err(Error::invalid(
            "n_group",
            g,
            format!("must divide n_routed_experts = {e}"),
        ));
    }
    if let (Some(g), Some(t)) = (n_group, topk_group)
        && t > g
    {
        return Err(Error::invalid(
            "topk_group",
            t,
            format!("cannot exceed n_group = {g}"),
        ));
    }
    let topk_method = match method {
        "greedy" => TopkMethod::Greedy,
        "group_limited_greedy" => {
            let n_group = n_group.ok_or_else(|| Error::MissingField {
                field: "n_group".into(),
            })?;
            let topk_group = topk_group.ok_or_else(|| Error::MissingField {
                field: "topk_group".into(),
            })?;
            let reachable = topk_group * (e / n_group);
            if k > reachable {
                return Err(Error::invalid(
                    "num_experts_per_tok",
                    k,
                    format!(
                        "more than the {reachable} experts in topk_group = {topk_group} groups of {}",
                        e / n_group
                    ),
                ));
            }
            TopkMethod::GroupLimitedGreedy {
                n_group,
                topk_group,
            }
        }
        other => {
            return Err(Error::invalid(
                "topk_method",
                other,
                "DeepSeek-V2 knows greedy and group_limited_greedy",
            ));
        }
    };
    if let Some(s) = f.opt_str("scoring_func")?
        && s != "softmax"
    {
        return Err(Error::invalid(
            "scoring_func",
            s,
            "DeepSeek-V2 scores experts with softmax",
        ));
    }
    let routed_scaling_factor = f.opt_f64("routed_scaling_factor")?.unwrap_or(1.0);
    Ok(MoeConfig {
        n_routed_experts: e,
        num_experts_per_tok: k,
        moe_intermediate_size,
        n_shared_experts,
        topk_method,
        routed_scaling_factor,
    })
}
