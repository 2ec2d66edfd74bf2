//! # deepblocks
//!
//! Transformer building blocks that compose into a reference DeepSeek-V2 forward pass. This
//! facade re-exports every block crate under a short name; depend on a single block crate instead
//! when that is all you need.
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`config`] | `deepblocks-config` | the one reader of `config.json`: the architecture description |
//! | [`core`] | `deepblocks-core` | errors, dtypes, weights, linear/GEMV kernels, softmax, SiLU, safetensors store |
//! | [`tokenize`] | `deepblocks-tokenize` | tokenizer.json glue, chat prompt, streaming decoding |
//! | [`embed`] | `deepblocks-embed` | embedding lookup, unembedding |
//! | [`norm`] | `deepblocks-norm` | RMSNorm |
//! | [`rope`] | `deepblocks-rope` | RoPE tables and scalings (YaRN) |
//! | [`mla`] | `deepblocks-mla` | Multi-head Latent Attention, latent KV cache |
//! | [`moe`] | `deepblocks-moe` | DeepSeekMoE routing and experts |
//! | [`sample`] | `deepblocks-sample` | logits processors, seeded sampling |
//! | [`deepseek`] | `deepblocks-deepseek` | the DeepSeek-V2 model |
//! | [`params`] | `deepblocks-params` | parameter / KV-cache / FLOP accounting |
//!
//! ```
//! let w = deepblocks::core::Weight::from_f32(vec![2.0], 1, 1)?;
//! let mut y = [0.0];
//! deepblocks::core::linear(&mut y, &[3.0], &w, 1);
//! assert_eq!(y, [6.0]);
//! # Ok::<(), deepblocks::core::Error>(())
//! ```

#![deny(missing_docs)]

/// The ndarray crate the `*_nd` wrappers take and return (feature `ndarray`, on by default).
#[cfg(feature = "ndarray")]
pub use ndarray;

pub use deepblocks_config as config;
pub use deepblocks_core as core;
pub use deepblocks_deepseek as deepseek;
pub use deepblocks_embed as embed;
pub use deepblocks_mla as mla;
pub use deepblocks_moe as moe;
pub use deepblocks_norm as norm;
pub use deepblocks_params as params;
pub use deepblocks_rope as rope;
pub use deepblocks_sample as sample;
pub use deepblocks_tokenize as tokenize;
