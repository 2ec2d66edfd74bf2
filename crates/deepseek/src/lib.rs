//! # deepblocks-deepseek
//!
//! The DeepSeek-V2 model (arXiv 2405.04434) assembled from deepblocks' blocks: a pre-norm
//! decoder whose attention is Multi-head Latent Attention (`deepblocks-mla`, §2.1) and whose
//! feed-forward layers are a dense SwiGLU MLP for the first `first_k_dense_replace` layers and
//! DeepSeekMoE after (`deepblocks-moe`, §2.2), with YaRN-extended RoPE (`deepblocks-rope`).
//!
//! ```text
//! x = embed_tokens[tokens]                                  [t, h]
//! for l in layers:
//!     x = x + MLA_l(RMSNorm(x), cache_l)                     latent KV cache: (c + r) per token
//!     x = x + (MLP_l or MoE_l)(RMSNorm(x))
//! logits = lm_head(RMSNorm(x))                              [t, V] or [1, V]
//! ```
//!
//! - [`Config`]: `config.json` in the hub form (`rope_scaling`) and the transformers-5 form
//!   (`rope_parameters`), validated field by field, mapped onto each block's config; presets
//!   [`Config::deepseek_v2`] and [`Config::deepseek_v2_lite`].
//! - [`Model`]: loads a Hugging Face folder (single or sharded safetensors, memory-mapped, bf16
//!   stays bf16; per-expert hub names or transformers-5's packed experts; tied or separate
//!   `lm_head`) and runs [`Model::forward`] for prefill and decode over an [`MlaCache`].
//! - [`Model::generate`] / [`Model::generate_text`]: prefill, then a decode loop through the
//!   seeded sampler, streaming complete UTF-8 text, stopping at end-of-sequence, `max_tokens` or
//!   a full context.
//!
//! Matches transformers' `DeepseekV2ForCausalLM` to ≤ 1e-4 on f32 weights (the golden tests in
//! `crates/deepseek/tests`).
//!
//! ```
//! use deepblocks_deepseek::Config;
//! let v2 = Config::deepseek_v2();
//! assert_eq!(v2.mla_config()?.cache_values_per_token() * v2.num_hidden_layers, 576 * 60);
//! assert!((v2.mla_config()?.softmax_scale - 0.114_721).abs() < 1e-6); // 192^-½ · mscale²
//! assert!(!v2.is_moe_layer(0) && v2.is_moe_layer(1));
//! # Ok::<(), deepblocks_deepseek::Error>(())
//! ```

#![deny(missing_docs)]

mod config;
mod error;
mod generate;
mod model;

pub use config::Config;
pub use error::{Error, Result};
pub use generate::{GenerateOptions, Generation, StopReason};
pub use model::{DecoderLayer, LoadOptions, Model};

pub use deepblocks_embed::Positions;
pub use deepblocks_mla::{AttentionPath, MlaCache};
pub use deepblocks_moe::Weighting;
pub use deepblocks_sample::SamplingConfig;
