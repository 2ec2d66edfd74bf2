//! # deepblocks-moe
//!
//! DeepSeekMoE (DeepSeek-V2 technical report §2.2, arXiv 2405.04434; the `noaux_tc` router of
//! DeepSeek-V3 §2.1.2, arXiv 2412.19437): for a token `u_t`,
//!
//! ```text
//! h'_t    = u_t + Σ_{i ≤ N_s} FFN^(s)_i(u_t) + Σ_{i ≤ N_r} g_{i,t} · FFN^(r)_i(u_t)
//! g_{i,t} = s_{i,t} if s_{i,t} ∈ TopK({s_{j,t}}, K_r) else 0
//! s_{i,t} = Softmax_i(u_tᵀ e_i)
//! FFN(x)  = down(silu(gate · x) ⊙ (up · x))                               (SwiGLU)
//! ```
//!
//! then `g` is scaled by `routed_scaling_factor` or normalised (see [`Weighting`]). Device-limited
//! routing (§2.2.2) first keeps the `topk_group` best of `n_group` expert groups, a group scored
//! by its best expert; DeepSeek-V3's `noaux_tc` scores with a sigmoid, selects with
//! `s + e_score_correction_bias`, and scores a group by its two best experts.
//!
//! - [`Router`] / [`RouterConfig`]: gate logits in f32 (a bf16 gate weight is widened inside the
//!   kernel), [`Scoring`] (softmax, sigmoid), [`TopkMethod`] (greedy, group-limited greedy,
//!   noaux_tc), [`Weighting`] (DeepSeek-V2's rule by default, DeepSeek-V3's, transformers 5's),
//!   ties to the lower index. [`route_scores`] / [`route_scores_naive`] are the kernels.
//! - [`Mlp`] (one SwiGLU FFN: a routed expert, the shared experts, the dense MLP), [`Experts`]
//!   built without copies from per-expert tensors or transformers 5's packed ones.
//! - [`Moe`]: the layer; [`Moe::routed_grouped`] (tokens grouped by expert, one linear per expert,
//!   experts in parallel), [`Moe::routed_decode`] (one token, its k experts in parallel),
//!   [`Moe::routed_naive`].
//! - [`stats`]: tokens per expert and the expert-, device- and communication-balance losses of
//!   §2.2.3.
//!
//! The worked example of [`docs/moe.md`]: DeepSeek-V2's routing (8 experts in 4 groups, 2 groups
//! kept, k = 3, ρ = 16) on logits given directly through an identity gate.
//!
//! ```
//! use deepblocks_core::Weight;
//! use deepblocks_moe::{Router, RouterConfig, TopkMethod};
//!
//! let mut identity = vec![0.0; 64];
//! (0..8).for_each(|i| identity[i * 9] = 1.0);
//! let config = RouterConfig {
//!     topk_method: TopkMethod::GroupLimitedGreedy { n_group: 4, topk_group: 2 },
//!     routed_scaling_factor: 16.0,
//!     ..RouterConfig::new(8, 3)
//! };
//! let router = Router::new(config, Weight::from_f32(identity, 8, 8)?, None)?;
//! let logits = [2.0, 1.9, 2.5, -1.0, 2.2, 0.0, 0.1, 0.5];
//! let routing = router.route(&logits, 1)?;
//! // Groups score 2.0, 2.5, 2.2, 0.5: groups 1 and 2 are kept, so expert 0 (logit 2.0) loses
//! // to expert 5 (logit 0.0), which plain top-3 would never pick.
//! assert_eq!(routing.token_ids(0), &[2, 4, 5]);
//! let expected = [4.946_675, 3.664_587, 0.406_048]; // 16 · softmax(logits)[2, 4, 5]
//! for (w, e) in routing.token_weights(0).iter().zip(expected) {
//!     assert!((w - e).abs() < 1e-5, "{w} vs {e}");
//! }
//! # Ok::<(), deepblocks_moe::Error>(())
//! ```
//!
//! [`docs/moe.md`]: https://github.com/deepblocks/deepblocks/blob/main/docs/moe.md

#![deny(missing_docs)]

mod error;
mod expert;
mod moe;
mod router;
pub mod stats;

/// The logistic function (defined in deepblocks-core, beside SiLU).
pub use deepblocks_core::sigmoid;
pub use error::{Error, Result};
pub use expert::{Experts, GateUp, Mlp};
pub use moe::{Moe, MoeConfig, SharedExperts};
pub use router::{
    NORM_EPS, Router, RouterConfig, Routing, Scoring, TopkMethod, Weighting, route_scores,
    route_scores_naive,
};

// The README's example is a doctest too, so what crates.io shows is what runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
