//! The tiled driver (a few tokens per weight, `GEMV_MAX_ROWS < t ≤ TILED_MAX_ROWS`: what a MoE
//! expert sees in prefill), for the dtypes whose table has a tiled kernel (bf16 on AVX2): tiles of
//! 2 weight rows × 4 input rows, each pair of weight rows kept in L1 while every input tile
//! passes over it.

use rayon::prelude::*;

use super::gemv::in_layout;
use super::{OutPtr, PARALLEL_MIN_MACS, check_lengths};
use crate::Element;

/// Output rows per tiled-kernel task.
const TILED_BLOCK_ROWS: usize = 32;

/// Whether the tiled kernel serves weights of type `W` with this process's kernels.
pub(super) fn tiled_available<W: Element>() -> bool {
    W::kernels().tiled.is_some()
}

/// `y[t, n] = x[t, k] · w[n, k]ᵀ` with the tiled kernel; the caller checked
/// [`tiled_available`].
pub(super) fn tiled_bt<W: Element>(
    y: &mut [f32],
    x: &[f32],
    w: &[W],
    t: usize,
    k: usize,
    n: usize,
) {
    check_lengths(y, x, w.len(), t, k, n);
    let kernels = W::kernels();
    let tiled = kernels
        .tiled
        .expect("tiled_bt is called only when the table has a tiled kernel");
    if t == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0); // empty sums
        return;
    }
    let xp = in_layout(x, k, kernels.x_layout);
    let yp = OutPtr(y.as_mut_ptr());
    let run = |o0: usize, o1: usize| {
        // SAFETY: x (in the table's layout), w and y are [t, k], [n, k] and [t, n] (checked);
        // the kernel writes y[.., o0..o1] only; the table was chosen for this CPU.
        unsafe { tiled(yp.get(), n, xp.as_ptr(), t, k, w.as_ptr(), o0, o1) }
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
