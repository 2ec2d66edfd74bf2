//! `y[t, n] = bf16(x)[t, k] · w[n, k]ᵀ`: a bf16 weight multiplied with its input rows rounded to
//! bf16 ([`Bf16Products::Bf16`](crate::Bf16Products)), as llama.cpp's bf16 path and every
//! framework computing in bf16 multiply.
//!
//! Where [`crate::bf16_dot`] holds (AVX512-BF16), the products run on `vdpbf16ps`: 32
//! multiply-adds of bf16 pairs an instruction into sixteen f32 lanes, twice the rate of f32
//! FMAs, and the weights are read in place — neither widened nor packed. A tile is 4 input rows
//! × 4 weight rows (sixteen accumulators over the whole `k`, summed across lanes once at the
//! end); a single input row (decode) reads the weight rows one after another instead. The input
//! rows are taken in chunks that stay in L2 while a task's block of weight rows passes over them.
//! Elsewhere the rounded rows go through the f32 paths of [`matmul_bt`](super::matmul_bt): the
//! same products of the same values, summed in another order.

use rayon::prelude::*;

use half::bf16;

use super::{OutPtr, PARALLEL_MIN_MACS, check_lengths, matmul_bt, matmul_bt_naive};
use crate::ops::round_to_bf16;

/// Output rows (weight rows) per task.
const BLOCK_ROWS: usize = 64;

/// Input rows and weight rows of one tile.
#[cfg(target_arch = "x86_64")]
const TILE_ROWS: usize = 4;

/// Bytes of rounded input rows a chunk holds, about (whole tiles of four rows): a task's
/// weight block passes over them while they stay in L2.
#[cfg(target_arch = "x86_64")]
const CHUNK_BYTES: usize = 192 * 1024;

/// `y[t, n] = bf16(x)[t, k] · w[n, k]ᵀ`: each input value rounded to the nearest bf16 (ties to
/// even), the products of two bf16 exact in f32 and summed in f32; on `vdpbf16ps` where
/// [`crate::bf16_dot`] holds (which also reads subnormal bf16 values as zero), through the f32
/// kernels otherwise.
///
/// ```
/// use deepblocks_core::{half::bf16, matmul_bt_bf16_inputs};
/// let w: Vec<bf16> = [1.0f32, 2.0, 3.0, 4.0].map(bf16::from_f32).to_vec(); // [n 2, k 2]
/// let x = [1.0f32 + 1.0 / 1024.0, 1.0]; // the first input rounds to 1.0 in bf16
/// let mut y = [0.0f32; 2];
/// matmul_bt_bf16_inputs(&mut y, &x, &w, 1, 2, 2);
/// assert_eq!(y, [3.0, 7.0]);
/// ```
///
/// # Panics
/// If `x.len() != t * k`, `w.len() != n * k` or `y.len() != t * n`.
pub fn matmul_bt_bf16_inputs(y: &mut [f32], x: &[f32], w: &[bf16], t: usize, k: usize, n: usize) {
    check_lengths(y, x, w.len(), t, k, n);
    #[cfg(target_arch = "x86_64")]
    if crate::bf16_dot() {
        let ldx = padded(k);
        dot(y, &round(x, t, k, ldx), ldx, w, t, k, n);
        return;
    }
    matmul_bt_bf16_inputs_portable(y, x, w, t, k, n);
}

/// The twin of [`matmul_bt_bf16_inputs`] on every CPU: the rounded input rows widened back to
/// f32 and multiplied by [`matmul_bt`](super::matmul_bt)'s kernels.
///
/// # Panics
/// As [`matmul_bt_bf16_inputs`].
pub fn matmul_bt_bf16_inputs_portable(
    y: &mut [f32],
    x: &[f32],
    w: &[bf16],
    t: usize,
    k: usize,
    n: usize,
) {
    matmul_bt(y, &rounded(x), w, t, k, n);
}

/// The naive twin of [`matmul_bt_bf16_inputs`]: `y[i, o] = Σ_j bf16(x[i, j]) · w[o, j]`, one f32
/// accumulator, in order ([`matmul_bt_naive`] over the rounded rows).
///
/// # Panics
/// As [`matmul_bt_bf16_inputs`].
pub fn matmul_bt_bf16_inputs_naive(
    y: &mut [f32],
    x: &[f32],
    w: &[bf16],
    t: usize,
    k: usize,
    n: usize,
) {
    matmul_bt_naive(y, &rounded(x), w, t, k, n);
}

/// `x` rounded to bf16 (to nearest, ties to even) and widened back to f32.
fn rounded(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| round_to_bf16(v)).collect()
}

/// The row stride of the rounded input rows: `k`, unless rows `k` apart would start at the
/// same offset in a 4 KiB page (`2k` a multiple of 4,096), where four rows read together would
/// compete for one set of the L1 cache with the weight rows (in place, `k` apart); then 32 more.
#[cfg(target_arch = "x86_64")]
fn padded(k: usize) -> usize {
    if (2 * k).is_multiple_of(4096) {
        k + 32
    } else {
        k
    }
}

/// The rows of `x[t, k]` rounded to bf16 (to nearest even), `ldx` apart (zeros between).
#[cfg(target_arch = "x86_64")]
fn round(x: &[f32], t: usize, k: usize, ldx: usize) -> Vec<bf16> {
    let mut out = vec![bf16::ZERO; t * ldx];
    for (o, row) in out.chunks_exact_mut(ldx).zip(x.chunks_exact(k.max(1))) {
        for (o, &v) in o.iter_mut().zip(row) {
            *o = bf16::from_f32(v);
        }
    }
    out
}

/// The `vdpbf16ps` driver: blocks of [`BLOCK_ROWS`] weight rows in parallel; within a block, the
/// input rows in chunks of about [`CHUNK_BYTES`], and for each chunk every group of four weight
/// rows against every tile of four input rows. Called only where [`crate::bf16_dot`] holds, with
/// `w` and `y` checked to be `[n, k]` and `[t, n]`.
///
/// # Panics
/// If `x` is not `t` rows `ldx ≥ k` apart.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
fn dot(y: &mut [f32], x: &[bf16], ldx: usize, w: &[bf16], t: usize, k: usize, n: usize) {
    if t == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0); // empty sums
        return;
    }
    assert!(
        ldx >= k && Some(x.len()) == t.checked_mul(ldx),
        "bf16 inputs: {} rounded values are not {t} rows {ldx} apart",
        x.len()
    );
    let chunk = (CHUNK_BYTES / (2 * ldx)).max(1).next_multiple_of(TILE_ROWS);
    let yp = OutPtr(y.as_mut_ptr());
    let run = |o0: usize, o1: usize| {
        for i0 in (0..t).step_by(chunk) {
            // SAFETY: `bf16_dot` holds (AVX512-BF16, BW and F: our caller's check); x holds t
            // rows ldx ≥ k apart (asserted above), w and y are [n, k] and [t, n] (our caller's
            // check_lengths); this task writes y[i0 .. i0 + chunk, o0 .. o1] only.
            unsafe {
                x86::rows(
                    yp.get(),
                    n,
                    x.as_ptr(),
                    ldx,
                    i0,
                    (i0 + chunk).min(t),
                    k,
                    w.as_ptr(),
                    o0,
                    o1,
                )
            }
        }
    };
    if t * n * k < PARALLEL_MIN_MACS {
        run(0, n);
    } else {
        (0..n.div_ceil(BLOCK_ROWS)).into_par_iter().for_each(|b| {
            let o0 = b * BLOCK_ROWS;
            run(o0, (o0 + BLOCK_ROWS).min(n));
        });
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use half::bf16;

    use super::TILE_ROWS;
    use crate::bf16_rows::sum_lanes;

    /// Input rows `i0 .. i1` against weight rows `o0 .. o1`: for each group of up to four weight
    /// rows, every tile of up to four input rows.
    ///
    /// # Safety
    /// The CPU has AVX-512F, BW and BF16; `x` holds `i1` rows of `k` bf16 `ldx ≥ k` apart, `w`
    /// `o1` rows of `k`, `y`
    /// is `[.., n]` with rows `i0 .. i1`, columns `o0 .. o1` written by this thread only.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
    pub(super) unsafe fn rows(
        y: *mut f32,
        n: usize,
        x: *const bf16,
        ldx: usize,
        i0: usize,
        i1: usize,
        k: usize,
        w: *const bf16,
        o0: usize,
        o1: usize,
    ) {
        if i1 - i0 == 1 {
            // One input row (decode): the weight rows one after another, a single stream.
            for o in o0..o1 {
                // SAFETY: input row i0 < i1, weight row o < o1 (as ours).
                unsafe { row(y, n, x, ldx, i0, k, w, o) };
            }
            return;
        }
        for o in (o0..o1).step_by(TILE_ROWS) {
            let c = (o1 - o).min(TILE_ROWS);
            for i in (i0..i1).step_by(TILE_ROWS) {
                let r = (i1 - i).min(TILE_ROWS);
                // SAFETY: input rows i .. i + r ≤ i1, weight rows o .. o + c ≤ o1 (as ours).
                unsafe {
                    macro_rules! tiles {
                        ($(($a:literal, $b:literal)),*) => {
                            match (r, c) {
                                $(($a, $b) => tile::<$a, $b>(y, n, x, ldx, i, k, w, o),)*
                                _ => unreachable!("tiles are 1 to 4 rows by 1 to 4 rows"),
                            }
                        };
                    }
                    tiles!(
                        (4, 4),
                        (4, 3),
                        (4, 2),
                        (4, 1),
                        (3, 4),
                        (3, 3),
                        (3, 2),
                        (3, 1),
                        (2, 4),
                        (2, 3),
                        (2, 2),
                        (2, 1),
                        (1, 4),
                        (1, 3),
                        (1, 2),
                        (1, 1)
                    )
                }
            }
        }
    }

    /// Input row `i` against weight row `o`: four accumulators over steps of 32 values, then
    /// summed. Decode reads each weight row once, as one stream; four rows read side by side, as
    /// the tiles read them, streamed 15–60% slower from memory on Zen 4 (docs/performance.md).
    ///
    /// # Safety
    /// As [`rows`], for this input row and weight row.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[inline]
    #[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
    unsafe fn row(
        y: *mut f32,
        n: usize,
        x: *const bf16,
        ldx: usize,
        i: usize,
        k: usize,
        w: *const bf16,
        o: usize,
    ) {
        let mut acc = [_mm512_setzero_ps(); 4];
        // SAFETY: row i of x (ldx apart) and row o of w (k apart) are in range (the caller's).
        let (xr, wr) = unsafe { (x.add(i * ldx), w.add(o * k)) };
        let mut p = 0;
        // SAFETY: every load reads values p .. p + 32 below k, or those under the mask.
        unsafe {
            while p + 128 <= k {
                for (a, acc) in acc.iter_mut().enumerate() {
                    let q = p + 32 * a;
                    *acc = _mm512_dpbf16_ps(*acc, load(xr.add(q), None), load(wr.add(q), None));
                }
                p += 128;
            }
            while p < k {
                let mask = (k - p < 32).then(|| (1u32 << (k - p)) - 1);
                acc[0] = _mm512_dpbf16_ps(acc[0], load(xr.add(p), mask), load(wr.add(p), mask));
                p += 32;
            }
        }
        let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
        // SAFETY: row i, column o of y: in this thread's extent.
        unsafe { *y.add(i * n + o) = _mm512_reduce_add_ps(sum) };
    }

    /// 32 bf16 values from `p`; with a mask, the lanes past it zero (and not read).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[inline]
    unsafe fn load(p: *const bf16, mask: Option<__mmask32>) -> __m512bh {
        // SAFETY: the caller's: the 32 values, or those under the mask, are inside its row.
        let v = unsafe {
            match mask {
                None => _mm512_loadu_si512(p.cast()),
                Some(m) => _mm512_maskz_loadu_epi16(m, p.cast()),
            }
        };
        // SAFETY: both are 64 bytes of plain bits.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }

    /// Input rows `i .. i + R` against weight rows `o .. o + C`: `R·C` accumulators over the
    /// whole `k`, 32 values a step, then summed across lanes together ([`sum_lanes`]).
    /// (`R` or `C` below four runs narrower tiles through the same code: `C` weight rows a step
    /// and the missing rows skipped.)
    ///
    /// # Safety
    /// As [`rows`], for these rows.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::needless_range_loop)] // a and c index two register arrays in lockstep
    unsafe fn tile<const R: usize, const C: usize>(
        y: *mut f32,
        n: usize,
        x: *const bf16,
        ldx: usize,
        i: usize,
        k: usize,
        w: *const bf16,
        o: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        // One step: values p .. p + 32 of every row, those past the mask zero.
        let mut step = |p: usize, mask: Option<__mmask32>| {
            // SAFETY: values p .. p + 32 (under the mask, below k) of rows in range.
            unsafe {
                let xs: [__m512bh; R] =
                    std::array::from_fn(|a| load(x.add((i + a) * ldx + p), mask));
                for c in 0..C {
                    let wc = load(w.add((o + c) * k + p), mask);
                    for a in 0..R {
                        acc[a][c] = _mm512_dpbf16_ps(acc[a][c], xs[a], wc);
                    }
                }
            }
        };
        let whole = k / 32;
        for s in 0..whole {
            step(32 * s, None);
        }
        if !k.is_multiple_of(32) {
            step(32 * whole, Some((1u32 << (k % 32)) - 1));
        }
        let sums = sum_lanes(std::array::from_fn(|m| acc[m / 4][m % 4]));
        let mut lanes = [0.0f32; 16];
        // SAFETY: 16 f32 into a local array.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sums) };
        for a in 0..R {
            for c in 0..C {
                // SAFETY: row i + a, column o + c of y: in this thread's extent.
                unsafe { *y.add((i + a) * n + o + c) = lanes[4 * a + c] };
            }
        }
    }
}
