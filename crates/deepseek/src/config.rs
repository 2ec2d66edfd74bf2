//! `config.json` of a DeepSeek-V2-family checkpoint, read in both forms the ecosystem writes, and
//! mapped onto each block's own config.

use std::path::Path;

use deepblocks_mla::{MlaConfig, QProjConfig};
use deepblocks_moe::{MoeConfig, RouterConfig, Scoring, TopkMethod, Weighting};
use deepblocks_rope::{
    DynamicNtkScaling, Layout, LinearScaling, Llama3Scaling, RopeConfig, RopeScaling, YarnScaling,
    softmax_scale,
};
use serde_json::{Map, Value};

use crate::{Error, Result};

/// The model configuration: the fields of a DeepSeek-V2 `config.json` that the forward pass
/// uses, named as there, validated.
///
/// [`Config::from_json`] reads both the hub form (`rope_theta` + `rope_scaling` with `type`, as
/// the released checkpoints ship) and the transformers-5 form (`rope_parameters` with
/// `rope_type`, as `save_pretrained` writes). `q_lora_rank: null` is a full query projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `V`.
    pub vocab_size: usize,
    /// `h`.
    pub hidden_size: usize,
    /// Width of the dense MLP of the first `first_k_dense_replace` layers.
    pub intermediate_size: usize,
    /// Width `i` of one routed expert.
    pub moe_intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// `n`.
    pub num_attention_heads: usize,
    /// `q`, or `None` for a full `q_proj` (`null` in the file).
    pub q_lora_rank: Option<usize>,
    /// `c`.
    pub kv_lora_rank: usize,
    /// `d`.
    pub qk_nope_head_dim: usize,
    /// `r`.
    pub qk_rope_head_dim: usize,
    /// `v`.
    pub v_head_dim: usize,
    /// Routed experts `e` (0 or absent: no MoE layers).
    pub n_routed_experts: usize,
    /// Shared experts (0 or `null`: none).
    pub n_shared_experts: usize,
    /// `k`.
    pub num_experts_per_tok: usize,
    /// `topk_method` with its `n_group` / `topk_group`.
    pub topk_method: TopkMethod,
    /// `scoring_func`.
    pub scoring_func: Scoring,
    /// `norm_topk_prob`.
    pub norm_topk_prob: bool,
    /// `routed_scaling_factor` (ρ).
    pub routed_scaling_factor: f32,
    /// The first this many layers use the dense MLP.
    pub first_k_dense_replace: usize,
    /// Of the rest, every `moe_layer_freq`-th is MoE (DeepSeek's rule; transformers ignores it).
    pub moe_layer_freq: usize,
    /// ε of every RMSNorm.
    pub rms_norm_eps: f32,
    /// Positions run `0..max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling (YaRN for DeepSeek-V2).
    pub rope_scaling: RopeScaling,
    /// Whether `lm_head` is the embedding matrix (no `lm_head.weight` in the checkpoint).
    pub tie_word_embeddings: bool,
    /// `bos_token_id`.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` (one id or a list in the file).
    pub eos_token_ids: Vec<u32>,
}

impl Config {
    /// Reads and validates `path` (a `config.json`).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Json`], or any error of [`Config::from_json`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_json(&json)
    }

    /// Reads and validates a parsed `config.json`.
    ///
    /// # Errors
    /// [`Error::MissingField`] for a required field, [`Error::Field`] for a value of the wrong
    /// type or out of range, [`Error::Unsupported`] for a feature this model does not implement
    /// (`hidden_act` other than `silu`, `attention_bias`, `mlp_bias`, an unknown `topk_method`,
    /// `scoring_func` or RoPE type) — each naming the field.
    pub fn from_json(json: &Value) -> Result<Self> {
        let obj = json.as_object().ok_or_else(|| Error::Field {
            field: "config.json".into(),
            value: short(json),
            reason: "must be a JSON object",
        })?;
        let f = Fields(obj);

        if let Some(act) = f.opt_str("hidden_act")?
            && act != "silu"
        {
            return Err(Error::Unsupported {
                field: "hidden_act",
                value: act.to_string(),
                reason: "DeepSeek-V2 uses SiLU (SwiGLU); no other activation is implemented",
            });
        }
        for field in ["attention_bias", "mlp_bias"] {
            if f.opt_bool(field)?.unwrap_or(false) {
                return Err(Error::Unsupported {
                    field,
                    value: "true".into(),
                    reason: "DeepSeek-V2 has no biases; biased projections are not implemented",
                });
            }
        }

        let n_routed_experts = f.opt_usize("n_routed_experts")?.unwrap_or(0);
        let n_group = f.opt_usize("n_group")?;
        let topk_group = f.opt_usize("topk_group")?;
        let grouped = || -> Result<(usize, usize)> {
            let need = |field: &'static str, v: Option<usize>| {
                v.ok_or_else(|| Error::Field {
                    field: field.into(),
                    value: "null".into(),
                    reason: "group_limited_greedy and noaux_tc need n_group and topk_group",
                })
            };
            Ok((need("n_group", n_group)?, need("topk_group", topk_group)?))
        };
        let topk_method = match f.opt_str("topk_method")?.unwrap_or("greedy") {
            "greedy" => TopkMethod::Greedy,
            "group_limited_greedy" => {
                let (n_group, topk_group) = grouped()?;
                TopkMethod::GroupLimitedGreedy {
                    n_group,
                    topk_group,
                }
            }
            "noaux_tc" => {
                let (n_group, topk_group) = grouped()?;
                TopkMethod::NoauxTc {
                    n_group,
                    topk_group,
                }
            }
            other => {
                return Err(Error::Unsupported {
                    field: "topk_method",
                    value: other.to_string(),
                    reason: "known methods: greedy, group_limited_greedy, noaux_tc",
                });
            }
        };
        let scoring_func = match f.opt_str("scoring_func")?.unwrap_or("softmax") {
            "softmax" => Scoring::Softmax,
            "sigmoid" => Scoring::Sigmoid,
            other => {
                return Err(Error::Unsupported {
                    field: "scoring_func",
                    value: other.to_string(),
                    reason: "known scoring functions: softmax, sigmoid",
                });
            }
        };
        let max_position_embeddings = f.usize("max_position_embeddings")?;
        let (rope_theta, rope_scaling) = rope(&f, max_position_embeddings)?;

        let config = Config {
            vocab_size: f.usize("vocab_size")?,
            hidden_size: f.usize("hidden_size")?,
            intermediate_size: f.usize("intermediate_size")?,
            moe_intermediate_size: f.opt_usize("moe_intermediate_size")?.unwrap_or(0),
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads: f.usize("num_attention_heads")?,
            q_lora_rank: f.opt_usize("q_lora_rank")?,
            kv_lora_rank: f.usize("kv_lora_rank")?,
            qk_nope_head_dim: f.usize("qk_nope_head_dim")?,
            qk_rope_head_dim: f.usize("qk_rope_head_dim")?,
            v_head_dim: f.usize("v_head_dim")?,
            n_routed_experts,
            n_shared_experts: f.opt_usize("n_shared_experts")?.unwrap_or(0),
            num_experts_per_tok: f.opt_usize("num_experts_per_tok")?.unwrap_or(0),
            topk_method,
            scoring_func,
            norm_topk_prob: f.opt_bool("norm_topk_prob")?.unwrap_or(false),
            routed_scaling_factor: f.opt_f64("routed_scaling_factor")?.unwrap_or(1.0) as f32,
            first_k_dense_replace: f.opt_usize("first_k_dense_replace")?.unwrap_or(0),
            moe_layer_freq: f.opt_usize("moe_layer_freq")?.unwrap_or(1),
            rms_norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32,
            max_position_embeddings,
            rope_theta,
            rope_scaling,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            bos_token_id: f.opt_u32("bos_token_id")?,
            eos_token_ids: f.ids("eos_token_id")?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the fields against each other by building every block's config.
    ///
    /// # Errors
    /// [`Error::Field`] naming a zero dimension; the blocks' own errors (e.g. `n_group` not
    /// dividing the experts, `num_experts_per_tok` above them, an odd `qk_rope_head_dim`).
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
            ("moe_layer_freq", self.moe_layer_freq),
        ] {
            if v == 0 {
                return Err(Error::Field {
                    field: field.into(),
                    value: "0".into(),
                    reason: "must be at least 1",
                });
            }
        }
        if self.q_lora_rank == Some(0) {
            return Err(Error::Field {
                field: "q_lora_rank".into(),
                value: "0".into(),
                reason: "must be null (full q_proj) or at least 1",
            });
        }
        let dense_layers = (0..self.num_hidden_layers)
            .filter(|&l| !self.is_moe_layer(l))
            .count();
        if dense_layers > 0 && self.intermediate_size == 0 {
            return Err(Error::Field {
                field: "intermediate_size".into(),
                value: "0".into(),
                reason: "dense MLP layers need a width",
            });
        }
        if dense_layers < self.num_hidden_layers {
            if self.moe_intermediate_size == 0 {
                return Err(Error::Field {
                    field: "moe_intermediate_size".into(),
                    value: "0".into(),
                    reason: "MoE layers need an expert width",
                });
            }
            self.moe_config(Weighting::default()).router.validate()?;
        }
        RopeConfig::new(
            self.qk_rope_head_dim,
            self.rope_theta,
            self.max_position_embeddings,
            Layout::Interleaved,
        )
        .with_scaling(self.rope_scaling)
        .validate()?;
        self.mla_config()?.validate()?;
        Ok(())
    }

    /// Whether layer `layer` is MoE: `n_routed_experts > 0`, `layer ≥ first_k_dense_replace` and
    /// `layer % moe_layer_freq == 0` (DeepSeek's rule).
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.n_routed_experts > 0
            && layer >= self.first_k_dense_replace
            && layer.is_multiple_of(self.moe_layer_freq.max(1))
    }

    /// The RoPE table's config (interleaved pairs, as DeepSeek-V2 checkpoints need).
    pub fn rope_config(&self) -> RopeConfig {
        RopeConfig::new(
            self.qk_rope_head_dim,
            self.rope_theta,
            self.max_position_embeddings,
            Layout::Interleaved,
        )
        .with_scaling(self.rope_scaling)
    }

    /// The attention layers' config, with the softmax scale `(d + r)^−½ · mscale²` from the rope
    /// crate.
    ///
    /// # Errors
    /// A rope error for an invalid head dimension.
    pub fn mla_config(&self) -> Result<MlaConfig> {
        let qk = self.qk_nope_head_dim + self.qk_rope_head_dim;
        Ok(MlaConfig {
            hidden_size: self.hidden_size,
            num_heads: self.num_attention_heads,
            q_proj: match self.q_lora_rank {
                None => QProjConfig::Full,
                Some(q_lora_rank) => QProjConfig::LowRank { q_lora_rank },
            },
            kv_lora_rank: self.kv_lora_rank,
            qk_nope_head_dim: self.qk_nope_head_dim,
            qk_rope_head_dim: self.qk_rope_head_dim,
            v_head_dim: self.v_head_dim,
            softmax_scale: softmax_scale(qk, &self.rope_scaling)?,
            rms_norm_eps: self.rms_norm_eps,
        })
    }

    /// The MoE layers' config with the given weighting policy.
    pub fn moe_config(&self, weighting: Weighting) -> MoeConfig {
        MoeConfig {
            hidden_size: self.hidden_size,
            moe_intermediate_size: self.moe_intermediate_size,
            n_shared_experts: self.n_shared_experts,
            router: RouterConfig {
                scoring_func: self.scoring_func,
                topk_method: self.topk_method,
                norm_topk_prob: self.norm_topk_prob,
                routed_scaling_factor: self.routed_scaling_factor,
                weighting,
                ..RouterConfig::new(self.n_routed_experts, self.num_experts_per_tok)
            },
        }
    }

    /// DeepSeek-V2 (236B), equal to deepseek-ai/DeepSeek-V2's `config.json`.
    pub fn deepseek_v2() -> Config {
        Config {
            vocab_size: 102_400,
            hidden_size: 5120,
            intermediate_size: 12_288,
            moe_intermediate_size: 1536,
            num_hidden_layers: 60,
            num_attention_heads: 128,
            q_lora_rank: Some(1536),
            n_routed_experts: 160,
            topk_method: TopkMethod::GroupLimitedGreedy {
                n_group: 8,
                topk_group: 3,
            },
            routed_scaling_factor: 16.0,
            ..Config::deepseek_v2_lite()
        }
    }

    /// DeepSeek-V2-Lite (16B), equal to deepseek-ai/DeepSeek-V2-Lite's `config.json`.
    pub fn deepseek_v2_lite() -> Config {
        Config {
            vocab_size: 102_400,
            hidden_size: 2048,
            intermediate_size: 10_944,
            moe_intermediate_size: 1408,
            num_hidden_layers: 27,
            num_attention_heads: 16,
            q_lora_rank: None,
            kv_lora_rank: 512,
            qk_nope_head_dim: 128,
            qk_rope_head_dim: 64,
            v_head_dim: 128,
            n_routed_experts: 64,
            n_shared_experts: 2,
            num_experts_per_tok: 6,
            topk_method: TopkMethod::Greedy,
            scoring_func: Scoring::Softmax,
            norm_topk_prob: false,
            routed_scaling_factor: 1.0,
            first_k_dense_replace: 1,
            moe_layer_freq: 1,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 163_840,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::Yarn(YarnScaling {
                beta_fast: 32.0,
                beta_slow: 1.0,
                mscale: Some(0.707),
                mscale_all_dim: Some(0.707),
                ..YarnScaling::new(40.0, 4096)
            }),
            tie_word_embeddings: false,
            bos_token_id: Some(100_000),
            eos_token_ids: vec![100_001],
        }
    }
}

/// `(rope_theta, scaling)` from `rope_parameters` (transformers 5) or `rope_theta` +
/// `rope_scaling` (the hub form).
fn rope(f: &Fields<'_>, max_position_embeddings: usize) -> Result<(f64, RopeScaling)> {
    let (params, prefix, theta) = match f.0.get("rope_parameters") {
        Some(Value::Object(p)) => {
            let theta = Fields(p).opt_f64("rope_theta")?;
            (Some(p), "rope_parameters", theta)
        }
        Some(Value::Null) | None => match f.0.get("rope_scaling") {
            Some(Value::Object(p)) => (Some(p), "rope_scaling", None),
            Some(Value::Null) | None => (None, "rope_scaling", None),
            Some(other) => {
                return Err(Error::Field {
                    field: "rope_scaling".into(),
                    value: short(other),
                    reason: "must be an object or null",
                });
            }
        },
        Some(other) => {
            return Err(Error::Field {
                field: "rope_parameters".into(),
                value: short(other),
                reason: "must be an object or null",
            });
        }
    };
    let theta = match theta {
        Some(t) => t,
        None => f.opt_f64("rope_theta")?.unwrap_or(10_000.0),
    };
    let Some(p) = params else {
        return Ok((theta, RopeScaling::None));
    };
    let p = Fields(p);
    let kind = match p.opt_str("rope_type")? {
        Some(k) => k,
        None => p.opt_str("type")?.unwrap_or("default"),
    };
    let named = |key: &str| format!("{prefix}.{key}");
    let factor = || -> Result<f64> {
        p.opt_f64("factor")?.ok_or_else(|| Error::Field {
            field: named("factor"),
            value: "missing".into(),
            reason: "this RoPE scaling needs a factor",
        })
    };
    let original = p
        .opt_usize("original_max_position_embeddings")?
        .unwrap_or(max_position_embeddings);
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear(LinearScaling { factor: factor()? }),
        "dynamic" => RopeScaling::DynamicNtk(DynamicNtkScaling {
            factor: factor()?,
            original_max_position_embeddings: max_position_embeddings,
        }),
        "yarn" => RopeScaling::Yarn(YarnScaling {
            beta_fast: p.opt_f64("beta_fast")?.unwrap_or(32.0),
            beta_slow: p.opt_f64("beta_slow")?.unwrap_or(1.0),
            mscale: p.opt_f64("mscale")?,
            mscale_all_dim: p.opt_f64("mscale_all_dim")?,
            attention_factor: p.opt_f64("attention_factor")?,
            truncate: p.opt_bool("truncate")?.unwrap_or(true),
            ..YarnScaling::new(factor()?, original)
        }),
        "llama3" => RopeScaling::Llama3(Llama3Scaling {
            factor: factor()?,
            low_freq_factor: p.opt_f64("low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: p.opt_f64("high_freq_factor")?.unwrap_or(4.0),
            original_max_position_embeddings: original,
        }),
        other => {
            return Err(Error::Unsupported {
                field: "rope_type",
                value: other.to_string(),
                reason: "known RoPE types: default, linear, dynamic, yarn, llama3",
            });
        }
    };
    Ok((theta, scaling))
}

/// A JSON object with typed accessors whose errors name the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    fn bad(field: &str, v: &Value, reason: &'static str) -> Error {
        Error::Field {
            field: field.to_string(),
            value: short(v),
            reason,
        }
    }

    fn usize(&self, field: &'static str) -> Result<usize> {
        self.opt_usize(field)?.ok_or(Error::MissingField { field })
    }

    fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        self.get(field)
            .map(|v| {
                v.as_u64()
                    .and_then(|u| usize::try_from(u).ok())
                    .ok_or_else(|| Self::bad(field, v, "must be a non-negative integer"))
            })
            .transpose()
    }

    fn opt_u32(&self, field: &str) -> Result<Option<u32>> {
        self.get(field)
            .map(|v| {
                v.as_u64()
                    .and_then(|u| u32::try_from(u).ok())
                    .ok_or_else(|| Self::bad(field, v, "must be a token id"))
            })
            .transpose()
    }

    fn opt_f64(&self, field: &str) -> Result<Option<f64>> {
        self.get(field)
            .map(|v| {
                v.as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| Self::bad(field, v, "must be a finite number"))
            })
            .transpose()
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        self.get(field)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| Self::bad(field, v, "must be true or false"))
            })
            .transpose()
    }

    fn opt_str(&self, field: &str) -> Result<Option<&str>> {
        self.get(field)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| Self::bad(field, v, "must be a string"))
            })
            .transpose()
    }

    /// One id or a list of ids (`eos_token_id`).
    fn ids(&self, field: &str) -> Result<Vec<u32>> {
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|u| u32::try_from(u).ok())
                        .ok_or_else(|| Self::bad(field, v, "must hold token ids"))
                })
                .collect(),
            Some(_) => Ok(self.opt_u32(field)?.into_iter().collect()),
        }
    }
}

/// A JSON value, shortened for an error message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}
