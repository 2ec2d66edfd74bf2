//! RMSNorm: properties of the math, the fast kernels against their naive twins, the golden
//! comparison with transformers' `DeepseekV2RMSNorm`, and bad input.

use approx::assert_relative_eq;
use deepblocks_core::half::bf16;
use deepblocks_norm::{
    Error, RmsNorm, RmsNormConfig, rms_norm, rms_norm_bf16, rms_norm_bf16_naive, rms_norm_inplace,
    rms_norm_naive,
};
use deepblocks_testkit::{Golden, assert_close, strategies};
use ndarray::Array2;
use proptest::prelude::*;

/// Every f32 implementation, so each property runs over all of them.
type F32Impl = fn(&mut [f32], &[f32], &[f32], f32, usize, usize);

fn inplace_as_out(out: &mut [f32], x: &[f32], w: &[f32], eps: f32, t: usize, h: usize) {
    out.copy_from_slice(x);
    rms_norm_inplace(out, w, eps, t, h);
}

const IMPLS: [(&str, F32Impl); 3] = [
    ("rms_norm", rms_norm),
    ("rms_norm_inplace", inplace_as_out),
    ("rms_norm_naive", rms_norm_naive),
];

/// Rows with a mean square far above eps, so eps does not blur the exact identities.
fn rows() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (1usize..5, 1usize..70).prop_flat_map(|(t, h)| {
        (
            Just(t),
            Just(h),
            proptest::collection::vec(prop_oneof![-4.0f32..-0.25, 0.25f32..4.0], t * h),
        )
    })
}

proptest! {
    #[test]
    fn scale_invariant((t, h, x) in rows(), alpha in 0.01f32..100.0) {
        let w: Vec<f32> = (0..h).map(|j| 0.5 + j as f32 * 0.1).collect();
        let ax: Vec<f32> = x.iter().map(|v| v * alpha).collect();
        for (name, f) in IMPLS {
            let (mut a, mut b) = (vec![0.0; t * h], vec![0.0; t * h]);
            f(&mut a, &x, &w, 1e-12, t, h);
            f(&mut b, &ax, &w, 1e-12, t, h);
            for (p, q) in a.iter().zip(&b) {
                prop_assert!((p - q).abs() <= 1e-5 * (1.0 + p.abs()), "{name}: {p} vs {q}");
            }
        }
    }

    #[test]
    fn unit_weight_gives_unit_rms((t, h, x) in rows()) {
        let w = vec![1.0; h];
        for (name, f) in IMPLS {
            let mut y = vec![0.0; t * h];
            f(&mut y, &x, &w, 1e-12, t, h);
            for row in y.chunks(h) {
                let rms = (row.iter().map(|v| v * v).sum::<f32>() / h as f32).sqrt();
                prop_assert!((rms - 1.0).abs() < 1e-5, "{name}: rms {rms}");
            }
        }
    }

    #[test]
    fn linear_in_the_weight(
        (t, h, x) in rows(),
        a in -3.0f32..3.0,
        b in -3.0f32..3.0,
        seed in 0u32..1000,
    ) {
        let w1: Vec<f32> = (0..h).map(|j| ((j as u32 * 7 + seed) % 13) as f32 / 6.0 - 1.0).collect();
        let w2: Vec<f32> = (0..h).map(|j| ((j as u32 * 5 + seed) % 11) as f32 / 5.0 - 1.0).collect();
        let mix: Vec<f32> = w1.iter().zip(&w2).map(|(p, q)| a * p + b * q).collect();
        for (name, f) in IMPLS {
            let (mut y1, mut y2, mut ym) = (vec![0.0; t * h], vec![0.0; t * h], vec![0.0; t * h]);
            f(&mut y1, &x, &w1, 1e-6, t, h);
            f(&mut y2, &x, &w2, 1e-6, t, h);
            f(&mut ym, &x, &mix, 1e-6, t, h);
            for i in 0..t * h {
                let want = a * y1[i] + b * y2[i];
                prop_assert!((ym[i] - want).abs() <= 1e-4 * (1.0 + want.abs()), "{name} at {i}: {} vs {want}", ym[i]);
            }
        }
    }

    #[test]
    fn fast_equals_naive((t, h, x) in strategies::matrix(8, 10.0), eps in 0.0f32..1e-3) {
        let w: Vec<f32> = (0..h).map(|j| 1.0 - j as f32 / h as f32).collect();
        let (mut fast, mut naive) = (vec![0.0; t * h], vec![0.0; t * h]);
        rms_norm(&mut fast, &x, &w, eps + 1e-9, t, h);
        rms_norm_naive(&mut naive, &x, &w, eps + 1e-9, t, h);
        for (p, q) in fast.iter().zip(&naive) {
            prop_assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{p} vs {q}");
        }
    }

    #[test]
    fn bf16_fast_equals_naive_within_one_ulp((t, h, x) in rows()) {
        let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let w: Vec<f32> = (0..h).map(|j| bf16::from_f32(0.3 + j as f32 * 0.05).to_f32()).collect();
        let (mut fast, mut naive) = (vec![bf16::ZERO; t * h], vec![bf16::ZERO; t * h]);
        rms_norm_bf16(&mut fast, &xb, &w, 1e-6, t, h);
        rms_norm_bf16_naive(&mut naive, &xb, &w, 1e-6, t, h);
        for (p, q) in fast.iter().zip(&naive) {
            // The two sum the squares in different orders; the results may straddle a bf16
            // rounding boundary, by at most one unit in the last place.
            prop_assert!((p.to_bits() as i32 - q.to_bits() as i32).abs() <= 1, "{p} vs {q}");
        }
    }
}

#[test]
fn golden_f32_matches_transformers() {
    let g = Golden::load("rmsnorm");
    let eps: f32 = g.meta("eps");
    let (shape, x) = g.get("x_f32");
    let (t, h) = (shape[0], shape[1]);
    let norm = RmsNorm::new(
        RmsNormConfig { hidden: h, eps },
        g.data("weight_f32").to_vec(),
    )
    .unwrap();
    let mut y = vec![0.0; t * h];
    norm.forward(&mut y, x, t);
    let want = g.data("out_f32");
    // Rows span 1e-2 .. 1e2 in scale: compare relative to each value.
    assert_close(&y, want, 1e-6, 1e-6);
    let report = deepblocks_testkit::close_report(&y, want, 0.0, 0.0);
    eprintln!("rmsnorm f32 vs transformers: {report}");
}

#[test]
fn golden_bf16_matches_transformers() {
    let g = Golden::load("rmsnorm");
    let eps: f32 = g.meta("eps");
    let (shape, x) = g.get("x_bf16");
    let (t, h) = (shape[0], shape[1]);
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let norm = RmsNorm::new(
        RmsNormConfig { hidden: h, eps },
        g.data("weight_bf16").to_vec(),
    )
    .unwrap();
    let mut y = vec![bf16::ZERO; t * h];
    norm.forward_bf16(&mut y, &xb, t);
    let want = g.data("out_bf16");
    // Bit for bit, on every element of the fixture (with the AVX2 and the portable kernels
    // alike). Only the summation order of the mean square differs from torch's, so on other
    // inputs a rounding tie could flip one element by one ulp; the fast/naive property test
    // above allows exactly that.
    for (i, (got, &w)) in y.iter().zip(want).enumerate() {
        assert_eq!(
            got.to_bits(),
            bf16::from_f32(w).to_bits(),
            "element {i}: {got} vs transformers {w}"
        );
    }
}

#[test]
fn golden_fixture_is_not_trivial() {
    // The fixture's weights are away from 1 and its rows differ in scale, so a norm that forgot
    // the weight or the normalisation would fail the golden tests above.
    let g = Golden::load("rmsnorm");
    let w = g.data("weight_f32");
    assert!(w.iter().any(|v| (v - 1.0).abs() > 0.3));
    let x = g.data("x_f32");
    let y = g.data("out_f32");
    assert!(x.iter().zip(y).any(|(a, b)| (a - b).abs() > 1.0));
}

#[test]
fn forward_nd_checks_the_width_and_matches_forward() {
    let norm = RmsNorm::new(
        RmsNormConfig {
            hidden: 3,
            eps: 1e-6,
        },
        vec![1.0, 2.0, 0.5],
    )
    .unwrap();
    let x = Array2::from_shape_vec((2, 3), vec![1.0, -2.0, 3.0, 0.5, 0.25, -1.0]).unwrap();
    let y = norm.forward_nd(x.view()).unwrap();
    let mut want = vec![0.0; 6];
    norm.forward(&mut want, x.as_slice().unwrap(), 2);
    assert_eq!(y.as_slice().unwrap(), &want[..]);
    // A transposed (non-contiguous) view is handled too.
    let xt = Array2::from_shape_vec((3, 2), vec![1.0, 0.5, -2.0, 0.25, 3.0, -1.0]).unwrap();
    assert_eq!(norm.forward_nd(xt.t()).unwrap(), y);

    let err = norm.forward_nd(Array2::zeros((2, 4)).view()).unwrap_err();
    assert!(
        matches!(&err, Error::Core(deepblocks_core::Error::Shape { tensor, expected, found })
            if tensor == "x" && expected == &[2, 3] && found == &[2, 4]),
        "{err}"
    );
}

#[test]
fn bad_configs_and_weights_are_errors_naming_the_value() {
    let err = RmsNorm::new(
        RmsNormConfig {
            hidden: 4,
            eps: 1e-6,
        },
        vec![1.0; 3],
    )
    .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Core(deepblocks_core::Error::Length {
                expected: 4,
                found: 3,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("RMSNorm weight"), "{err}");
    assert!(matches!(
        RmsNorm::ones(RmsNormConfig {
            hidden: 0,
            eps: 1e-6
        }),
        Err(Error::ZeroHidden)
    ));
    let err = RmsNorm::ones(RmsNormConfig {
        hidden: 2,
        eps: -1.0,
    })
    .unwrap_err();
    assert!(matches!(err, Error::Eps(e) if e == -1.0));
    assert!(err.to_string().contains("-1"), "{err}");
    assert!(matches!(
        RmsNorm::ones(RmsNormConfig {
            hidden: 2,
            eps: f32::NAN
        }),
        Err(Error::Eps(_))
    ));
}

#[test]
fn eps_matters_for_tiny_rows() {
    // With x = 0 the norm is 0 whatever eps; with tiny x, eps dominates the mean square.
    let mut y = [0.0; 2];
    rms_norm(&mut y, &[1e-4, 1e-4], &[1.0, 1.0], 1e-6, 1, 2);
    assert_relative_eq!(y[0], 1e-4 / (1e-8f32 + 1e-6).sqrt(), max_relative = 1e-5);
    rms_norm(&mut y, &[0.0, 0.0], &[1.0, 1.0], 1e-6, 1, 2);
    assert_eq!(y, [0.0, 0.0]);
}

#[test]
#[cfg(target_pointer_width = "64")]
#[should_panic(expected = "rms_norm: x has 0 elements, not [t 4611686018427387904, h 4]")]
fn dimensions_whose_product_wraps_are_refused() {
    // 2^62 · 4 wraps to 0 = x.len() in 64-bit arithmetic.
    deepblocks_norm::rms_norm(&mut [], &[], &[1.0; 4], 1e-6, 1 << 62, 4);
}
