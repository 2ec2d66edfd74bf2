//! # deepblocks-config
//!
//! The one reader of a Hugging Face `config.json` for the MLA family of models (DeepSeek-V2
//! report, arXiv 2405.04434): a typed [`Architecture`] that both the model
//! (`deepblocks-deepseek`) and the accounting (`deepblocks-params`) consume, so the parameter
//! count and the running model agree by construction. No tensors.
//!
//! - `model_type` decides the [`Family`]; an unknown one is an [`Error::UnknownModelType`] naming
//!   it and listing the supported ones.
//! - The routing rule ([`RoutingRule`]: scoring, top-k selection, weighting) follows from the
//!   family and the keys, as the family's reference code computes it; nobody has to remember to
//!   override a default.
//! - Both RoPE forms are read: the hub's `rope_theta` + `rope_scaling` (with `type`) and
//!   transformers 5's `rope_parameters` (with `rope_type`); both present and disagreeing is an
//!   error. The scaling is the rope block's own [`RopeScaling`], checked by its own validation.
//! - The MoE layer schedule (`first_k_dense_replace`, `moe_layer_freq`) is
//!   [`Architecture::layer_kind`], in one place.
//! - Unknown keys are returned in [`Parsed::unknown_keys`] (not fatal, not silently dropped); a
//!   key we know with a value we do not implement (`attention_bias: true`) is an
//!   [`Error::Unsupported`].
//!
//! ```
//! use deepblocks_config::{Architecture, LayerKind, QueryProjection, TopkSelection};
//!
//! let text = r#"{
//!     "model_type": "deepseek_v2", "vocab_size": 102400, "hidden_size": 5120,
//!     "num_hidden_layers": 60, "max_position_embeddings": 163840, "num_attention_heads": 128,
//!     "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
//!     "qk_rope_head_dim": 64, "v_head_dim": 128, "intermediate_size": 12288,
//!     "n_routed_experts": 160, "num_experts_per_tok": 6, "moe_intermediate_size": 1536,
//!     "n_shared_experts": 2, "first_k_dense_replace": 1, "topk_method": "group_limited_greedy",
//!     "n_group": 8, "topk_group": 3, "routed_scaling_factor": 16.0,
//!     "rope_theta": 10000, "rope_scaling": {"type": "yarn", "factor": 40,
//!         "original_max_position_embeddings": 4096, "mscale": 0.707, "mscale_all_dim": 0.707},
//!     "my_extension": true
//! }"#;
//! let parsed = Architecture::from_json_str(text)?;
//! let v2 = &parsed.architecture;
//! assert_eq!(v2.attention.q_proj, QueryProjection::LowRank { q_lora_rank: 1536 });
//! assert_eq!(v2.attention.cache_values_per_token(), 576); // c + r per token and layer
//! assert_eq!(v2.layer_kind(0), LayerKind::Dense);
//! let moe = v2.moe().unwrap();
//! assert_eq!(moe.routing.topk_method, TopkSelection::GroupLimitedGreedy { n_group: 8, topk_group: 3 });
//! assert_eq!(parsed.unknown_keys, ["my_extension"]);
//! # Ok::<(), deepblocks_config::Error>(())
//! ```

#![deny(missing_docs)]

mod any;
mod arch;
mod dense;
mod error;
mod family;
mod json;
mod presets;
mod read;

pub use any::AnyArchitecture;
pub use arch::{
    Architecture, DeepSeekMoe, Ffn, Fp8Quantization, LayerKind, MlaAttention, QueryProjection,
    Rope, RoutingRule, ScoringFunc, TopkSelection, WeightingRule,
};
pub use dense::DenseArchitecture;
pub use error::{Error, Result};
pub use family::Family;
pub use read::Parsed;

/// The rope block's scaling types, which the description's [`Rope`] holds.
pub use deepblocks_rope::{
    DynamicNtkScaling, LinearScaling, Llama3Scaling, RopeScaling, YarnScaling,
};

// The README's example is a doctest too, so what crates.io shows is what runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
