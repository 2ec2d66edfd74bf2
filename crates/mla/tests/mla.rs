//! MLA: goldens against transformers' `DeepseekV2Attention` (low-rank q with YaRN, full q with
//! plain RoPE, YaRN with a cos/sin factor ≠ 1), naive = absorbed, prefill = step-by-step decode,
//! rollback, cache size, and bad input.

use deepblocks_core::{DType, Weight};
use deepblocks_mla::{
    AttentionPath, Error, Mla, MlaCache, MlaConfig, MlaWeights, QProj, QProjConfig,
};
use deepblocks_norm::{RmsNorm, RmsNormConfig};
use deepblocks_rope::{Layout, RopeConfig, RopeScaling, RopeTable, YarnScaling, softmax_scale};
use deepblocks_testkit::{Golden, assert_close, close_report};
use proptest::prelude::*;
use serde_json::Value;

struct Case {
    mla: Mla,
    rope: RopeTable,
    x: Vec<f32>,
    out: Vec<f32>,
    t: usize,
    max_pos: usize,
}

fn weight(g: &Golden, name: &str) -> Weight {
    let (shape, data) = g.get(name);
    Weight::from_f32(data.to_vec(), shape[0], shape[1]).unwrap()
}

fn norm(g: &Golden, name: &str, eps: f32) -> RmsNorm {
    let w = g.data(name).to_vec();
    RmsNorm::new(
        RmsNormConfig {
            hidden: w.len(),
            eps,
        },
        w,
    )
    .unwrap()
}

/// Builds the attention of fixture variant `v` exactly as a checkpoint loader would: the rope
/// config from `rope_parameters`, the softmax scale from the rope crate.
fn case(v: &str) -> Case {
    let g = Golden::load("mla");
    let cfg: Value = serde_json::from_str(&g.meta::<String>(&format!("{v}.config"))).unwrap();
    let u = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let (d, r) = (u("qk_nope_head_dim"), u("qk_rope_head_dim"));
    let rp = &cfg["rope_parameters"];
    let theta = rp["rope_theta"].as_f64().unwrap();
    let scaling = match rp["rope_type"].as_str().unwrap() {
        "default" => RopeScaling::None,
        "yarn" => RopeScaling::Yarn(YarnScaling {
            beta_fast: rp["beta_fast"].as_f64().unwrap(),
            beta_slow: rp["beta_slow"].as_f64().unwrap(),
            mscale: rp["mscale"].as_f64(),
            mscale_all_dim: rp["mscale_all_dim"].as_f64(),
            ..YarnScaling::new(
                rp["factor"].as_f64().unwrap(),
                rp["original_max_position_embeddings"].as_u64().unwrap() as usize,
            )
        }),
        other => panic!("fixture rope type {other}"),
    };
    let max_pos = u("max_position_embeddings");
    let scale = softmax_scale(d + r, &scaling).unwrap();
    let want_scale: f64 = g.meta(&format!("{v}.scaling"));
    assert!(
        (scale as f64 - want_scale).abs() < 1e-7,
        "softmax scale {scale} vs {want_scale}"
    );
    let rope = RopeTable::with_len(
        RopeConfig::new(r, theta, max_pos, Layout::Interleaved).with_scaling(scaling),
        max_pos,
    )
    .unwrap();
    let eps = cfg["rms_norm_eps"].as_f64().unwrap() as f32;
    let q_lora = cfg["q_lora_rank"].as_u64().map(|q| q as usize);
    let config = MlaConfig {
        hidden_size: u("hidden_size"),
        num_heads: u("num_heads"),
        q_proj: match q_lora {
            None => QProjConfig::Full,
            Some(q_lora_rank) => QProjConfig::LowRank { q_lora_rank },
        },
        kv_lora_rank: u("kv_lora_rank"),
        qk_nope_head_dim: d,
        qk_rope_head_dim: r,
        v_head_dim: u("v_head_dim"),
        softmax_scale: scale,
        rms_norm_eps: eps,
    };
    let p = |s: &str| format!("{v}.{s}");
    let q = match q_lora {
        None => QProj::Full {
            q_proj: weight(&g, &p("q_proj.weight")),
        },
        Some(_) => QProj::LowRank {
            q_a_proj: weight(&g, &p("q_a_proj.weight")),
            q_a_layernorm: norm(&g, &p("q_a_layernorm.weight"), eps),
            q_b_proj: weight(&g, &p("q_b_proj.weight")),
        },
    };
    let weights = MlaWeights {
        q,
        kv_a_proj_with_mqa: weight(&g, &p("kv_a_proj_with_mqa.weight")),
        kv_a_layernorm: norm(&g, &p("kv_a_layernorm.weight"), eps),
        kv_b_proj: weight(&g, &p("kv_b_proj.weight")),
        o_proj: weight(&g, &p("o_proj.weight")),
    };
    Case {
        mla: Mla::new(config, weights).unwrap(),
        rope,
        x: g.data(&p("x")).to_vec(),
        out: g.data(&p("out")).to_vec(),
        t: u("seq_len"),
        max_pos,
    }
}

fn new_cache(mla: &Mla, max_pos: usize) -> MlaCache {
    let c = mla.config();
    MlaCache::new(1, c.kv_lora_rank, c.qk_rope_head_dim, 8, max_pos).unwrap()
}

/// Runs `x[t, h]` through `mla` as a prefill of `split` tokens followed by single-token decode
/// steps, returning all outputs `[t, h]`.
fn run(c: &Case, split: usize, path: AttentionPath, decode_path: AttentionPath) -> Vec<f32> {
    let h = c.mla.config().hidden_size;
    let mut cache = new_cache(&c.mla, c.max_pos);
    let mut out = vec![0.0; c.t * h];
    c.mla
        .forward(
            &mut out[..split * h],
            &c.x[..split * h],
            split,
            cache.layer_mut(0).unwrap(),
            &c.rope,
            path,
        )
        .unwrap();
    for i in split..c.t {
        c.mla
            .forward(
                &mut out[i * h..(i + 1) * h],
                &c.x[i * h..(i + 1) * h],
                1,
                cache.layer_mut(0).unwrap(),
                &c.rope,
                decode_path,
            )
            .unwrap();
    }
    assert_eq!(cache.len(), c.t);
    out
}

fn golden(variant: &str) {
    let c = case(variant);
    for (label, split, prefill, decode) in [
        (
            "naive prefill",
            c.t,
            AttentionPath::Naive,
            AttentionPath::Naive,
        ),
        (
            "absorbed prefill",
            c.t,
            AttentionPath::Absorbed,
            AttentionPath::Absorbed,
        ),
        (
            "naive prefill + absorbed decode",
            c.t / 2,
            AttentionPath::Naive,
            AttentionPath::Absorbed,
        ),
        (
            "absorbed decode from the first token",
            1,
            AttentionPath::Absorbed,
            AttentionPath::Absorbed,
        ),
    ] {
        let got = run(&c, split, prefill, decode);
        let r = close_report(&got, &c.out, 0.0, 0.0);
        eprintln!(
            "mla {variant} {label} vs transformers: max |Δ| = {:e}, max rel = {:e}",
            r.max_abs, r.max_rel
        );
        assert_close(&got, &c.out, 2e-6, 1e-5);
    }
}

#[test]
fn golden_low_rank_q_with_yarn_past_the_original_context() {
    golden("lowrank_yarn");
}

#[test]
fn golden_full_q_with_plain_rope() {
    golden("full_rope");
}

#[test]
fn golden_yarn_with_a_cos_sin_factor() {
    golden("yarn_mscale");
}

#[test]
fn golden_fixture_is_not_trivial() {
    // The yarn case runs past original_max_position_embeddings (16), and the output differs from
    // what the same weights give with plain RoPE: the test above would catch a wrong table.
    let c = case("lowrank_yarn");
    assert!(c.t > 16);
    let plain = RopeTable::with_len(
        RopeConfig::new(
            c.mla.config().qk_rope_head_dim,
            10_000.0,
            c.max_pos,
            Layout::Interleaved,
        ),
        c.max_pos,
    )
    .unwrap();
    let h = c.mla.config().hidden_size;
    let mut cache = new_cache(&c.mla, c.max_pos);
    let mut out = vec![0.0; c.t * h];
    c.mla
        .forward(
            &mut out,
            &c.x,
            c.t,
            cache.layer_mut(0).unwrap(),
            &plain,
            AttentionPath::Naive,
        )
        .unwrap();
    assert!(close_report(&out, &c.out, 1e-4, 0.0).violations > 0);
}

/// A random MLA layer for property tests (weights std ≈ 0.3 so attention is far from uniform).
fn random_mla(seed: u64, n: usize, low_rank: bool, dtype: DType) -> (Mla, RopeTable, usize) {
    let (h, c, d, r, v) = (16, 8, 4, 4, 6);
    let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut w = |rows: usize, cols: usize| {
        let vals = (0..rows * cols)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1.0
            })
            .collect();
        Weight::from_f32(vals, rows, cols).unwrap().to_dtype(dtype)
    };
    let q_lora = 6;
    let (q_proj, q) = if low_rank {
        (
            QProjConfig::LowRank {
                q_lora_rank: q_lora,
            },
            QProj::LowRank {
                q_a_proj: w(q_lora, h),
                q_a_layernorm: RmsNorm::new(
                    RmsNormConfig {
                        hidden: q_lora,
                        eps: 1e-6,
                    },
                    (0..q_lora).map(|i| 0.7 + 0.1 * i as f32).collect(),
                )
                .unwrap(),
                q_b_proj: w(n * (d + r), q_lora),
            },
        )
    } else {
        (
            QProjConfig::Full,
            QProj::Full {
                q_proj: w(n * (d + r), h),
            },
        )
    };
    let max_pos = 64;
    let config = MlaConfig {
        hidden_size: h,
        num_heads: n,
        q_proj,
        kv_lora_rank: c,
        qk_nope_head_dim: d,
        qk_rope_head_dim: r,
        v_head_dim: v,
        softmax_scale: ((d + r) as f32).powf(-0.5),
        rms_norm_eps: 1e-6,
    };
    let weights = MlaWeights {
        q,
        kv_a_proj_with_mqa: w(c + r, h),
        kv_a_layernorm: RmsNorm::new(
            RmsNormConfig {
                hidden: c,
                eps: 1e-6,
            },
            (0..c).map(|i| 1.3 - 0.1 * i as f32).collect(),
        )
        .unwrap(),
        kv_b_proj: w(n * (d + v), c),
        o_proj: w(h, n * v),
    };
    let rope = RopeTable::new(RopeConfig::new(r, 10_000.0, max_pos, Layout::Interleaved)).unwrap();
    (Mla::new(config, weights).unwrap(), rope, max_pos)
}

fn inputs(t: usize, h: usize, seed: u64) -> Vec<f32> {
    (0..t * h)
        .map(|i| ((i as u64 * 2_654_435_761 + seed) % 1000) as f32 / 250.0 - 2.0)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn absorbed_equals_naive(
        seed in 0u64..10_000,
        n in 1usize..5,
        low_rank in any::<bool>(),
        bf16 in any::<bool>(),
        prefix in 0usize..6,
        t in 1usize..7,
    ) {
        let dtype = if bf16 { DType::BF16 } else { DType::F32 };
        let (mla, rope, max_pos) = random_mla(seed, n, low_rank, dtype);
        let h = mla.config().hidden_size;
        let (mut ca, mut cb) = (new_cache(&mla, max_pos), new_cache(&mla, max_pos));
        // A cached prefix first (prefill), then a block of t tokens (decode when t = 1).
        for (start, len) in [(0, prefix), (prefix, t)] {
            if len == 0 {
                continue;
            }
            let x = inputs(len, h, seed + start as u64);
            let (mut a, mut b) = (vec![0.0; len * h], vec![0.0; len * h]);
            mla.forward(&mut a, &x, len, ca.layer_mut(0).unwrap(), &rope, AttentionPath::Naive).unwrap();
            mla.forward(&mut b, &x, len, cb.layer_mut(0).unwrap(), &rope, AttentionPath::Absorbed).unwrap();
            let r = close_report(&b, &a, 1e-4, 1e-4);
            prop_assert_eq!(r.violations, 0, "{}", r);
        }
        // Both paths cache the same latents (the paths differ only after the cache).
        prop_assert_eq!(ca.layer(0).unwrap().c_kv(), cb.layer(0).unwrap().c_kv());
    }

    #[test]
    fn prefill_equals_step_by_step_decode(seed in 0u64..10_000, n in 1usize..4, t in 2usize..9) {
        let (mla, rope, max_pos) = random_mla(seed, n, true, DType::F32);
        let h = mla.config().hidden_size;
        let x = inputs(t, h, seed);
        for path in [AttentionPath::Naive, AttentionPath::Absorbed] {
            let mut whole = vec![0.0; t * h];
            let mut cache = new_cache(&mla, max_pos);
            mla.forward(&mut whole, &x, t, cache.layer_mut(0).unwrap(), &rope, path).unwrap();
            let mut steps = vec![0.0; t * h];
            let mut cache2 = new_cache(&mla, max_pos);
            for i in 0..t {
                mla.forward(&mut steps[i * h..(i + 1) * h], &x[i * h..(i + 1) * h], 1,
                    cache2.layer_mut(0).unwrap(), &rope, path).unwrap();
            }
            let r = close_report(&steps, &whole, 1e-5, 1e-5);
            prop_assert_eq!(r.violations, 0, "{:?}: {}", path, r);
            // The cached keys agree too (to rounding: a 5-token projection takes the GEMM path,
            // a 1-token one the GEMV path, which sum in different orders).
            let r = close_report(cache2.layer(0).unwrap().k_pe(), cache.layer(0).unwrap().k_pe(), 1e-6, 1e-6);
            prop_assert_eq!(r.violations, 0, "k_pe: {}", r);
        }
    }
}

#[test]
fn rollback_then_redecode_gives_the_same_result() {
    let (mla, rope, max_pos) = random_mla(7, 3, true, DType::F32);
    let h = mla.config().hidden_size;
    let x = inputs(6, h, 3);
    let mut cache = new_cache(&mla, max_pos);
    let mut first = vec![0.0; 6 * h];
    mla.forward(
        &mut first,
        &x,
        6,
        cache.layer_mut(0).unwrap(),
        &rope,
        AttentionPath::Absorbed,
    )
    .unwrap();
    // Roll back two tokens, decode something else, roll back again, and redo the original two.
    cache.truncate(4).unwrap();
    let mut other = vec![0.0; h];
    mla.forward(
        &mut other,
        &inputs(1, h, 99),
        1,
        cache.layer_mut(0).unwrap(),
        &rope,
        AttentionPath::Absorbed,
    )
    .unwrap();
    cache.truncate(4).unwrap();
    let mut again = vec![0.0; 2 * h];
    mla.forward(
        &mut again,
        &x[4 * h..],
        2,
        cache.layer_mut(0).unwrap(),
        &rope,
        AttentionPath::Absorbed,
    )
    .unwrap();
    assert_close(&again, &first[4 * h..], 1e-6, 1e-6);
    assert!(close_report(&other, &first[4 * h..5 * h], 1e-3, 0.0).violations > 0);
}

#[test]
fn cache_holds_exactly_the_latent_and_the_rope_key() {
    let (mla, rope, max_pos) = random_mla(1, 4, false, DType::BF16);
    let cfg = *mla.config();
    let layers = 3;
    let mut cache =
        MlaCache::new(layers, cfg.kv_lora_rank, cfg.qk_rope_head_dim, 4, max_pos).unwrap();
    let h = cfg.hidden_size;
    let t = 5;
    let x = inputs(t, h, 0);
    let mut y = vec![0.0; t * h];
    for l in 0..layers {
        mla.forward(
            &mut y,
            &x,
            t,
            cache.layer_mut(l).unwrap(),
            &rope,
            AttentionPath::Absorbed,
        )
        .unwrap();
    }
    // (c + r) · layers f32 values per token: never n·(d + v).
    assert_eq!(cfg.cache_values_per_token(), 8 + 4);
    assert_eq!(
        cache.bytes(),
        t * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * layers * 4
    );
    assert!(cache.capacity_bytes() >= cache.bytes());
    assert_eq!(cache.len(), t);
}

#[test]
fn context_past_the_maximum_is_an_error_and_leaves_the_cache_alone() {
    let (mla, rope, _) = random_mla(2, 2, true, DType::F32);
    let h = mla.config().hidden_size;
    let mut cache = MlaCache::new(1, 8, 4, 4, 6).unwrap();
    let mut y = vec![0.0; 4 * h];
    mla.forward(
        &mut y,
        &inputs(4, h, 0),
        4,
        cache.layer_mut(0).unwrap(),
        &rope,
        AttentionPath::Absorbed,
    )
    .unwrap();
    let mut y3 = vec![0.0; 3 * h];
    let err = mla
        .forward(
            &mut y3,
            &inputs(3, h, 0),
            3,
            cache.layer_mut(0).unwrap(),
            &rope,
            AttentionPath::Absorbed,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ContextFull {
                cached: 4,
                adding: 3,
                max_position_embeddings: 6
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("position 6"), "{err}");
    assert_eq!(cache.len(), 4);

    // Past the rope table's maximum: the rope error, naming the position.
    let mut big = MlaCache::new(1, 8, 4, 4, 1000).unwrap();
    let x = inputs(64, h, 1);
    let mut y = vec![0.0; 64 * h];
    mla.forward(
        &mut y,
        &x,
        64,
        big.layer_mut(0).unwrap(),
        &rope,
        AttentionPath::Absorbed,
    )
    .unwrap();
    let err = mla
        .forward(
            &mut y[..h],
            &x[..h],
            1,
            big.layer_mut(0).unwrap(),
            &rope,
            AttentionPath::Absorbed,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Rope(_)), "{err}");
    assert!(err.to_string().contains("64"), "{err}");
    assert_eq!(big.len(), 64);
}

#[test]
fn bad_inputs_are_errors() {
    let (mla, rope, max_pos) = random_mla(3, 2, true, DType::F32);
    let h = mla.config().hidden_size;
    let mut cache = new_cache(&mla, max_pos);
    let mut y = vec![0.0; 2 * h];
    let err = mla
        .forward(
            &mut y,
            &inputs(2, h, 0)[..2 * h - 1],
            2,
            cache.layer_mut(0).unwrap(),
            &rope,
            AttentionPath::Naive,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Input {
                t: 2,
                hidden: 16,
                found: 31
            }
        ),
        "{err}"
    );
    let err = mla
        .forward(
            &mut [],
            &[],
            0,
            cache.layer_mut(0).unwrap(),
            &rope,
            AttentionPath::Naive,
        )
        .unwrap_err();
    assert!(matches!(err, Error::Input { t: 0, .. }), "{err}");

    let mut wrong = MlaCache::new(1, 9, 4, 4, 64).unwrap();
    let err = mla
        .forward(
            &mut y,
            &inputs(2, h, 0),
            2,
            wrong.layer_mut(0).unwrap(),
            &rope,
            AttentionPath::Naive,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::CacheMismatch {
                cache_c: 9,
                c: 8,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        cache.layer(1),
        Err(Error::NoSuchLayer {
            layer: 1,
            layers: 1
        })
    ));
    assert!(matches!(
        cache.truncate(5),
        Err(Error::TruncateBeyond { len: 0, to: 5 })
    ));
    assert!(matches!(
        MlaCache::new(1, 0, 4, 4, 4),
        Err(Error::ZeroDim {
            field: "kv_lora_rank"
        })
    ));
}

#[test]
fn mis_shaped_weights_are_errors_naming_the_weight() {
    let c = case("full_rope");
    let cfg = *c.mla.config();
    let g = Golden::load("mla");
    let eps = cfg.rms_norm_eps;
    let good = || MlaWeights {
        q: QProj::Full {
            q_proj: weight(&g, "full_rope.q_proj.weight"),
        },
        kv_a_proj_with_mqa: weight(&g, "full_rope.kv_a_proj_with_mqa.weight"),
        kv_a_layernorm: norm(&g, "full_rope.kv_a_layernorm.weight", eps),
        kv_b_proj: weight(&g, "full_rope.kv_b_proj.weight"),
        o_proj: weight(&g, "full_rope.o_proj.weight"),
    };
    assert!(Mla::new(cfg, good()).is_ok());

    let mut w = good();
    w.kv_b_proj = weight(&g, "full_rope.o_proj.weight");
    let err = Mla::new(cfg, w).unwrap_err();
    assert!(
        matches!(&err, Error::WeightShape { name: "kv_b_proj", expected, found }
            if expected == &[4 * (16 + 12), 32] && found == &[64, 48]),
        "{err}"
    );

    let mut w = good();
    w.kv_a_layernorm = RmsNorm::ones(RmsNormConfig { hidden: 31, eps }).unwrap();
    assert!(matches!(
        Mla::new(cfg, w),
        Err(Error::WeightShape {
            name: "kv_a_layernorm",
            ..
        })
    ));

    let low = MlaConfig {
        q_proj: QProjConfig::LowRank { q_lora_rank: 24 },
        ..cfg
    };
    assert!(matches!(
        Mla::new(low, good()),
        Err(Error::QProjKind { .. })
    ));
    let bad = MlaConfig {
        softmax_scale: f32::NAN,
        ..cfg
    };
    assert!(matches!(Mla::new(bad, good()), Err(Error::SoftmaxScale(_))));
    let bad = MlaConfig {
        v_head_dim: 0,
        ..cfg
    };
    assert!(matches!(
        Mla::new(bad, good()),
        Err(Error::ZeroDim {
            field: "v_head_dim"
        })
    ));
}
