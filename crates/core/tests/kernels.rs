//! Property tests for core's kernels: every implementation of a kernel against its naive twin and
//! against the math.

use deepblocks_core::half::{bf16, f16};
use deepblocks_core::{
    Bf16Products, DType, GEMV_MAX_ROWS, TILED_MAX_ROWS, Weight, dot, dot_naive, exp_f32,
    exp_inplace, exp_inplace_naive, linear, linear_gemm, linear_gemv, linear_naive, linear_nd,
    linear_tiled, matmul, matmul_bt, matmul_bt_bf16_inputs, matmul_bt_bf16_inputs_naive,
    matmul_bt_bf16_inputs_portable, matmul_bt_naive, matmul_naive, silu, silu_inplace,
    softmax_rows, softmax_rows_naive, swiglu,
};
use deepblocks_testkit::{assert_close, strategies};
use ndarray::Array2;
use proptest::prelude::*;

type LinearImpl = fn(&mut [f32], &[f32], &Weight, usize);
const LINEAR_IMPLS: [(&str, LinearImpl); 4] = [
    ("linear", linear),
    ("linear_gemv", linear_gemv),
    ("linear_tiled", linear_tiled),
    ("linear_gemm", linear_gemm),
];

/// `|fast − naive| ≤ tol` with `tol = 4·ε·k·max|x|·max|w|`: the worst-case rounding bound of a
/// k-term dot product, which grows linearly in k (the two sum in different orders, each within
/// `k·ε` of the exact sum of terms no larger than `max|x|·max|w|`; 4 covers both and the f32 bf16
/// widening, which is exact).
fn linear_tol(x: &[f32], w: &[f32], k: usize) -> f32 {
    let mx = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let mw = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    4.0 * f32::EPSILON * (k as f32) * mx * mw + 1e-30
}

/// How far `got` is from the exact `want`, in units of the f32 spacing at `want` (subnormal
/// spacing below the normal range); 0 when both overflow.
fn exp_ulps(got: f32, want: f64) -> f64 {
    let w = want as f32;
    if w.is_infinite() {
        return if got == f32::INFINITY {
            0.0
        } else {
            f64::INFINITY
        };
    }
    let spacing = if w.abs() < f32::MIN_POSITIVE {
        2f64.powi(-149)
    } else {
        2f64.powi(f64::from(w).log2().floor() as i32 - 23)
    };
    (f64::from(got) - want).abs() / spacing
}

fn check_linear(t: usize, k: usize, n: usize, x: &[f32], wf: &[f32]) -> Result<(), TestCaseError> {
    let w32 = Weight::from_f32(wf.to_vec(), n, k).unwrap();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let w = w32.to_dtype(dtype);
        let mut want = vec![0.0; t * n];
        linear_naive(&mut want, x, &w, t);
        let tol = linear_tol(x, &w.to_f32_vec(), k);
        for (name, f) in LINEAR_IMPLS {
            let mut got = vec![f32::NAN; t * n];
            f(&mut got, x, &w, t);
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                prop_assert!(
                    (g - e).abs() <= tol,
                    "{name} {dtype} t{t} k{k} n{n} at {i}: {g} vs naive {e} (tol {tol})"
                );
            }
        }
    }
    check_bf16_inputs(t, k, n, x, &w32.to_dtype(DType::BF16))
}

type Bf16InputsImpl = fn(&mut [f32], &[f32], &[bf16], usize, usize, usize);
const BF16_INPUTS_IMPLS: [(&str, Bf16InputsImpl); 2] = [
    ("matmul_bt_bf16_inputs", matmul_bt_bf16_inputs),
    (
        "matmul_bt_bf16_inputs_portable",
        matmul_bt_bf16_inputs_portable,
    ),
];

/// A bf16 weight multiplied with its inputs rounded to bf16 (`Bf16Products::Bf16`): every
/// implementation, and `linear` on a weight set that way, against the naive twin, within the
/// dot-product bound of the rounded inputs; `linear_naive` on that weight is the naive twin.
fn check_bf16_inputs(
    t: usize,
    k: usize,
    n: usize,
    x: &[f32],
    w: &Weight,
) -> Result<(), TestCaseError> {
    let w = w.clone().with_bf16_products(Bf16Products::Bf16);
    let bits: Vec<bf16> = w.to_f32_vec().into_iter().map(bf16::from_f32).collect();
    let rounded: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
    let mut want = vec![0.0; t * n];
    matmul_bt_bf16_inputs_naive(&mut want, x, &bits, t, k, n);
    let mut naive = vec![f32::NAN; t * n];
    linear_naive(&mut naive, x, &w, t);
    prop_assert_eq!(&naive, &want);
    let tol = linear_tol(&rounded, &w.to_f32_vec(), k);
    let mut got = vec![f32::NAN; t * n];
    linear(&mut got, x, &w, t);
    let mut all = vec![("linear", got)];
    for (name, f) in BF16_INPUTS_IMPLS {
        let mut got = vec![f32::NAN; t * n];
        f(&mut got, x, &bits, t, k, n);
        all.push((name, got));
    }
    for (name, got) in all {
        for (i, (g, e)) in got.iter().zip(&want).enumerate() {
            prop_assert!(
                (g - e).abs() <= tol,
                "{name} t{t} k{k} n{n} at {i}: {g} vs naive {e} (tol {tol})"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The model's NaN check finds the first non-finite element, as its naive twin does.
    #[test]
    fn first_non_finite_equals_its_naive_twin(
        mut x in prop::collection::vec(-1e30f32..1e30, 0..200),
        bad in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3), 0..3),
    ) {
        for (at, kind) in bad {
            if !x.is_empty() {
                let i = at.index(x.len());
                x[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][kind as usize];
            }
        }
        prop_assert_eq!(
            deepblocks_core::first_non_finite(&x),
            deepblocks_core::first_non_finite_naive(&x)
        );
    }

    #[test]
    fn linear_paths_equal_naive_for_every_dtype((t, k, n, x, w) in strategies::linear_case(9, 70, 40)) {
        check_linear(t, k, n, &x, &w)?;
    }

    #[test]
    fn linear_is_linear_in_x((t, k, n, x, w) in strategies::linear_case(6, 40, 20), a in -2.0f32..2.0) {
        let w = Weight::from_f32(w, n, k).unwrap();
        let ax: Vec<f32> = x.iter().map(|v| a * v).collect();
        let (mut y, mut ya) = (vec![0.0; t * n], vec![0.0; t * n]);
        linear(&mut y, &x, &w, t);
        linear(&mut ya, &ax, &w, t);
        for (p, q) in y.iter().zip(&ya) {
            prop_assert!((a * p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{} vs {q}", a * p);
        }
    }

    #[test]
    fn rows_are_independent((t, k, n, x, w) in strategies::linear_case(9, 30, 20)) {
        // Row i of a batched call equals the call on row i alone: batching never mixes tokens.
        let w = Weight::from_f32(w, n, k).unwrap().to_dtype(DType::BF16);
        let mut all = vec![0.0; t * n];
        linear(&mut all, &x, &w, t);
        for i in 0..t {
            let mut one = vec![0.0; n];
            linear(&mut one, &x[i * k..(i + 1) * k], &w, 1);
            for (p, q) in one.iter().zip(&all[i * n..(i + 1) * n]) {
                prop_assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()));
            }
        }
    }

    #[test]
    fn matmul_equals_naive((m, k, n) in (1usize..9, 1usize..40, 1usize..30), seed in 0u64..1000) {
        let a: Vec<f32> = (0..m * k).map(|i| (((i as u64 * 31 + seed) % 17) as f32 - 8.0) / 8.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (((i as u64 * 13 + seed) % 23) as f32 - 11.0) / 11.0).collect();
        let (mut got, mut want) = (vec![0.0; m * n], vec![0.0; m * n]);
        matmul(&mut got, &a, &b, m, k, n);
        matmul_naive(&mut want, &a, &b, m, k, n);
        for (g, e) in got.iter().zip(&want) {
            prop_assert!((g - e).abs() <= 1e-5 * k as f32);
        }
    }

    #[test]
    fn exp_is_within_one_ulp_of_the_exact_value(x in prop_oneof![-110.0f32..90.0, -20.0f32..20.0, -1.0f32..1.0]) {
        let u = exp_ulps(exp_f32(x), f64::from(x).exp());
        prop_assert!(u <= 1.0, "exp({x:e}) = {:e} is {u} ulp from {:e}", exp_f32(x), f64::from(x).exp());
    }

    #[test]
    fn exp_inplace_is_exp_f32_and_near_libm(x in strategies::values(37, 80.0)) {
        let (mut fast, mut naive) = (x.clone(), x.clone());
        exp_inplace(&mut fast);
        exp_inplace_naive(&mut naive);
        for i in 0..x.len() {
            // The vector and scalar forms compute the same bits; libm is another ≤ 1 ulp answer.
            prop_assert_eq!(fast[i].to_bits(), exp_f32(x[i]).to_bits());
            prop_assert!((fast[i] - naive[i]).abs() <= 2.0 * f32::EPSILON * naive[i]);
        }
    }

    #[test]
    fn softmax_sums_to_one_and_equals_naive((rows, cols, x) in strategies::matrix(6, 50.0)) {
        let mut fast = x.clone();
        let mut naive = x.clone();
        softmax_rows(&mut fast, rows, cols);
        softmax_rows_naive(&mut naive, rows, cols);
        for r in 0..rows {
            let row = &fast[r * cols..(r + 1) * cols];
            let s: f32 = row.iter().sum();
            prop_assert!((s - 1.0).abs() < 1e-5, "row {r} sums to {s}");
            prop_assert!(row.iter().all(|&p| (0.0..=1.0).contains(&p)));
        }
        for (p, q) in fast.iter().zip(&naive) {
            prop_assert!((p - q).abs() < 1e-6, "{p} vs naive {q}");
        }
    }

    #[test]
    fn softmax_ignores_shifts((rows, cols, x) in strategies::matrix(5, 20.0), c in -1000.0f32..1000.0) {
        let mut a = x.clone();
        let mut b: Vec<f32> = x.iter().map(|v| v + c).collect();
        softmax_rows(&mut a, rows, cols);
        softmax_rows(&mut b, rows, cols);
        // x + c rounds in f32: the shift is exact only up to |c|·ε per entry.
        let tol = 1e-5 + 4.0 * (c.abs() + 20.0) * f32::EPSILON;
        for (p, q) in a.iter().zip(&b) {
            prop_assert!((p - q).abs() <= tol, "{p} vs {q}");
        }
    }

    #[test]
    fn softmax_keeps_order(x in strategies::values(12, 30.0)) {
        let mut p = x.clone();
        softmax_rows(&mut p, 1, 12);
        for i in 0..12 {
            for j in 0..12 {
                if x[i] > x[j] {
                    prop_assert!(p[i] >= p[j]);
                }
            }
        }
    }

    #[test]
    fn silu_is_x_times_sigmoid(x in -80.0f32..80.0) {
        let want = (x as f64) / (1.0 + (-(x as f64)).exp());
        prop_assert!((silu(x) as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()));
    }

    #[test]
    fn swiglu_is_silu_gate_times_up(g in strategies::values(33, 10.0), u in strategies::values(33, 10.0)) {
        let mut out = vec![0.0; 33];
        swiglu(&mut out, &g, &u);
        let mut s = g.clone();
        silu_inplace(&mut s);
        for i in 0..33 {
            prop_assert_eq!(out[i], s[i] * u[i]);
        }
    }

    #[test]
    fn dot_equals_naive(a in strategies::values(77, 4.0), b in strategies::values(77, 4.0)) {
        let (f, n) = (dot(&a, &b), dot_naive(&a, &b));
        prop_assert!((f - n).abs() <= 1e-4 * (1.0 + n.abs()), "{f} vs {n}");
    }
}

#[test]
fn gemv_boundary_sizes() {
    // t around GEMV_MAX_ROWS and k around the 8/16-lane boundaries, with output widths that are
    // not multiples of the parallel block.
    for t in [
        1,
        GEMV_MAX_ROWS,
        GEMV_MAX_ROWS + 1,
        7,
        TILED_MAX_ROWS,
        TILED_MAX_ROWS + 1,
    ] {
        for k in [1, 7, 8, 9, 15, 16, 17, 31, 32, 33] {
            for n in [1, 63, 65, 129] {
                let x: Vec<f32> = (0..t * k)
                    .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
                    .collect();
                let w: Vec<f32> = (0..n * k)
                    .map(|i| ((i * 5 % 13) as f32 - 6.0) / 6.0)
                    .collect();
                check_linear(t, k, n, &x, &w).unwrap();
            }
        }
    }
}

#[test]
fn large_decode_shape_runs_in_parallel_and_matches_naive() {
    // Big enough to take the rayon path in both GEMV and GEMM.
    let (k, n) = (512, 1000);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 5000.0)
        .collect();
    let w = Weight::from_f32(w, n, k).unwrap().to_dtype(DType::BF16);
    for t in [1, 3, 16] {
        let x: Vec<f32> = (0..t * k)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) / 48.0)
            .collect();
        let (mut got, mut want) = (vec![0.0; t * n], vec![0.0; t * n]);
        linear(&mut got, &x, &w, t);
        linear_naive(&mut want, &x, &w, t);
        assert_close(&got, &want, 1e-4, 1e-4);
    }
}

/// Rounded bf16 inputs over shapes that cross the kernel's chunks of input rows (24 rows at
/// k = 4,100), its blocks of 64 weight rows, its parallel split and a short last step of 4
/// values, over rows of 2,048 (which the kernel keeps 2,080 apart), and one input row alone (a
/// decode step; a chunk of one row after 24 at k = 4,100); `Bf16Products::F32`
/// (the default) leaves the inputs as given.
#[test]
fn bf16_inputs_across_chunks_and_blocks() {
    for (t, k, n) in [(61, 4100, 131), (9, 2048, 70), (1, 2100, 70), (25, 4100, 9)] {
        let x: Vec<f32> = (0..t * k)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) / 48.0 + 1e-3)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 5000.0)
            .collect();
        let w = Weight::from_f32(w, n, k).unwrap().to_dtype(DType::BF16);
        assert_eq!(w.bf16_products(), Bf16Products::F32);
        check_bf16_inputs(t, k, n, &x, &w).unwrap();
        let (mut exact, mut f32_path) = (vec![0.0; t * n], vec![0.0; t * n]);
        linear(&mut f32_path, &x, &w, t);
        linear_naive(&mut exact, &x, &w, t);
        assert_close(&f32_path, &exact, 1e-4, 1e-4);
    }
}

/// Empty shapes: no rows, no outputs, or empty sums (zeros) on every implementation.
#[test]
fn bf16_inputs_of_empty_shapes() {
    for (t, k, n) in [(0, 5, 3), (2, 5, 0), (2, 0, 3), (0, 0, 0), (3, 0, 70)] {
        let x = vec![0.5f32; t * k];
        let w = vec![bf16::from_f32(0.25); n * k];
        let mut all = vec![];
        for (name, f) in BF16_INPUTS_IMPLS {
            let mut y = vec![f32::NAN; t * n];
            f(&mut y, &x, &w, t, k, n);
            all.push((name, y));
        }
        let mut y = vec![f32::NAN; t * n];
        matmul_bt_bf16_inputs_naive(&mut y, &x, &w, t, k, n);
        all.push(("naive", y));
        for (name, y) in all {
            assert!(y.iter().all(|&v| v == 0.0), "{name} t{t} k{k} n{n}: {y:?}");
        }
    }
}

#[test]
fn matmul_bt_over_raw_f16_slices() {
    let (t, k, n) = (2, 19, 5);
    let x: Vec<f32> = (0..t * k).map(|i| i as f32 / 10.0).collect();
    let w: Vec<f16> = (0..n * k)
        .map(|i| f16::from_f32((i % 7) as f32 - 3.0))
        .collect();
    let (mut got, mut want) = (vec![0.0; t * n], vec![0.0; t * n]);
    matmul_bt(&mut got, &x, &w, t, k, n);
    matmul_bt_naive(&mut want, &x, &w, t, k, n);
    assert_close(&got, &want, 1e-4, 1e-5);
}

#[test]
fn bf16_weight_keeps_half_the_bytes_and_rounds_to_nearest_even() {
    let w = Weight::from_f32(vec![1.0, 1.0 + 1.0 / 256.0, 3.0, -2.5], 2, 2).unwrap();
    let b = w.to_dtype(DType::BF16);
    assert_eq!(b.bytes() * 2, w.bytes());
    // 1 + 2⁻⁸ is a tie between bf16 neighbours 1 and 1 + 2⁻⁷: it rounds to the even one, 1.
    assert_eq!(b.to_f32_vec(), vec![1.0, 1.0, 3.0, -2.5]);
    match b.data() {
        deepblocks_core::WeightData::BF16(buf) => assert_eq!(buf[3], bf16::from_f32(-2.5)),
        other => panic!("expected bf16 data, got {other:?}"),
    }
}

#[test]
fn exp_edge_cases() {
    assert_eq!(exp_f32(0.0), 1.0);
    assert_eq!(exp_f32(-0.0), 1.0);
    assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
    assert!(exp_f32(f32::NAN).is_nan());
    // The largest finite result, and the first input past it.
    assert!(exp_ulps(exp_f32(88.722_83), f64::from(88.722_83f32).exp()) <= 1.0);
    assert!(exp_f32(88.722_83).is_finite());
    assert_eq!(exp_f32(88.722_84), f32::INFINITY);
    // Subnormal results, the smallest one, and the first input that rounds to zero.
    assert!(exp_ulps(exp_f32(-90.0), (-90.0f64).exp()) <= 1.0);
    assert!(exp_f32(-90.0) < f32::MIN_POSITIVE && exp_f32(-90.0) > 0.0);
    assert_eq!(exp_f32(-103.97), f32::from_bits(1));
    assert_eq!(exp_f32(-104.0), 0.0);
    assert_eq!(exp_f32(-1e30), 0.0);
    // Every length, vector body and tail.
    for len in 0..20 {
        let mut x: Vec<f32> = (0..len).map(|i| i as f32 - 7.5).collect();
        exp_inplace(&mut x);
        for (i, v) in x.iter().enumerate() {
            assert_eq!(
                v.to_bits(),
                exp_f32(i as f32 - 7.5).to_bits(),
                "len {len}, [{i}]"
            );
        }
    }
}

/// Every f32 in [−110, 90] (2.2 billion of them) against f64: the claim in `exp_f32`'s docs. About
/// two minutes; run with `cargo test --release -p deepblocks-core --test kernels -- --ignored`.
#[test]
#[ignore = "exhaustive, about two minutes"]
fn exp_is_within_one_ulp_for_every_f32_in_range() {
    let negatives = (0x8000_0000u32..=(-110.0f32).to_bits()).map(f32::from_bits);
    let positives = (0..=90.0f32.to_bits()).map(f32::from_bits);
    let (mut worst, mut at) = (0.0f64, 0.0f32);
    for x in negatives.chain(positives) {
        let u = exp_ulps(exp_f32(x), f64::from(x).exp());
        if u > worst {
            (worst, at) = (u, x);
        }
    }
    assert!(worst <= 1.0, "worst {worst} ulp at {at:e}");
}

#[test]
fn softmax_edge_cases() {
    // A masked entry becomes exactly zero; huge logits do not overflow.
    let mut x = [1000.0, 999.0, f32::NEG_INFINITY];
    softmax_rows(&mut x, 1, 3);
    assert!((x[0] - 0.731_058_6).abs() < 1e-6 && x[2] == 0.0);
    // All −∞ has no softmax: NaN, as documented (and as torch gives).
    let mut m = [f32::NEG_INFINITY; 3];
    softmax_rows(&mut m, 1, 3);
    assert!(m.iter().all(|v| v.is_nan()));
    // Zero columns is a no-op, not a panic.
    softmax_rows(&mut [], 4, 0);
}

#[test]
fn linear_nd_matches_the_slice_kernel_for_views() {
    let w = Weight::from_f32((0..12).map(|i| i as f32 - 6.0).collect(), 3, 4).unwrap();
    let x = Array2::from_shape_vec((4, 2), (0..8).map(|i| i as f32).collect()).unwrap();
    // x.t() is a [2, 4] view in column-major order.
    let y = linear_nd(x.t(), &w).unwrap();
    let xs = x.t().as_standard_layout().to_owned();
    let mut want = vec![0.0; 6];
    linear_naive(&mut want, xs.as_slice().unwrap(), &w, 2);
    assert_eq!(y.as_slice().unwrap(), &want[..]);
}

/// The kernels follow `DEEPBLOCKS_ISA`: CI's second pass sets it to `portable`, and this is where
/// it is checked that the tests of that pass really ran the portable kernels.
#[test]
fn the_instruction_set_follows_the_environment() {
    let env = std::env::var(deepblocks_core::ISA_ENV).ok();
    let chosen = deepblocks_core::isa();
    assert_eq!(
        chosen,
        deepblocks_core::Isa::choose(env.as_deref(), deepblocks_core::Isa::detect())
    );
    if env.as_deref() == Some("portable") {
        assert_eq!(chosen, deepblocks_core::Isa::Portable);
    }
    assert_eq!(deepblocks_core::kernel_isa::<half::bf16>(), chosen);
    eprintln!("kernels: {chosen}");
}

/// `(codes, scales)` of `w` random rows of `width` values, as the `Q8_0` latent cache keeps them.
fn q8_cache_rows(w: usize, width: usize, seed: u64) -> (Vec<u8>, Vec<f32>) {
    use deepblocks_core::quant::q8_rows::{q8_quantize_rows, q8_row_codes};
    let stride = q8_row_codes(width);
    let rows: Vec<f32> = (0..w * width)
        .map(|i| {
            let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
            // Rows of different sizes, so the blocks' scales differ from key to key.
            let size = 1.0 + (i / width % 5) as f32;
            ((h >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * size
        })
        .collect();
    let (mut codes, mut scales) = (vec![0u8; w * stride], vec![0.0f32; w * stride / 32]);
    q8_quantize_rows(&mut codes, &mut scales, &rows, width);
    (codes, scales)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The mix over `Q8_0` rows with 8-bit probabilities equals its scalar twin bit for bit (on
    /// VNNI, the integer kernel; elsewhere the twin itself), and the exact mix (`q8_mix_naive`)
    /// within the bound the quantization gives: half a step per weight, `step = max_j p·d / 255`
    /// of the row and 32-value block, times `Σ_j |q|`; the columns past the last whole block as
    /// `q8_mix`. Keys not a multiple of four, rows not a multiple of eight or sixteen, peaked and
    /// zero probabilities, widths with a short last block.
    #[test]
    fn quantized_mix_equals_its_twin_and_stays_within_half_a_step(
        seed in 0u64..10_000,
        w in 1usize..80,
        (width, dv_cut) in (1usize..110, 0usize..40),
        rp in prop_oneof![Just(8usize), Just(16), Just(24), 1usize..20],
        peaked in proptest::bool::ANY,
    ) {
        use deepblocks_core::quant::q8_rows::{
            Q8Weights, q8_dequantize_into, q8_mix_naive, q8_mix_quantized,
            q8_mix_quantized_portable, q8_row_codes,
        };
        let stride = q8_row_codes(width);
        let dv = width - dv_cut.min(width - 1);
        let (codes, scales) = q8_cache_rows(w, width, seed);
        let p: Vec<f32> = deepblocks_testkit::det_values(w * rp, seed as u32 + 1)
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let x = x.abs();
                // Peaked: one key per row far above the others, and rows of zeros.
                match (peaked, i / rp % 7, i % rp % 5) {
                    (true, _, 4) => 0.0,
                    (true, 3, _) => 1.0,
                    (true, _, _) => x * 1e-3,
                    _ => x,
                }
            })
            .collect();
        let start = deepblocks_testkit::det_values(rp * dv, seed as u32 + 2);
        let (mut fast, mut twin, mut exact) = (start.clone(), start.clone(), start.clone());
        let mut weights = Q8Weights::new();
        q8_mix_quantized(&mut fast, &p, &codes, &scales, stride, w, dv, rp, &mut weights, &codes);
        q8_mix_quantized_portable(&mut twin, &p, &codes, &scales, stride, w, dv, rp, &mut weights);
        q8_mix_naive(&mut exact, &p, &codes, &scales, stride, w, dv, rp);
        prop_assert_eq!(&fast, &twin);
        let nbs = stride / 32;
        let mut v = vec![0.0f32; w * stride];
        for j in 0..w {
            q8_dequantize_into(&mut v[j * stride..(j + 1) * stride], &codes, &scales, j * stride);
        }
        for r in 0..rp {
            for c in 0..dv {
                let b = c / 32;
                // Rounding of f32 sums: the terms' size times a few ulps per key.
                let terms: f64 = (0..w).map(|j| (p[j * rp + r] * v[j * stride + c]).abs() as f64).sum();
                let rounding = 1e-6 * (start[r * dv + c].abs() as f64 + terms) * (w as f64 + 1.0);
                let half_steps = if c < dv / 32 * 32 {
                    let x_max = (0..w)
                        .map(|j| p[j * rp + r] as f64 * scales[j * nbs + b] as f64)
                        .fold(0.0, f64::max);
                    let q_sum: f64 = (0..w)
                        .map(|j| (codes[j * stride + c] as f64 - 128.0).abs())
                        .sum();
                    0.5 * (x_max / 255.0) * q_sum * (1.0 + 1e-5)
                } else {
                    0.0
                };
                let (got, want) = (twin[r * dv + c] as f64, exact[r * dv + c] as f64);
                prop_assert!(
                    (got - want).abs() <= half_steps + rounding + 1e-30,
                    "row {} column {}: {} vs {} (half steps {}, rounding {})",
                    r, c, got, want, half_steps, rounding
                );
            }
        }
    }
}

/// An online softmax step: `(s, m, l, alpha) -> whether the mixed values must be rescaled`.
type SoftmaxStep = fn(&mut [f32], &mut [f32], &mut [f32], &mut [f32]) -> bool;

/// The first `(w1 + w2) · n` of `x` as two blocks of scores for `n` rows side by side, with rows
/// `r < masked` seeing nothing (−∞) in the first block and rows `r ≡ 0 mod 7` nothing at all.
fn masked_scores(x: &[f32], n: usize, w1: usize, w2: usize, masked: usize) -> Vec<f32> {
    let mut all = x[..(w1 + w2) * n].to_vec();
    for j in 0..w1 + w2 {
        for r in 0..n {
            if (j < w1 && r < masked) || r % 7 == 0 {
                all[j * n + r] = f32::NEG_INFINITY;
            }
        }
    }
    all
}

/// The two blocks of `all` (the first `w1` keys, then the rest) through `step` in turn, from an
/// empty state: both blocks' probabilities, then `m`, `l`, `alpha` and the second step's answer.
#[allow(clippy::type_complexity)]
fn two_softmax_steps(
    step: SoftmaxStep,
    all: &[f32],
    n: usize,
    w1: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, bool) {
    let (mut m, mut l, mut alpha) = (vec![f32::NEG_INFINITY; n], vec![0.0f32; n], vec![0.0f32; n]);
    let (mut a, mut b) = (all[..w1 * n].to_vec(), all[w1 * n..].to_vec());
    step(&mut a, &mut m, &mut l, &mut alpha);
    let moved = step(&mut b, &mut m, &mut l, &mut alpha);
    (a, b, m, l, alpha, moved)
}

proptest! {
    /// The online softmax step over rows side by side equals its scalar twin bit for bit and its
    /// naive twin (libm's `expf`) to a few ulps; and two blocks in turn give what one block of
    /// both gives: the same maxima, and sums and probabilities that agree once rescaled.
    /// Rows that see only −∞ (masked) in the first block, or in both.
    #[test]
    fn online_softmax_columns_is_the_softmax_of_the_blocks_so_far(
        n in 1usize..40,
        (w1, w2) in (1usize..12, 1usize..12),
        x in strategies::values(24 * 40, 20.0),
        masked in 0usize..5,
    ) {
        use deepblocks_core::{
            online_softmax_columns, online_softmax_columns_naive, online_softmax_columns_portable,
        };
        let all = masked_scores(&x, n, w1, w2, masked);
        let start = || (vec![f32::NEG_INFINITY; n], vec![0.0f32; n], vec![0.0f32; n]);
        let run = |step: SoftmaxStep| two_softmax_steps(step, &all, n, w1);
        let fast = run(online_softmax_columns);
        let twin = run(online_softmax_columns_portable);
        let naive = run(online_softmax_columns_naive);
        prop_assert_eq!(&fast, &twin);
        let close = |a: f32, b: f32| a == b || (a - b).abs() <= 4.0 * f32::EPSILON * a.abs().max(b.abs()) * 4.0;
        for (i, (&a, &b)) in fast.0.iter().chain(&fast.1).chain(&fast.3).zip(naive.0.iter().chain(&naive.1).chain(&naive.3)).enumerate() {
            prop_assert!(close(a, b), "value {}: {} vs naive {}", i, a, b);
        }
        prop_assert_eq!(&fast.2, &naive.2);
        prop_assert_eq!(fast.5, naive.5);
        // One block of both.
        let (mut m, mut l, mut alpha) = start();
        let mut one = all.clone();
        online_softmax_columns(&mut one, &mut m, &mut l, &mut alpha);
        prop_assert_eq!(&m, &fast.2);
        for r in 0..n {
            prop_assert!((l[r] - fast.3[r]).abs() <= 1e-5 * l[r].max(1.0), "row {}: sum {} vs {}", r, fast.3[r], l[r]);
            // The first block's probabilities, rescaled by the second step's alpha.
            for j in 0..w1 + w2 {
                let got = if j < w1 { fast.0[j * n + r] * fast.4[r] } else { fast.1[(j - w1) * n + r] };
                let want = one[j * n + r];
                prop_assert!((got - want).abs() <= 1e-5 * want.max(1e-30), "row {} key {}: {} vs {}", r, j, got, want);
            }
        }
    }
}

proptest! {
    /// The step for a bf16 mix keeps each probability of the plain step rounded to bf16 (half's
    /// `bf16::from_f32`, bit for bit) and sums exactly the rounded values (to f32 rounding); its
    /// scalar twin gives the same bits, its naive twin (libm's `expf`) the same values within a
    /// rounding step where `expf` lands on the other side of a bf16 boundary. Rows masked in
    /// the first block or in both, row counts off the 16 lanes.
    #[test]
    fn online_softmax_columns_bf16_sums_the_rounded_probabilities(
        n in 1usize..40,
        (w1, w2) in (1usize..12, 1usize..12),
        x in strategies::values(24 * 40, 20.0),
        masked in 0usize..5,
    ) {
        use deepblocks_core::half::bf16;
        use deepblocks_core::{
            online_softmax_columns, online_softmax_columns_bf16, online_softmax_columns_bf16_naive,
            online_softmax_columns_bf16_portable,
        };
        let all = masked_scores(&x, n, w1, w2, masked);
        let run = |step: SoftmaxStep| two_softmax_steps(step, &all, n, w1);
        let fast = run(online_softmax_columns_bf16);
        let twin = run(online_softmax_columns_bf16_portable);
        let naive = run(online_softmax_columns_bf16_naive);
        let plain = run(online_softmax_columns);
        prop_assert_eq!(&fast, &twin);
        // The plain step's probabilities rounded, the same maxima and factors.
        for (i, (&got, &p)) in fast.0.iter().chain(&fast.1).zip(plain.0.iter().chain(&plain.1)).enumerate() {
            prop_assert_eq!(got, bf16::from_f32(p).to_f32(), "probability {}", i);
        }
        prop_assert_eq!(&fast.2, &plain.2);
        prop_assert_eq!(&fast.4, &plain.4);
        prop_assert_eq!(fast.5, plain.5);
        // The sums: the first block's rounded probabilities rescaled, then the second's.
        for r in 0..n {
            let first: f64 = (0..w1).map(|j| fast.0[j * n + r] as f64).sum();
            let second: f64 = (0..w2).map(|j| fast.1[j * n + r] as f64).sum();
            let want = first * fast.4[r] as f64 + second;
            prop_assert!((fast.3[r] as f64 - want).abs() <= 1e-5 * want.max(1.0), "row {}: sum {} vs {}", r, fast.3[r], want);
        }
        // The naive twin: within one bf16 step of each probability, the sums within their rounding.
        for (i, (&a, &b)) in fast.0.iter().chain(&fast.1).zip(naive.0.iter().chain(&naive.1)).enumerate() {
            prop_assert!((a - b).abs() <= a.abs().max(b.abs()) / 128.0, "probability {}: {} vs naive {}", i, a, b);
        }
        for r in 0..n {
            let (a, b) = (fast.3[r], naive.3[r]);
            prop_assert!((a - b).abs() <= (w1 + w2) as f32 * a.abs().max(b.abs()) / 128.0, "row {}: sum {} vs naive {}", r, a, b);
        }
        prop_assert_eq!(&fast.2, &naive.2);
    }
}

#[test]
#[should_panic(expected = "online_softmax_columns_bf16: s of 5 values, m 2, l 2, alpha 2")]
fn online_softmax_of_partial_rows_panics() {
    let (mut m, mut l, mut alpha) = ([f32::NEG_INFINITY; 2], [0.0f32; 2], [0.0f32; 2]);
    deepblocks_core::online_softmax_columns_bf16_portable(
        &mut [0.5; 5],
        &mut m,
        &mut l,
        &mut alpha,
    );
}

proptest! {
    /// Scaling rows or columns equals the naive twin bit for bit (plain multiplies).
    #[test]
    fn scaling_rows_and_columns_equals_the_naive_twin(
        (n, width) in (1usize..20, 0usize..70),
        x in strategies::values(20 * 70, 10.0),
        f in strategies::values(20, 3.0),
    ) {
        use deepblocks_core::{scale_columns, scale_rows, scale_rows_naive};
        let x = &x[..n * width];
        let f = &f[..n];
        let (mut rows, mut rows_naive) = (x.to_vec(), x.to_vec());
        scale_rows(&mut rows, f);
        scale_rows_naive(&mut rows_naive, f, true);
        prop_assert_eq!(rows, rows_naive);
        let (mut cols, mut cols_naive) = (x.to_vec(), x.to_vec());
        scale_columns(&mut cols, f);
        scale_rows_naive(&mut cols_naive, f, false);
        prop_assert_eq!(cols, cols_naive);
    }
}
