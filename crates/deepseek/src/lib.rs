//! # deepblocks-deepseek
//!
//! The MLA-family model (DeepSeek-V2, arXiv 2405.04434) assembled from deepblocks' blocks: a
//! pre-norm decoder whose attention is Multi-head Latent Attention (`deepblocks-mla`, §2.1) and
//! whose feed-forward layers are a dense SwiGLU MLP or DeepSeekMoE (`deepblocks-moe`, §2.2), with
//! YaRN-extended RoPE (`deepblocks-rope`).
//!
//! ```text
//! x = embed_tokens[tokens]                                  [t, h]
//! for l in layers:
//!     x = x + MLA_l(RMSNorm(x), cache_l)                     latent KV cache: (c + r) per token
//!     x = x + (MLP_l or MoE_l)(RMSNorm(x))
//! logits = lm_head(RMSNorm(x))                              [t, V] or [1, V]
//! ```
//!
//! - The architecture comes from `deepblocks-config`'s [`Architecture`] (the one reader of
//!   `config.json`, the same description the accounting counts); [`blocks`] maps it onto each
//!   block's own config, in one file.
//! - [`Model::load`] is the one loader, the only code that knows checkpoint names: a Hugging Face
//!   folder (single or sharded safetensors, memory-mapped, bf16 stays bf16; per-expert hub names
//!   or transformers 5's packed experts; tied or separate `lm_head`), progress through a
//!   callback, a [`LoadReport`] of what it read. [`Model::forward`] runs prefill and decode over
//!   an [`MlaCache`].
//! - [`Model::generate`] / [`Model::generate_text`]: prefill, then a decode loop through the
//!   seeded sampler, streaming complete UTF-8 text, stopping at end-of-sequence, `max_tokens` or
//!   a full context.
//!
//! Matches transformers' `DeepseekV2ForCausalLM` to ≤ 1e-4 on f32 weights (the golden tests in
//! [`crates/deepseek/tests`]).
//!
//! ```
//! use deepblocks_deepseek::{Architecture, DType, blocks};
//! let v2 = Architecture::deepseek_v2();
//! assert_eq!(blocks::cache_config(&v2, DType::BF16).values_per_token(), 576 * 60);
//! assert!((blocks::mla_config(&v2)?.softmax_scale - 0.114_721).abs() < 1e-6); // 192^-½ · mscale²
//! assert!(!v2.is_moe_layer(0) && v2.is_moe_layer(1));
//! # Ok::<(), deepblocks_deepseek::Error>(())
//! ```
//!
//! [`crates/deepseek/tests`]: https://github.com/deepblocks/deepblocks/tree/main/crates/deepseek/tests

#![deny(missing_docs)]

pub mod blocks;
mod chat;
mod error;
mod generate;
mod gguf;
mod gguf_write;
mod hub;
mod loader;
mod model;
mod perplexity;
mod recipe;

pub use chat::{ChatSession, GENERATION_CONFIG_FILE, GenerationDefaults, Turn, chat_lines};
pub use error::{Error, Result};
pub use generate::{GenerateOptions, Generation, StopReason};
pub use gguf::{architecture_from_gguf, tokenizer_from_gguf};
pub use gguf_write::{gguf_file_type, gguf_metadata};
pub use hub::{hub_cache, resolve_model, resolve_model_in};
pub use loader::{FormatCount, LoadOptions, LoadProgress, LoadReport, ProgressFn};
pub use model::{DecoderLayer, FeedForward, Model};
pub use perplexity::Nll;
pub use recipe::{Choice, Recipe, Role};

pub use deepblocks_config::Architecture;
pub use deepblocks_core::Access;
pub use deepblocks_core::Bf16Products;
pub use deepblocks_core::DType;
pub use deepblocks_embed::Positions;
pub use deepblocks_mla::{
    AttentionPath, CacheDType, DEFAULT_CACHE_DTYPE, MlaCache, MlaCacheConfig, cache_dtype,
};
pub use deepblocks_moe::Weighting;
pub use deepblocks_sample::SamplingConfig;

// The README's example is a doctest too, so what crates.io shows is what runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
