//! The GEMV driver (decode-shaped calls, `t ≤ GEMV_MAX_ROWS` rows at a time): each weight row
//! is streamed once for all the input rows of a group, split over output rows with rayon; the
//! block kernels come from the dtype's table ([`super::Kernels`]).

use std::borrow::Cow;

use rayon::prelude::*;

use super::{GEMV_MAX_ROWS, OutPtr, PARALLEL_MIN_MACS, XLayout, check_lengths};
use crate::Element;

/// Most output rows per GEMV task: 256 rows of a 2048-wide bf16 matrix are 1 MiB of contiguous
/// weights, long enough runs for the hardware prefetcher. Smaller matrices get smaller tasks so
/// every thread has several.
const GEMV_BLOCK_ROWS: usize = 64;

/// Fewest output rows per GEMV task.
const GEMV_MIN_BLOCK_ROWS: usize = 16;

/// `y[t, n] = x[t, k] · w[n, k]ᵀ` with the GEMV kernels, `GEMV_MAX_ROWS` input rows at a time.
pub(super) fn gemv_bt<W: Element>(y: &mut [f32], x: &[f32], w: &[W], t: usize, k: usize, n: usize) {
    check_lengths(y, x, w.len(), t, k, n);
    if t == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.fill(0.0); // empty sums
        return;
    }
    let kernels = W::kernels();
    let mut i0 = 0;
    while i0 < t {
        let tg = (t - i0).min(GEMV_MAX_ROWS);
        let kernel = kernels.gemv[tg - 1];
        let yp = OutPtr(y[i0 * n..].as_mut_ptr());
        let xg = in_layout(&x[i0 * k..(i0 + tg) * k], k, kernels.x_layout);
        let run = |o0: usize, o1: usize| {
            // SAFETY: `x`, `w` and `y` were checked to be [t, k], [n, k] and [t, n]; the kernel
            // reads rows i0..i0+tg of x (in the table's layout), rows o0..o1 of w, and writes
            // y[i0+j, o0..o1] only; the table was chosen for this CPU.
            unsafe { kernel(yp.get(), n, xg.as_ptr(), k, w.as_ptr(), o0, o1) }
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

/// Rows `x[t, k]` in the layout a kernel table reads.
pub(super) fn in_layout(x: &[f32], k: usize, layout: XLayout) -> Cow<'_, [f32]> {
    match layout {
        XLayout::Plain => Cow::Borrowed(x),
        XLayout::EvenOdd16 => Cow::Owned(even_odd_16(x, k)),
    }
}

/// Rows of `k` values with every full 16-block reordered even-indexed first, odd second: the
/// layout the AVX2 bf16 kernels read, which widen 16 bf16 weights with one shift and one mask
/// (even elements are the low halves of 32-bit lanes, odd ones the high halves).
pub(super) fn even_odd_16(x: &[f32], k: usize) -> Vec<f32> {
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
