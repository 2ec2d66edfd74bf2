//! # deepblocks-rope
//!
//! Rotary position embeddings (RoPE; Su et al., RoFormer, arXiv 2104.09864, §3.2) with the
//! scalings long-context models use — linear, dynamic NTK, YaRN (Peng et al., arXiv 2309.00071,
//! §3.2–3.4, as DeepSeek-V2 uses it: arXiv 2405.04434, §2.1.3 and its long-context extension)
//! and Llama-3.1 — computed exactly as Hugging Face transformers 5 computes them.
//!
//! A head's `r` rotary features form `r/2` pairs; at position `p` pair `i` turns by the angle
//! `p·θ_i`, `θ_i = base^(−2i/r)` (scaled by the [`RopeScaling`]):
//!
//! ```text
//! (x_a, x_b) ↦ m · (x_a·cos pθ_i − x_b·sin pθ_i,  x_a·sin pθ_i + x_b·cos pθ_i)
//! ```
//!
//! where `(a, b)` is pair `i` in the [`Layout`] (`(2i, 2i+1)` interleaved, `(i, i + r/2)`
//! half-split) and `m` is the **cos/sin factor** (YaRN's `attention_factor`; 1 otherwise).
//! Since `R_p` is a rotation, `⟨R_m q, R_n k⟩ = m²·⟨q, R_{n−m} k⟩` depends on `n − m` only.
//! The **softmax factor** is a different number: DeepSeek multiplies the softmax scale
//! `1/√d_qk` by `mscale(s, mscale_all_dim)²`; see [`softmax_scale`]. The two are kept apart on
//! purpose: for DeepSeek-V2 the first is exactly 1 and the second ≈ 1.5896.
//!
//! - [`RopeConfig`] (dimension, base, maximum length, [`Layout`], [`RopeScaling`] with one config
//!   struct per variant) → [`RopeTable`]: f32 `cos`/`sin` per position and frequency, built
//!   once and extended on demand.
//! - [`RopeTable::apply`] / [`RopeTable::apply_inplace`] / [`RopeTable::apply_inplace_strided`]
//!   rotate a block `x[t, n, r]` of queries or keys at arbitrary positions (a decode step
//!   continues from the cache length); [`RopeTable::cos_sin`] gathers the rows once for many
//!   calls.
//! - Slice kernels [`rope_apply`], [`rope_apply_inplace`], [`rope_apply_inplace_strided`] with
//!   their naive twins [`rope_apply_naive`], [`rope_apply_inplace_strided_naive`].
//!
//! ```
//! use deepblocks_rope::{Layout, RopeConfig, RopeScaling, RopeTable, YarnScaling};
//!
//! // DeepSeek-V2's rotary part: r = 64, base 10⁴, YaRN ×40 from 4096 to 163,840 positions.
//! let yarn = YarnScaling { mscale: Some(0.707), mscale_all_dim: Some(0.707), ..YarnScaling::new(40.0, 4096) };
//! let config = RopeConfig::new(64, 10_000.0, 163_840, Layout::Interleaved)
//!     .with_scaling(RopeScaling::Yarn(yarn));
//! let mut table = RopeTable::new(config)?;
//! table.extend_to(4096)?;
//!
//! // The fastest pair keeps θ_0 = 1, the slowest is interpolated: θ_31 = 10⁴^(−62/64) / 40.
//! assert_eq!(table.inv_freq()[0], 1.0);
//! assert!((table.inv_freq()[31] / (10_000f32.powf(-62.0 / 64.0) / 40.0) - 1.0).abs() < 1e-6);
//! assert_eq!(table.cos_sin_factor(), 1.0); // mscale(40, 0.707) / mscale(40, 0.707)
//! assert!((table.softmax_scale(192)? - 0.114_721).abs() < 1e-6); // 192^-½ · 1.5896
//!
//! // Rotate the shared key part k_pe[t = 1, n = 1, r] of a decode step at position 100,000.
//! let mut k_pe = vec![0.0f32; 64];
//! k_pe[0] = 1.0; // x_0 = 1: pair 0 becomes (cos 10⁵, sin 10⁵)
//! table.apply_inplace(&mut k_pe, &[100_000], 1)?;
//! assert!((k_pe[0] - 100_000f64.cos() as f32).abs() < 1e-6);
//! assert!((k_pe[1] - 100_000f64.sin() as f32).abs() < 1e-6);
//! # Ok::<(), deepblocks_rope::Error>(())
//! ```
//!
//! See [`docs/rope.md`] for the formulas, the frequency table of DeepSeek-V2 before and after YaRN,
//! the layout pitfall and the precision discussion.
//!
//! [`docs/rope.md`]: https://github.com/deepblocks/deepblocks/blob/main/docs/rope.md

#![deny(missing_docs)]

mod config;
mod error;
mod freq;
mod kernel;
mod table;

pub use config::{
    DynamicNtkScaling, Layout, LinearScaling, Llama3Scaling, MAX_EXACT_POSITION, RopeConfig,
    RopeScaling, YarnScaling, yarn_get_mscale,
};
pub use error::{Error, Result};
pub use kernel::{
    rope_apply, rope_apply_inplace, rope_apply_inplace_strided, rope_apply_inplace_strided_naive,
    rope_apply_naive,
};
pub use table::{CosSin, RopeTable, softmax_scale};

// The README's example is a doctest too, so what crates.io shows is what runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
