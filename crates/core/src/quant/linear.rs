//! `y = x · Wᵀ` for block-format weights. By the number of input rows `t`:
//! - few rows: the activations are quantized once per call (to `Q8_0` blocks for the 32-block
//!   formats, `Q8_K` for the k-quants), then every output is one integer dot kernel over a weight
//!   row (four input rows at a time share each unpacked block);
//! - from [`panel::min_rows`] rows, where the CPU has the instructions: integer panels of eight
//!   weight rows ([`panel`]);
//! - otherwise past [`GEMM_MIN_ROWS`]: weight rows dequantized into sgemm;
//!
//! and the naive twin, which dequantizes each weight row to f32 and multiplies in f32.

use rayon::prelude::*;

use super::BlockFormat;
use super::act::{ActBlock, ActQ8_0, ActQ8K, quantize_rows};
use super::dot::{DotKernels, FormatKernels, kernels};
use super::panel::{self, Dp};
use crate::linear::gemm::{Rows, gemm_rows};

/// Above this many input rows a block weight without panels on this CPU (every format on the
/// portable kernels, `Q8_0` on AVX2 without VNNI) and FP8 are dequantized a block of rows at a
/// time and multiplied by sgemm (f32 activations), instead of the integer dots (four rows per
/// unpacked block). Measured (2 threads): `linear_prefill` 128×2048·2048ᵀ Q8_0 12.9 → 4.8 ms, Q4_K
/// 9.9 → 4.7 ms; on the bench model's prefill, a threshold of 4 or 8 is slower than 16 or 32
/// (the MoE experts see about a dozen rows each, where the integer tiles win).
pub(super) const GEMM_MIN_ROWS: usize = 16;

/// Output rows per parallel task.
const ROWS_PER_TASK: usize = 16;

/// Below this many weight bytes × input rows a call runs on the calling thread only.
const PARALLEL_MIN_WORK: usize = 1 << 16;

fn check(y: &[f32], x: &[f32], format: BlockFormat, w: &[u8], t: usize, k: usize, n: usize) {
    let row = format.row_bytes(k);
    assert!(
        row.is_some(),
        "linear: {format} rows of {k} weights are not whole blocks"
    );
    for (what, len, want) in [
        ("x", x.len(), t.checked_mul(k)),
        ("y", y.len(), t.checked_mul(n)),
        ("w", w.len(), row.and_then(|r| r.checked_mul(n))),
    ] {
        assert!(
            want == Some(len),
            "linear: {what} has {len} elements, not the [t {t}, n {n}, k {k}] call's {want:?}"
        );
    }
}

/// `y[t, n] = x[t, k] · W[n, k]ᵀ` with `W` in `format` (`n` rows of `format.row_bytes(k)`
/// bytes), using this process's dot kernels.
///
/// # Panics
/// If the lengths do not match or `k` is not a multiple of the block length.
pub(crate) fn linear_blocks(
    y: &mut [f32],
    x: &[f32],
    format: BlockFormat,
    w: &[u8],
    t: usize,
    k: usize,
    n: usize,
) {
    linear_blocks_with(kernels(), panel::chosen(), y, x, format, w, t, k, n)
}

/// [`linear_blocks`] with a given kernel table (tests compare the tables).
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_blocks_with(
    table: &DotKernels,
    panels: Option<Dp>,
    y: &mut [f32],
    x: &[f32],
    format: BlockFormat,
    w: &[u8],
    t: usize,
    k: usize,
    n: usize,
) {
    check(y, x, format, w, t, k, n);
    if t == 0 || n == 0 {
        return;
    }
    if let Some(dp) = panels.filter(|&dp| t >= panel::min_rows(dp) && panel::available(dp, format))
    {
        panel::linear_panels(dp, y, x, format, w, t, k, n);
        return;
    }
    if t > GEMM_MIN_ROWS {
        let rb = format.row_bytes(k).unwrap_or(0);
        let widen = |o0: usize, o1: usize, scratch: &mut Vec<f32>| {
            scratch.resize((o1 - o0) * k, 0.0);
            for (r, row) in scratch.chunks_exact_mut(k).enumerate() {
                let o = o0 + r;
                format.dequantize_row(row, &w[o * rb..(o + 1) * rb]);
            }
        };
        gemm_rows(y, x, t, k, n, Rows::Widen(&widen));
        return;
    }
    match format {
        BlockFormat::Q8_0 => run::<ActQ8_0>(table.q8_0, y, x, format, w, t, k, n),
        BlockFormat::Q4_0 => run::<ActQ8_0>(table.q4_0, y, x, format, w, t, k, n),
        BlockFormat::Q5_0 => run::<ActQ8_0>(table.q5_0, y, x, format, w, t, k, n),
        BlockFormat::Q4_K => run::<ActQ8K>(table.q4_k, y, x, format, w, t, k, n),
        BlockFormat::Q6_K => run::<ActQ8K>(table.q6_k, y, x, format, w, t, k, n),
    }
}

#[allow(clippy::too_many_arguments)]
fn run<A: ActBlock>(
    kern: FormatKernels<A>,
    y: &mut [f32],
    x: &[f32],
    format: BlockFormat,
    w: &[u8],
    t: usize,
    k: usize,
    n: usize,
) {
    let nb = k / A::LEN;
    let rb = nb * format.block_bytes();
    let acts: Vec<A> = quantize_rows(x, t, k); // [t, nb]
    // Rows of yᵀ[n, t]: output o of every input row, written by the task that owns o.
    let rows = |o0: usize, out: &mut [f32]| {
        for (r, yo) in out.chunks_exact_mut(t).enumerate() {
            let wr = &w[(o0 + r) * rb..(o0 + r + 1) * rb];
            // Four input rows at a time share each unpacked weight block; then one at a time.
            let mut i = 0;
            while i + 4 <= t {
                // SAFETY: `wr` holds `nb` blocks of `format`, rows i..i+4 of `acts` `nb`
                // activation blocks each, `nb` apart (checked above); `yo[i..i + 4]` is
                // writable; the table was chosen for this CPU.
                unsafe {
                    (kern.tile4)(
                        yo[i..i + 4].as_mut_ptr(),
                        wr.as_ptr(),
                        acts[i * nb..].as_ptr(),
                        nb,
                        nb,
                    )
                };
                i += 4;
            }
            for (v, i) in yo[i..].iter_mut().zip(i..) {
                // SAFETY: as above, for row i alone.
                *v = unsafe { (kern.dot)(wr.as_ptr(), acts[i * nb..].as_ptr(), nb) };
            }
        }
    };
    run_outputs(y, rows, rb, t, n);
}

/// `y[t, n]` from `rows(o0, yᵀ[o0.., ..])`, which fills output rows of `yᵀ[n, t]` (written in
/// place when `t = 1`, through a transposed buffer otherwise); in parallel by [`run_rows`].
pub(super) fn run_outputs(
    y: &mut [f32],
    rows: impl Fn(usize, &mut [f32]) + Sync,
    row_bytes: usize,
    t: usize,
    n: usize,
) {
    if t == 1 {
        run_rows(y, rows, row_bytes, 1, n);
        return;
    }
    let mut yt = vec![0.0f32; n * t]; // [n, t]
    run_rows(&mut yt, rows, row_bytes, t, n);
    for (o, yo) in yt.chunks_exact(t).enumerate() {
        for (i, &v) in yo.iter().enumerate() {
            y[i * n + o] = v;
        }
    }
}

/// Fills `out[n, t]` with `rows(o0, out[o0..o1, ..])` over blocks of output rows, in parallel
/// when the work is large enough.
fn run_rows(
    out: &mut [f32],
    rows: impl Fn(usize, &mut [f32]) + Sync,
    row_bytes: usize,
    t: usize,
    n: usize,
) {
    if n * row_bytes * t < PARALLEL_MIN_WORK {
        rows(0, out);
        return;
    }
    out.par_chunks_mut(ROWS_PER_TASK * t)
        .enumerate()
        .for_each(|(b, chunk)| rows(b * ROWS_PER_TASK, chunk));
}

/// The naive twin of [`linear_blocks`]: each weight row dequantized to f32, then
/// `y[i, o] = Σ_j x[i, j] · W[o, j]` with one f32 accumulator, in order (no activation
/// quantization: the reference the quantized path is measured against).
///
/// # Panics
/// As [`linear_blocks`].
pub(crate) fn linear_blocks_naive(
    y: &mut [f32],
    x: &[f32],
    format: BlockFormat,
    w: &[u8],
    t: usize,
    k: usize,
    n: usize,
) {
    check(y, x, format, w, t, k, n);
    let Some(rb) = format.row_bytes(k) else {
        return;
    };
    let mut row = vec![0.0f32; k];
    for o in 0..n {
        format.dequantize_row(&mut row, &w[o * rb..(o + 1) * rb]);
        for i in 0..t {
            let mut acc = 0.0f32;
            for (a, b) in x[i * k..(i + 1) * k].iter().zip(&row) {
                acc += a * b;
            }
            y[i * n + o] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dot::PORTABLE;

    fn case(format: BlockFormat, t: usize, k: usize, n: usize) -> (Vec<f32>, Vec<u8>) {
        let x: Vec<f32> = (0..t * k)
            .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 300.0)
            .collect();
        let wf: Vec<f32> = (0..n * k)
            .map(|i| ((i * 104_729 % 2003) as f32 - 1001.0) / 4000.0)
            .collect();
        let rb = format.row_bytes(k).unwrap();
        let mut w = vec![0u8; n * rb];
        for (o, row) in w.chunks_exact_mut(rb).enumerate() {
            format.quantize_row(row, &wf[o * k..(o + 1) * k]);
        }
        (x, w)
    }

    /// Every table against the portable one (the integer arithmetic is exact; only the f32 sum
    /// across blocks may be ordered differently), and both near the f32 reference (the
    /// activations' 8-bit rounding).
    #[test]
    fn every_table_matches_the_portable_one_and_the_reference() {
        let tables = [&PORTABLE, kernels()];
        for format in BlockFormat::ALL {
            for &(t, n) in &[(1, 3), (2, 40), (5, 33), (GEMM_MIN_ROWS + 3, 70)] {
                let k = 2 * format.block_len();
                let (x, w) = case(format, t, k, n);
                let mut want = vec![0.0; t * n];
                linear_blocks_naive(&mut want, &x, format, &w, t, k, n);
                let mut base = vec![0.0; t * n];
                linear_blocks_with(&PORTABLE, None, &mut base, &x, format, &w, t, k, n);
                let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                for table in tables {
                    let mut got = vec![f32::NAN; t * n];
                    linear_blocks_with(table, None, &mut got, &x, format, &w, t, k, n);
                    for i in 0..t * n {
                        assert!(
                            (got[i] - base[i]).abs() <= 1e-5 * (1.0 + base[i].abs()),
                            "{format} {:?} t{t} n{n} at {i}: {} vs portable {}",
                            table.isa,
                            got[i],
                            base[i]
                        );
                        // The sgemm path multiplies the dequantized weights in f32: as the
                        // reference up to the order of the sums.
                        let tol = if t > GEMM_MIN_ROWS { 1e-4 } else { 0.02 };
                        assert!(
                            (got[i] - want[i]).abs() <= tol * scale,
                            "{format} t{t} n{n} at {i}: {} vs reference {}",
                            got[i],
                            want[i]
                        );
                    }
                }
            }
        }
    }

    /// The implementations of this CPU: the portable and chosen dot tables without panels, and
    /// each panel instruction the CPU has (the scalar panels everywhere).
    fn implementations() -> Vec<(String, &'static DotKernels, Option<Dp>)> {
        let mut all = vec![
            ("portable dots".to_string(), &PORTABLE, None),
            (format!("{:?} dots", kernels().isa), kernels(), None),
            ("scalar panels".to_string(), &PORTABLE, Some(Dp::Portable)),
        ];
        if panel::chosen().is_some() {
            all.push(("AVX2 panels".to_string(), kernels(), Some(Dp::Avx2)));
        }
        if crate::vnni() {
            all.push(("VNNI panels".to_string(), kernels(), Some(Dp::Vnni)));
        }
        all
    }

    /// Every implementation against the naive twin, within the error the activations' 8-bit
    /// rounding allows (`Σ_j |w_j| · max|x| / 127` per output); the SIMD panels equal the
    /// scalar ones bit for bit.
    fn check_all(
        format: BlockFormat,
        t: usize,
        blocks: usize,
        n: usize,
        seed: usize,
    ) -> Result<(), String> {
        let k = blocks * format.block_len();
        let x: Vec<f32> = (0..t * k)
            .map(|i| (((i + seed) * 7919 % 1013) as f32 - 506.0) / 300.0)
            .collect();
        let wf: Vec<f32> = (0..n * k)
            .map(|i| (((i + 3 * seed) * 104_729 % 2003) as f32 - 1001.0) / 4000.0)
            .collect();
        let rb = format.row_bytes(k).unwrap();
        let mut w = vec![0u8; n * rb];
        for (o, row) in w.chunks_exact_mut(rb).enumerate() {
            format.quantize_row(row, &wf[o * k..(o + 1) * k]);
        }
        let mut want = vec![0.0; t * n];
        linear_blocks_naive(&mut want, &x, format, &w, t, k, n);
        let mut deq = vec![0.0f32; k];
        let mut wabs = vec![0.0f32; n];
        for (o, a) in wabs.iter_mut().enumerate() {
            format.dequantize_row(&mut deq, &w[o * rb..(o + 1) * rb]);
            *a = deq.iter().map(|v| v.abs()).sum();
        }
        let xmax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let mut scalar_panels = vec![0.0; t * n];
        panel::linear_panels(Dp::Portable, &mut scalar_panels, &x, format, &w, t, k, n);
        for (name, table, panels) in implementations() {
            let mut got = vec![f32::NAN; t * n];
            linear_blocks_with(table, panels, &mut got, &x, format, &w, t, k, n);
            for i in 0..t * n {
                let tol = wabs[i % n] * xmax / 127.0 + 1e-4;
                if (got[i] - want[i]).abs() > tol || got[i].is_nan() {
                    return Err(format!(
                        "{format} {name} t{t} k{k} n{n} at {i}: {} vs naive {} (tol {tol})",
                        got[i], want[i]
                    ));
                }
            }
            let uses_panels =
                panels.is_some_and(|dp| t >= panel::min_rows(dp) && panel::available(dp, format));
            if uses_panels
                && got
                    .iter()
                    .zip(&scalar_panels)
                    .any(|(a, b)| a.to_bits() != b.to_bits())
            {
                return Err(format!(
                    "{format} {name} t{t} k{k} n{n}: not the scalar panels' bits"
                ));
            }
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// One property over every implementation of every block format: one-row dots, tiles of
        /// four, panels of eight weight rows with every tail, and sgemm past `GEMM_MIN_ROWS`.
        #[test]
        fn every_implementation_is_near_the_naive_twin(
            f in 0usize..5,
            t in 1usize..=GEMM_MIN_ROWS + 6,
            blocks in 1usize..4,
            n in 1usize..20,
            seed in 0usize..1000,
        ) {
            let r = check_all(BlockFormat::ALL[f], t, blocks, n, seed);
            proptest::prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        }
    }

    /// Shapes at each path's edges, kept as named cases.
    #[test]
    fn named_cases_at_the_path_edges() {
        for format in BlockFormat::ALL {
            for &(t, n) in &[
                (1, 1),
                (4, 8),
                (5, 7),
                (6, 9),
                (8, 17),
                (GEMM_MIN_ROWS + 1, 24),
            ] {
                check_all(format, t, 2, n, 5).unwrap();
            }
        }
    }
}
