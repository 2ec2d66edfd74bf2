//! `y[t, n] = x[t, k] · W[n, k]ᵀ`: the linear layer, as checkpoints store `nn.Linear` weights.
//!
//! This file is the public API and the dispatch policy; the drivers and the kernels live beside
//! it:
//!
//! - **GEMV** (`gemv.rs`; decode-shaped, `t ≤ GEMV_MAX_ROWS`): streams each weight row once for
//!   all `t` input rows, widening bf16/f16 to f32 in registers, split over output rows with
//!   rayon. Memory-bound: its speed is the DRAM bandwidth divided by the weight's bytes.
//! - **Tiled** (`tiled.rs`; a few tokens per weight, `GEMV_MAX_ROWS < t ≤ TILED_MAX_ROWS`, where
//!   the dtype's table has a tiled kernel — bf16 on AVX2): what a MoE expert sees in prefill.
//! - **GEMM** (`gemm.rs`; prefill-shaped): matrixmultiply's sgemm over column blocks of the
//!   output, bf16/f16 widened a block at a time into a per-thread scratch buffer.
//! - **bf16 inputs** (`bf16_inputs.rs`; a bf16 weight set to [`Bf16Products::Bf16`], any `t`):
//!   the input rows rounded to bf16 and multiplied on AVX512-BF16's `vdpbf16ps` with the weights
//!   read in place, where [`crate::bf16_dot`] holds; the rounded rows through the paths above
//!   elsewhere.
//! - **naive**: the textbook triple loop with one f32 accumulator, for tests.
//!
//! The block kernels are chosen once per dtype, as a statically typed table (`Kernels<W>`) of the
//! instruction set [`crate::isa()`] picks: `avx2.rs` (AVX2 + FMA + F16C) or `portable.rs` (every
//! CPU). A new CPU family joins by adding a file with its tables and an [`crate::Isa`] variant.
//!
//! The slice functions take explicit dimensions and panic on inconsistent lengths — including
//! dimensions whose products overflow — (a caller bug, not user data); [`linear_nd`] checks
//! shapes and returns an [`Error`](crate::Error) instead.

#[cfg(target_arch = "x86_64")]
mod avx2;
mod bf16_inputs;
pub(crate) mod gemm;
mod gemv;
mod portable;
mod strided;
mod tiled;
mod tiles;

pub use bf16_inputs::{
    matmul_bt_bf16_inputs, matmul_bt_bf16_inputs_naive, matmul_bt_bf16_inputs_portable,
};
pub use strided::{
    matmul_strided, matmul_strided_avx2, matmul_strided_naive, matmul_strided_portable,
};
pub(crate) use tiles::tile_products_loop;
pub use tiles::{
    TILE, TILE_K, matmul_bf16_pairs, matmul_bf16_pairs_naive, pairs_into, split_bf16,
    split_bf16_transposed,
};

use std::sync::OnceLock;

use half::{bf16, f16};
#[cfg(feature = "ndarray")]
use ndarray::{Array2, ArrayView2};

use crate::quant::fp8_linear::{linear_fp8, linear_fp8_naive};
use crate::quant::linear::{linear_blocks, linear_blocks_naive};
use crate::{Bf16Products, Element, Isa, Weight, WeightData, isa};
#[cfg(feature = "ndarray")]
use crate::{Error, Result};

/// Up to this many input rows, [`linear`] uses the GEMV kernel; above, the tiled or GEMM path.
#[doc(hidden)]
pub const GEMV_MAX_ROWS: usize = 4;

/// Up to this many input rows, bf16 weights take the tiled kernel (above [`GEMV_MAX_ROWS`]);
/// past it, widening a block of weights once for sgemm pays off. Measured (benches/kernels.rs,
/// bf16 2048-wide, 2 threads): tiled/sgemm 79/37 GFLOP/s at 12 rows, 87/76 at 32, 79/74 at 48,
/// 83/108 at 128.
#[doc(hidden)]
pub const TILED_MAX_ROWS: usize = 48;

/// Below this many multiply-adds a call runs on the calling thread only.
const PARALLEL_MIN_MACS: usize = 1 << 16;

/// A GEMV block kernel for weights of type `W`: for output rows `o0..o1` and the `T` input rows
/// of its table slot, `y[j·n + o] = x[j] · w[o]` (`x` in the table's [`XLayout`]); arguments
/// `(y, n, x, k, w, o0, o1)`.
///
/// # Safety
/// `x` points to `T` rows of `k` f32, `w` to at least `o1` rows of `k` elements, `y` to `T` rows
/// of stride `n ≥ o1` f32 that no other thread writes in columns `o0..o1`; the CPU supports the
/// table's instruction set.
pub(crate) type GemvFn<W> = unsafe fn(*mut f32, usize, *const f32, usize, *const W, usize, usize);

/// A tiled kernel: `y[t, n]` columns `o0..o1` from `x[t, k]` (in the table's layout) and
/// `w[n, k]`; arguments `(y, n, x, t, k, w, o0, o1)`.
///
/// # Safety
/// As [`GemvFn`] for all `t` rows.
pub(crate) type TiledFn<W> =
    unsafe fn(*mut f32, usize, *const f32, usize, usize, *const W, usize, usize);

/// How the kernels of a table want their input rows laid out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum XLayout {
    /// As given.
    Plain,
    /// Each full block of 16 values reordered as its 8 even-indexed values then its 8 odd ones
    /// (the tail after the last full block as given).
    EvenOdd16,
}

/// The kernels of one instruction set for weights of type `W`.
pub struct Kernels<W: 'static> {
    /// The instruction set they need.
    pub(crate) isa: Isa,
    /// GEMV for 1, 2, 3 and 4 input rows.
    pub(crate) gemv: [GemvFn<W>; GEMV_MAX_ROWS],
    /// The layout `gemv` and `tiled` read their input in.
    pub(crate) x_layout: XLayout,
    /// The tiled few-rows kernel, when this instruction set has one for `W`.
    pub(crate) tiled: Option<TiledFn<W>>,
}

/// The table for f32 weights, chosen on first use.
pub(crate) fn f32_kernels() -> &'static Kernels<f32> {
    static CHOSEN: OnceLock<&'static Kernels<f32>> = OnceLock::new();
    CHOSEN.get_or_init(|| match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &avx2::F32,
        _ => &portable::F32,
    })
}

/// The table for bf16 weights, chosen on first use.
pub(crate) fn bf16_kernels() -> &'static Kernels<bf16> {
    static CHOSEN: OnceLock<&'static Kernels<bf16>> = OnceLock::new();
    CHOSEN.get_or_init(|| match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &avx2::BF16,
        _ => &portable::BF16,
    })
}

/// The table for f16 weights, chosen on first use.
pub(crate) fn f16_kernels() -> &'static Kernels<f16> {
    static CHOSEN: OnceLock<&'static Kernels<f16>> = OnceLock::new();
    CHOSEN.get_or_init(|| match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &avx2::F16,
        _ => &portable::F16,
    })
}

/// The instruction set of the kernels [`linear`] runs for weights of type `W` in this process.
///
/// ```
/// use deepblocks_core::{half::bf16, isa, kernel_isa};
/// assert_eq!(kernel_isa::<bf16>(), isa());
/// ```
pub fn kernel_isa<W: Element>() -> Isa {
    W::kernels().isa
}

/// `y[t, n] = x[t, k] · Wᵀ` for a weight `W[n, k]` (`n = w.rows()`, `k = w.cols()`), choosing the
/// GEMV or GEMM path by `t`; a bf16 weight set to [`Bf16Products::Bf16`] rounds `x` to bf16 first
/// ([`matmul_bt_bf16_inputs`]).
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
        WeightData::BF16(b) if w.bf16_products() == Bf16Products::Bf16 => {
            matmul_bt_bf16_inputs(y, x, b, t, w.cols(), w.rows())
        }
        WeightData::BF16(b) => matmul_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::F16(b) => matmul_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::Blocks { format, data } => {
            linear_blocks(y, x, *format, data, t, w.cols(), w.rows())
        }
        WeightData::Fp8(_) => fp8_linear(y, x, w, t),
    }
}

/// The FP8 path of every entry point (its own driver picks row kernels or sgemm by `t`).
fn fp8_linear(y: &mut [f32], x: &[f32], w: &Weight, t: usize) {
    if let Some(m) = w.fp8_matrix() {
        linear_fp8(y, x, &m, t)
    }
}

/// [`linear`] forced onto the GEMV path for any `t` (rows are taken `GEMV_MAX_ROWS` at a time),
/// with f32 products whatever the weight's [`Bf16Products`]. For tests and benches.
///
/// # Panics
/// As [`linear`].
#[doc(hidden)]
pub fn linear_gemv(y: &mut [f32], x: &[f32], w: &Weight, t: usize) {
    match w.data() {
        WeightData::F32(b) => gemv::gemv_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::BF16(b) => gemv::gemv_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::F16(b) => gemv::gemv_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::Blocks { format, data } => {
            linear_blocks(y, x, *format, data, t, w.cols(), w.rows())
        }
        WeightData::Fp8(_) => fp8_linear(y, x, w, t),
    }
}

/// [`linear`] forced onto the tiled path for any `t` when the weight's dtype has a tiled kernel
/// on this CPU (bf16 on AVX2); otherwise the GEMM path. f32 products whatever the weight's
/// [`Bf16Products`]. For tests and benches.
///
/// # Panics
/// As [`linear`].
#[doc(hidden)]
pub fn linear_tiled(y: &mut [f32], x: &[f32], w: &Weight, t: usize) {
    fn run<W: Element>(y: &mut [f32], x: &[f32], b: &[W], t: usize, k: usize, n: usize) {
        if tiled::tiled_available::<W>() {
            tiled::tiled_bt(y, x, b, t, k, n)
        } else {
            gemm::gemm_bt(y, x, b, t, k, n)
        }
    }
    match w.data() {
        WeightData::F32(b) => run(y, x, b, t, w.cols(), w.rows()),
        WeightData::BF16(b) => run(y, x, b, t, w.cols(), w.rows()),
        WeightData::F16(b) => run(y, x, b, t, w.cols(), w.rows()),
        WeightData::Blocks { format, data } => {
            linear_blocks(y, x, *format, data, t, w.cols(), w.rows())
        }
        WeightData::Fp8(_) => fp8_linear(y, x, w, t),
    }
}

/// [`linear`] forced onto the GEMM path for any `t`, with f32 products whatever the weight's
/// [`Bf16Products`]. For tests and benches.
///
/// # Panics
/// As [`linear`].
#[doc(hidden)]
pub fn linear_gemm(y: &mut [f32], x: &[f32], w: &Weight, t: usize) {
    match w.data() {
        WeightData::F32(b) => gemm::gemm_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::BF16(b) => gemm::gemm_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::F16(b) => gemm::gemm_bt(y, x, b, t, w.cols(), w.rows()),
        WeightData::Blocks { format, data } => {
            linear_blocks(y, x, *format, data, t, w.cols(), w.rows())
        }
        WeightData::Fp8(_) => fp8_linear(y, x, w, t),
    }
}

/// The naive twin of [`linear`]: `y[i, o] = Σ_j x[i, j] · W[o, j]`, one f32 accumulator, in order
/// (`x[i, j]` rounded to bf16 first for a bf16 weight set to [`Bf16Products::Bf16`]).
///
/// # Panics
/// As [`linear`].
pub fn linear_naive(y: &mut [f32], x: &[f32], w: &Weight, t: usize) {
    match w.data() {
        WeightData::F32(b) => matmul_bt_naive(y, x, b, t, w.cols(), w.rows()),
        WeightData::BF16(b) if w.bf16_products() == Bf16Products::Bf16 => {
            matmul_bt_bf16_inputs_naive(y, x, b, t, w.cols(), w.rows())
        }
        WeightData::BF16(b) => matmul_bt_naive(y, x, b, t, w.cols(), w.rows()),
        WeightData::F16(b) => matmul_bt_naive(y, x, b, t, w.cols(), w.rows()),
        WeightData::Blocks { format, data } => {
            linear_blocks_naive(y, x, *format, data, t, w.cols(), w.rows())
        }
        WeightData::Fp8(_) => {
            if let Some(m) = w.fp8_matrix() {
                linear_fp8_naive(y, x, &m, t)
            }
        }
    }
}

/// ndarray wrapper of [`linear`]: `x[t, k]` → `y[t, n]`, with the shape checked.
///
/// # Errors
/// [`Error::Shape`] naming `x` when its column count is not `w.cols()`.
#[cfg(feature = "ndarray")]
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
        gemv::gemv_bt(y, x, w, t, k, n)
    } else if t <= TILED_MAX_ROWS && tiled::tiled_available::<W>() {
        tiled::tiled_bt(y, x, w, t, k, n)
    } else {
        gemm::gemm_bt(y, x, w, t, k, n)
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
    check_matmul(y, a, b, m, k, n);
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
    check_matmul(y, a, b, m, k, n);
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

/// Panics unless `x`, `w` and `y` hold exactly `[t, k]`, `[n, k]` and `[t, n]` elements (a
/// product that overflows holds nothing: it panics too, before any kernel reads memory).
fn check_lengths(y: &[f32], x: &[f32], w_len: usize, t: usize, k: usize, n: usize) {
    for (what, len, rows, cols) in [
        ("x", x.len(), t, k),
        ("w", w_len, n, k),
        ("y", y.len(), t, n),
    ] {
        assert!(
            rows.checked_mul(cols) == Some(len),
            "linear: {what} has {len} elements, not [{rows}, {cols}]"
        );
    }
}

/// Panics unless `a`, `b` and `y` hold exactly `[m, k]`, `[k, n]` and `[m, n]` elements.
fn check_matmul(y: &[f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    for (what, len, rows, cols) in [
        ("a", a.len(), m, k),
        ("b", b.len(), k, n),
        ("y", y.len(), m, n),
    ] {
        assert!(
            rows.checked_mul(cols) == Some(len),
            "matmul: {what} has {len} elements, not [{rows}, {cols}]"
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "ndarray")]
    use ndarray::Array2;

    use crate::{DType, Error};

    /// Deterministic values in [-1, 1) (xorshift; no dev-dependency, so the packaged crate's
    /// unit tests build on their own).
    fn det(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

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
                            w.format()
                        );
                    }
                }
            }
        }
    }

    /// Regression: bf16 with `k = 0` panicked in the AVX2 layout (`chunks_exact(0)`).
    #[test]
    fn empty_dimensions_give_empty_sums_on_every_path() {
        fn each<W: Element>(zero: W) {
            for &(t, k, n) in &[(2, 0, 3), (0, 5, 3), (2, 5, 0), (20, 0, 7)] {
                let x = det(t * k, 1);
                let w = vec![zero; n * k];
                for (name, f) in [
                    (
                        "matmul_bt",
                        matmul_bt::<W> as fn(&mut [f32], &[f32], &[W], _, _, _),
                    ),
                    ("naive", matmul_bt_naive::<W>),
                    ("gemv", gemv::gemv_bt::<W>),
                    ("gemm", gemm::gemm_bt::<W>),
                ] {
                    let mut y = vec![f32::NAN; t * n];
                    f(&mut y, &x, &w, t, k, n);
                    assert!(y.iter().all(|&v| v == 0.0), "{name} t{t} k{k} n{n}: {y:?}");
                }
                if tiled::tiled_available::<W>() {
                    let mut y = vec![f32::NAN; t * n];
                    tiled::tiled_bt(&mut y, &x, &w, t, k, n);
                    assert!(y.iter().all(|&v| v == 0.0), "tiled t{t} k{k} n{n}: {y:?}");
                }
            }
        }
        each(0f32);
        each(bf16::ZERO);
        each(f16::ZERO);
    }

    #[test]
    fn even_odd_layout_reorders_full_blocks_only() {
        let x: Vec<f32> = (0..40).map(|v| v as f32).collect(); // two rows of k = 20
        let got = gemv::even_odd_16(&x, 20);
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
        // SAFETY: extents as documented: x [3, 37], w [11, 37], y [3, 11]; portable code.
        unsafe { portable::gemv::<bf16, 3>(got.as_mut_ptr(), n, x.as_ptr(), k, w.as_ptr(), 0, n) };
        for (g, e) in got.iter().zip(&want) {
            assert!((g - e).abs() < 1e-5, "{g} vs {e}");
        }
    }

    #[cfg(feature = "ndarray")]
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

    #[test]
    fn the_chosen_tables_follow_the_process_isa() {
        assert_eq!(kernel_isa::<f32>(), isa());
        assert_eq!(kernel_isa::<bf16>(), isa());
        assert_eq!(kernel_isa::<f16>(), isa());
        assert_eq!(bf16_kernels().tiled.is_some(), isa() == Isa::Avx2);
        assert!(f32_kernels().tiled.is_none() && f16_kernels().tiled.is_none());
    }

    #[test]
    #[should_panic(expected = "not [4, 4611686018427387904]")]
    fn matmul_bt_refuses_dimensions_whose_product_wraps() {
        // t · k = 4 · 2^62 wraps to 0 in 64 bits, and the slices are empty.
        matmul_bt::<f32>(&mut [], &[], &[], 4, 1 << 62, 4);
    }

    #[test]
    #[should_panic(expected = "matmul: a has 0 elements")]
    fn matmul_refuses_dimensions_whose_product_wraps() {
        matmul(&mut [], &[], &[], 4, 1 << 62, 4);
    }

    #[test]
    #[should_panic(expected = "linear: x has 0 elements, not [4611686018427387904, 4]")]
    fn linear_refuses_dimensions_whose_product_wraps() {
        // t = 2^62 rows of a [4, 4] weight: t·k and t·n wrap to 0 in 64 bits, which empty slices
        // would match.
        let w = Weight::from_f32(vec![0.0; 16], 4, 4).unwrap();
        linear(&mut [], &[], &w, 1 << 62);
    }
}
