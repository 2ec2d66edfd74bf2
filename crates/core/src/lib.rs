//! # deepblocks-core
//!
//! The pieces every deepblocks block stands on:
//!
//! - [`enum@Error`] / [`Result`]: one error enum whose variants carry the file, tensor, shape or
//!   value at fault.
//! - [`DType`] (F32, BF16, F16), the sealed [`Element`] trait, [`Buffer`] (owned or memory-mapped
//!   elements) and [`Weight`]: a row-major `[out, in]` matrix, as checkpoints store `nn.Linear`
//!   weights, kept in its source dtype (a bf16 weight stays bf16: half the bytes).
//! - [`linear`]: `y[t, out] = x[t, in] · Wᵀ` — our own GEMV kernel for decode-shaped calls (streams
//!   the weight once, widens bf16/f16 in registers), a tiled kernel for a few rows,
//!   matrixmultiply split over rayon threads for prefill-shaped calls, and [`linear_naive`] for
//!   tests; the kernels of each dtype come from one table per instruction set. A bf16 weight can
//!   instead multiply its inputs rounded to bf16 ([`Bf16Products`]), on AVX512-BF16's
//!   `vdpbf16ps` where the CPU has it ([`matmul_bt_bf16_inputs`]).
//! - [`softmax_rows`] (numerically stable, in place), [`silu`], [`swiglu`].
//! - [`SafeTensorsStore`]: a single `model.safetensors` or a sharded set via
//!   `model.safetensors.index.json`, memory-mapped, with typed getters that check shape and dtype.
//! - [`isa()`]: the one CPU-feature detection of the workspace (AVX2 + FMA + F16C, or portable),
//!   which `DEEPBLOCKS_ISA=portable` overrides so the portable kernels can be tested anywhere; and
//!   [`vnni()`], whether the block formats' many-row products may use VNNI (AVX-VNNI or AVX-512 VNNI).
//!
//! Conventions (see [docs/design.md]): kernels are functions over slices, output first, dimensions
//! explicit; accumulation is in f32; every fast kernel has a plain `*_naive` twin.
//!
//! ```
//! use deepblocks_core::{linear, silu, softmax_rows, DType, Weight};
//!
//! // A [out 2, in 2] bf16 weight applied to one token.
//! let w = Weight::from_f32(vec![1.0, 2.0, 3.0, 4.0], 2, 2)?.to_dtype(DType::BF16);
//! let mut y = [0.0f32; 2];
//! linear(&mut y, &[1.0, 1.0], &w, 1);
//! assert_eq!(y, [3.0, 7.0]);
//!
//! softmax_rows(&mut y, 1, 2); // e³ / (e³ + e⁷)
//! assert!((y[0] - 0.017_986_21).abs() < 1e-7);
//! assert_eq!(silu(0.0), 0.0);
//! # Ok::<(), deepblocks_core::Error>(())
//! ```
//!
//! [docs/design.md]: https://github.com/deepblocks/deepblocks/blob/main/docs/design.md

#![deny(missing_docs)]

mod ahead;
pub mod aligned;
pub mod bf16_rows;
mod dtype;
mod error;
pub mod gguf;
mod isa;
mod linear;
mod ops;
#[doc(hidden)]
mod pool;
pub mod probe;
pub mod quant;
mod region;
mod store;
mod weight;

pub use dtype::{DType, Element, Plain};
pub use error::{Error, Result};
pub use isa::{ISA_ENV, Isa, amx, avx512, bf16_dot, isa, vnni};
#[cfg(feature = "ndarray")]
pub use linear::linear_nd;
pub use linear::{
    GEMV_MAX_ROWS, TILE, TILE_K, TILED_MAX_ROWS, kernel_isa, linear, linear_gemm, linear_gemv,
    linear_naive, linear_tiled, matmul, matmul_bf16_pairs, matmul_bf16_pairs_naive, matmul_bt,
    matmul_bt_bf16_inputs, matmul_bt_bf16_inputs_naive, matmul_bt_bf16_inputs_portable,
    matmul_bt_naive, matmul_naive, matmul_strided, matmul_strided_avx2, matmul_strided_naive,
    matmul_strided_portable, pairs_into, split_bf16, split_bf16_transposed,
};
pub use ops::{
    dot, dot_naive, exp_f32, exp_inplace, exp_inplace_naive, first_non_finite,
    first_non_finite_naive, online_softmax_columns, online_softmax_columns_bf16,
    online_softmax_columns_bf16_naive, online_softmax_columns_bf16_portable,
    online_softmax_columns_naive, online_softmax_columns_portable, scale_columns, scale_rows,
    scale_rows_naive, sigmoid, silu, silu_inplace, softmax, softmax_rows, softmax_rows_naive,
    sum_squares, swiglu,
};
pub use pool::on_pool;
pub use region::Access;
pub use store::{INDEX_FILE, SINGLE_FILE, SafeTensorsStore, TensorInfo};
pub use weight::{
    Bf16Products, Buffer, Fp8Data, Weight, WeightData, WeightFormat, narrow, widen_into,
};

/// Re-exported so users name the same `bf16`/`f16` types the weights use.
pub use half;

/// Panics unless each buffer of a kernel call holds the elements the call's sizes give it:
/// `parts` are `(name, length, wanted)`, a wanted `None` a size that overflowed (it holds
/// nothing). The message names the kernel, the buffer and the call (`call`).
#[track_caller]
pub(crate) fn assert_lengths(
    kernel: &str,
    call: std::fmt::Arguments<'_>,
    parts: &[(&str, usize, Option<usize>)],
) {
    for &(what, len, want) in parts {
        assert!(
            want == Some(len),
            "{kernel}: {what} has {len} elements for {call}"
        );
    }
}

/// Panics (a caller's invariant) unless `len` values are whole rows of `n` (none when `n` is 0),
/// naming the kernel.
pub(crate) fn assert_whole_rows(kernel: &str, len: usize, n: usize) {
    assert!(
        (n == 0 && len == 0) || (n > 0 && len.is_multiple_of(n)),
        "{kernel}: {len} values are not whole rows of {n}"
    );
}

// The README's example is a doctest too, so what crates.io shows is what runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
