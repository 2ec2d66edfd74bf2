//! The portable kernels and their tables: plain Rust that compilers vectorise, for every CPU
//! (and for any CPU when `DEEPBLOCKS_ISA=portable`).

use half::{bf16, f16};

use super::{Kernels, XLayout};
use crate::{Element, Isa};

/// f32 weights.
pub(crate) static F32: Kernels<f32> = table();
/// bf16 weights.
pub(crate) static BF16: Kernels<bf16> = table();
/// f16 weights.
pub(crate) static F16: Kernels<f16> = table();

/// The portable table for weights of type `W`: GEMV for 1–4 rows, no tiled kernel (the GEMM
/// path serves a few rows).
const fn table<W: Element>() -> Kernels<W> {
    Kernels {
        isa: Isa::Portable,
        gemv: [gemv::<W, 1>, gemv::<W, 2>, gemv::<W, 3>, gemv::<W, 4>],
        x_layout: XLayout::Plain,
        tiled: None,
    }
}

/// Portable GEMV block: 8 independent accumulators per row, which compilers vectorise.
///
/// # Safety
/// As [`super::GemvFn`].
pub(super) unsafe fn gemv<W: Element, const T: usize>(
    y: *mut f32,
    n: usize,
    x: *const f32,
    k: usize,
    w: *const W,
    o0: usize,
    o1: usize,
) {
    // SAFETY: the caller guarantees the extents of `GemvFn`.
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
