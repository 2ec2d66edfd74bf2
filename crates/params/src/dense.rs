//! Dense Llama-style decoders (`model_type` `llama`): the baseline DeepSeek-V2 is compared
//! against (DeepSeek LLM 67B is a Llama-architecture model with GQA) and any Llama config.
//!
//! Per layer: `q_proj [n·d_h, h]`, `k_proj`/`v_proj [n_kv·d_h, h]`, `o_proj [h, n·d_h]`, a gated
//! MLP `gate_proj`/`up_proj [I, h]`, `down_proj [h, I]`, and two RMSNorms `[h]`; plus
//! `embed_tokens [V, h]`, the final norm and `lm_head [V, h]` unless tied.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::fields::{Fields, GENERIC_KEYS};
use crate::flops::AttentionDims;
use crate::kv::{KvCache, KvLayout};
use crate::model::Accounting;
use crate::rope::{Rope, RopeScaling, read_rope};
use crate::tree::{Component, Kind};

/// A Llama-style dense decoder. Field names follow `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseConfig {
    /// `V`.
    pub vocab_size: u64,
    /// `h`.
    pub hidden_size: u64,
    /// `I`, the MLP's intermediate size.
    pub intermediate_size: u64,
    /// `l`.
    pub num_hidden_layers: u64,
    /// `n_h`, query heads.
    pub num_attention_heads: u64,
    /// `n_kv`, key/value heads (GQA groups; equal to `n_h` for MHA, 1 for MQA).
    pub num_key_value_heads: u64,
    /// `d_h` (`hidden_size / num_attention_heads` unless given).
    pub head_dim: u64,
    /// Biases on `q_proj`, `k_proj`, `v_proj`, `o_proj`.
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// `lm_head` shares `embed_tokens`.
    pub tie_word_embeddings: bool,
    /// The longest context the model is configured for.
    pub max_position_embeddings: u64,
    /// RoPE base and scaling.
    pub rope: Rope,
}

const LLAMA_KEYS: &[&str] = &[
    "attention_dropout",
    "hidden_act",
    "pretraining_tp",
    "rms_norm_eps",
];

impl DenseConfig {
    /// DeepSeek LLM 67B, the dense baseline of the DeepSeek-V2 report (95 layers, `h` 8192,
    /// 64 heads of 128 with GQA over 8 KV heads, MLP 22016, vocabulary 102400, 4K context;
    /// DeepSeek LLM report arXiv 2401.02954 Table 2 and the hub config of
    /// `deepseek-ai/deepseek-llm-67b-base`).
    pub fn deepseek_llm_67b() -> DenseConfig {
        DenseConfig {
            vocab_size: 102_400,
            hidden_size: 8192,
            intermediate_size: 22_016,
            num_hidden_layers: 95,
            num_attention_heads: 64,
            num_key_value_heads: 8,
            head_dim: 128,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
            max_position_embeddings: 4096,
            rope: Rope {
                theta: 10_000.0,
                scaling: RopeScaling::None,
            },
        }
    }

    /// Reads a `config.json` text.
    pub fn from_json_str(text: &str) -> Result<DenseConfig> {
        let value: Value = serde_json::from_str(text)?;
        Self::from_json(&value)
    }

    /// Reads a parsed `config.json`. `model_type`, when present, must be `llama`.
    pub fn from_json(value: &Value) -> Result<DenseConfig> {
        let mut f = Fields::new(value, "", "llama")?;
        if let Some(t) = f.opt_str("model_type")?
            && t != "llama"
        {
            return Err(Error::invalid("model_type", t, "expected llama"));
        }
        let vocab_size = f.size("vocab_size")?;
        let hidden_size = f.size("hidden_size")?;
        let intermediate_size = f.size("intermediate_size")?;
        let num_hidden_layers = f.size("num_hidden_layers")?;
        let num_attention_heads = f.size("num_attention_heads")?;
        let num_key_value_heads = f.size_or("num_key_value_heads", num_attention_heads)?;
        let head_dim = match f.opt_size("head_dim")? {
            Some(d) => d,
            None => {
                // Derived, so the heads must split the hidden size evenly.
                if !hidden_size.is_multiple_of(num_attention_heads) {
                    return Err(Error::invalid(
                        "num_attention_heads",
                        num_attention_heads,
                        format!(
                            "must divide hidden_size = {hidden_size} when head_dim is not given"
                        ),
                    ));
                }
                hidden_size / num_attention_heads
            }
        };
        KvLayout::from_heads(num_attention_heads, num_key_value_heads, head_dim)?;
        let attention_bias = f.bool_or("attention_bias", false)?;
        let mlp_bias = f.bool_or("mlp_bias", false)?;
        let tie_word_embeddings = f.bool_or("tie_word_embeddings", false)?;
        let max_position_embeddings = f.size("max_position_embeddings")?;
        let rope = read_rope(&mut f, 10_000.0, "llama")?;
        f.ignore(GENERIC_KEYS);
        f.ignore(LLAMA_KEYS);
        f.finish()?;
        Ok(DenseConfig {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            attention_bias,
            mlp_bias,
            tie_word_embeddings,
            max_position_embeddings,
            rope,
        })
    }

    /// The parameter tree: `embed_tokens`, `self_attn` (per projection), `mlp`, `norms`,
    /// `lm_head`.
    pub fn tree(&self) -> Result<Component> {
        let (h, l, i) = (
            self.hidden_size,
            self.num_hidden_layers,
            self.intermediate_size,
        );
        let of = |what: &str| Error::Overflow {
            what: what.to_string(),
        };
        let q = self
            .num_attention_heads
            .checked_mul(self.head_dim)
            .ok_or_else(|| of("q_proj"))?;
        let kv = self
            .num_key_value_heads
            .checked_mul(self.head_dim)
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
        if self.attention_bias {
            for (name, len) in [("q_proj", q), ("k_proj", kv), ("v_proj", kv), ("o_proj", h)] {
                attn.push(bias(name, len, &format!("self_attn.{name}"))?);
            }
        }
        let mut mlp = vec![
            lin("gate_proj", &[i, h], "mlp.gate_proj")?,
            lin("up_proj", &[i, h], "mlp.up_proj")?,
            lin("down_proj", &[h, i], "mlp.down_proj")?,
        ];
        if self.mlp_bias {
            for (name, len) in [("gate_proj", i), ("up_proj", i), ("down_proj", h)] {
                mlp.push(bias(name, len, &format!("mlp.{name}"))?);
            }
        }
        let norm = |name: &str, copies: u64, ckpt: String| {
            Component::tensor(name, Kind::Norm, &[h], copies).map(|c| c.with_checkpoint(ckpt))
        };
        let mut top = vec![
            Component::tensor("embed_tokens", Kind::Embedding, &[self.vocab_size, h], 1)?
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
        if !self.tie_word_embeddings {
            top.push(
                Component::tensor("lm_head", Kind::Linear, &[self.vocab_size, h], 1)?
                    .with_checkpoint("lm_head.weight"),
            );
        }
        Component::group("Llama", top)
    }

    /// The KV cache: MHA, GQA or MQA by the number of key/value heads.
    pub fn kv_cache(&self) -> Result<KvCache> {
        Ok(KvCache::new(
            self.num_hidden_layers,
            KvLayout::from_heads(
                self.num_attention_heads,
                self.num_key_value_heads,
                self.head_dim,
            )?,
        ))
    }

    /// The attention sizes for the FLOP count.
    pub fn attention_dims(&self) -> AttentionDims {
        AttentionDims {
            layers: self.num_hidden_layers,
            heads: self.num_attention_heads,
            qk_head_dim: self.head_dim,
            v_head_dim: self.head_dim,
        }
    }

    /// Everything the accounting reports, named `name`.
    pub fn accounting(&self, name: &str) -> Result<Accounting> {
        Ok(Accounting {
            name: name.to_string(),
            tree: self.tree()?,
            attention: self.attention_dims(),
            kv: self.kv_cache()?,
            max_position_embeddings: self.max_position_embeddings,
            routed_experts: 0,
            tied_unembedding: if self.tie_word_embeddings {
                self.vocab_size.saturating_mul(self.hidden_size)
            } else {
                0
            },
        })
    }
}
