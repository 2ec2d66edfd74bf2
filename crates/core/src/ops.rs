//! Element-wise and row-wise activations: softmax, SiLU, SwiGLU. All f32.

/// Softmax over each of `rows` rows of `cols` elements, in place:
/// `x[i] ← exp(x[i] − max(x)) / Σ_j exp(x[j] − max(x))`.
///
/// Subtracting the row maximum keeps every exponent ≤ 0, so nothing overflows; an entry of −∞
/// (a masked position) becomes exactly 0.
///
/// # Non-finite input
/// A row whose entries are all −∞, or that holds +∞ or NaN, has no defined softmax and comes out
/// NaN, as in torch. Callers that hold user-supplied logits check them first (the sampler does).
///
/// ```
/// let mut x = [1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
/// deepblocks_core::softmax_rows(&mut x, 1, 4);
/// assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// assert!((x[2] - 0.665_240_9).abs() < 1e-6);
/// assert_eq!(x[3], 0.0);
/// ```
///
/// # Panics
/// If `x.len() != rows * cols`.
pub fn softmax_rows(x: &mut [f32], rows: usize, cols: usize) {
    assert_eq!(x.len(), rows * cols, "softmax_rows: x is not [rows, cols]");
    if cols == 0 {
        return;
    }
    for row in x.chunks_exact_mut(cols) {
        softmax(row);
    }
}

/// Softmax of one row in place (see [`softmax_rows`]).
pub fn softmax(row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let max = max_lanes(row);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Maximum with 16 independent lanes (vectorisable); NaN-propagating like torch's `max`.
fn max_lanes(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = row.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = if v > *l || v.is_nan() { v } else { *l };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(tail) {
        if v > m || v.is_nan() {
            m = v;
        }
    }
    m
}

/// The naive twin of [`softmax_rows`]: the definition evaluated in f64, then rounded to f32.
///
/// # Panics
/// If `x.len() != rows * cols`.
pub fn softmax_rows_naive(x: &mut [f32], rows: usize, cols: usize) {
    assert_eq!(
        x.len(),
        rows * cols,
        "softmax_rows_naive: x is not [rows, cols]"
    );
    if cols == 0 {
        return;
    }
    for row in x.chunks_exact_mut(cols) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| {
            if v.is_nan() {
                f64::NAN
            } else {
                m.max(v as f64)
            }
        });
        let exps: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        for (v, e) in row.iter_mut().zip(exps) {
            *v = (e / sum) as f32;
        }
    }
}

/// SiLU (swish): `silu(x) = x · σ(x) = x / (1 + e^{−x})`, as torch's `F.silu` computes it.
///
/// ```
/// assert!((deepblocks_core::silu(1.0) - 0.731_058_6).abs() < 1e-6);
/// ```
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// The logistic function `σ(x) = 1 / (1 + e^{−x})`, in f32 as torch computes it (DeepSeek-V3's
/// router scores with it).
///
/// ```
/// assert_eq!(deepblocks_core::sigmoid(0.0), 0.5);
/// ```
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// [`silu`] applied to every element in place.
pub fn silu_inplace(x: &mut [f32]) {
    for v in x {
        *v = silu(*v);
    }
}

/// SwiGLU's gating: `out[i] = silu(gate[i]) · up[i]`, the inner step of a DeepSeek MLP
/// `down(silu(gate(x)) · up(x))`.
///
/// # Panics
/// If the three lengths differ.
pub fn swiglu(out: &mut [f32], gate: &[f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up differ in length");
    assert_eq!(out.len(), up.len(), "swiglu: out and up differ in length");
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(g) * u;
    }
}

/// `Σ a[i]·b[i]` with 16 independent f32 accumulators (vectorised by the compiler).
///
/// ```
/// assert_eq!(deepblocks_core::dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
/// ```
///
/// # Panics
/// If the lengths differ.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: lengths differ");
    let mut lanes = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for l in 0..16 {
            lanes[l] += xa[l] * xb[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// The naive twin of [`dot`]: one accumulator, in order.
///
/// # Panics
/// If the lengths differ.
pub fn dot_naive(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_naive: lengths differ");
    let mut acc = 0.0f32;
    for i in 0..a.len() {
        acc += a[i] * b[i];
    }
    acc
}

/// `Σ x[i]²` (see [`dot`]).
pub fn sum_squares(x: &[f32]) -> f32 {
    dot(x, x)
}
