//! # deepblocks-sample
//!
//! Turns a row of logits `z[V]` into the next token, in the order users expect:
//!
//! 1. **penalties** for tokens already in the history — CTRL's repetition penalty θ
//!    (Keskar et al. 2019, *CTRL*, §4.1: `z/θ` if `z > 0`, else `z·θ`), then OpenAI's frequency and
//!    presence penalties (`z −= α_f·count + α_p`);
//! 2. **temperature** `z ← z / T` (`T = 0` means greedy: the argmax, ties to the lowest id);
//! 3. **top-k** (Fan et al. 2018, *Hierarchical Neural Story Generation*, §5.4): keep the `k`
//!    best tokens;
//! 4. **top-p** (Holtzman et al. 2020, *The Curious Case of Neural Text Degeneration*, §3.1):
//!    keep the smallest set of best tokens whose probability mass reaches `p`;
//! 5. **min-p** (Nguyen et al. 2024, *Turning Up the Heat: Min-p Sampling*, arXiv 2407.01082):
//!    keep tokens with `p_i ≥ min_p · max_j p_j`;
//! 6. a **draw** from `p_i = exp(z_i) / Σ_{j kept} exp(z_j)` with a seeded ChaCha12 generator.
//!
//! The [`Sample`] it returns carries the token, its log-probability under that final distribution,
//! and the model's own log-probability `ln softmax(logits)` before any processing.
//!
//! **Reproducible:** the same seed, config and logits give the same token on every platform. The
//! scores are kept in f64, every step that decides the token uses only IEEE-754 basic operations,
//! and the one `exp` needed is [`exp_portable`] (a polynomial, not the platform's libm).
//!
//! **Bad input is an [`enum@Error`], never a panic:** NaN or +∞ logits, all logits −∞, an empty
//! row, `temperature < 0`, `top_p` outside (0, 1], `min_p` outside [0, 1], a non-positive
//! repetition penalty, a history id outside the vocabulary.
//!
//! ```
//! use deepblocks_sample::{distribution, Sampler, SamplingConfig};
//!
//! let logits = [1.0f32, 2.0, 3.0];
//! // Temperature 1, nothing truncated: plain softmax, e³ / (e¹ + e² + e³).
//! let p = distribution(&SamplingConfig::default(), &logits, &[])?;
//! assert!((p[2] - 0.665_240_955_774_821_6).abs() < 1e-15);
//!
//! // Greedy decoding picks the argmax with log-prob 0; the model's own log-prob is ln p[2].
//! let s = Sampler::greedy().sample(&logits, &[])?;
//! assert_eq!((s.token, s.logprob), (2, 0.0));
//! assert!((s.model_logprob - 0.665_240_96f32.ln()).abs() < 1e-6);
//!
//! // top-k = 2 at T = 1: the third-best token is gone, the others renormalised.
//! let c = SamplingConfig { top_k: 2, ..SamplingConfig::default() };
//! let p = distribution(&c, &logits, &[])?;
//! assert_eq!(p[0], 0.0);
//! assert!((p[2] - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-15);
//! # Ok::<(), deepblocks_sample::Error>(())
//! ```

#![deny(missing_docs)]

mod config;
mod error;
mod process;
mod sampler;

pub use config::SamplingConfig;
pub use error::{Error, Result};
pub use process::{
    apply_penalties, apply_temperature, argmax, draw, exp_portable, max_score, min_p_mask,
    rank_order, softmax_portable, top_k_mask, top_k_mask_naive, top_p_mask, top_p_mask_naive,
};
pub use sampler::{Sample, Sampler, distribution, sample_with_uniform};

// The README's example is a doctest too, so what crates.io shows is what runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
