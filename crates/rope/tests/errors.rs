//! Bad input: every user-facing error names the field or argument at fault and carries the value.

use deepblocks_rope::{
    DynamicNtkScaling, Error, Layout, LinearScaling, Llama3Scaling, MAX_EXACT_POSITION, RopeConfig,
    RopeScaling, RopeTable, YarnScaling, softmax_scale,
};
use ndarray::Array3;

fn plain(dim: usize) -> RopeConfig {
    RopeConfig::new(dim, 10_000.0, 4096, Layout::Interleaved)
}

fn yarn(f: impl FnOnce(&mut YarnScaling)) -> RopeConfig {
    let mut y = YarnScaling {
        mscale: Some(0.707),
        mscale_all_dim: Some(0.707),
        ..YarnScaling::new(40.0, 4096)
    };
    f(&mut y);
    RopeConfig::new(64, 10_000.0, 163_840, Layout::Interleaved).with_scaling(RopeScaling::Yarn(y))
}

fn err(config: RopeConfig) -> Error {
    let e = RopeTable::new(config).unwrap_err();
    // Debug, not ==: a NaN value is not equal to itself.
    let validated = config.validate().unwrap_err();
    assert_eq!(format!("{validated:?}"), format!("{e:?}"));
    e
}

/// Asserts an `OutOfRange` error on `field` with `value` (NaN matches NaN), and that the message
/// names the field.
#[track_caller]
fn assert_out_of_range(e: Error, field: &str, value: f64) {
    let msg = e.to_string();
    match e {
        Error::OutOfRange {
            field: f, value: v, ..
        } => {
            assert_eq!(f, field, "{msg}");
            assert!(v == value || (v.is_nan() && value.is_nan()), "{msg}");
            assert!(msg.contains(field), "{msg}");
        }
        other => panic!("expected OutOfRange on {field}, got {other:?}"),
    }
}

#[test]
fn odd_or_zero_rotary_dimension() {
    for dim in [63, 1, 0] {
        let e = err(plain(dim));
        assert_eq!(
            e,
            Error::OddDim {
                field: "dim",
                value: dim
            }
        );
        assert!(e.to_string().contains(&format!("dim = {dim}")), "{e}");
    }
}

#[test]
fn factor_not_positive_for_every_scaling() {
    for factor in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_out_of_range(err(yarn(|y| y.factor = factor)), "yarn.factor", factor);
        let linear = plain(64).with_scaling(RopeScaling::Linear(LinearScaling { factor }));
        assert_out_of_range(err(linear), "linear.factor", factor);
        let dynamic = plain(64).with_scaling(RopeScaling::DynamicNtk(DynamicNtkScaling {
            factor,
            original_max_position_embeddings: 2048,
        }));
        assert_out_of_range(err(dynamic), "dynamic.factor", factor);
        let llama3 = plain(64).with_scaling(RopeScaling::Llama3(Llama3Scaling {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 2048,
        }));
        assert_out_of_range(err(llama3), "llama3.factor", factor);
    }
}

#[test]
fn beta_fast_below_beta_slow() {
    for (fast, slow) in [(1.0, 32.0), (7.5, 8.0)] {
        let e = err(yarn(|y| (y.beta_fast, y.beta_slow) = (fast, slow)));
        assert_eq!(
            e,
            Error::BetaOrder {
                beta_fast: fast,
                beta_slow: slow
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("beta_fast") && msg.contains("beta_slow"),
            "{msg}"
        );
    }
    assert_out_of_range(err(yarn(|y| y.beta_slow = 0.0)), "yarn.beta_slow", 0.0);
    let nan = f64::NAN;
    assert_out_of_range(err(yarn(|y| y.beta_fast = nan)), "yarn.beta_fast", nan);
}

#[test]
fn other_yarn_fields() {
    assert_out_of_range(
        err(yarn(|y| y.original_max_position_embeddings = 0)),
        "yarn.original_max_position_embeddings",
        0.0,
    );
    assert_out_of_range(
        err(yarn(|y| y.attention_factor = Some(0.0))),
        "yarn.attention_factor",
        0.0,
    );
    assert_out_of_range(
        err(yarn(|y| y.mscale = Some(f64::NAN))),
        "yarn.mscale",
        f64::NAN,
    );
    // mscale(40, −100) = 0.1·(−100)·ln 40 + 1 < 0: the softmax factor would be meaningless.
    let e = err(yarn(|y| y.mscale_all_dim = Some(-100.0)));
    assert!(
        matches!(
            e,
            Error::OutOfRange {
                field: "yarn.mscale_all_dim",
                ..
            }
        ),
        "{e:?}"
    );
    // mscale(40, m) = 0 makes the cos/sin factor vanish.
    let zero = -10.0 / 40f64.ln();
    let e = err(yarn(|y| {
        (y.mscale, y.mscale_all_dim) = (Some(zero), Some(0.707))
    }));
    assert!(
        matches!(
            e,
            Error::OutOfRange {
                field: "yarn.mscale",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn llama3_band_and_dynamic_dimension() {
    let band = |low, high| {
        plain(64).with_scaling(RopeScaling::Llama3(Llama3Scaling {
            factor: 8.0,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: 8192,
        }))
    };
    assert_eq!(
        err(band(4.0, 1.0)),
        Error::FreqFactorOrder {
            low_freq_factor: 4.0,
            high_freq_factor: 1.0
        }
    );
    assert_out_of_range(err(band(0.0, 4.0)), "llama3.low_freq_factor", 0.0);
    let dynamic = plain(2).with_scaling(RopeScaling::DynamicNtk(DynamicNtkScaling {
        factor: 2.0,
        original_max_position_embeddings: 2048,
    }));
    assert_out_of_range(err(dynamic), "dim", 2.0);
}

#[test]
fn base_and_maximum_length() {
    for theta in [1.0, 0.5, -3.0, f64::NAN] {
        let cfg = RopeConfig {
            rope_theta: theta,
            ..plain(64)
        };
        assert_out_of_range(err(cfg), "rope_theta", theta);
    }
    for max in [0, MAX_EXACT_POSITION + 1] {
        let cfg = RopeConfig {
            max_position_embeddings: max,
            ..plain(64)
        };
        assert_out_of_range(err(cfg), "max_position_embeddings", max as f64);
    }
    assert!(
        RopeTable::new(RopeConfig {
            max_position_embeddings: MAX_EXACT_POSITION,
            ..plain(64)
        })
        .is_ok()
    );
}

#[test]
fn position_past_the_configured_maximum() {
    let mut table = RopeTable::new(yarn(|_| {})).unwrap();
    let past = Error::PositionPastMax {
        position: 163_840,
        max_position_embeddings: 163_840,
    };
    let x = vec![0.0f32; 2 * 64];
    let mut out = x.clone();
    assert_eq!(
        table.apply(&mut out, &x, &[5, 163_840], 1).unwrap_err(),
        past
    );
    assert_eq!(
        table
            .apply_inplace(&mut out, &[163_840, 200_000], 1)
            .unwrap_err(),
        past
    );
    assert_eq!(table.extend_to(163_841).unwrap_err(), past);
    assert!(
        past.to_string()
            .contains("max_position_embeddings = 163840")
    );
    // The last valid position is fine, and the failed calls left the table usable.
    table.apply(&mut out, &x, &[0, 163_839], 1).unwrap();
    table.extend_to(10).unwrap();
    assert_eq!(table.len(), 10);
}

#[test]
fn buffers_of_the_wrong_length() {
    let table = RopeTable::new(plain(8)).unwrap();
    let (x, mut out) = (vec![0.0f32; 2 * 3 * 8], vec![0.0f32; 2 * 3 * 8]);
    assert_eq!(
        table.apply(&mut out, &x[1..], &[0, 1], 3).unwrap_err(),
        Error::Length {
            what: "x",
            shape: vec![2, 3, 8],
            expected: 48,
            found: 47
        }
    );
    assert_eq!(
        table.apply(&mut out[..40], &x, &[0, 1], 3).unwrap_err(),
        Error::Length {
            what: "out",
            shape: vec![2, 3, 8],
            expected: 48,
            found: 40
        }
    );
    // Three positions for a two-token block.
    let e = table.apply(&mut out, &x, &[0, 1, 2], 3).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Length {
                what: "x",
                expected: 72,
                found: 48,
                ..
            }
        ),
        "{e:?}"
    );
    // A head count so large that t·n·r overflows is a length error, not a panic.
    let e = table
        .apply(&mut out, &x, &[0, 1], usize::MAX / 4)
        .unwrap_err();
    assert!(matches!(e, Error::Length { what: "x", .. }), "{e:?}");
}

#[test]
fn strided_rows_too_short_for_the_rotary_part() {
    let table = RopeTable::new(plain(8)).unwrap();
    let mut x = vec![0.0f32; 2 * 10];
    assert_eq!(
        table
            .apply_inplace_strided(&mut x, &[0, 1], 1, 10, 3)
            .unwrap_err(),
        Error::Stride {
            stride: 10,
            offset: 3,
            r: 8
        }
    );
    assert!(matches!(
        table
            .apply_inplace_strided(&mut x, &[0, 1], 1, 10, usize::MAX)
            .unwrap_err(),
        Error::Stride { .. }
    ));
    assert_eq!(
        table
            .apply_inplace_strided(&mut x, &[0, 1], 2, 10, 2)
            .unwrap_err(),
        Error::Length {
            what: "x",
            shape: vec![2, 2, 10],
            expected: 40,
            found: 20
        }
    );
}

#[test]
fn ndarray_of_the_wrong_shape() {
    let table = RopeTable::new(plain(8)).unwrap();
    let x = Array3::<f32>::zeros((2, 3, 6));
    assert_eq!(
        table.apply_nd(x.view(), &[0, 1]).unwrap_err(),
        Error::Shape {
            what: "x",
            expected: vec![2, 3, 8],
            found: vec![2, 3, 6]
        }
    );
    let x = Array3::<f32>::zeros((2, 3, 8));
    assert!(matches!(
        table.apply_nd(x.view(), &[0]).unwrap_err(),
        Error::Shape { what: "x", .. }
    ));
}

#[test]
fn softmax_scale_of_an_empty_head() {
    assert_out_of_range(
        softmax_scale(0, &RopeScaling::None).unwrap_err(),
        "qk_head_dim",
        0.0,
    );
}

#[test]
fn dynamic_ntk_refuses_stale_frequencies() {
    let cfg = plain(64).with_scaling(RopeScaling::DynamicNtk(DynamicNtkScaling {
        factor: 2.0,
        original_max_position_embeddings: 1024,
    }));
    let mut table = RopeTable::new(cfg).unwrap();
    let x = vec![1.0f32; 64];
    let mut out = x.clone();
    // Within the original length nothing depends on the sequence length.
    table.apply(&mut out, &x, &[1023], 1).unwrap();
    let e = table.apply(&mut out, &x, &[2000], 1).unwrap_err();
    assert_eq!(
        e,
        Error::DynamicNotExtended {
            position: 2000,
            seq_len: 1024
        }
    );
    assert!(e.to_string().contains("extend_to(2001)"), "{e}");
    table.extend_to(2001).unwrap();
    table.apply(&mut out, &x, &[2000], 1).unwrap();
    // A new short sequence after a long one: transformers resets the frequencies first.
    let (x2, mut out2) = (vec![1.0f32; 2 * 64], vec![0.0f32; 2 * 64]);
    assert!(matches!(
        table.apply(&mut out2, &x2, &[0, 1], 1).unwrap_err(),
        Error::DynamicNotExtended {
            position: 1,
            seq_len: 2001
        }
    ));
    table.extend_to(2).unwrap();
    table.apply(&mut out2, &x2, &[0, 1], 1).unwrap();
}

#[test]
fn empty_blocks_are_fine() {
    let table = RopeTable::new(plain(8)).unwrap();
    table.apply(&mut [], &[], &[], 4).unwrap();
    table.apply_inplace(&mut [], &[0, 1], 0).unwrap();
    assert!(table.cos_sin(&[]).unwrap().cos().is_empty());
}
