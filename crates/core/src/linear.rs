//! `y[t, n] = x[t, k] · W[n, k]ᵀ`: the linear layer, as checkpoints store `nn.Linear` weights.
//!
//! Two fast paths and a naive twin:
//!
//! - **GEMV** (decode-shaped, `t ≤ GEMV_MAX_ROWS`): our own kernel. It streams each weight row
//!   once for all `t` input rows, widening bf16/f16 to f32 in registers (AVX2+FMA+F16C when the CPU
//!   has them, a portable loop otherwise), split over output rows with rayon. Memory-bound: its
//!   speed is the DRAM bandwidth divided by the weight's bytes.
//! - **Tiled bf16** (a few tokens per weight, `GEMV_MAX_ROWS < t ≤ TILED_MAX_ROWS`, bf16
//!   weights, AVX2): tiles of 2 weight rows × 4 input rows, bf16 widened in registers, each pair
//!   of weight rows kept in L1 while every input tile passes over it — what a MoE expert sees in
//!   prefill (a dozen tokens each).
//! - **GEMM** (prefill-shaped): matrixmultiply's sgemm over column blocks of the output, the blocks
//!   run in parallel with rayon. bf16/f16 weights are widened one block at a time into a reused
//!   per-thread scratch buffer; the whole matrix is never widened.
//! - **naive**: the textbook triple loop with one f32 accumulator, for tests.
//!
//! The slice functions take explicit dimensions and panic on inconsistent lengths (a caller bug,
//! not user data); [`linear_nd`] checks shapes and returns an [`Error`] instead.

use std::cell::RefCell;

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use crate::{DType, Element, Error, Result, Weight, WeightData};

/// Up to this many input rows, [`linear`] uses the GEMV kernel; above, the GEMM path.
pub const GEMV_MAX_ROWS: usize = 4;

/// Most output rows per GEMV task: 256 rows of a 2048-wide bf16 matrix are 1 MiB of contiguous
/// weights, long enough runs for the hardware prefetcher. Smaller matrices get smaller tasks so
/// every thread has several.
const GEMV_BLOCK_ROWS: usize = 64;

/// Fewest output rows per GEMV task.
const GEMV_MIN_BLOCK_ROWS: usize = 16;

/// Up to this many input rows, bf16 weights take the tiled kernel (above [`GEMV_MAX_ROWS`]);
/// past it, widening a block of weights once for sgemm pays off. Measured (benches/kernels.rs,
/// bf16 2048-wide, 2 threads): tiled/sgemm 79/37 GFLOP/s at 12 rows, 87/76 at 32, 79/74 at 48,
/// 83/108 at 128.
pub const TILED_MAX_ROWS: usize = 48;

/// Output rows per tiled-kernel task.
const TILED_BLOCK_ROWS: usize = 32;

/// Below this many multiply-adds a call runs on the calling thread only.
const PARALLEL_MIN_MACS: usize = 1 << 16;

/// `y[t, n] = x[t, k] · Wᵀ` for a weight `W[n, k]` (`n = w.rows()`, `k = w.cols()`), choosing the
/// GEMV or GEMM path by `t`.
///
/// ```
/// use deepblocks_core::{linear, Weight};
/// let w = Weight::from_f32(vec![1.0, 0.0, 2.0, 0.0, 1.0, -1.0], 2, 3)?; // [n 2, k 3]
/// let x = [1.0, 2.0, 3.0]; // [t 1, k 3]
/// let mut y = [0.0; 2];
/// linear(&mut y, &x, &w, 1);
/// assert_eq!(y, [7.0, -1.0]);
/// # Ok::<(), deepblocks_core::Error>(())
/// ```
///
/// # Panics
/// If `x.len() != t * k` or `y.len() != t * n`.
pub fn linear(y: &mut [f32], x: &[f32], w: &Weight, t: usize) {
    match w.data() {
        WeightData::F32(b) => matmul_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::BF16(b) => matmul_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::F16(b) => matmul_bt(y, x, b, t, w.cols(), w.rows()),
    }
}

/// [`linear`] forced onto the GEMV path for any `t` (rows are taken `GEMV_MAX_ROWS` at a time).
///
/// # Panics
/// As [`linear`].
pub fn linear_gemv(y: &mut [f32], x: &[f32], w: &Weight, t: usize) {
    match w.data() {
        WeightData::F32(b) => gemv_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::BF16(b) => gemv_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::F16(b) => gemv_bt(y, x, b, t, w.cols(), w.rows()),
    }
}

/// [`linear`] forced onto the tiled bf16 path for any `t` when the weight is bf16 and the CPU has
/// AVX2 and FMA; otherwise the GEMM path.
///
/// # Panics
/// As [`linear`].
pub fn linear_tiled(y: &mut [f32], x: &[f32], w: &Weight, t: usize) {
    match w.data() {
        WeightData::BF16(b) if tiled_available::<half::bf16>() => {
            tiled_bt(y, x, b, t, w.cols(), w.rows())
        }
        _ => linear_gemm(y, x, w, t),
    }
}

/// [`linear`] forced onto the GEMM path for any `t`.
///
/// # Panics
/// As [`linear`].
pub fn linear_gemm(y: &mut [f32], x: &[f32], w: &Weight, t: usize) {
    match w.data() {
        WeightData::F32(b) => gemm_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::BF16(b) => gemm_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::F16(b) => gemm_bt(y, x, b, t, w.cols(), w.rows()),
    }
}

/// The naive twin of [`linear`]: `y[i, o] = Σ_j x[i, j] · W[o, j]`, one f32 accumulator, in order.
///
/// # Panics
/// As [`linear`].
pub fn linear_naive(y: &mut [f32], x: &[f32], w: &Weight, t: usize) {
    match w.data() {
        WeightData::F32(b) => matmul_bt_naive(y, x, b, t, w.cols(), w.rows()),
        WeightData::BF16(b) => matmul_bt_naive(y, x, b, t, w.cols(), w.rows()),
        WeightData::F16(b) => matmul_bt_naive(y, x, b, t, w.cols(), w.rows()),
    }
}

/// [`linear`] over ndarray: `x[t, k]` → `y[t, n]`, with the shape checked.
///
/// # Errors
/// [`Error::Shape`] naming `x` when its column count is not `w.cols()`.
pub fn linear_nd(x: ArrayView2<'_, f32>, w: &Weight) -> Result<Array2<f32>> {
    let (t, k) = x.dim();
    if k != w.cols() {
        return Err(Error::shape("x", &[t, w.cols()], &[t, k]));
    }
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout is contiguous");
    let mut y = Array2::zeros((t, w.rows()));
    linear(
        y.as_slice_mut().expect("fresh array is contiguous"),
        xs,
        w,
        t,
    );
    Ok(y)
}

/// `y[t, n] = x[t, k] · w[n, k]ᵀ` over slices, for any stored element type; the GEMV path for
/// `t ≤ GEMV_MAX_ROWS`, the GEMM path above. Attention uses it with a cache as `w`.
///
/// # Panics
/// If `x.len() != t * k`, `w.len() != n * k` or `y.len() != t * n`.
pub fn matmul_bt<W: Element>(y: &mut [f32], x: &[f32], w: &[W], t: usize, k: usize, n: usize) {
    if t <= GEMV_MAX_ROWS {
        gemv_bt(y, x, w, t, k, n)
    } else if t <= TILED_MAX_ROWS && tiled_available::<W>() {
        tiled_bt(y, x, w, t, k, n)
    } else {
        gemm_bt(y, x, w, t, k, n)
    }
}

/// The naive twin of [`matmul_bt`].
///
/// # Panics
/// As [`matmul_bt`].
pub fn matmul_bt_naive<W: Element>(
    y: &mut [f32],
    x: &[f32],
    w: &[W],
    t: usize,
    k: usize,
    n: usize,
) {
    check_lengths(y, x, w.len(), t, k, n);
    for i in 0..t {
        for o in 0..n {
            let mut acc = 0.0f32;
            for j in 0..k {
                acc += x[i * k + j] * w[o * k + j].to_f32();
            }
            y[i * n + o] = acc;
        }
    }
}

/// `y[m, n] = a[m, k] · b[k, n]`, all row-major f32 (attention's probabilities times values).
/// Single-threaded: callers parallelise over heads.
///
/// # Panics
/// If a length does not match its dimensions.
pub fn matmul(y: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert_eq!(a.len(), m * k, "matmul: a is not [m, k]");
    assert_eq!(b.len(), k * n, "matmul: b is not [k, n]");
    assert_eq!(y.len(), m * n, "matmul: y is not [m, n]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    // SAFETY: the pointers cover exactly the [m, k], [k, n] and [m, n] row-major extents checked
    // above, and `y` does not alias `a` or `b` (it is a unique borrow).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            y.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// The naive twin of [`matmul`].
///
/// # Panics
/// As [`matmul`].
pub fn matmul_naive(y: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    assert_eq!(a.len(), m * k, "matmul: a is not [m, k]");
    assert_eq!(b.len(), k * n, "matmul: b is not [k, n]");
    assert_eq!(y.len(), m * n, "matmul: y is not [m, n]");
    for i in 0..m {
        for o in 0..n {
            let mut acc = 0.0f32;
            for j in 0..k {
                acc += a[i * k + j] * b[j * n + o];
            }
            y[i * n + o] = acc;
        }
    }
}

fn check_lengths(y: &[f32], x: &[f32], w_len: usize, t: usize, k: usize, n: usize) {
    assert_eq!(
        x.len(),
        t * k,
        "linear: x has {} elements, not [t {t}, k {k}]",
        x.len()
    );
    assert_eq!(
        w_len,
        n * k,
        "linear: w has {w_len} elements, not [n {n}, k {k}]"
    );
    assert_eq!(
        y.len(),
        t * n,
        "linear: y has {} elements, not [t {t}, n {n}]",
        y.len()
    );
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task that receives an `OutPtr` writes a set of elements disjoint from every other
// task's (distinct output rows or column blocks), and the owning `&mut [f32]` outlives the tasks.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

// ---------------------------------------------------------------------------------------------
// GEMV

/// A GEMV block kernel: for output rows `o0..o1` and `T` input rows, `y[j*n + o] = x[j] · w[o]`.
/// The weight pointer is untyped; [`gemv_kernel`] picks the kernel for the element type.
type GemvFn = unsafe fn(*mut f32, usize, *const f32, usize, *const u8, usize, usize);

fn gemv_bt<W: Element>(y: &mut [f32], x: &[f32], w: &[W], t: usize, k: usize, n: usize) {
    check_lengths(y, x, w.len(), t, k, n);
    if t == 0 || n == 0 {
        return;
    }
    let mut i0 = 0;
    while i0 < t {
        let tg = (t - i0).min(GEMV_MAX_ROWS);
        let (kernel, layout) = gemv_kernel::<W>(tg);
        let yp = OutPtr(y[i0 * n..].as_mut_ptr());
        let xg = match layout {
            XLayout::Plain => std::borrow::Cow::Borrowed(&x[i0 * k..(i0 + tg) * k]),
            XLayout::EvenOdd16 => {
                std::borrow::Cow::Owned(even_odd_16(&x[i0 * k..(i0 + tg) * k], k))
            }
        };
        let wp = w.as_ptr() as usize;
        let run = |o0: usize, o1: usize| {
            // SAFETY: `x`, `w` and `y` were checked to be [t, k], [n, k] and [t, n]; the kernel
            // reads rows i0..i0+tg of x, rows o0..o1 of w, and writes y[i0+j, o0..o1] only.
            unsafe { kernel(yp.get(), n, xg.as_ptr(), k, wp as *const u8, o0, o1) }
        };
        if n * k * tg < PARALLEL_MIN_MACS {
            run(0, n);
        } else {
            let per_task = (n / (4 * rayon::current_num_threads().max(1)))
                .clamp(GEMV_MIN_BLOCK_ROWS, GEMV_BLOCK_ROWS);
            let blocks = n.div_ceil(per_task);
            (0..blocks).into_par_iter().for_each(|b| {
                let o0 = b * per_task;
                run(o0, (o0 + per_task).min(n));
            });
        }
        i0 += tg;
    }
}

/// How a GEMV kernel wants its input rows laid out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum XLayout {
    /// As given.
    Plain,
    /// Each full block of 16 values reordered as its 8 even-indexed values then its 8 odd ones
    /// (the tail after the last full block as given): see [`even_odd_16`].
    EvenOdd16,
}

/// Rows of `k` values with every full 16-block reordered even-indexed first, odd second: the
/// layout the AVX2 bf16 kernel reads, which widens 16 bf16 weights with one shift and one mask
/// (even elements are the low halves of 32-bit lanes, odd ones the high halves).
fn even_odd_16(x: &[f32], k: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(k) {
        let blocks = row.chunks_exact(16);
        let tail = blocks.remainder();
        for b in blocks {
            out.extend(b.iter().step_by(2));
            out.extend(b.iter().skip(1).step_by(2));
        }
        out.extend_from_slice(tail);
    }
    out
}

/// The GEMV kernel for `t` rows of input and weights of type `W`, and the input layout it reads.
fn gemv_kernel<W: Element>(t: usize) -> (GemvFn, XLayout) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma_f16c() {
        return match W::DTYPE {
            DType::F32 => (avx2::gemv_f32_for(t), XLayout::Plain),
            DType::BF16 => (avx2::gemv_bf16_pairs_for(t), XLayout::EvenOdd16),
            DType::F16 => (avx2::gemv_f16_for(t), XLayout::Plain),
        };
    }
    let kernel = match t {
        1 => gemv_portable::<W, 1>,
        2 => gemv_portable::<W, 2>,
        3 => gemv_portable::<W, 3>,
        _ => gemv_portable::<W, 4>,
    };
    (kernel, XLayout::Plain)
}

/// Portable GEMV block: 8 independent accumulators per row, which compilers vectorise.
///
/// # Safety
/// `x` points to `T` rows of `k` f32, `w` to at least `o1` rows of `k` elements of type `W`, and
/// `y` to `T` rows of stride `n ≥ o1` f32 that no other thread writes in columns `o0..o1`.
unsafe fn gemv_portable<W: Element, const T: usize>(
    y: *mut f32,
    n: usize,
    x: *const f32,
    k: usize,
    w: *const u8,
    o0: usize,
    o1: usize,
) {
    let w = w.cast::<W>();
    // SAFETY: the caller guarantees the extents documented above.
    let xs = unsafe { std::slice::from_raw_parts(x, T * k) };
    for o in o0..o1 {
        // SAFETY: row o < o1 of w lies within the caller's extent.
        let wr = unsafe { std::slice::from_raw_parts(w.add(o * k), k) };
        let mut acc = [[0.0f32; 8]; T];
        let chunks = k / 8;
        for c in 0..chunks {
            let mut wv = [0.0f32; 8];
            for l in 0..8 {
                wv[l] = wr[c * 8 + l].to_f32();
            }
            for (j, a) in acc.iter_mut().enumerate() {
                let xr = &xs[j * k + c * 8..j * k + c * 8 + 8];
                for l in 0..8 {
                    a[l] += xr[l] * wv[l];
                }
            }
        }
        for (j, a) in acc.iter().enumerate() {
            let mut s = a.iter().sum::<f32>();
            for i in chunks * 8..k {
                s += xs[j * k + i] * wr[i].to_f32();
            }
            // SAFETY: (j, o) is inside the caller's output extent.
            unsafe { *y.add(j * n + o) = s };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! AVX2 + FMA + F16C GEMV kernels, one per stored dtype, generated by one macro.
    use super::GemvFn;
    use half::{bf16, f16};
    use std::arch::x86_64::*;

    /// Sum of the 8 lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// 8 f32 from `p`.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load_f32(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f32 at p.
        unsafe { _mm256_loadu_ps(p) }
    }

    /// 8 f16 from `p`, widened by F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn load_f16(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable f16 (16 bytes) at p.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }

    macro_rules! gemv_avx2 {
        ($name:ident, $for:ident, $w:ty, $load:ident) => {
            /// AVX2 GEMV block over `T` input rows with `U` independent 8-lane accumulators per
            /// row (see `gemv_portable` for the contract). More accumulators keep more loads in
            /// flight; `T · U ≤ 8` leaves registers for the weights.
            ///
            /// # Safety
            /// As `gemv_portable`, and the CPU must support AVX2, FMA and F16C.
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn $name<const T: usize, const U: usize>(
                y: *mut f32,
                n: usize,
                x: *const f32,
                k: usize,
                w: *const u8,
                o0: usize,
                o1: usize,
            ) {
                let w = w.cast::<$w>();
                for o in o0..o1 {
                    // SAFETY: row o of w and rows 0..T of x hold k elements each, each load
                    // below reads 8 elements at an index + 8 ≤ k, and (j, o) is in y's extent.
                    unsafe {
                        let wr = w.add(o * k);
                        let mut acc = [[_mm256_setzero_ps(); U]; T];
                        let mut i = 0;
                        while i + 8 * U <= k {
                            let mut wv = [_mm256_setzero_ps(); U];
                            for u in 0..U {
                                wv[u] = $load(wr.add(i + 8 * u));
                            }
                            for j in 0..T {
                                let xr = x.add(j * k + i);
                                for u in 0..U {
                                    acc[j][u] = _mm256_fmadd_ps(
                                        _mm256_loadu_ps(xr.add(8 * u)),
                                        wv[u],
                                        acc[j][u],
                                    );
                                }
                            }
                            i += 8 * U;
                        }
                        while i + 8 <= k {
                            let w0 = $load(wr.add(i));
                            for j in 0..T {
                                let xr = x.add(j * k + i);
                                acc[j][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xr), w0, acc[j][0]);
                            }
                            i += 8;
                        }
                        for j in 0..T {
                            let mut sum = acc[j][0];
                            for u in 1..U {
                                sum = _mm256_add_ps(sum, acc[j][u]);
                            }
                            let mut s = hsum(sum);
                            for r in i..k {
                                s += *x.add(j * k + r) * <$w as crate::Element>::to_f32(*wr.add(r));
                            }
                            *y.add(j * n + o) = s;
                        }
                    }
                }
            }

            /// The kernel for `t` rows (`1 ≤ t ≤ 4`).
            pub(super) fn $for(t: usize) -> GemvFn {
                match t {
                    1 => $name::<1, 4>,
                    2 => $name::<2, 4>,
                    3 => $name::<3, 2>,
                    _ => $name::<4, 2>,
                }
            }
        };
    }

    gemv_avx2!(gemv_f32, gemv_f32_for, f32, load_f32);
    gemv_avx2!(gemv_f16, gemv_f16_for, f16, load_f16);

    /// AVX2 GEMV block for bf16 weights over `T` input rows laid out by `even_odd_16`: each
    /// 256-bit load holds 16 weights; `lane << 16` is the even ones as f32, `lane & 0xFFFF0000`
    /// the odd ones, multiplied with the even and odd halves of the input block. `U` blocks of
    /// 16 per step, two accumulators each. One input row has its own kernel,
    /// `gemv_bf16_one_row`, with named accumulators (measurably faster than this generic one).
    ///
    /// # Safety
    /// As `gemv_portable` (with `x` in the `even_odd_16` layout and `w` bf16), and the CPU must
    /// support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn gemv_bf16_pairs<const T: usize, const U: usize>(
        y: *mut f32,
        n: usize,
        x: *const f32,
        k: usize,
        w: *const u8,
        o0: usize,
        o1: usize,
    ) {
        let w = w.cast::<bf16>();
        let high = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        for o in o0..o1 {
            // SAFETY: row o of w and rows 0..T of x hold k elements each; every 256-bit load
            // reads 16 elements at an index + 16 ≤ k; (j, o) is in y's extent.
            unsafe {
                let wr = w.add(o * k);
                // acc[j][u] = (even, odd) partial sums of input row j, block u of each step.
                let mut acc = [[[_mm256_setzero_ps(); 2]; U]; T];
                let mut i = 0;
                while i + 16 * U <= k {
                    for u in 0..U {
                        let v = _mm256_loadu_si256(wr.add(i + 16 * u).cast());
                        let we = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
                        let wo = _mm256_castsi256_ps(_mm256_and_si256(v, high));
                        for (j, a) in acc.iter_mut().enumerate() {
                            let xr = x.add(j * k + i + 16 * u);
                            a[u][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xr), we, a[u][0]);
                            a[u][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xr.add(8)), wo, a[u][1]);
                        }
                    }
                    i += 16 * U;
                }
                while i + 16 <= k {
                    let v = _mm256_loadu_si256(wr.add(i).cast());
                    let we = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
                    let wo = _mm256_castsi256_ps(_mm256_and_si256(v, high));
                    for (j, a) in acc.iter_mut().enumerate() {
                        let xr = x.add(j * k + i);
                        a[0][0] = _mm256_fmadd_ps(_mm256_loadu_ps(xr), we, a[0][0]);
                        a[0][1] = _mm256_fmadd_ps(_mm256_loadu_ps(xr.add(8)), wo, a[0][1]);
                    }
                    i += 16;
                }
                for (j, a) in acc.iter().enumerate() {
                    let mut sum = _mm256_setzero_ps();
                    for pair in a {
                        sum = _mm256_add_ps(sum, _mm256_add_ps(pair[0], pair[1]));
                    }
                    let mut s = hsum(sum);
                    for r in i..k {
                        s += *x.add(j * k + r) * (*wr.add(r)).to_f32();
                    }
                    *y.add(j * n + o) = s;
                }
            }
        }
    }

    /// The one-input-row bf16 kernel, written out with named accumulators: 32 weights per step
    /// (one 64-byte cache line), four independent FMA chains.
    ///
    /// # Safety
    /// As `gemv_bf16_pairs`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn gemv_bf16_one_row(
        y: *mut f32,
        n: usize,
        x: *const f32,
        k: usize,
        w: *const u8,
        o0: usize,
        o1: usize,
    ) {
        let w = w.cast::<bf16>();
        let high = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        for o in o0..o1 {
            // SAFETY: row o of w and x hold k elements; every load stays below k.
            unsafe {
                let wr = w.add(o * k);
                let (mut a0, mut a1, mut a2, mut a3) = (
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                    _mm256_setzero_ps(),
                );
                let mut i = 0;
                while i + 32 <= k {
                    let v0 = _mm256_loadu_si256(wr.add(i).cast());
                    let v1 = _mm256_loadu_si256(wr.add(i + 16).cast());
                    a0 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(x.add(i)),
                        _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)),
                        a0,
                    );
                    a1 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(x.add(i + 8)),
                        _mm256_castsi256_ps(_mm256_and_si256(v0, high)),
                        a1,
                    );
                    a2 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(x.add(i + 16)),
                        _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)),
                        a2,
                    );
                    a3 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(x.add(i + 24)),
                        _mm256_castsi256_ps(_mm256_and_si256(v1, high)),
                        a3,
                    );
                    i += 32;
                }
                if i + 16 <= k {
                    let v0 = _mm256_loadu_si256(wr.add(i).cast());
                    a0 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(x.add(i)),
                        _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)),
                        a0,
                    );
                    a1 = _mm256_fmadd_ps(
                        _mm256_loadu_ps(x.add(i + 8)),
                        _mm256_castsi256_ps(_mm256_and_si256(v0, high)),
                        a1,
                    );
                    i += 16;
                }
                let mut s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
                for r in i..k {
                    s += *x.add(r) * (*wr.add(r)).to_f32();
                }
                let _ = n;
                *y.add(o) = s;
            }
        }
    }

    /// One micro-tile of the tiled kernel: weight rows `o..o + R` against input rows
    /// `i0..i0 + T` (input in the `even_odd_16` layout), `R·T` accumulators, each 16-block of a
    /// weight row widened once and used for all `T` input rows.
    ///
    /// # Safety
    /// `x` holds at least `i0 + T` rows of `k`, `w` at least `o + R` rows of `k` bf16, and
    /// `y[(i0 + j)·n + o + r]` is writable by this thread; AVX2 and FMA are available.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    #[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
    #[allow(clippy::needless_range_loop)] // r and j index several register arrays in lockstep
    unsafe fn tile_bf16<const R: usize, const T: usize>(
        y: *mut f32,
        n: usize,
        x: *const f32,
        i0: usize,
        k: usize,
        w: *const bf16,
        o: usize,
    ) {
        let high = _mm256_set1_epi32(0xFFFF_0000u32 as i32);
        // SAFETY: every load reads 16 weights or 8 inputs at an index + 16 ≤ k of a row in
        // range; the tail reads single elements below k; the stores are in the caller's extent.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let mut i = 0;
            while i + 16 <= k {
                let mut we = [_mm256_setzero_ps(); R];
                let mut wo = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    let v = _mm256_loadu_si256(w.add((o + r) * k + i).cast());
                    we[r] = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
                    wo[r] = _mm256_castsi256_ps(_mm256_and_si256(v, high));
                }
                for j in 0..T {
                    let xr = x.add((i0 + j) * k + i);
                    let (xe, xo) = (_mm256_loadu_ps(xr), _mm256_loadu_ps(xr.add(8)));
                    for r in 0..R {
                        acc[r][j] = _mm256_fmadd_ps(xe, we[r], acc[r][j]);
                        acc[r][j] = _mm256_fmadd_ps(xo, wo[r], acc[r][j]);
                    }
                }
                i += 16;
            }
            for r in 0..R {
                for j in 0..T {
                    let mut s = hsum(acc[r][j]);
                    for q in i..k {
                        s += *x.add((i0 + j) * k + q) * (*w.add((o + r) * k + q)).to_f32();
                    }
                    *y.add((i0 + j) * n + o + r) = s;
                }
            }
        }
    }

    /// The tiled bf16 kernel over output rows `o0..o1` and all `t` input rows: for each pair of
    /// weight rows (8 KiB at k = 2048, in L1), every tile of 4 input rows.
    ///
    /// # Safety
    /// `x` is `[t, k]` in the `even_odd_16` layout, `w` holds at least `o1` rows of `k` bf16, `y`
    /// is `[t, n]` with columns `o0..o1` written by this thread only; AVX2 and FMA are available.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
    pub(super) unsafe fn tiled_bf16(
        y: *mut f32,
        n: usize,
        x: *const f32,
        t: usize,
        k: usize,
        w: *const u8,
        o0: usize,
        o1: usize,
    ) {
        let w = w.cast::<bf16>();
        let mut o = o0;
        while o < o1 {
            let r = (o1 - o).min(2);
            let mut i0 = 0;
            while i0 < t {
                let tt = (t - i0).min(4);
                // SAFETY: rows o..o + r of w, i0..i0 + tt of x, and their outputs are in range.
                unsafe {
                    match (r, tt) {
                        (2, 4) => tile_bf16::<2, 4>(y, n, x, i0, k, w, o),
                        (2, 3) => tile_bf16::<2, 3>(y, n, x, i0, k, w, o),
                        (2, 2) => tile_bf16::<2, 2>(y, n, x, i0, k, w, o),
                        (2, _) => tile_bf16::<2, 1>(y, n, x, i0, k, w, o),
                        (_, 4) => tile_bf16::<1, 4>(y, n, x, i0, k, w, o),
                        (_, 3) => tile_bf16::<1, 3>(y, n, x, i0, k, w, o),
                        (_, 2) => tile_bf16::<1, 2>(y, n, x, i0, k, w, o),
                        (_, _) => tile_bf16::<1, 1>(y, n, x, i0, k, w, o),
                    }
                }
                i0 += tt;
            }
            o += r;
        }
    }

    /// The bf16 kernel for `t` rows (`1 ≤ t ≤ 4`).
    pub(super) fn gemv_bf16_pairs_for(t: usize) -> GemvFn {
        match t {
            1 => gemv_bf16_one_row,
            2 => gemv_bf16_pairs::<2, 2>,
            3 => gemv_bf16_pairs::<3, 1>,
            _ => gemv_bf16_pairs::<4, 1>,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tiled bf16

/// Whether the tiled kernel serves weights of type `W` on this CPU.
fn tiled_available<W: Element>() -> bool {
    #[cfg(target_arch = "x86_64")]
    if W::DTYPE == DType::BF16 {
        return crate::simd::has_avx2_fma_f16c();
    }
    false
}

/// `y[t, n] = x[t, k] · w[n, k]ᵀ` for bf16 `w` with the tiled AVX2 kernel; the caller checked
/// [`tiled_available`].
fn tiled_bt<W: Element>(y: &mut [f32], x: &[f32], w: &[W], t: usize, k: usize, n: usize) {
    check_lengths(y, x, w.len(), t, k, n);
    assert_eq!(W::DTYPE, DType::BF16, "the tiled kernel reads bf16 weights");
    if t == 0 || n == 0 {
        return;
    }
    let xp = even_odd_16(x, k);
    let yp = OutPtr(y.as_mut_ptr());
    let wp = w.as_ptr() as usize;
    let run = |o0: usize, o1: usize| {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: x (as xp), w and y are [t, k], [n, k] and [t, n] (checked); the kernel writes
        // y[.., o0..o1] only; the caller checked the CPU has AVX2 and FMA.
        unsafe {
            avx2::tiled_bf16(yp.get(), n, xp.as_ptr(), t, k, wp as *const u8, o0, o1)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("tiled_available is false off x86-64 (rows {o0}..{o1})");
    };
    if t * n * k < PARALLEL_MIN_MACS {
        run(0, n);
    } else {
        let blocks = n.div_ceil(TILED_BLOCK_ROWS);
        (0..blocks).into_par_iter().for_each(|b| {
            let o0 = b * TILED_BLOCK_ROWS;
            run(o0, (o0 + TILED_BLOCK_ROWS).min(n));
        });
    }
}

// ---------------------------------------------------------------------------------------------
// GEMM

thread_local! {
    /// Per-thread scratch for one widened block of a bf16/f16 weight, reused across calls.
    static WIDEN_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn gemm_bt<W: Element>(y: &mut [f32], x: &[f32], w: &[W], t: usize, k: usize, n: usize) {
    check_lengths(y, x, w.len(), t, k, n);
    if t == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0);
        return;
    }
    let threads = rayon::current_num_threads().max(1);
    // Column blocks: several per thread for balance, at least 64 wide so sgemm's packing of x is
    // amortised, a multiple of 16 to suit its micro-kernel.
    let nb = n.div_ceil(threads * 4).max(64).next_multiple_of(16).min(n);
    let blocks = n.div_ceil(nb);
    let yp = OutPtr(y.as_mut_ptr());
    let run = |b: usize| {
        let o0 = b * nb;
        let o1 = (o0 + nb).min(n);
        let cols = o1 - o0;
        let block = &w[o0 * k..o1 * k];
        let sgemm_block = |bp: *const f32| {
            // SAFETY: a = x is [t, k] row-major; b = block of w, read as wᵀ [k, cols] with row
            // stride 1 and column stride k; c = y[:, o0..o1] with row stride n. Tasks write
            // disjoint column blocks of y.
            unsafe {
                matrixmultiply::sgemm(
                    t,
                    k,
                    cols,
                    1.0,
                    x.as_ptr(),
                    k as isize,
                    1,
                    bp,
                    1,
                    k as isize,
                    0.0,
                    yp.get().add(o0),
                    n as isize,
                    1,
                )
            }
        };
        match W::DTYPE {
            DType::F32 => sgemm_block(block.as_ptr().cast::<f32>()),
            _ => WIDEN_SCRATCH.with_borrow_mut(|scratch| {
                scratch.clear();
                scratch.extend(block.iter().map(|v| v.to_f32()));
                sgemm_block(scratch.as_ptr())
            }),
        }
    };
    if blocks == 1 || t * n * k < PARALLEL_MIN_MACS {
        (0..blocks).for_each(run);
    } else {
        (0..blocks).into_par_iter().for_each(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deepblocks_testkit::det_values as det;
    use half::bf16;

    #[test]
    fn every_path_matches_naive_on_awkward_sizes() {
        for &(t, k, n) in &[
            (1, 1, 1),
            (1, 7, 3),
            (3, 17, 5),
            (4, 33, 130),
            (5, 40, 70),
            (9, 100, 257),
        ] {
            let x = det(t * k, 1);
            let wf = Weight::from_f32(det(n * k, 2), n, k).unwrap();
            for w in [
                wf.clone(),
                wf.to_dtype(DType::BF16),
                wf.to_dtype(DType::F16),
            ] {
                let mut want = vec![0.0; t * n];
                linear_naive(&mut want, &x, &w, t);
                for (name, f) in [
                    ("linear", linear as fn(&mut [f32], &[f32], &Weight, usize)),
                    ("gemv", linear_gemv),
                    ("tiled", linear_tiled),
                    ("gemm", linear_gemm),
                ] {
                    let mut got = vec![f32::NAN; t * n];
                    f(&mut got, &x, &w, t);
                    for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - e).abs() <= 1e-5 * (1.0 + e.abs()) * (k as f32).sqrt(),
                            "{name} {:?} t{t} k{k} n{n} at {i}: {g} vs {e}",
                            w.dtype()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn even_odd_layout_reorders_full_blocks_only() {
        let x: Vec<f32> = (0..40).map(|v| v as f32).collect(); // two rows of k = 20
        let got = even_odd_16(&x, 20);
        let mut want: Vec<f32> = (0..16)
            .step_by(2)
            .chain((1..16).step_by(2))
            .map(|v| v as f32)
            .collect();
        want.extend([16.0, 17.0, 18.0, 19.0]);
        assert_eq!(&got[..20], &want[..]);
        assert_eq!(got[20..].iter().map(|v| v - 20.0).collect::<Vec<_>>(), want);
    }

    #[test]
    fn portable_kernel_matches_naive() {
        let (t, k, n) = (3, 37, 11);
        let x = det(t * k, 3);
        let w: Vec<bf16> = det(n * k, 4).iter().map(|&v| bf16::from_f32(v)).collect();
        let mut want = vec![0.0; t * n];
        matmul_bt_naive(&mut want, &x, &w, t, k, n);
        let mut got = vec![0.0; t * n];
        // SAFETY: extents as documented: x [3, 37], w [11, 37], y [3, 11].
        unsafe {
            gemv_portable::<bf16, 3>(got.as_mut_ptr(), n, x.as_ptr(), k, w.as_ptr().cast(), 0, n)
        };
        for (g, e) in got.iter().zip(&want) {
            assert!((g - e).abs() < 1e-5, "{g} vs {e}");
        }
    }

    #[test]
    fn linear_nd_rejects_a_wrong_width_naming_x() {
        let w = Weight::from_f32(vec![0.0; 6], 2, 3).unwrap();
        let x = Array2::<f32>::zeros((4, 5));
        let err = linear_nd(x.view(), &w).unwrap_err();
        assert!(matches!(&err, Error::Shape { tensor, expected, found }
            if tensor == "x" && expected == &[4, 3] && found == &[4, 5]));
    }

    #[test]
    fn matmul_matches_naive() {
        let (m, k, n) = (5, 9, 7);
        let a = det(m * k, 5);
        let b = det(k * n, 6);
        let mut got = vec![0.0; m * n];
        let mut want = vec![0.0; m * n];
        matmul(&mut got, &a, &b, m, k, n);
        matmul_naive(&mut want, &a, &b, m, k, n);
        for (g, e) in got.iter().zip(&want) {
            assert!((g - e).abs() < 1e-5, "{g} vs {e}");
        }
    }
}
