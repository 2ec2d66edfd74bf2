//! The GEMM driver (prefill-shaped calls): matrixmultiply's sgemm over column blocks of the
//! output, the blocks run in parallel with rayon. bf16/f16 weights are widened one block at a
//! time into a reused per-thread scratch buffer; the whole matrix is never widened.

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
