//! The GEMM driver (prefill-shaped calls): matrixmultiply's sgemm over column blocks of the
//! output, the blocks run in parallel with rayon. bf16/f16 weights are widened one block at a
//! time into a reused per-thread scratch buffer (block-format weights dequantized the same way);
//! the whole matrix is never widened.

use std::cell::RefCell;

use rayon::prelude::*;

use super::{OutPtr, PARALLEL_MIN_MACS, check_lengths};
use crate::{DType, Element};

thread_local! {
    /// Per-thread scratch for one widened block of a bf16/f16 weight, reused across calls.
    static WIDEN_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn gemm_bt<W: Element>(y: &mut [f32], x: &[f32], w: &[W], t: usize, k: usize, n: usize) {
    check_lengths(y, x, w.len(), t, k, n);
    match W::DTYPE {
        DType::F32 => gemm_rows(
            y,
            x,
            t,
            k,
            n,
            // SAFETY: `W::DTYPE` is F32 only for `W = f32` (`Element` is sealed).
            Rows::F32(unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<f32>(), w.len()) }),
        ),
        _ => gemm_rows(
            y,
            x,
            t,
            k,
            n,
            Rows::Widen(&|o0, o1, scratch| {
                scratch.extend(w[o0 * k..o1 * k].iter().map(|v| v.to_f32()))
            }),
        ),
    }
}

/// Where the f32 rows of the weight come from: the weight itself, or widened (dequantized) a
/// block of rows at a time by `f(o0, o1, scratch)`, which appends rows `o0..o1` to `scratch`.
pub(crate) enum Rows<'a> {
    /// An f32 weight `[n, k]`.
    F32(&'a [f32]),
    /// Rows made on demand.
    Widen(&'a (dyn Fn(usize, usize, &mut Vec<f32>) + Sync)),
}

/// `y[t, n] = x[t, k] · wᵀ` for a weight `[n, k]` given by `rows`, with sgemm over column blocks
/// of `y` (in parallel); lengths checked by the caller.
pub(crate) fn gemm_rows(y: &mut [f32], x: &[f32], t: usize, k: usize, n: usize, rows: Rows<'_>) {
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
        let sgemm_block = |bp: *const f32| {
            // SAFETY: a = x is [t, k] row-major; b = rows o0..o1 of w, read as wᵀ [k, cols] with
            // row stride 1 and column stride k; c = y[:, o0..o1] with row stride n. Tasks write
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
        match &rows {
            Rows::F32(w) => sgemm_block(w[o0 * k..o1 * k].as_ptr()),
            Rows::Widen(f) => WIDEN_SCRATCH.with_borrow_mut(|scratch| {
                scratch.clear();
                f(o0, o1, scratch);
                assert_eq!(scratch.len(), cols * k, "widened rows {o0}..{o1}");
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
