//! Inverse frequencies for each scaling, in the f32 arithmetic transformers uses.
//!
//! transformers builds `inv_freq` as an f32 tensor: Python scalars (the base, the factor) are
//! rounded to f32 before they meet the tensor, `scalar / tensor` is computed as
//! `f32(scalar) · (1 / tensor)`, and each operation rounds. The functions here repeat those steps
//! one by one so that the tables agree bit for bit (up to the last bit of `pow`, which torch does
//! not always round correctly). At position 10⁵ one ulp of a frequency near 1 moves the angle by
//! 6·10⁻³ rad, so this matters far more than it seems.

use crate::config::{DynamicNtkScaling, Llama3Scaling, RopeConfig, RopeScaling, YarnScaling};

/// `b^e` for f32 operands, correctly rounded (through f64) — what torch's f32 `pow` returns for
/// the bases used in practice.
fn powf32(b: f32, e: f32) -> f32 {
    (b as f64).powf(e as f64) as f32
}

/// `base^(2i/r)` for `i < r/2`, as `base ** (arange(0, r, 2).float() / r)` in f32.
fn pos_freqs(dim: usize, base: f32) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| powf32(base, (2 * i) as f32 / dim as f32))
        .collect()
}

/// Plain RoPE: `inv_freq_i = 1 / base^(2i/r)` (RoFormer §3.2: θ_i = 10000^(−2(i−1)/d), i from 1).
pub(crate) fn default_inv_freq(dim: usize, rope_theta: f64) -> Vec<f32> {
    pos_freqs(dim, rope_theta as f32)
        .into_iter()
        .map(|p| 1.0 / p)
        .collect()
}

/// The inverse frequencies of `config` (for dynamic NTK: at or below the original length).
pub(crate) fn inv_freq(config: &RopeConfig) -> Vec<f32> {
    let (dim, theta) = (config.dim, config.rope_theta);
    match &config.scaling {
        RopeScaling::None => default_inv_freq(dim, theta),
        RopeScaling::Linear(l) => {
            let f = l.factor as f32;
            default_inv_freq(dim, theta)
                .into_iter()
                .map(|v| v / f)
                .collect()
        }
        RopeScaling::DynamicNtk(d) => dynamic_init_inv_freq(dim, theta, d),
        RopeScaling::Yarn(y) => yarn_inv_freq(dim, theta, y),
        RopeScaling::Llama3(l) => llama3_inv_freq(dim, theta, l),
    }
}

/// Dynamic NTK at construction: transformers evaluates the base in Python floats (f64) with
/// `seq_len = L₀`, which leaves it (all but) unchanged.
fn dynamic_init_inv_freq(dim: usize, theta: f64, d: &DynamicNtkScaling) -> Vec<f32> {
    let (s, l0, r) = (
        d.factor,
        d.original_max_position_embeddings as f64,
        dim as f64,
    );
    let base = theta * ((s * l0 / l0) - (s - 1.0)).powf(r / (r - 2.0));
    pos_freqs(dim, base as f32)
        .into_iter()
        .map(|p| 1.0 / p)
        .collect()
}

/// Dynamic NTK for a sequence of `seq_len > L₀` positions. At run time transformers gets
/// `seq_len` as a tensor, so the new base is computed in f32:
/// `base' = f32(base) · pow(f32(s)·L / L₀ − f32(s − 1), r/(r−2))`.
pub(crate) fn dynamic_inv_freq(
    dim: usize,
    theta: f64,
    d: &DynamicNtkScaling,
    seq_len: usize,
) -> Vec<f32> {
    let s = d.factor as f32;
    let ratio =
        s * seq_len as f32 / d.original_max_position_embeddings as f32 - (d.factor - 1.0) as f32;
    let r = dim as f64;
    let grow = (ratio as f64).powf(r / (r - 2.0)) as f32;
    let base = theta as f32 * grow;
    pos_freqs(dim, base).into_iter().map(|p| 1.0 / p).collect()
}

/// YaRN, step by step as `_compute_yarn_parameters`.
fn yarn_inv_freq(dim: usize, theta: f64, y: &YarnScaling) -> Vec<f32> {
    let pos = pos_freqs(dim, theta as f32);
    let factor = y.factor as f32;
    let (low, mut high) = y.correction_range(dim, theta);
    if low == high {
        high += 0.001; // transformers: "prevent singularity"
    }
    let (low32, span32) = (low as f32, (high - low) as f32);
    pos.iter()
        .enumerate()
        .map(|(i, &p)| {
            let extrapolation = 1.0 / p;
            let interpolation = 1.0 / (factor * p);
            let ramp = ((i as f32 - low32) / span32).clamp(0.0, 1.0);
            // transformers' `inv_freq_extrapolation_factor`: 1 below the range, 0 above it.
            let keep = 1.0 - ramp;
            interpolation * (1.0 - keep) + extrapolation * keep
        })
        .collect()
}

/// Llama-3.1, step by step as `_compute_llama3_parameters`.
fn llama3_inv_freq(dim: usize, theta: f64, l: &Llama3Scaling) -> Vec<f32> {
    let l0 = l.original_max_position_embeddings as f64;
    let low_wavelen = (l0 / l.low_freq_factor) as f32;
    let high_wavelen = (l0 / l.high_freq_factor) as f32;
    let factor = l.factor as f32;
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    let low = l.low_freq_factor as f32;
    let span = (l.high_freq_factor - l.low_freq_factor) as f32;
    default_inv_freq(dim, theta)
        .into_iter()
        .map(|inv| {
            let wavelen = two_pi * (1.0 / inv);
            let scaled = if wavelen > low_wavelen {
                inv / factor
            } else {
                inv
            };
            // transformers: `~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)`
            // (the same for the finite wavelengths a validated config produces).
            let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
            if medium {
                let smooth = (l0 as f32 * (1.0 / wavelen) - low) / span;
                (1.0 - smooth) * scaled / factor + smooth * scaled
            } else {
                scaled
            }
        })
        .collect()
}
