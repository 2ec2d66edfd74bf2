//! # deepblocks-norm
//!
//! RMSNorm (Zhang & Sennrich, *Root Mean Square Layer Normalization*, arXiv 1910.07467), the norm
//! of DeepSeek-V2's pre-norm blocks and of its query and KV latents (DeepSeek-V2 report §2.1.2,
//! `q_a_layernorm`, `kv_a_layernorm`):
//!
//! ```text
//! y = w ⊙ x / √(mean(x²) + ε)
//! ```
//!
//! computed exactly as transformers' `DeepseekV2RMSNorm` does: widen `x` to f32, take the mean of
//! squares in f32, multiply by `1/√(var + ε)`, cast back to the input dtype, *then* multiply by the
//! weight. For f32 input that order is invisible; for bf16 input the normalised value is rounded to
//! bf16 before the weight multiplies it, and the product is rounded to bf16 again
//! ([`rms_norm_bf16`]).
//!
//! ```
//! use deepblocks_norm::{RmsNorm, RmsNormConfig};
//! let norm = RmsNorm::new(RmsNormConfig { hidden: 2, eps: 0.0 }, vec![1.0, 2.0])?;
//! let mut y = [0.0; 2];
//! norm.forward(&mut y, &[3.0, 4.0], 1); // rms = √((9 + 16) / 2) = √12.5
//! assert!((y[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-6);
//! assert!((y[1] - 8.0 / 12.5f32.sqrt()).abs() < 1e-6);
//! # Ok::<(), deepblocks_norm::Error>(())
//! ```

#![deny(missing_docs)]

use deepblocks_core::{half::bf16, sum_squares};
#[cfg(feature = "ndarray")]
use ndarray::{Array2, ArrayView2};

/// Errors of deepblocks-norm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from deepblocks-core: a weight or an input of the wrong length or shape.
    #[error(transparent)]
    Core(#[from] deepblocks_core::Error),
    /// `RmsNormConfig.hidden` is zero.
    #[error("RmsNormConfig.hidden is 0; the normalised dimension must be at least 1")]
    ZeroHidden,
    /// `RmsNormConfig.eps` is negative or not finite.
    #[error("RmsNormConfig.eps = {0} must be finite and ≥ 0")]
    Eps(f32),
}

/// `Result` with this crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The configuration of one RMSNorm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsNormConfig {
    /// The normalised dimension `h` (`hidden_size`, `q_lora_rank` or `kv_lora_rank`).
    pub hidden: usize,
    /// ε added to the mean square (`rms_norm_eps`, 1e-6 in DeepSeek-V2).
    pub eps: f32,
}

impl RmsNormConfig {
    /// Checks the fields.
    ///
    /// # Errors
    /// [`Error::ZeroHidden`], [`Error::Eps`].
    pub fn validate(&self) -> Result<()> {
        if self.hidden == 0 {
            return Err(Error::ZeroHidden);
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::Eps(self.eps));
        }
        Ok(())
    }
}

/// An RMSNorm layer: its config and its weight.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    config: RmsNormConfig,
    weight: Vec<f32>, // [h]; bf16 checkpoint weights widen to f32 exactly
}

impl RmsNorm {
    /// A norm with the given weight.
    ///
    /// # Errors
    /// An invalid config, or a core [`deepblocks_core::Error::Length`] naming the weight when
    /// `weight.len() != hidden`.
    pub fn new(config: RmsNormConfig, weight: Vec<f32>) -> Result<Self> {
        config.validate()?;
        if weight.len() != config.hidden {
            return Err(deepblocks_core::Error::Length {
                what: "RMSNorm weight".into(),
                shape: vec![config.hidden],
                expected: config.hidden,
                found: weight.len(),
            }
            .into());
        }
        Ok(RmsNorm { config, weight })
    }

    /// A norm with a weight of ones (transformers' initial value).
    ///
    /// # Errors
    /// An invalid config.
    pub fn ones(config: RmsNormConfig) -> Result<Self> {
        RmsNorm::new(config, vec![1.0; config.hidden])
    }

    /// The configuration.
    pub fn config(&self) -> &RmsNormConfig {
        &self.config
    }

    /// The weight, `[h]`.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    /// `out[t, h] = RMSNorm(x[t, h])`.
    ///
    /// # Panics
    /// If `x` or `out` is not `t · hidden` long.
    pub fn forward(&self, out: &mut [f32], x: &[f32], t: usize) {
        rms_norm(out, x, &self.weight, self.config.eps, t, self.config.hidden);
    }

    /// `x[t, h] ← RMSNorm(x[t, h])`.
    ///
    /// # Panics
    /// If `x` is not `t · hidden` long.
    pub fn forward_inplace(&self, x: &mut [f32], t: usize) {
        rms_norm_inplace(x, &self.weight, self.config.eps, t, self.config.hidden);
    }

    /// bf16 in, bf16 out, as transformers runs the norm in a bf16 model ([`rms_norm_bf16`]).
    ///
    /// # Panics
    /// If `x` or `out` is not `t · hidden` long.
    pub fn forward_bf16(&self, out: &mut [bf16], x: &[bf16], t: usize) {
        rms_norm_bf16(out, x, &self.weight, self.config.eps, t, self.config.hidden);
    }

    /// ndarray wrapper of [`Self::forward`], with the shape checked.
    ///
    /// # Errors
    /// A core [`deepblocks_core::Error::Shape`] naming `x` when it is not `[t, hidden]`.
    #[cfg(feature = "ndarray")]
    pub fn forward_nd(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>> {
        let (t, h) = x.dim();
        if h != self.config.hidden {
            return Err(
                deepblocks_core::Error::shape("x", &[t, self.config.hidden], &[t, h]).into(),
            );
        }
        let x = x.as_standard_layout();
        let mut out = Array2::zeros((t, h));
        self.forward(
            out.as_slice_mut().expect("fresh array is contiguous"),
            x.as_slice().expect("standard layout is contiguous"),
            t,
        );
        Ok(out)
    }
}

/// `1/√(mean(x²) + ε)` for one row, in f32 as torch computes it (`rsqrt` is `1 / sqrt`).
#[inline]
fn inv_rms(row: &[f32], eps: f32) -> f32 {
    1.0 / (sum_squares(row) / row.len() as f32 + eps).sqrt()
}

fn check(x_len: usize, out_len: usize, w_len: usize, t: usize, h: usize) {
    // A product that wraps matches no length.
    let want = t.checked_mul(h);
    assert!(
        want == Some(x_len),
        "rms_norm: x has {x_len} elements, not [t {t}, h {h}]"
    );
    assert!(
        want == Some(out_len),
        "rms_norm: out has {out_len} elements, not [t {t}, h {h}]"
    );
    assert_eq!(
        w_len, h,
        "rms_norm: weight has {w_len} elements, not h = {h}"
    );
}

/// `out[i, :] = w ⊙ x[i, :] / √(mean(x[i, :]²) + ε)` for each of `t` rows of `h` values. The mean of
/// squares uses 16 independent f32 accumulators.
///
/// ```
/// let mut out = [0.0; 4];
/// deepblocks_norm::rms_norm(&mut out, &[1.0, 1.0, 2.0, 2.0], &[1.0, 3.0], 0.0, 2, 2);
/// assert_eq!(out, [1.0, 3.0, 1.0, 3.0]);
/// ```
///
/// # Panics
/// If `x` or `out` is not `t·h` long or `w` is not `h` long.
pub fn rms_norm(out: &mut [f32], x: &[f32], w: &[f32], eps: f32, t: usize, h: usize) {
    check(x.len(), out.len(), w.len(), t, h);
    if h == 0 {
        return;
    }
    for (o, xr) in out.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
        let inv = inv_rms(xr, eps);
        for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(w) {
            *o = wv * (xv * inv);
        }
    }
}

/// [`rms_norm`] in place.
///
/// # Panics
/// If `x` is not `t·h` long or `w` is not `h` long.
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32, t: usize, h: usize) {
    check(x.len(), x.len(), w.len(), t, h);
    if h == 0 {
        return;
    }
    for xr in x.chunks_exact_mut(h) {
        let inv = inv_rms(xr, eps);
        for (v, &wv) in xr.iter_mut().zip(w) {
            *v = wv * (*v * inv);
        }
    }
}

/// The naive twin of [`rms_norm`]: one accumulator, in order, the formula as written.
///
/// # Panics
/// As [`rms_norm`].
pub fn rms_norm_naive(out: &mut [f32], x: &[f32], w: &[f32], eps: f32, t: usize, h: usize) {
    check(x.len(), out.len(), w.len(), t, h);
    for i in 0..t {
        let row = &x[i * h..(i + 1) * h];
        let mut sq = 0.0f32;
        for &v in row {
            sq += v * v;
        }
        let variance = sq / h as f32;
        let inv = 1.0 / (variance + eps).sqrt();
        for j in 0..h {
            out[i * h + j] = w[j] * (row[j] * inv);
        }
    }
}

/// RMSNorm of bf16 rows as transformers computes it in a bf16 model:
/// `out = bf16(w · f32(bf16(f32(x) · inv_rms)))`, the mean of squares in f32.
///
/// `w` holds the norm weight widened to f32; when it comes from a bf16 checkpoint (every value
/// bf16-representable) the product of two bf16 values is exact in f32, so rounding it once to
/// bf16 is exactly torch's bf16 × bf16 multiply.
///
/// # Panics
/// As [`rms_norm`].
pub fn rms_norm_bf16(out: &mut [bf16], x: &[bf16], w: &[f32], eps: f32, t: usize, h: usize) {
    check(x.len(), out.len(), w.len(), t, h);
    if h == 0 {
        return;
    }
    let mut row = vec![0.0f32; h];
    for (o, xr) in out.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
        for (r, v) in row.iter_mut().zip(xr) {
            *r = v.to_f32();
        }
        let inv = inv_rms(&row, eps);
        for ((o, &xv), &wv) in o.iter_mut().zip(&row).zip(w) {
            let normed = bf16::from_f32(xv * inv).to_f32();
            *o = bf16::from_f32(wv * normed);
        }
    }
}

/// The naive twin of [`rms_norm_bf16`].
///
/// # Panics
/// As [`rms_norm`].
pub fn rms_norm_bf16_naive(out: &mut [bf16], x: &[bf16], w: &[f32], eps: f32, t: usize, h: usize) {
    check(x.len(), out.len(), w.len(), t, h);
    for i in 0..t {
        let mut sq = 0.0f32;
        for j in 0..h {
            let v = x[i * h + j].to_f32();
            sq += v * v;
        }
        let inv = 1.0 / (sq / h as f32 + eps).sqrt();
        for j in 0..h {
            let normed = bf16::from_f32(x[i * h + j].to_f32() * inv);
            out[i * h + j] = bf16::from_f32(w[j] * normed.to_f32());
        }
    }
}

// The README's example is a doctest too, so what crates.io shows is what runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
