//! The draw: goodness of fit (chi-square), reproducibility across platforms, and bad input.

use deepblocks_sample::{Error, Sampler, SamplingConfig, distribution, sample_with_uniform};

/// Pearson's statistic Σ (O − E)² / E over the categories with E > 0, and its degrees of freedom.
/// Panics if a category with E = 0 was observed.
fn chi_square(counts: &[u64], p: &[f64]) -> (f64, usize) {
    let n: u64 = counts.iter().sum();
    let mut stat = 0.0;
    let mut cats = 0;
    for (i, (&o, &pi)) in counts.iter().zip(p).enumerate() {
        if pi == 0.0 {
            assert_eq!(o, 0, "token {i} has probability 0 but was drawn {o} times");
            continue;
        }
        let e = pi * n as f64;
        assert!(
            e >= 5.0,
            "expected count {e} too small for the chi-square approximation"
        );
        stat += (o as f64 - e).powi(2) / e;
        cats += 1;
    }
    (stat, cats - 1)
}

/// Upper 0.1% points of the chi-square distribution (df → critical value), from the standard
/// tables: a correct sampler fails a given seed with probability 0.001.
fn critical_0_001(df: usize) -> f64 {
    match df {
        4 => 18.467,
        5 => 20.515,
        7 => 24.322,
        8 => 26.124,
        _ => panic!("no table entry for df {df}"),
    }
}

const LOGITS: [f32; 10] = [
    2.0,
    1.5,
    1.0,
    0.5,
    0.0,
    -0.5,
    -1.0,
    -2.0,
    -3.0,
    f32::NEG_INFINITY,
];

fn draw_counts(config: SamplingConfig, seed: u64, n: usize) -> Vec<u64> {
    let mut s = Sampler::new(config, seed).unwrap();
    let mut counts = vec![0u64; LOGITS.len()];
    for _ in 0..n {
        counts[s.sample(&LOGITS, &[]).unwrap().token as usize] += 1;
    }
    counts
}

#[test]
fn draws_follow_the_distribution_chi_square() {
    let config = SamplingConfig {
        temperature: 0.8,
        ..SamplingConfig::default()
    };
    let p = distribution(&config, &LOGITS, &[]).unwrap();
    let counts = draw_counts(config, 2024, 200_000);
    let (stat, df) = chi_square(&counts, &p);
    eprintln!(
        "chi-square {stat:.2} with {df} df (critical {})",
        critical_0_001(df)
    );
    assert_eq!(df, 8);
    assert!(
        stat < critical_0_001(df),
        "chi-square {stat} ≥ {}",
        critical_0_001(df)
    );

    // The test has power: the same draws are rejected against the T = 1 distribution.
    let p1 = distribution(&SamplingConfig::default(), &LOGITS, &[]).unwrap();
    let (wrong, _) = chi_square(&counts, &p1);
    assert!(
        wrong > 10.0 * critical_0_001(df),
        "wrong distribution not rejected: {wrong}"
    );
}

#[test]
fn truncated_draws_follow_the_truncated_distribution_chi_square() {
    let config = SamplingConfig {
        temperature: 1.3,
        top_k: 8,
        top_p: 0.9,
        ..SamplingConfig::default()
    };
    let p = distribution(&config, &LOGITS, &[]).unwrap();
    let counts = draw_counts(config, 7, 100_000);
    let (stat, df) = chi_square(&counts, &p);
    eprintln!("chi-square {stat:.2} with {df} df");
    assert!(stat < critical_0_001(df), "chi-square {stat} with {df} df");
}

/// The token stream of a fixed seed, pinned: any change to the generator, the uniform
/// conversion or the pipeline's arithmetic shows up here, on whichever platform runs the test.
#[test]
fn a_seed_gives_the_same_tokens_on_every_platform() {
    let config = SamplingConfig {
        temperature: 0.9,
        top_k: 6,
        top_p: 0.95,
        min_p: 0.02,
        repetition_penalty: 1.2,
        ..SamplingConfig::default()
    };
    let mut s = Sampler::new(config, 1234).unwrap();
    let mut history = vec![0u32];
    for _ in 0..16 {
        let t = s.sample(&LOGITS, &history).unwrap().token;
        history.push(t);
    }
    assert_eq!(
        history, PINNED,
        "the pinned stream changed; if intended, update it"
    );
}

const PINNED: [u32; 17] = [0, 0, 0, 1, 0, 2, 0, 1, 4, 3, 0, 2, 0, 1, 1, 2, 0];

#[test]
fn sample_with_uniform_inverts_the_cumulative_distribution() {
    let c = SamplingConfig::default();
    let p = distribution(&c, &LOGITS, &[]).unwrap();
    let mut cum = 0.0;
    for (i, &pi) in p.iter().enumerate().take(9) {
        let mid = cum + pi / 2.0;
        assert_eq!(
            sample_with_uniform(&c, &LOGITS, &[], mid).unwrap().token as usize,
            i
        );
        cum += pi;
    }
}

#[test]
fn bad_logits_are_errors_naming_the_value() {
    let c = SamplingConfig::default();
    assert_eq!(distribution(&c, &[], &[]), Err(Error::EmptyLogits));
    let err = distribution(&c, &[0.0, f32::NAN, 1.0], &[]).unwrap_err();
    assert!(
        matches!(err, Error::NonFiniteLogit { index: 1, value } if value.is_nan()),
        "{err}"
    );
    assert!(err.to_string().contains("logit 1 is NaN"), "{err}");
    let err = distribution(&c, &[0.0, 1.0, f32::INFINITY], &[]).unwrap_err();
    assert_eq!(
        err,
        Error::NonFiniteLogit {
            index: 2,
            value: f32::INFINITY
        }
    );
    let err = distribution(&c, &[f32::NEG_INFINITY; 3], &[]).unwrap_err();
    assert_eq!(err, Error::AllMasked { len: 3 });
    // Greedy decoding checks too.
    let err = Sampler::greedy().sample(&[f32::NAN], &[]).unwrap_err();
    assert!(matches!(err, Error::NonFiniteLogit { index: 0, .. }));
}

#[test]
fn bad_parameters_are_errors_naming_the_parameter_and_value() {
    let base = SamplingConfig::default();
    let cases: [(SamplingConfig, &str, f64); 9] = [
        (
            SamplingConfig {
                temperature: -0.5,
                ..base
            },
            "temperature",
            -0.5,
        ),
        (
            SamplingConfig {
                temperature: f32::INFINITY,
                ..base
            },
            "temperature",
            f64::INFINITY,
        ),
        (SamplingConfig { top_p: 0.0, ..base }, "top_p", 0.0),
        (SamplingConfig { top_p: 1.5, ..base }, "top_p", 1.5),
        (
            SamplingConfig {
                top_p: -0.25,
                ..base
            },
            "top_p",
            -0.25,
        ),
        (SamplingConfig { min_p: 1.5, ..base }, "min_p", 1.5),
        (
            SamplingConfig {
                repetition_penalty: 0.0,
                ..base
            },
            "repetition_penalty",
            0.0,
        ),
        (
            SamplingConfig {
                frequency_penalty: f32::NEG_INFINITY,
                ..base
            },
            "frequency_penalty",
            f64::NEG_INFINITY,
        ),
        (
            SamplingConfig {
                presence_penalty: f32::INFINITY,
                ..base
            },
            "presence_penalty",
            f64::INFINITY,
        ),
    ];
    for (config, name, value) in cases {
        let err = Sampler::new(config, 0).unwrap_err();
        assert!(
            matches!(&err, Error::Parameter { name: n, value: v, .. } if *n == name && *v == value),
            "{name}: {err}"
        );
        assert!(err.to_string().starts_with(&format!("{name} = ")), "{err}");
        assert_eq!(distribution(&config, &LOGITS, &[]).unwrap_err(), err);
    }
    // NaN parameters are rejected too.
    let err = Sampler::new(
        SamplingConfig {
            top_p: f32::NAN,
            ..base
        },
        0,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Parameter { name: "top_p", value, .. } if value.is_nan()));
    let err = sample_with_uniform(&base, &LOGITS, &[], 1.0).unwrap_err();
    assert!(matches!(err, Error::Parameter { name: "u", value, .. } if value == 1.0));
}

#[test]
fn a_history_id_outside_the_vocabulary_is_an_error_naming_it() {
    let penalised = SamplingConfig {
        repetition_penalty: 1.1,
        ..SamplingConfig::default()
    };
    for c in [
        penalised,
        SamplingConfig::default(),
        SamplingConfig::greedy(),
    ] {
        let err = distribution(&c, &LOGITS, &[3, 10]).unwrap_err();
        assert_eq!(err, Error::TokenOutOfRange { id: 10, vocab: 10 });
        assert!(err.to_string().contains("id 10"), "{err}");
    }
}

#[test]
fn an_error_consumes_no_randomness() {
    let c = SamplingConfig::default();
    let mut a = Sampler::new(c, 99).unwrap();
    let mut b = Sampler::new(c, 99).unwrap();
    assert!(a.sample(&[f32::NAN, 1.0], &[]).is_err());
    for _ in 0..5 {
        assert_eq!(
            a.sample(&LOGITS, &[]).unwrap(),
            b.sample(&LOGITS, &[]).unwrap()
        );
    }
}

#[test]
fn set_config_rejects_a_bad_config_and_keeps_the_old_one() {
    let mut s = Sampler::new(SamplingConfig::default(), 0).unwrap();
    let bad = SamplingConfig {
        temperature: -1.0,
        ..SamplingConfig::default()
    };
    assert!(s.set_config(bad).is_err());
    assert_eq!(*s.config(), SamplingConfig::default());
}
