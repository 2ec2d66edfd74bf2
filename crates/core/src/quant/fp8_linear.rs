//! `y = x · Wᵀ` for FP8 weights: the activations stay f32; each weight row's codes are widened
//! to f32 in registers (E4M3 → f16 by two shifts and a mask, then F16C), multiplied with up to
//! four input rows at once, and each block's sum is scaled once. Above [`GEMM_MIN_ROWS`] input
//! rows the weight is dequantized a block of rows at a time into sgemm instead. And the naive
//! twin, which dequantizes each row and multiplies in f32.

use std::sync::OnceLock;

use super::fp8::{Fp8Matrix, e4m3_value};
use super::linear::{GEMM_MIN_ROWS, run_outputs};
use crate::linear::gemm::{Rows, gemm_rows};
use crate::{Isa, isa};

/// One weight row against `t ≤ 4` input rows: `out[j] = Σ_b scales[b] · Σ_{c ∈ block b}
/// x[j·k + c] · e4m3(codes[c])`, blocks of `bi` columns; arguments `(out, x, t, k, codes,
/// scales, bi)`.
///
/// # Safety
/// `out` has `t` writable f32, `x` `t` rows of `k` f32, `codes` `k` bytes none of them NaN
/// codes, `scales` `ceil(k / bi)` f32, `bi > 0`, `1 ≤ t ≤ 4`; the CPU supports the table's
/// instruction set.
pub(crate) type Fp8RowFn =
    unsafe fn(*mut f32, *const f32, usize, usize, *const u8, *const f32, usize);

/// The FP8 kernel of one instruction set.
pub(crate) struct Fp8Kernels {
    /// The instruction set it needs.
    pub isa: Isa,
    /// The row kernel.
    pub row: Fp8RowFn,
}

/// Every CPU.
pub(crate) static PORTABLE: Fp8Kernels = Fp8Kernels {
    isa: Isa::Portable,
    row: row_portable,
};

/// AVX2 + FMA + F16C.
#[cfg(target_arch = "x86_64")]
pub(crate) static AVX2: Fp8Kernels = Fp8Kernels {
    isa: Isa::Avx2,
    row: avx2::row,
};

/// The table for this CPU, chosen on first use.
pub(crate) fn kernels() -> &'static Fp8Kernels {
    static CHOSEN: OnceLock<&'static Fp8Kernels> = OnceLock::new();
    CHOSEN.get_or_init(|| match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &AVX2,
        _ => &PORTABLE,
    })
}

/// Safe wrapper over one row kernel call (the checks its safety contract needs).
fn row_dot(
    table: &Fp8Kernels,
    out: &mut [f32],
    x: &[f32],
    k: usize,
    codes: &[u8],
    scales: &[f32],
    bi: usize,
) {
    let t = out.len();
    assert!((1..=4).contains(&t) && x.len() == t * k && codes.len() == k && bi > 0);
    assert_eq!(scales.len(), k.div_ceil(bi));
    // SAFETY: the lengths are checked above; codes hold no NaN (`Weight::from_fp8` refuses
    // them, the quantizer never writes them); the table was chosen for this CPU (or is portable).
    unsafe {
        (table.row)(
            out.as_mut_ptr(),
            x.as_ptr(),
            t,
            k,
            codes.as_ptr(),
            scales.as_ptr(),
            bi,
        )
    }
}

fn check(y: &[f32], x: &[f32], w: &Fp8Matrix<'_>, t: usize) {
    let (k, n) = (w.cols, w.rows);
    for (what, len, want) in [
        ("x", x.len(), t.checked_mul(k)),
        ("y", y.len(), t.checked_mul(n)),
        ("codes", w.codes.len(), n.checked_mul(k)),
    ] {
        assert!(
            want == Some(len),
            "linear: {what} has {len} elements, not the [t {t}, n {n}, k {k}] call's {want:?}"
        );
    }
}

/// `y[t, n] = x[t, k] · W[n, k]ᵀ` for an FP8 `W`, with this process's kernel.
///
/// # Panics
/// If the lengths do not match.
pub(crate) fn linear_fp8(y: &mut [f32], x: &[f32], w: &Fp8Matrix<'_>, t: usize) {
    linear_fp8_with(kernels(), y, x, w, t)
}

/// [`linear_fp8`] with a given kernel table (tests compare the tables).
pub(crate) fn linear_fp8_with(
    table: &Fp8Kernels,
    y: &mut [f32],
    x: &[f32],
    w: &Fp8Matrix<'_>,
    t: usize,
) {
    check(y, x, w, t);
    let (k, n, bi) = (w.cols, w.rows, w.block.cols);
    if t == 0 || n == 0 {
        return;
    }
    if t > GEMM_MIN_ROWS {
        let widen = |o0: usize, o1: usize, scratch: &mut Vec<f32>| {
            scratch.resize((o1 - o0) * k, 0.0);
            for (r, row) in scratch.chunks_exact_mut(k.max(1)).enumerate() {
                w.dequantize_row(row, o0 + r);
            }
        };
        gemm_rows(y, x, t, k, n, Rows::Widen(&widen));
        return;
    }
    // Rows of yᵀ[n, t]: output o of every input row, four input rows per kernel call.
    let rows = |o0: usize, out: &mut [f32]| {
        for (r, yo) in out.chunks_exact_mut(t).enumerate() {
            let o = o0 + r;
            let (codes, scales) = (w.row_codes(o), w.row_scales(o));
            for (j, part) in yo.chunks_mut(4).enumerate() {
                let xs = &x[4 * j * k..(4 * j + part.len()) * k];
                row_dot(table, part, xs, k, codes, scales, bi);
            }
        }
    };
    run_outputs(y, rows, k, t, n);
}

/// The naive twin of [`linear_fp8`]: each weight row dequantized to f32, then
/// `y[i, o] = Σ_j x[i, j] · W[o, j]` with one f32 accumulator, in order.
///
/// # Panics
/// As [`linear_fp8`].
pub(crate) fn linear_fp8_naive(y: &mut [f32], x: &[f32], w: &Fp8Matrix<'_>, t: usize) {
    check(y, x, w, t);
    let k = w.cols;
    let mut row = vec![0.0f32; k];
    for o in 0..w.rows {
        w.dequantize_row(&mut row, o);
        for i in 0..t {
            let mut acc = 0.0f32;
            for (a, b) in x[i * k..(i + 1) * k].iter().zip(&row) {
                acc += a * b;
            }
            y[i * w.rows + o] = acc;
        }
    }
}

/// The portable row kernel: the code table, one f32 sum per block and input row.
///
/// # Safety
/// As [`Fp8RowFn`].
unsafe fn row_portable(
    out: *mut f32,
    x: *const f32,
    t: usize,
    k: usize,
    codes: *const u8,
    scales: *const f32,
    bi: usize,
) {
    // SAFETY: the caller guarantees these extents.
    let (x, codes, scales, out) = unsafe {
        (
            std::slice::from_raw_parts(x, t * k),
            std::slice::from_raw_parts(codes, k),
            std::slice::from_raw_parts(scales, k.div_ceil(bi)),
            std::slice::from_raw_parts_mut(out, t),
        )
    };
    for (j, o) in out.iter_mut().enumerate() {
        let xj = &x[j * k..(j + 1) * k];
        let mut total = 0.0f32;
        for ((c, xb), &s) in codes.chunks(bi).zip(xj.chunks(bi)).zip(scales) {
            let block: f32 = c.iter().zip(xb).map(|(&c, &v)| e4m3_value(c) * v).sum();
            total += block * s;
        }
        *o = total;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::e4m3_value;

    /// How far ahead of the codes being read they are prefetched (as the block kernels do: one
    /// row stream per core otherwise leaves DRAM latency exposed). Measured, 1×2048·102400ᵀ:
    /// none 28.8 ms, 1 KiB 16.3, 2 KiB 14.6, 4 KiB 12.7–13.7, 8 KiB 13.5.
    const PREFETCH_BYTES: usize = 4096;

    /// Dispatch on `t` to the kernel with `t` accumulator pairs.
    ///
    /// # Safety
    /// As [`super::Fp8RowFn`], on a CPU with AVX2, FMA and F16C.
    pub(super) unsafe fn row(
        out: *mut f32,
        x: *const f32,
        t: usize,
        k: usize,
        codes: *const u8,
        scales: *const f32,
        bi: usize,
    ) {
        // SAFETY: forwarded contract.
        unsafe {
            match t {
                1 => rows::<1>(out, x, k, codes, scales, bi),
                2 => rows::<2>(out, x, k, codes, scales, bi),
                3 => rows::<3>(out, x, k, codes, scales, bi),
                _ => rows::<4>(out, x, k, codes, scales, bi),
            }
        }
    }

    /// 16 codes → two vectors of 8 f32, each value 2⁻⁸ times the code's: the byte moved to the
    /// high half of a 16-bit lane, shifted right arithmetically by one (sign kept, exponent and
    /// mantissa at f16's places) and bit 14 (a sign copy) cleared, then F16C. Exact, subnormals
    /// included; NaN codes are excluded by the caller.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn widen16(p: *const u8) -> (__m256, __m256) {
        // SAFETY: `p` has 16 readable bytes (caller).
        let b = unsafe { _mm_loadu_si128(p.cast()) };
        let h = _mm256_slli_epi16::<8>(_mm256_cvtepu8_epi16(b));
        let h = _mm256_and_si256(_mm256_srai_epi16::<1>(h), _mm256_set1_epi16(!0x4000));
        let lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
        let hi = _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h));
        (lo, hi)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// `T` input rows against one weight row: per block, two accumulators per input row (even
    /// and odd 8-lanes), folded into the row's total with the block's scale (times 2⁸, undoing
    /// [`widen16`]'s offset exactly).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows<const T: usize>(
        out: *mut f32,
        x: *const f32,
        k: usize,
        codes: *const u8,
        scales: *const f32,
        bi: usize,
    ) {
        let mut total = [_mm256_setzero_ps(); T];
        let mut tail = [0.0f32; T];
        let mut c0 = 0;
        let mut b = 0;
        while c0 < k {
            let c1 = (c0 + bi).min(k);
            // SAFETY: `scales` has one f32 per block (caller).
            let s = unsafe { *scales.add(b) };
            let mut lo = [_mm256_setzero_ps(); T];
            let mut hi = [_mm256_setzero_ps(); T];
            let mut c = c0;
            while c + 16 <= c1 {
                if c % 64 == 0 {
                    // SAFETY: a hint: it reads nothing and cannot fault. (Newer Rust makes it a
                    // safe call in this target-feature context; 1.89, the minimum, does not.)
                    #[allow(unused_unsafe)]
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T0>(codes.wrapping_add(c + PREFETCH_BYTES).cast())
                    };
                }
                // SAFETY: columns c..c + 16 are inside the row (c + 16 ≤ k).
                let (wl, wh) = unsafe { widen16(codes.add(c)) };
                for j in 0..T {
                    // SAFETY: row j of x has k f32.
                    unsafe {
                        let xp = x.add(j * k + c);
                        lo[j] = _mm256_fmadd_ps(wl, _mm256_loadu_ps(xp), lo[j]);
                        hi[j] = _mm256_fmadd_ps(wh, _mm256_loadu_ps(xp.add(8)), hi[j]);
                    }
                }
                c += 16;
            }
            let sv = _mm256_set1_ps(s * 256.0);
            for j in 0..T {
                total[j] = _mm256_fmadd_ps(_mm256_add_ps(lo[j], hi[j]), sv, total[j]);
            }
            // Columns past the last 16 of the block (a block width not a multiple of 16, or the
            // partial block at the row's end).
            while c < c1 {
                // SAFETY: c < k.
                let w = e4m3_value(unsafe { *codes.add(c) }) * s;
                for (j, t) in tail.iter_mut().enumerate() {
                    // SAFETY: row j of x has k f32.
                    *t += w * unsafe { *x.add(j * k + c) };
                }
                c += 1;
            }
            c0 = c1;
            b += 1;
        }
        for j in 0..T {
            // SAFETY: `out` has T f32 (caller).
            unsafe { *out.add(j) = hsum(total[j]) + tail[j] };
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::quant::fp8::{Fp8Block, quantize};

    /// Every table against the naive twin on `t` input rows and rows `skip..skip + n` of a
    /// quantized `[skip + n, k]` matrix (a slice that may start inside a block row).
    fn check_case(
        t: usize,
        n: usize,
        k: usize,
        skip: usize,
        block: Fp8Block,
        seed: usize,
    ) -> Result<(), String> {
        let x: Vec<f32> = (0..t * k)
            .map(|i| (((i + seed) * 7919 % 1013) as f32 - 506.0) / 300.0)
            .collect();
        let wf: Vec<f32> = (0..(n + skip) * k)
            .map(|i| (((i + seed) * 104_729 % 2003) as f32 - 1001.0) / 400.0)
            .collect();
        let (codes, scales) = quantize(&wf, n + skip, k, block);
        let w = Fp8Matrix {
            block,
            row0: skip % block.rows,
            rows: n,
            cols: k,
            codes: &codes[skip * k..],
            scales: &scales[(skip / block.rows) * k.div_ceil(block.cols)..],
        };
        let mut want = vec![0.0; t * n];
        linear_fp8_naive(&mut want, &x, &w, t);
        // Summed in another order, k products differ from the naive sum by at most
        // (k − 1)·ε·Σ|x_j w_j| on either side; a wrong code or scale is off by a whole product.
        let mut deq = vec![0.0f32; k];
        let abs_sum = |i: usize, o: usize, deq: &mut [f32]| -> f32 {
            w.dequantize_row(deq, o);
            x[i * k..(i + 1) * k]
                .iter()
                .zip(deq.iter())
                .map(|(a, b)| (a * b).abs())
                .sum()
        };
        let mut tol = vec![0.0f32; t * n];
        for i in 0..t {
            for o in 0..n {
                tol[i * n + o] = 2.0 * k as f32 * f32::EPSILON * abs_sum(i, o, &mut deq) + 1e-6;
            }
        }
        for table in [&PORTABLE, kernels()] {
            let mut got = vec![f32::NAN; t * n];
            linear_fp8_with(table, &mut got, &x, &w, t);
            for i in 0..t * n {
                if got[i].is_nan() || (got[i] - want[i]).abs() > tol[i] {
                    return Err(format!(
                        "{:?} block {block} t{t} n{n} k{k} skip{skip} at {i}: {} vs {}",
                        table.isa, got[i], want[i]
                    ));
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// One property over every implementation: 1–4 rows (the row kernel), tiles of four,
        /// and past `GEMM_MIN_ROWS` (sgemm); block widths that are and are not multiples of 16,
        /// edge blocks, slices starting mid-block.
        #[test]
        fn every_table_equals_the_naive_twin(
            t in 1usize..=GEMM_MIN_ROWS + 4,
            n in 1usize..20,
            k in 1usize..300,
            skip in 0usize..9,
            bo in 1usize..10,
            bi in prop_oneof![Just(16usize), Just(128), 1usize..40],
            seed in 0usize..1000,
        ) {
            let r = check_case(t, n, k, skip, Fp8Block { rows: bo, cols: bi }, seed);
            prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
    }

    /// A case the property found (CI, 2 Dec): the portable kernel 1.3e-5 from the naive sum of
    /// 242 products whose absolute sum is about 250, within rounding; the earlier bound
    /// (1e-5 · |y|) ignored the cancellation.
    #[test]
    fn regression_cancellation_in_a_242_wide_row() {
        check_case(8, 3, 242, 2, Fp8Block { rows: 5, cols: 128 }, 759).unwrap();
    }

    /// Fixed cases: DeepSeek-V3's block shape with partial edges and the shapes that exercise
    /// each path.
    #[test]
    fn named_cases() {
        for &(bo, bi) in &[(128, 128), (3, 16), (5, 20), (2, 7)] {
            for &(t, n, k) in &[
                (1, 3, 40),
                (2, 9, 300),
                (4, 17, 129),
                (7, 5, 64),
                (GEMM_MIN_ROWS + 3, 11, 70),
            ] {
                check_case(t, n, k, 3, Fp8Block { rows: bo, cols: bi }, 0).unwrap();
            }
        }
    }
}
