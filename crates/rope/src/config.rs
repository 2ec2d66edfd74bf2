//! Configuration: the rotary dimension, base, maximum length, pair layout and scaling.

use crate::error::{Error, Result};

/// Positions are converted to f32 (as transformers does); beyond 2²⁴ consecutive integers are no
/// longer distinct in f32.
pub const MAX_EXACT_POSITION: usize = 1 << 24;

/// How the `r` rotary features of one head are grouped into the `r/2` pairs that rotate.
///
/// Both layouts compute the same rotation of the same pairs; they differ only in where pair `i`
/// lives inside the head. A checkpoint trained with one layout must be run with that layout (or
/// its projection weights permuted): this is the layout pitfall described in [`docs/rope.md`].
///
/// [`docs/rope.md`]: https://github.com/deepblocks/deepblocks/blob/main/docs/rope.md
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Pair `i` is `(x[2i], x[2i+1])`, read as the complex number `x[2i] + i·x[2i+1]`.
    /// DeepSeek-V2 checkpoints under transformers 5 (`apply_rotary_emb` with
    /// `view_as_complex`), Meta's original LLaMA code, GPT-J, candle's `rope_i`.
    Interleaved,
    /// Pair `i` is `(x[i], x[i + r/2])`: `x·cos + rotate_half(x)·sin`. GPT-NeoX, transformers'
    /// Llama, candle's `rope`.
    HalfSplit,
}

impl Layout {
    /// Indices `(a, b)` of pair `i` in a head of `r` features: the rotation maps
    /// `(x_a, x_b)` to `(x_a·cos − x_b·sin, x_a·sin + x_b·cos)`.
    ///
    /// ```
    /// use deepblocks_rope::Layout;
    /// assert_eq!(Layout::Interleaved.pair(3, 64), (6, 7));
    /// assert_eq!(Layout::HalfSplit.pair(3, 64), (3, 35));
    /// ```
    pub fn pair(self, i: usize, r: usize) -> (usize, usize) {
        match self {
            Layout::Interleaved => (2 * i, 2 * i + 1),
            Layout::HalfSplit => (i, i + r / 2),
        }
    }
}

/// Linear position interpolation (kaiokendev; Chen et al., arXiv 2306.15595):
/// `inv_freq_i / factor`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearScaling {
    /// The context extension ratio `s` (> 0).
    pub factor: f64,
}

/// Dynamic NTK-aware scaling (bloc97, emozilla): the base grows with the sequence length `L`
/// once it passes the original length `L₀`:
/// `base' = base · (s·L/L₀ − (s − 1))^(r/(r−2))`.
///
/// The frequencies depend on the sequence length seen so far; see
/// [`RopeTable::extend_to`](crate::RopeTable::extend_to).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicNtkScaling {
    /// `s` (> 0).
    pub factor: f64,
    /// `L₀`: up to this length the frequencies are plain RoPE's (transformers reads it from
    /// `config.max_position_embeddings`).
    pub original_max_position_embeddings: usize,
}

/// YaRN (Peng et al., arXiv 2309.00071, §3.2–3.4), as transformers' `_compute_yarn_parameters`
/// computes it and DeepSeek-V2 (arXiv 2405.04434, §2.1.3 and its long-context extension) uses it.
///
/// Dimensions whose wavelength is short compared with the original context keep their frequency
/// (extrapolation), those with long wavelengths are divided by `factor` (interpolation), and a
/// linear ramp between the correction-range bounds `low`, `high` blends the two:
///
/// ```text
/// low/high  = r·ln(L₀ / (2π·β)) / (2·ln base)    for β = beta_fast / beta_slow
///             (floor / ceil when `truncate`), clamped to [0, r − 1]
/// ramp_i    = clamp((i − low) / (high − low), 0, 1)
/// inv_freq_i = inv_freq_i/s · ramp_i + inv_freq_i · (1 − ramp_i)
/// ```
///
/// Two separate factors come out of the same numbers (see [`YarnScaling::cos_sin_factor`] and
/// [`YarnScaling::softmax_factor`]); keep them apart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YarnScaling {
    /// `s`: the context extension ratio (> 0; DeepSeek-V2: 40).
    pub factor: f64,
    /// `L₀`: the pre-training context length (DeepSeek-V2: 4096).
    pub original_max_position_embeddings: usize,
    /// A pair that turns at least `beta_fast` times over `L₀` keeps its frequency
    /// (extrapolation; default 32).
    pub beta_fast: f64,
    /// A pair that turns fewer than `beta_slow` times over `L₀` is fully interpolated
    /// (default 1).
    pub beta_slow: f64,
    /// DeepSeek's `mscale`: numerator of the cos/sin factor when `mscale_all_dim` is also set.
    pub mscale: Option<f64>,
    /// DeepSeek's `mscale_all_dim`: denominator of the cos/sin factor, and the softmax factor.
    pub mscale_all_dim: Option<f64>,
    /// An explicit cos/sin factor; overrides the one derived from `mscale`/`mscale_all_dim`.
    pub attention_factor: Option<f64>,
    /// Round the correction-range bounds outward to integers (default `true`, as transformers).
    pub truncate: bool,
}

impl YarnScaling {
    /// YaRN with the paper's defaults: `beta_fast` 32, `beta_slow` 1, no `mscale`s, no explicit
    /// attention factor, `truncate` on.
    pub fn new(factor: f64, original_max_position_embeddings: usize) -> Self {
        YarnScaling {
            factor,
            original_max_position_embeddings,
            beta_fast: 32.0,
            beta_slow: 1.0,
            mscale: None,
            mscale_all_dim: None,
            attention_factor: None,
            truncate: true,
        }
    }

    /// The factor that multiplies **cos and sin** (transformers' `attention_factor` /
    /// `attention_scaling`, DeepSeek's `_mscale`):
    ///
    /// - `attention_factor` if given;
    /// - else, when both `mscale` and `mscale_all_dim` are set and non-zero,
    ///   `mscale(s, mscale) / mscale(s, mscale_all_dim)` (DeepSeek-V2: 1 exactly);
    /// - else `mscale(s, 1) = 0.1·ln s + 1` (the YaRN paper's √(1/t)).
    ///
    /// Because both q and k are rotated, scores pick up this factor squared. transformers'
    /// fallback departs from DeepSeek's original code when only `mscale` is set (the original
    /// divides by `mscale(s, 0) = 1`, giving `mscale(s, mscale)`); we follow transformers.
    ///
    /// ```
    /// use deepblocks_rope::YarnScaling;
    /// let yarn = YarnScaling { mscale: Some(0.707), mscale_all_dim: Some(0.707), ..YarnScaling::new(40.0, 4096) };
    /// assert_eq!(yarn.cos_sin_factor(), 1.0);
    /// ```
    #[doc(alias = "attention_factor")]
    #[doc(alias = "attention_scaling")]
    pub fn cos_sin_factor(&self) -> f64 {
        if let Some(a) = self.attention_factor {
            return a;
        }
        match (self.mscale, self.mscale_all_dim) {
            (Some(m), Some(m_all)) if m != 0.0 && m_all != 0.0 => {
                yarn_get_mscale(self.factor, m) / yarn_get_mscale(self.factor, m_all)
            }
            _ => yarn_get_mscale(self.factor, 1.0),
        }
    }

    /// The factor that multiplies the **softmax scale** `1/√d_qk` (DeepSeek's
    /// `yarn_apply_mscale`): `mscale(s, mscale_all_dim)²` when `mscale_all_dim` is set and
    /// non-zero, else 1. DeepSeek-V2: `(0.1·0.707·ln 40 + 1)² ≈ 1.5896`.
    ///
    /// ```
    /// use deepblocks_rope::YarnScaling;
    /// let yarn = YarnScaling { mscale: Some(0.707), mscale_all_dim: Some(0.707), ..YarnScaling::new(40.0, 4096) };
    /// assert!((yarn.softmax_factor() - 1.5896).abs() < 1e-4);
    /// ```
    pub fn softmax_factor(&self) -> f64 {
        let m = self.softmax_mscale();
        m * m
    }

    /// `mscale(s, mscale_all_dim)` when `mscale_all_dim` is set and non-zero, else 1: the square
    /// root of the softmax factor, which transformers multiplies in twice.
    pub(crate) fn softmax_mscale(&self) -> f64 {
        match self.mscale_all_dim {
            Some(m_all) if m_all != 0.0 => yarn_get_mscale(self.factor, m_all),
            _ => 1.0,
        }
    }

    /// The correction range `(low, high)` for rotary dimension `dim` and base `rope_theta`, in
    /// units of pair index, after `truncate` and clamping to `[0, dim − 1]` (transformers'
    /// `find_correction_range`). DeepSeek-V2 (r 64, base 10⁴, L₀ 4096, β 32/1): `(10, 23)`.
    ///
    /// ```
    /// use deepblocks_rope::YarnScaling;
    /// assert_eq!(YarnScaling::new(40.0, 4096).correction_range(64, 10_000.0), (10.0, 23.0));
    /// ```
    pub fn correction_range(&self, dim: usize, rope_theta: f64) -> (f64, f64) {
        let l0 = self.original_max_position_embeddings as f64;
        let d = dim as f64;
        // find_correction_dim: (dim · ln(L₀ / (β·2π))) / (2 · ln base)
        let at = |rotations: f64| {
            (d * (l0 / (rotations * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * rope_theta.ln())
        };
        let (mut low, mut high) = (at(self.beta_fast), at(self.beta_slow));
        if self.truncate {
            low = low.floor();
            high = high.ceil();
        }
        (low.max(0.0), high.min(d - 1.0))
    }
}

/// Llama-3.1's frequency-dependent scaling: wavelengths shorter than `L₀/high_freq_factor` keep
/// their frequency, longer than `L₀/low_freq_factor` are divided by `factor`, and the band in
/// between is smoothed: `s_i = (L₀/λ_i − low) / (high − low)`,
/// `inv_freq_i ← (1 − s_i)·inv_freq_i/factor + s_i·inv_freq_i`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Scaling {
    /// Divisor of the low frequencies (> 0; Llama 3.1: 8).
    pub factor: f64,
    /// Lower end of the smoothing band, in units of `L₀/λ` (Llama 3.1: 1).
    pub low_freq_factor: f64,
    /// Upper end of the smoothing band (Llama 3.1: 4).
    pub high_freq_factor: f64,
    /// `L₀`: the pre-training context (Llama 3.1: 8192).
    pub original_max_position_embeddings: usize,
}

/// How the frequencies are scaled to reach past the pre-training context. Each variant carries its
/// own config.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RopeScaling {
    /// Plain RoPE: `inv_freq_i = base^(−2i/r)`.
    #[default]
    None,
    /// Linear position interpolation.
    Linear(LinearScaling),
    /// Dynamic NTK-aware scaling.
    DynamicNtk(DynamicNtkScaling),
    /// YaRN (DeepSeek-V2).
    Yarn(YarnScaling),
    /// Llama-3.1.
    Llama3(Llama3Scaling),
}

impl RopeScaling {
    /// The factor that multiplies cos and sin: [`YarnScaling::cos_sin_factor`] for YaRN, 1 for
    /// every other scaling.
    #[doc(alias = "attention_factor")]
    pub fn cos_sin_factor(&self) -> f64 {
        match self {
            RopeScaling::Yarn(y) => y.cos_sin_factor(),
            _ => 1.0,
        }
    }

    /// The factor that multiplies the softmax scale: [`YarnScaling::softmax_factor`] for YaRN, 1
    /// for every other scaling.
    pub fn softmax_factor(&self) -> f64 {
        let m = self.softmax_mscale();
        m * m
    }

    pub(crate) fn softmax_mscale(&self) -> f64 {
        match self {
            RopeScaling::Yarn(y) => y.softmax_mscale(),
            _ => 1.0,
        }
    }
}

/// YaRN's attention-temperature correction `mscale(s, m) = 0.1·m·ln s + 1` (1 when `s ≤ 1`);
/// named as in transformers and DeepSeek's code.
///
/// ```
/// assert_eq!(deepblocks_rope::yarn_get_mscale(1.0, 0.707), 1.0);
/// assert!((deepblocks_rope::yarn_get_mscale(40.0, 0.707) - 1.260_804).abs() < 1e-6);
/// ```
pub fn yarn_get_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        return 1.0;
    }
    0.1 * mscale * scale.ln() + 1.0
}

/// Everything that defines a rotary table.
///
/// ```
/// use deepblocks_rope::{Layout, RopeConfig, RopeScaling, YarnScaling};
/// // DeepSeek-V2: qk_rope_head_dim 64, rope_theta 10⁴, 163,840 positions, YaRN ×40 from 4096.
/// let cfg = RopeConfig::new(64, 10_000.0, 163_840, Layout::Interleaved).with_scaling(
///     RopeScaling::Yarn(YarnScaling {
///         mscale: Some(0.707),
///         mscale_all_dim: Some(0.707),
///         ..YarnScaling::new(40.0, 4096)
///     }),
/// );
/// cfg.validate()?;
/// # Ok::<(), deepblocks_rope::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeConfig {
    /// `r`: the rotary dimension of one head (even; DeepSeek-V2's `qk_rope_head_dim`).
    pub dim: usize,
    /// The base of the frequencies (`rope_theta`, > 1).
    pub rope_theta: f64,
    /// Positions run from 0 to `max_position_embeddings − 1` (at most 2²⁴, where f32 stops
    /// counting exactly).
    pub max_position_embeddings: usize,
    /// Where each pair lives inside a head.
    pub layout: Layout,
    /// The frequency scaling.
    pub scaling: RopeScaling,
}

impl RopeConfig {
    /// Plain RoPE with the given dimension, base, maximum length and layout.
    pub fn new(
        dim: usize,
        rope_theta: f64,
        max_position_embeddings: usize,
        layout: Layout,
    ) -> Self {
        RopeConfig {
            dim,
            rope_theta,
            max_position_embeddings,
            layout,
            scaling: RopeScaling::None,
        }
    }

    /// The same config with `scaling`.
    pub fn with_scaling(self, scaling: RopeScaling) -> Self {
        RopeConfig { scaling, ..self }
    }

    /// Checks every field; `Err` names the first one at fault.
    pub fn validate(&self) -> Result<()> {
        if self.dim == 0 || !self.dim.is_multiple_of(2) {
            return Err(Error::OddDim {
                field: "dim",
                value: self.dim,
            });
        }
        finite_above("rope_theta", self.rope_theta, 1.0, "a finite number > 1")?;
        let max = self.max_position_embeddings;
        if max == 0 || max > MAX_EXACT_POSITION {
            return Err(Error::OutOfRange {
                field: "max_position_embeddings",
                value: max as f64,
                expected: "in 1..=2^24 (positions are exact in f32 up to 2^24)",
            });
        }
        match &self.scaling {
            RopeScaling::None => {}
            RopeScaling::Linear(l) => positive("linear.factor", l.factor)?,
            RopeScaling::DynamicNtk(d) => {
                positive("dynamic.factor", d.factor)?;
                length(
                    "dynamic.original_max_position_embeddings",
                    d.original_max_position_embeddings,
                )?;
                if self.dim < 4 {
                    return Err(Error::OutOfRange {
                        field: "dim",
                        value: self.dim as f64,
                        expected: "at least 4 for dynamic NTK (its exponent is r/(r-2))",
                    });
                }
            }
            RopeScaling::Yarn(y) => validate_yarn(y)?,
            RopeScaling::Llama3(l) => {
                positive("llama3.factor", l.factor)?;
                positive("llama3.low_freq_factor", l.low_freq_factor)?;
                finite("llama3.high_freq_factor", l.high_freq_factor)?;
                if l.high_freq_factor <= l.low_freq_factor {
                    return Err(Error::FreqFactorOrder {
                        low_freq_factor: l.low_freq_factor,
                        high_freq_factor: l.high_freq_factor,
                    });
                }
                length(
                    "llama3.original_max_position_embeddings",
                    l.original_max_position_embeddings,
                )?;
            }
        }
        Ok(())
    }
}

fn validate_yarn(y: &YarnScaling) -> Result<()> {
    positive("yarn.factor", y.factor)?;
    length(
        "yarn.original_max_position_embeddings",
        y.original_max_position_embeddings,
    )?;
    positive("yarn.beta_slow", y.beta_slow)?;
    finite("yarn.beta_fast", y.beta_fast)?;
    // Equal betas are valid (Kimi K2's 1 and 1: floor and ceil of one dimension; were it whole,
    // the range would be empty and is widened by 0.001, as transformers widens it).
    if y.beta_fast < y.beta_slow {
        return Err(Error::BetaOrder {
            beta_fast: y.beta_fast,
            beta_slow: y.beta_slow,
        });
    }
    if let Some(m) = y.mscale {
        finite("yarn.mscale", m)?;
    }
    if let Some(m) = y.mscale_all_dim {
        finite("yarn.mscale_all_dim", m)?;
        let m = yarn_get_mscale(y.factor, m);
        finite_above(
            "yarn.mscale_all_dim",
            m,
            0.0,
            "such that mscale(factor, mscale_all_dim) = 0.1·mscale_all_dim·ln(factor) + 1 > 0",
        )?;
    }
    if let Some(a) = y.attention_factor {
        positive("yarn.attention_factor", a)?;
    }
    let f = y.cos_sin_factor();
    if !(f.is_finite() && f > 0.0) {
        return Err(Error::OutOfRange {
            field: "yarn.mscale",
            value: y.mscale.unwrap_or(f64::NAN),
            expected: "such that the cos/sin factor mscale(factor, mscale) / \
                       mscale(factor, mscale_all_dim) is finite and > 0",
        });
    }
    Ok(())
}

fn finite(field: &'static str, v: f64) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::OutOfRange {
            field,
            value: v,
            expected: "finite",
        })
    }
}

fn finite_above(field: &'static str, v: f64, min: f64, expected: &'static str) -> Result<()> {
    if v.is_finite() && v > min {
        Ok(())
    } else {
        Err(Error::OutOfRange {
            field,
            value: v,
            expected,
        })
    }
}

fn positive(field: &'static str, v: f64) -> Result<()> {
    finite_above(field, v, 0.0, "a finite number > 0")
}

fn length(field: &'static str, v: usize) -> Result<()> {
    if v == 0 {
        Err(Error::OutOfRange {
            field,
            value: 0.0,
            expected: "at least 1",
        })
    } else {
        Ok(())
    }
}
