//! # deepblocks-embed
//!
//! The two ends of a language model and the vector tools that look at them:
//!
//! - **Embedding** `E[V, h]`: ids `[t]` → hidden states `x[t, h]`, `x_i = E[id_i]`
//!   ([`Embedding`]; bf16/f16/f32 storage kept, rows widened to f32 on lookup).
//! - **Unembedding** (`lm_head`) `U[V, h]`: `logits = x · Uᵀ`, `[t, V]` for every position or
//!   `[1, V]` for the last one only ([`Positions`]), either tied to the embedding (`U = E`,
//!   Vaswani et al. 2017, *Attention Is All You Need*, §3.4 "Embeddings and Softmax"; Press & Wolf
//!   2017) or a separate matrix as in DeepSeek-V2 ([`LmHead`], [`Embeddings`]).
//! - **Vector tools** from the GPT-3 walk-through: cosine similarity `a·b / (‖a‖ ‖b‖)`
//!   ([`cosine_similarity`]), nearest neighbours of a vector among the rows of `E`
//!   ([`Embedding::nearest`]) and analogy `E[a] − E[b] + E[c]` excluding the inputs
//!   ([`Embedding::analogy`], Mikolov et al. 2013).
//!
//! An id `≥ V` is an [`Error::TokenOutOfRange`] naming it, never a panic.
//!
//! ```
//! use deepblocks_core::{DType, Weight};
//! use deepblocks_embed::{Embedding, Embeddings, LmHead, Positions};
//!
//! // V = 4 tokens in h = 2: "king" (1, 1), "queen" (1, −1), "man" (0, 1), "woman" (0, −1).
//! let e = Weight::from_f32(vec![1.0, 1.0, 1.0, -1.0, 0.0, 1.0, 0.0, -1.0], 4, 2)?;
//! let e = Embedding::new(e.to_dtype(DType::BF16));
//!
//! // king − man + woman = queen.
//! let best = e.analogy(0, 2, 3, 1)?;
//! assert_eq!(best[0].id, 1);
//! assert!((best[0].similarity - 1.0).abs() < 1e-6);
//!
//! // Tied unembedding: logits of "king" against every row are E · E[king] = (2, 0, 1, −1).
//! let m = Embeddings::new(e, LmHead::Tied)?;
//! let mut x = [0.0; 2];
//! m.embed_tokens().lookup(&mut x, &[0])?;
//! let mut logits = [0.0; 4];
//! m.logits_into(&mut logits, &x, 1, Positions::Last)?;
//! assert_eq!(logits, [2.0, 0.0, 1.0, -1.0]);
//! # Ok::<(), deepblocks_embed::Error>(())
//! ```

#![deny(missing_docs)]

mod embedding;
mod error;
mod unembed;
mod vectors;

pub use embedding::Embedding;
pub use error::{Error, Result};
pub use unembed::{Embeddings, LmHead, Positions, unembed, unembed_naive};
pub use vectors::{Neighbour, cosine_similarity};

// The README's example is a doctest too, so what crates.io shows is what runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
