//! The logits processors, as functions over a slice of scores `z[V]` (f64, one per token id;
//! `−∞` marks a token that can no longer be drawn), plus the platform-independent `exp`, softmax
//! and draw they rest on.
//!
//! Everything that decides *which* token is drawn uses only IEEE-754 basic operations (+, −, ×, ÷,
//! comparisons, `round`), which every conforming platform evaluates bit for bit alike; the one
//! transcendental function needed, `exp`, is [`exp_portable`], a polynomial in those operations,
//! instead of the platform's libm. Only the reported log-probabilities use the platform's `ln`.

use std::cmp::Ordering;

use crate::{Error, Result};

/// `e^x` from IEEE-754 basic operations only, so that it returns the same bits on every platform
/// (the platform's `f64::exp` comes from its libm and may differ in the last bit).
///
/// Cody–Waite range reduction `x = k·ln 2 + r`, `|r| ≤ ln 2 / 2`, with `ln 2` split in two so
/// that `k·ln2_hi` is exact; then the degree-13 Taylor polynomial of `e^r` (truncation error below
/// 10⁻¹⁷) and an exact scaling by `2^k`. Relative error within a few units in the last place.
///
/// ```
/// use deepblocks_sample::exp_portable;
/// assert_eq!(exp_portable(0.0), 1.0);
/// assert!((exp_portable(-1.0) - (-1.0f64).exp()).abs() < 1e-16);
/// assert_eq!(exp_portable(f64::NEG_INFINITY), 0.0);
/// ```
pub fn exp_portable(x: f64) -> f64 {
    // fdlibm's split of ln 2 (given by its bits): LN2_HI has 32 trailing zero bits, so k·LN2_HI
    // is exact for every k used here; LN2_HI + LN2_LO is ln 2 to about 2⁻⁸⁵.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    const INV_LN2: f64 = std::f64::consts::LOG2_E;
    // 1/n! for n = 0..=13.
    const C: [f64; 14] = [
        1.0,
        1.0,
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
        1.0 / 40320.0,
        1.0 / 362_880.0,
        1.0 / 3_628_800.0,
        1.0 / 39_916_800.0,
        1.0 / 479_001_600.0,
        1.0 / 6_227_020_800.0,
    ];
    if x.is_nan() {
        return f64::NAN;
    }
    if x > 709.782_712_893_384 {
        return f64::INFINITY;
    }
    if x < -745.133_219_101_941_2 {
        return 0.0;
    }
    // k = nearest integer to x / ln 2: adding and subtracting 1.5·2⁵² rounds to an integer
    // (ties to even) with two basic operations, where `f64::round` may be a libm call.
    const ROUNDER: f64 = 6_755_399_441_055_744.0;
    let k = (x * INV_LN2 + ROUNDER) - ROUNDER;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = C[13];
    for &c in C[..13].iter().rev() {
        p = p * r + c;
    }
    // Scale by 2^k (k in -1075..=1024) with exactly representable powers of two.
    let k = k as i32;
    if k > 1023 {
        p * pow2(1023) * 2.0
    } else if k < -1022 {
        p * pow2(k + 1000) * pow2(-1000)
    } else {
        p * pow2(k)
    }
}

/// `2^k` for `-1022 ≤ k ≤ 1023`, built from its bits.
fn pow2(k: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&k));
    f64::from_bits(((k + 1023) as u64) << 52)
}

/// The total order the processors rank tokens by: higher score first, ties to the lower id. Being
/// total (no two ids compare equal), it makes every selection deterministic.
pub fn rank_order(z: &[f64]) -> impl Fn(&u32, &u32) -> Ordering + '_ {
    move |&a, &b| z[b as usize].total_cmp(&z[a as usize]).then(a.cmp(&b))
}

/// The maximum score (−∞ for an empty slice or one of all −∞).
pub fn max_score(z: &[f64]) -> f64 {
    z.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// The id of the highest score, ties to the lowest id (greedy decoding).
///
/// # Panics
/// If `z` is empty.
pub fn argmax(z: &[f64]) -> usize {
    assert!(!z.is_empty(), "argmax of an empty slice");
    let mut best = 0;
    for (i, &v) in z.iter().enumerate().skip(1) {
        if v > z[best] {
            best = i;
        }
    }
    best
}

/// Applies the penalties for the tokens in `history`, in place: first CTRL's repetition penalty
/// (`z / θ` for `z > 0`, `z · θ` otherwise, once per distinct token), then
/// `z −= α_f · count + α_p` (OpenAI's frequency and presence penalties). A masked score (−∞)
/// stays masked.
///
/// # Errors
/// [`Error::TokenOutOfRange`] for a history id `≥ z.len()`; `z` is then unchanged.
pub fn apply_penalties(
    z: &mut [f64],
    history: &[u32],
    repetition: f32,
    frequency: f32,
    presence: f32,
) -> Result<()> {
    if let Some(&id) = history.iter().find(|&&id| id as usize >= z.len()) {
        return Err(Error::TokenOutOfRange { id, vocab: z.len() });
    }
    let mut ids = history.to_vec();
    ids.sort_unstable();
    let (theta, af, ap) = (repetition as f64, frequency as f64, presence as f64);
    for run in ids.chunk_by(|a, b| a == b) {
        let v = &mut z[run[0] as usize];
        if theta != 1.0 {
            *v = if *v > 0.0 { *v / theta } else { *v * theta };
        }
        *v -= af * run.len() as f64 + ap;
    }
    Ok(())
}

/// `z ← z / T` for a temperature `T > 0`.
pub fn apply_temperature(z: &mut [f64], temperature: f32) {
    let t = temperature as f64;
    for v in z {
        *v /= t;
    }
}

/// Masks (sets to −∞) every token outside the `k` best by [`rank_order`]; `k = 0` keeps all.
/// Uses a partial selection: O(V) on average.
pub fn top_k_mask(z: &mut [f64], k: usize) {
    if k == 0 {
        return;
    }
    let mut idx: Vec<u32> = (0..z.len() as u32)
        .filter(|&i| z[i as usize] > f64::NEG_INFINITY)
        .collect();
    if idx.len() <= k {
        return;
    }
    idx.select_nth_unstable_by(k - 1, rank_order(z));
    for &i in &idx[k..] {
        z[i as usize] = f64::NEG_INFINITY;
    }
}

/// The naive twin of [`top_k_mask`]: rank every token with a full sort and mask ranks ≥ k.
pub fn top_k_mask_naive(z: &mut [f64], k: usize) {
    if k == 0 {
        return;
    }
    let mut idx: Vec<u32> = (0..z.len() as u32).collect();
    idx.sort_by(rank_order(z));
    for &i in &idx[k.min(idx.len())..] {
        z[i as usize] = f64::NEG_INFINITY;
    }
}

/// Nucleus (top-p) truncation: with `p_i = softmax(z)_i`, keeps the smallest prefix of the tokens
/// ranked by [`rank_order`] whose probability mass reaches `top_p`, and masks the rest. At least
/// one token is always kept; `top_p ≥ 1` keeps all.
pub fn top_p_mask(z: &mut [f64], top_p: f32) {
    /// Candidates ranked first; the rest is sorted only if they do not reach `top_p`.
    const FIRST: usize = 1024;
    if top_p >= 1.0 {
        return;
    }
    let zmax = max_score(z);
    let mut idx: Vec<u32> = (0..z.len() as u32)
        .filter(|&i| z[i as usize] > f64::NEG_INFINITY)
        .collect();
    // Unnormalised weights w = exp(z − max); mass reaches p when Σ_prefix w ≥ p · Σ w.
    let total: f64 = idx
        .iter()
        .map(|&i| exp_portable(z[i as usize] - zmax))
        .sum();
    let target = top_p as f64 * total;
    // The nucleus is a prefix of the ranking, usually a short one: rank the best FIRST
    // candidates with a partial selection and sort the rest only if they fall short. The prefix
    // sums are the same either way.
    let first = idx.len().min(FIRST);
    if first < idx.len() {
        idx.select_nth_unstable_by(first - 1, rank_order(z));
    }
    idx[..first].sort_by(rank_order(z));
    let mut cum = 0.0;
    let mut keep = idx.len();
    for n in 0..idx.len() {
        if n == first {
            idx[first..].sort_by(rank_order(z));
        }
        cum += exp_portable(z[idx[n] as usize] - zmax);
        if cum >= target {
            keep = n + 1;
            break;
        }
    }
    for &i in &idx[keep..] {
        z[i as usize] = f64::NEG_INFINITY;
    }
}

/// The naive twin of [`top_p_mask`]: the same sums, over a full sort of the vocabulary.
pub fn top_p_mask_naive(z: &mut [f64], top_p: f32) {
    if top_p >= 1.0 {
        return;
    }
    let zmax = max_score(z);
    let mut idx: Vec<u32> = (0..z.len() as u32)
        .filter(|&i| z[i as usize] > f64::NEG_INFINITY)
        .collect();
    let total: f64 = idx
        .iter()
        .map(|&i| exp_portable(z[i as usize] - zmax))
        .sum();
    idx.sort_by(rank_order(z));
    let mut cum = 0.0;
    let mut keep = idx.len();
    for (n, &i) in idx.iter().enumerate() {
        cum += exp_portable(z[i as usize] - zmax);
        if cum >= top_p as f64 * total {
            keep = n + 1;
            break;
        }
    }
    for &i in &idx[keep..] {
        z[i as usize] = f64::NEG_INFINITY;
    }
}

/// Min-p truncation: masks every token whose probability is below `min_p` times the highest
/// probability, i.e. keeps `exp(z_i − max z) ≥ min_p`. `min_p = 0` keeps all; the best token is
/// always kept.
pub fn min_p_mask(z: &mut [f64], min_p: f32) {
    if min_p <= 0.0 {
        return;
    }
    let zmax = max_score(z);
    let m = min_p as f64;
    for v in z.iter_mut() {
        if exp_portable(*v - zmax) < m {
            *v = f64::NEG_INFINITY;
        }
    }
}

/// `out = softmax(z)` in f64 with [`exp_portable`]; masked tokens get exactly 0.
///
/// # Panics
/// If the lengths differ, or if every score is −∞ (no distribution exists; the pipeline reports
/// that as [`Error::AllMasked`] before it gets here).
pub fn softmax_portable(out: &mut [f64], z: &[f64]) {
    assert_eq!(out.len(), z.len(), "softmax_portable: length mismatch");
    let zmax = max_score(z);
    assert!(zmax > f64::NEG_INFINITY, "softmax of all -inf scores");
    let mut sum = 0.0;
    for (o, &v) in out.iter_mut().zip(z) {
        *o = exp_portable(v - zmax);
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// Draws a token from `softmax(z)` given a uniform number `u ∈ [0, 1)`: the first id (in id
/// order) at which the running sum of `exp(z − max z)` exceeds `u · Σ exp(z − max z)`. Returns
/// the id and its log-probability `z_i − max z − ln Σ exp(z − max z)`.
///
/// # Panics
/// If every score is −∞ or `z` is empty.
pub fn draw(z: &[f64], u: f64) -> (usize, f64) {
    let zmax = max_score(z);
    assert!(zmax > f64::NEG_INFINITY, "draw from all -inf scores");
    let total: f64 = z.iter().map(|&v| exp_portable(v - zmax)).sum();
    let target = u * total;
    let mut cum = 0.0;
    let mut chosen = None;
    let mut last_positive = 0;
    for (i, &v) in z.iter().enumerate() {
        let w = exp_portable(v - zmax);
        if w > 0.0 {
            last_positive = i;
            cum += w;
            if cum > target {
                chosen = Some(i);
                break;
            }
        }
    }
    // Rounding can leave the final running sum a hair below u·total for u close to 1.
    let i = chosen.unwrap_or(last_positive);
    (i, (z[i] - zmax) - total.ln())
}

/// `log softmax(x)_i` of raw f32 logits (max-subtracted, summed in f64).
pub(crate) fn log_softmax_at(x: &[f32], i: usize) -> f64 {
    let xmax = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let total: f64 = x.iter().map(|&v| exp_portable(v as f64 - xmax)).sum();
    (x[i] as f64 - xmax) - total.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_portable_matches_libm_to_a_few_ulp() {
        let mut worst = 0.0f64;
        let mut x = -745.0;
        while x < 709.0 {
            let (got, want) = (exp_portable(x), x.exp());
            if want > f64::MIN_POSITIVE {
                worst = worst.max(((got - want) / want).abs());
            }
            x += 0.012_345;
        }
        assert!(worst < 5e-16, "worst relative error {worst:e}");
        assert_eq!(exp_portable(710.0), f64::INFINITY);
        assert_eq!(exp_portable(-746.0), 0.0);
        assert!(exp_portable(f64::NAN).is_nan());
        // Subnormal results are still in the right place.
        let s = exp_portable(-740.0);
        assert!((s / (-740.0f64).exp() - 1.0).abs() < 1e-3, "{s:e}");
    }

    #[test]
    fn penalties_follow_ctrl_and_openai() {
        let mut z = vec![2.0, -2.0, 0.0, 1.0, f64::NEG_INFINITY];
        apply_penalties(&mut z, &[0, 1, 1, 4], 2.0, 0.5, 0.25).unwrap();
        assert_eq!(z[0], 2.0 / 2.0 - 0.5 - 0.25);
        assert_eq!(z[1], -2.0 * 2.0 - 1.0 - 0.25);
        assert_eq!(z[2], 0.0); // not in the history
        assert_eq!(z[3], 1.0);
        assert_eq!(z[4], f64::NEG_INFINITY);
    }

    #[test]
    fn penalty_history_out_of_range_names_the_id_and_leaves_z_alone() {
        let mut z = vec![1.0, 2.0];
        let err = apply_penalties(&mut z, &[1, 7], 1.3, 0.0, 0.0).unwrap_err();
        assert_eq!(err, Error::TokenOutOfRange { id: 7, vocab: 2 });
        assert_eq!(z, vec![1.0, 2.0]);
    }

    #[test]
    fn top_k_breaks_ties_by_lower_id() {
        let mut z = vec![1.0, 3.0, 3.0, 3.0, 0.0];
        top_k_mask(&mut z, 2);
        let ninf = f64::NEG_INFINITY;
        assert_eq!(z, vec![ninf, 3.0, 3.0, ninf, ninf]);
    }

    #[test]
    fn top_p_keeps_the_smallest_prefix_reaching_p() {
        // Probabilities 0.5, 0.25, 0.125, 0.125 (log2 spaced).
        let l2 = std::f64::consts::LN_2;
        let base = vec![0.0, -l2, -2.0 * l2, -2.0 * l2];
        let kept = |p: f32| {
            let mut z = base.clone();
            top_p_mask(&mut z, p);
            z.iter().filter(|v| v.is_finite()).count()
        };
        assert_eq!(kept(0.4), 1);
        assert_eq!(kept(0.5), 1);
        assert_eq!(kept(0.6), 2);
        assert_eq!(kept(0.75), 2);
        assert_eq!(kept(0.8), 3);
        assert_eq!(kept(1.0), 4);
    }

    #[test]
    fn top_p_beyond_the_first_candidates_equals_the_full_sort() {
        // 3000 nearly equal logits: the nucleus at p = 0.9 holds ~2700 tokens, more than the
        // partially selected first candidates, so the rest must be sorted too.
        let z: Vec<f64> = (0..3000)
            .map(|i| ((i * 7919) % 1000) as f64 * 1e-4)
            .collect();
        for p in [0.1f32, 0.3, 0.9, 0.999] {
            let (mut fast, mut naive) = (z.clone(), z.clone());
            top_p_mask(&mut fast, p);
            top_p_mask_naive(&mut naive, p);
            assert_eq!(fast, naive, "p = {p}");
        }
        let mut z9 = z.clone();
        top_p_mask(&mut z9, 0.9);
        let kept = z9.iter().filter(|v| v.is_finite()).count();
        assert!(kept > 2500, "{kept}");
    }

    #[test]
    fn min_p_is_relative_to_the_best_token() {
        let l2 = std::f64::consts::LN_2;
        let mut z = vec![0.0, -l2, -2.0 * l2, -3.0 * l2];
        min_p_mask(&mut z, 0.3); // ratios 1, 0.5, 0.25, 0.125
        assert_eq!(z.iter().filter(|v| v.is_finite()).count(), 2);
    }

    #[test]
    fn draw_walks_the_cumulative_distribution() {
        let l2 = std::f64::consts::LN_2;
        let z = vec![-l2, f64::NEG_INFINITY, -2.0 * l2, -2.0 * l2]; // 0.5, 0, 0.25, 0.25
        assert_eq!(draw(&z, 0.0).0, 0);
        assert_eq!(draw(&z, 0.49).0, 0);
        assert_eq!(draw(&z, 0.5).0, 2);
        assert_eq!(draw(&z, 0.74).0, 2);
        assert_eq!(draw(&z, 0.75).0, 3);
        assert_eq!(draw(&z, 1.0 - f64::EPSILON).0, 3);
        assert!((draw(&z, 0.1).1 - 0.5f64.ln()).abs() < 1e-15);
    }
}
