//! MLA: goldens against transformers' `DeepseekV2Attention` (low-rank q with YaRN, full q with
//! plain RoPE, YaRN with a cos/sin factor ≠ 1), naive = absorbed, prefill = step-by-step decode,
//! rollback, cache size, and bad input.

use deepblocks_core::half;
use deepblocks_core::linear_naive;
use deepblocks_core::quant::q8_rows::{q8_quantize_rows, q8_row_codes};
use deepblocks_mla::{
    AttentionPath, AttentionShape, CacheDType, DType, Error, KvB, KvUpProjection, LatentRows,
    Layout, Mla, MlaCache, MlaCacheConfig, MlaConfig, MlaWeights, QProj, QProjConfig, RmsNorm,
    RmsNormConfig, RopeConfig, RopeScaling, RopeTable, Weight, YarnScaling, attention_absorbed,
    attention_naive, softmax_scale,
};
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
    /// ε of the latent norms.
    eps: f32,
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
        kv_b: weight(&g, &p("kv_b_proj.weight")).into(),
        o_proj: weight(&g, &p("o_proj.weight")),
    };
    Case {
        mla: Mla::new(config, weights).unwrap(),
        rope,
        x: g.data(&p("x")).to_vec(),
        out: g.data(&p("out")).to_vec(),
        t: u("seq_len"),
        max_pos,
        eps,
    }
}

fn cache_config(mla: &Mla, layers: usize, max_pos: usize) -> MlaCacheConfig {
    let c = mla.config();
    MlaCacheConfig {
        num_layers: layers,
        kv_lora_rank: c.kv_lora_rank,
        qk_rope_head_dim: c.qk_rope_head_dim,
        max_positions: max_pos,
        dtype: CacheDType::F32,
    }
}

fn new_cache(mla: &Mla, max_pos: usize) -> MlaCache {
    MlaCache::with_capacity(cache_config(mla, 1, max_pos), 8).unwrap()
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
    let (config, weights, rope, max_pos) = random_weights(seed, n, low_rank, dtype);
    (Mla::new(config, weights).unwrap(), rope, max_pos)
}

/// The config, weights and rope table of [`random_mla`].
fn random_weights(
    seed: u64,
    n: usize,
    low_rank: bool,
    dtype: DType,
) -> (MlaConfig, MlaWeights, RopeTable, usize) {
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
        kv_b: w(n * (d + v), c).into(),
        o_proj: w(h, n * v),
    };
    let rope = RopeTable::new(RopeConfig::new(r, 10_000.0, max_pos, Layout::Interleaved)).unwrap();
    (config, weights, rope, max_pos)
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
            let r = close_report(&cache2.layer(0).unwrap().k_pe_f32(), &cache.layer(0).unwrap().k_pe_f32(), 1e-6, 1e-6);
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
    let mut cache = MlaCache::with_capacity(cache_config(&mla, layers, max_pos), 4).unwrap();
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
    let mut cache = MlaCache::new(cache_config(&mla, 1, 6)).unwrap();
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
    let mut big = MlaCache::new(cache_config(&mla, 1, 1000)).unwrap();
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
            &err,
            Error::Core(deepblocks_core::Error::Length { what, shape, found: 31, .. })
                if what == "x" && shape == &[2, 16]
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
    assert!(matches!(err, Error::EmptyInput), "{err}");

    let mut wrong = MlaCache::new(MlaCacheConfig {
        kv_lora_rank: 9,
        ..cache_config(&mla, 1, 64)
    })
    .unwrap();
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
                what: "kv_lora_rank",
                cache: 9,
                expected: 8,
            }
        ),
        "{err}"
    );
    // Rotary rows of the wrong count: an error that says so.
    let rows = rope.cos_sin(&[0, 1, 2]).unwrap();
    let err = mla
        .forward_with(
            &mut y,
            &inputs(2, h, 0),
            2,
            cache.layer_mut(0).unwrap(),
            &rows,
            AttentionPath::Naive,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::RopeRows {
                t: 3,
                expected_t: 2,
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("rotary"), "{err}");
    assert!(cache.is_empty());
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
        MlaCache::new(MlaCacheConfig {
            kv_lora_rank: 0,
            ..cache_config(&mla, 1, 4)
        }),
        Err(Error::ZeroDim {
            field: "kv_lora_rank"
        })
    ));
    // A cache of another model: the whole-cache check names the size that differs.
    let other = MlaCache::new(cache_config(&mla, 3, 64)).unwrap();
    let err = other.check_config(&cache_config(&mla, 2, 64)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CacheMismatch {
                what: "layers",
                cache: 3,
                expected: 2
            }
        ),
        "{err}"
    );
}

#[test]
fn mis_shaped_weights_are_errors_naming_the_weight() {
    let c = case("full_rope");
    let cfg = *c.mla.config();
    let g = Golden::load("mla");
    let eps = c.eps;
    let good = || MlaWeights {
        q: QProj::Full {
            q_proj: weight(&g, "full_rope.q_proj.weight"),
        },
        kv_a_proj_with_mqa: weight(&g, "full_rope.kv_a_proj_with_mqa.weight"),
        kv_a_layernorm: norm(&g, "full_rope.kv_a_layernorm.weight", eps),
        kv_b: weight(&g, "full_rope.kv_b_proj.weight").into(),
        o_proj: weight(&g, "full_rope.o_proj.weight"),
    };
    assert!(Mla::new(cfg, good()).is_ok());

    let mut w = good();
    w.kv_b = weight(&g, "full_rope.o_proj.weight").into();
    let err = Mla::new(cfg, w).unwrap_err();
    assert!(
        matches!(&err, Error::Core(deepblocks_core::Error::Shape { tensor, expected, found })
            if tensor == "kv_b_proj" && expected == &[4 * (16 + 12), 32] && found == &[64, 48]),
        "{err}"
    );

    let mut w = good();
    w.kv_a_layernorm = RmsNorm::ones(RmsNormConfig { hidden: 31, eps }).unwrap();
    assert!(matches!(
        Mla::new(cfg, w),
        Err(Error::Core(deepblocks_core::Error::Shape { tensor, .. })) if tensor == "kv_a_layernorm"
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

/// The attention of `t` queries over a latent cache as the report writes it (eq. 10, 11, 16–18),
/// per head and per key in f64: no expansion into a key matrix, no absorption, no shared code
/// with either core.
#[allow(clippy::too_many_arguments)]
fn attention_reference(
    q: &[f32],
    c_kv: &[f32],
    k_pe: &[f32],
    kv_b: &Weight,
    shape: &AttentionShape,
) -> Vec<f32> {
    let AttentionShape {
        t,
        s,
        n,
        d,
        r,
        v,
        c,
        ..
    } = *shape;
    let w = kv_b.to_f32_vec(); // [n·(d+v), c]
    let w_uk = |h: usize, i: usize, k: usize| w[(h * (d + v) + i) * c + k] as f64;
    let w_uv = |h: usize, i: usize, k: usize| w[(h * (d + v) + d + i) * c + k] as f64;
    let mut out = vec![0.0f32; t * n * v];
    for i in 0..t {
        let pos = s - t + i;
        for h in 0..n {
            let qi = &q[(i * n + h) * (d + r)..(i * n + h + 1) * (d + r)];
            let scores: Vec<f64> = (0..=pos)
                .map(|j| {
                    let cj = &c_kv[j * c..(j + 1) * c];
                    let k_nope =
                        (0..d).map(|a| (0..c).map(|k| w_uk(h, a, k) * cj[k] as f64).sum::<f64>());
                    let nope: f64 = qi[..d].iter().zip(k_nope).map(|(&x, y)| x as f64 * y).sum();
                    let rope: f64 = qi[d..]
                        .iter()
                        .zip(&k_pe[j * r..(j + 1) * r])
                        .map(|(&x, &y)| x as f64 * y as f64)
                        .sum();
                    shape.softmax_scale as f64 * (nope + rope)
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
            let z: f64 = e.iter().sum();
            for a in 0..v {
                out[(i * n + h) * v + a] = (0..=pos)
                    .map(|j| {
                        let cj = &c_kv[j * c..(j + 1) * c];
                        let value: f64 = (0..c).map(|k| w_uv(h, a, k) * cj[k] as f64).sum();
                        e[j] / z * value
                    })
                    .sum::<f64>() as f32;
            }
        }
    }
    out
}

/// llama.cpp's split of a stacked `kv_b_proj [n·(d+v), c]`, in its dtype (`KvB::split_stacked`
/// gives f32; bf16 values convert back exactly).
fn split_kv_b(kv_b: &Weight, n: usize, d: usize, v: usize) -> (Weight, Weight) {
    let [k_b, v_b] = KvB::split_stacked(kv_b, n, d, v).unwrap();
    let dtype = match kv_b.format() {
        deepblocks_core::WeightFormat::Float(dtype) => dtype,
        _ => DType::F32,
    };
    (k_b.to_dtype(dtype), v_b.to_dtype(dtype))
}

/// The split's shapes are checked, each named.
#[test]
fn split_kv_b_checks_its_shapes() {
    let w = |rows, cols| Weight::from_f32(vec![0.1; rows * cols], rows, cols).unwrap();
    let (n, c, d, v) = (2, 3, 4, 5);
    assert!(KvUpProjection::from_split(w(n * c, d), w(n * v, c), n, c, d, v).is_ok());
    let err = KvUpProjection::from_split(w(n * c, d + 1), w(n * v, c), n, c, d, v).unwrap_err();
    assert!(err.to_string().contains("attn_k_b"), "{err}");
    let err = KvUpProjection::from_split(w(n * c, d), w(n * v + 1, c), n, c, d, v).unwrap_err();
    assert!(err.to_string().contains("attn_v_b"), "{err}");
}

fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    deepblocks_testkit::det_values(len, seed as u32 + 1)
        .into_iter()
        .map(|x| x * scale)
        .collect()
}

/// `Q8_0` latent rows (codes, scales) of `rows[s, width]`, as a Q8_0 cache keeps them.
fn q8_rows(rows: &[f32], s: usize, width: usize) -> (Vec<u8>, Vec<f32>) {
    let stride = q8_row_codes(width);
    let (mut codes, mut scales) = (vec![0u8; s * stride], vec![0.0f32; s * stride / 32]);
    q8_quantize_rows(&mut codes, &mut scales, rows, width);
    (codes, scales)
}

/// How far (absolute and relative) the absorbed core over a `Q8_0` cache may land from the
/// reference on the same dequantized rows where its scores are integer products: its queries
/// (after `W_UK` is folded in) are rounded to 8-bit blocks, each value moving by up to 1/254 of
/// its block's largest. Measured on this test's values (`PROPTEST_CASES=2000`, about 560 cases
/// over Q8_0 rows): at most 4.8e-3 from the reference.
const Q8_QUERY_TOLERANCE: f32 = 1e-2;

/// How far (absolute and relative) the absorbed core over a bf16 cache may land from the
/// reference on the same rows where its products are AVX512-BF16 dot products
/// ([`deepblocks_core::bf16_dot`]): its queries (after `W_UK` is folded in) and its
/// probabilities are rounded to bf16, each value moving by up to 2⁻⁸ of itself. Measured on
/// this test's values (`PROPTEST_CASES=2000`, about 500 cases over bf16 rows, an AMD Zen 4): at
/// most 2.9e-3 from the reference.
const BF16_DOT_TOLERANCE: f32 = 1e-2;

/// `[c_kv_j | k_pe_j]` rows `[s, c + r]`, as the cache keeps them.
fn latent_rows(c_kv: &[f32], k_pe: &[f32], s: usize) -> Vec<f32> {
    let (c, r) = (c_kv.len() / s, k_pe.len() / s);
    (0..s)
        .flat_map(|j| {
            c_kv[j * c..(j + 1) * c]
                .iter()
                .chain(&k_pe[j * r..(j + 1) * r])
        })
        .copied()
        .collect()
}

type Core = fn(
    &mut [f32],
    &[f32],
    LatentRows<'_>,
    &KvUpProjection,
    &AttentionShape,
) -> deepblocks_mla::Result<()>;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Both cores over the same caller-owned latent cache equal the textbook reference: prefill
    /// (`t = s`), decode (`t = 1`), a cache of one token, partly cached prompts; f32 and bf16
    /// `kv_b_proj`; a cache in f32, bf16, f16 and Q8_0 (the reference reads the same rounded
    /// values). Over Q8_0 rows on a CPU with VNNI the absorbed core's scores are integer products
    /// with its queries quantized to 8 bits too, so it is held to [`Q8_QUERY_TOLERANCE`].
    #[test]
    fn attention_cores_equal_the_reference(
        seed in 0u64..10_000,
        n in 1usize..4,
        (d, r, v, c) in (1usize..6, 1usize..4, 1usize..6, 1usize..9),
        (s, back) in (1usize..12, 0usize..12),
        bf16 in any::<bool>(),
        cache_dtype in prop_oneof![
            Just(CacheDType::F32), Just(CacheDType::BF16), Just(CacheDType::F16), Just(CacheDType::Q8_0)
        ],
    ) {
        let r = 2 * r;
        let t = s - back.min(s - 1);
        let shape = AttentionShape { t, s, n, d, r, v, c, softmax_scale: ((d + r) as f32).powf(-0.5) };
        let q = values(t * n * (d + r), seed, 1.5);
        let rows = latent_rows(&values(s * c, seed + 1, 1.0), &values(s * r, seed + 2, 1.0), s);
        // The cache's element type, and the f32 values it holds.
        let (rows_bf16, rows_f16): (Vec<half::bf16>, Vec<half::f16>) = (
            rows.iter().map(|&x| half::bf16::from_f32(x)).collect(),
            rows.iter().map(|&x| half::f16::from_f32(x)).collect(),
        );
        let (codes, scales) = q8_rows(&rows, s, c + r);
        let (kv, held): (LatentRows<'_>, Vec<f32>) = match cache_dtype {
            CacheDType::F32 => (LatentRows::F32(&rows), rows.clone()),
            CacheDType::BF16 => (LatentRows::BF16(&rows_bf16), rows_bf16.iter().map(|x| x.to_f32()).collect()),
            CacheDType::F16 => (LatentRows::F16(&rows_f16), rows_f16.iter().map(|x| x.to_f32()).collect()),
            CacheDType::Q8_0 => {
                let kv = LatentRows::Q8_0 { codes: &codes, scales: &scales, width: c + r };
                let mut held = vec![0.0f32; s * (c + r)];
                kv.widen_into(&mut held, 0);
                (kv, held)
            }
        };
        let c_kv: Vec<f32> = (0..s).flat_map(|j| held[j * (c + r)..j * (c + r) + c].to_vec()).collect();
        let k_pe: Vec<f32> = (0..s).flat_map(|j| held[j * (c + r) + c..(j + 1) * (c + r)].to_vec()).collect();
        let kv_b = Weight::from_f32(values(n * (d + v) * c, seed + 3, 0.8), n * (d + v), c).unwrap();
        let kv_b = if bf16 { kv_b.to_dtype(DType::BF16) } else { kv_b };
        let want = attention_reference(&q, &c_kv, &k_pe, &kv_b, &shape);
        let (k_b, v_b) = split_kv_b(&kv_b, n, d, v);
        let stacked = KvUpProjection::new(kv_b.clone(), n, d, v).unwrap();
        let split = KvUpProjection::from_split(k_b, v_b, n, c, d, v).unwrap();
        for (form, up) in [("stacked", &stacked), ("split", &split)] {
            for (name, core) in [("naive", attention_naive as Core), ("absorbed", attention_absorbed)] {
                let mut got = vec![f32::NAN; t * n * v];
                core(&mut got, &q, kv, up, &shape).unwrap();
                let integer = name == "absorbed" && cache_dtype == CacheDType::Q8_0 && deepblocks_core::vnni();
                let dot = name == "absorbed" && cache_dtype == CacheDType::BF16 && deepblocks_core::bf16_dot();
                let rep = if integer {
                    close_report(&got, &want, Q8_QUERY_TOLERANCE, Q8_QUERY_TOLERANCE)
                } else if dot {
                    close_report(&got, &want, BF16_DOT_TOLERANCE, BF16_DOT_TOLERANCE)
                } else {
                    close_report(&got, &want, 2e-5, 1e-4)
                };
                prop_assert_eq!(rep.violations, 0, "{} {} {:?} t{} s{}: {}", form, name, cache_dtype, t, s, rep);
            }
        }
        // The split's kv_b_proj, built for the naive core, is the stacked weight again.
        prop_assert_eq!(split.kv_b_proj().to_f32_vec(), kv_b.to_f32_vec());
    }
}

/// On a bf16 cache whose widths fit the AMX tiles (`c + r` a multiple of 32, `c` of 16) the
/// absorbed core runs on the tile unit where the CPU has one (queries and probabilities in two
/// bf16 parts each) and still equals the f64 reference: prefill, decode and a partial prompt over
/// more keys than one block, several chunks.
#[test]
fn absorbed_attention_on_tile_shaped_widths_equals_the_reference() {
    let (n, d, r, v, c, s) = (3, 4, 32, 4, 32, 150);
    for t in [1, 7, s] {
        let shape = AttentionShape {
            t,
            s,
            n,
            d,
            r,
            v,
            c,
            softmax_scale: ((d + r) as f32).powf(-0.5),
        };
        assert_eq!(shape.tiles(DType::BF16), deepblocks_core::amx());
        let q = values(t * n * (d + r), 11, 1.5);
        let rows = latent_rows(&values(s * c, 12, 1.0), &values(s * r, 13, 1.0), s);
        let rows_bf16: Vec<half::bf16> = rows.iter().map(|&x| half::bf16::from_f32(x)).collect();
        let held: Vec<f32> = rows_bf16.iter().map(|x| x.to_f32()).collect();
        let c_kv: Vec<f32> = (0..s)
            .flat_map(|j| held[j * (c + r)..j * (c + r) + c].to_vec())
            .collect();
        let k_pe: Vec<f32> = (0..s)
            .flat_map(|j| held[j * (c + r) + c..(j + 1) * (c + r)].to_vec())
            .collect();
        let kv_b = Weight::from_f32(values(n * (d + v) * c, 14, 0.8), n * (d + v), c).unwrap();
        let want = attention_reference(&q, &c_kv, &k_pe, &kv_b, &shape);
        let up = KvUpProjection::new(kv_b, n, d, v).unwrap();
        let mut got = vec![f32::NAN; t * n * v];
        attention_absorbed(&mut got, &q, LatentRows::BF16(&rows_bf16), &up, &shape).unwrap();
        // Without the tile unit, the AVX512-BF16 dot products round the queries and the
        // probabilities to bf16 where the CPU has them.
        let dot = !deepblocks_core::amx() && deepblocks_core::bf16_dot();
        let tol = if dot { BF16_DOT_TOLERANCE } else { 1e-4 };
        let rep = close_report(&got, &want, tol, tol);
        assert_eq!(rep.violations, 0, "t {t}: {rep}");
    }
}

#[test]
fn attention_cores_check_their_slices() {
    let shape = AttentionShape {
        t: 2,
        s: 3,
        n: 1,
        d: 2,
        r: 2,
        v: 2,
        c: 3,
        softmax_scale: 0.5,
    };
    let up = KvUpProjection::new(Weight::from_f32(vec![0.1; 12], 4, 3).unwrap(), 1, 2, 2).unwrap();
    let mut out = vec![0.0; 4];
    // Rows for 3 tokens of c + r = 5 are 15 elements; 14 is refused, naming the sizes.
    let err = attention_absorbed(
        &mut out,
        &[0.0; 8],
        LatentRows::F32(&[0.0; 14]),
        &up,
        &shape,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::LatentRows {
                len: 14,
                s: 3,
                width: 5
            }
        ),
        "{err}"
    );
    let err = attention_naive(
        &mut out,
        &[0.0; 7],
        LatentRows::F32(&[0.0; 15]),
        &up,
        &shape,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Core(deepblocks_core::Error::Length { what, .. }) if what == "q"),
        "{err}"
    );
    let wrong = AttentionShape { c: 4, ..shape };
    let err = attention_naive(
        &mut out,
        &[0.0; 8],
        LatentRows::F32(&[0.0; 18]),
        &up,
        &wrong,
    )
    .unwrap_err();
    assert!(err.to_string().contains("kv_b_proj"), "{err}");
    let err =
        KvUpProjection::new(Weight::from_f32(vec![0.1; 9], 3, 3).unwrap(), 1, 2, 2).unwrap_err();
    assert!(err.to_string().contains("kv_b_proj"), "{err}");
}

/// Shapes with a zero dimension (no queries, no heads, no value features, a latent of no width)
/// compute nothing and panic nowhere: each core returns its empty or zero output.
#[test]
fn attention_cores_take_degenerate_shapes() {
    for (t, s, n, c, v) in [
        (0, 0, 2, 3, 2),
        (0, 3, 2, 3, 2),
        (2, 3, 0, 3, 2),
        (2, 3, 2, 3, 0),
        (2, 3, 2, 0, 2),
    ] {
        let (d, r) = (2, 2);
        let shape = AttentionShape {
            t,
            s,
            n,
            d,
            r,
            v,
            c,
            softmax_scale: 0.5,
        };
        let kv_b = Weight::from_f32(vec![0.1; n * (d + v) * c], n * (d + v), c).unwrap();
        let up = KvUpProjection::new(kv_b, n, d, v).unwrap();
        let rows = vec![0.3; s * (c + r)];
        let q = vec![0.2; t * n * (d + r)];
        for core in [attention_naive as Core, attention_absorbed] {
            let mut out = vec![f32::NAN; t * n * v];
            core(&mut out, &q, LatentRows::F32(&rows), &up, &shape).unwrap();
            assert!(
                out.iter().all(|x| x.is_finite()),
                "{t} {s} {n} {c} {v}: {out:?}"
            );
        }
    }
}

/// What the layer caches, recomputed from its weights with the naive kernels (not the layer's
/// code): `c_kv` is `kv_a_layernorm(first c of kv_a_proj_with_mqa(x))`, `k_pe` the last `r`
/// rotated at each token's position.
#[test]
fn cached_latents_are_the_normalised_latent_and_the_rotated_key() {
    for low_rank in [false, true] {
        let (config, weights, rope, max_pos) = random_weights(11, 2, low_rank, DType::F32);
        let (h, c, r) = (
            config.hidden_size,
            config.kv_lora_rank,
            config.qk_rope_head_dim,
        );
        let mla = Mla::new(config, weights.clone()).unwrap();
        let (prefix, t) = (3, 4);
        let s = prefix + t;
        let x = inputs(s, h, 5);
        let mut cache = new_cache(&mla, max_pos);
        let mut y = vec![0.0; s * h];
        for (start, len) in [(0, prefix), (prefix, t)] {
            mla.forward(
                &mut y[start * h..(start + len) * h],
                &x[start * h..(start + len) * h],
                len,
                cache.layer_mut(0).unwrap(),
                &rope,
                AttentionPath::Absorbed,
            )
            .unwrap();
        }
        let mut kv_a = vec![0.0; s * (c + r)];
        linear_naive(&mut kv_a, &x, &weights.kv_a_proj_with_mqa, s);
        let mut latent = vec![0.0; s * c];
        let mut want_k = vec![0.0; s * r];
        for j in 0..s {
            latent[j * c..(j + 1) * c].copy_from_slice(&kv_a[j * (c + r)..j * (c + r) + c]);
            want_k[j * r..(j + 1) * r].copy_from_slice(&kv_a[j * (c + r) + c..(j + 1) * (c + r)]);
        }
        let mut want_c = vec![0.0; s * c];
        deepblocks_norm::rms_norm_naive(
            &mut want_c,
            &latent,
            weights.kv_a_layernorm.weight(),
            weights.kv_a_layernorm.config().eps,
            s,
            c,
        );
        let positions: Vec<usize> = (0..s).collect();
        let rows = rope.cos_sin(&positions).unwrap();
        deepblocks_rope::rope_apply_inplace_strided_naive(
            &mut want_k,
            rows.cos(),
            rows.sin(),
            s,
            1,
            r,
            r,
            0,
            Layout::Interleaved,
        );
        let layer = cache.layer(0).unwrap();
        assert_close(&layer.c_kv_f32(), &want_c, 1e-5, 1e-5);
        assert_close(&layer.k_pe_f32(), &want_k, 1e-5, 1e-5);
    }
}

/// proptest's shrunk failure of `prefill_equals_step_by_step_decode` (recorded in
/// `tests/mla.proptest-regressions`): one head, five tokens, seed 0 — five prefill rows take the
/// tiled path while single steps take the GEMV path; they must still agree.
#[test]
fn regression_prefill_equals_decode_seed_0_one_head_five_tokens() {
    let (mla, rope, max_pos) = random_mla(0, 1, true, DType::F32);
    let h = mla.config().hidden_size;
    let t = 5;
    let x = inputs(t, h, 0);
    for path in [AttentionPath::Naive, AttentionPath::Absorbed] {
        let mut whole = vec![0.0; t * h];
        let mut cache = new_cache(&mla, max_pos);
        mla.forward(&mut whole, &x, t, cache.layer_mut(0).unwrap(), &rope, path)
            .unwrap();
        let mut steps = vec![0.0; t * h];
        let mut cache2 = new_cache(&mla, max_pos);
        for i in 0..t {
            mla.forward(
                &mut steps[i * h..(i + 1) * h],
                &x[i * h..(i + 1) * h],
                1,
                cache2.layer_mut(0).unwrap(),
                &rope,
                path,
            )
            .unwrap();
        }
        assert_close(&steps, &whole, 1e-5, 1e-5);
    }
}

#[test]
fn cache_appends_of_the_wrong_length_name_the_slice() {
    let config = MlaCacheConfig {
        num_layers: 1,
        kv_lora_rank: 4,
        qk_rope_head_dim: 2,
        max_positions: 8,
        dtype: CacheDType::F32,
    };
    let mut cache = MlaCache::new(config).unwrap();
    let layer = cache.layer_mut(0).unwrap();
    let err = layer.append(&[0.0; 7], &[0.0; 4], 2).unwrap_err();
    assert!(err.to_string().contains("c_kv"), "{err}");
    let err = layer.append(&[0.0; 8], &[0.0; 5], 2).unwrap_err();
    assert!(err.to_string().contains("k_pe"), "{err}");
    // A token count whose product wraps is a length error, not a panic.
    let err = layer.append(&[], &[], usize::MAX / 2).unwrap_err();
    assert!(err.to_string().contains("c_kv"), "{err}");
    assert!(layer.is_empty());
}

#[test]
fn a_full_context_message_survives_absurd_counts() {
    let config = MlaCacheConfig {
        num_layers: 1,
        kv_lora_rank: 4,
        qk_rope_head_dim: 2,
        max_positions: 8,
        dtype: CacheDType::F32,
    };
    let cache = MlaCache::new(config).unwrap();
    let err = cache.check_room(usize::MAX).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("would reach position {}", usize::MAX - 1)),
        "{err}"
    );
}

#[test]
fn a_cache_too_large_to_reserve_is_an_error() {
    // Sizes `validate` accepts (the byte count fits in 64 bits) but no allocator can give.
    let config = MlaCacheConfig {
        num_layers: 2,
        kv_lora_rank: 512,
        qk_rope_head_dim: 64,
        max_positions: usize::MAX / 4 / 576,
        dtype: CacheDType::F32,
    };
    config.validate().unwrap();
    let err = MlaCache::with_capacity(config, usize::MAX).unwrap_err();
    assert!(matches!(err, Error::CacheAlloc { .. }), "{err}");
    assert!(err.to_string().contains("could not reserve"), "{err}");
    // Without a capacity nothing is reserved up front.
    assert_eq!(MlaCache::new(config).unwrap().capacity_bytes(), 0);
}

#[test]
fn uneven_layers_are_reported() {
    let config = MlaCacheConfig {
        num_layers: 3,
        kv_lora_rank: 4,
        qk_rope_head_dim: 2,
        max_positions: 8,
        dtype: CacheDType::F32,
    };
    let mut cache = MlaCache::new(config).unwrap();
    cache.check_even().unwrap();
    for l in [0, 1] {
        cache
            .layer_mut(l)
            .unwrap()
            .append(&[0.0; 4], &[0.0; 2], 1)
            .unwrap();
    }
    let err = cache.check_even().unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnevenCache {
                layer: 2,
                len: 0,
                first: 1
            }
        ),
        "{err}"
    );
    cache.truncate(0).unwrap();
    cache.check_even().unwrap();
}

#[test]
fn rotary_rows_of_another_width_say_so() {
    let (mla, rope, _) = random_mla(2, 2, true, DType::F32);
    let h = mla.config().hidden_size;
    let r = mla.config().qk_rope_head_dim;
    let other = RopeTable::new(RopeConfig {
        dim: r + 2,
        ..*rope.config()
    })
    .unwrap();
    let rows = other.cos_sin(&[0]).unwrap();
    let mut cache = new_cache(&mla, 16);
    let mut y = vec![0.0; h];
    let err = mla
        .forward_with(
            &mut y,
            &inputs(1, h, 0),
            1,
            cache.layer_mut(0).unwrap(),
            &rows,
            AttentionPath::Absorbed,
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::RopeWidth { expected_r, .. } if expected_r == r),
        "{err}"
    );
    assert!(cache.is_empty());
}

/// A Q8_0 cache holds `Q8_0` values of what was appended (within half a step of each 32-value
/// block, rows of a width that is not whole blocks ending in a short block), counts its bytes
/// as codes plus f32 scales, and truncates, rolls back and clears by whole rows.
/// The attention kernels read rows 64 bytes at a time: each dtype's rows start on a cache line,
/// after the cache grows past its first room and after it is cut back.
#[test]
fn cached_rows_start_on_a_cache_line() {
    let (c, r) = (512, 64);
    for dtype in [
        CacheDType::F32,
        CacheDType::BF16,
        CacheDType::F16,
        CacheDType::Q8_0,
    ] {
        let config = MlaCacheConfig {
            num_layers: 1,
            kv_lora_rank: c,
            qk_rope_head_dim: r,
            max_positions: 64,
            dtype,
        };
        let mut cache = MlaCache::with_capacity(config, 1).unwrap();
        let (c_kv, k_pe) = (values(40 * c, 31, 1.0), values(40 * r, 32, 0.5));
        let layer = cache.layer_mut(0).unwrap();
        layer.append(&c_kv, &k_pe, 40).unwrap(); // past the room for one token
        layer.truncate(7).unwrap();
        let starts: Vec<usize> = match layer.rows() {
            LatentRows::F32(x) => vec![x.as_ptr() as usize],
            LatentRows::BF16(x) => vec![x.as_ptr() as usize],
            LatentRows::F16(x) => vec![x.as_ptr() as usize],
            LatentRows::Q8_0 { codes, scales, .. } => {
                vec![codes.as_ptr() as usize, scales.as_ptr() as usize]
            }
        };
        for start in starts {
            assert_eq!(
                start % 64,
                0,
                "{dtype}: rows start {} bytes past a line",
                start % 64
            );
        }
        assert_eq!(layer.rows().len(), 7 * (c + r));
    }
}

#[test]
fn a_q8_0_cache_keeps_8_bit_rows() {
    let (c, r) = (36, 4); // c + r = 40: one whole block and a short one per row
    let config = MlaCacheConfig {
        num_layers: 2,
        kv_lora_rank: c,
        qk_rope_head_dim: r,
        max_positions: 16,
        dtype: CacheDType::Q8_0,
    };
    assert_eq!(config.bytes_per_token(), 2 * (64 + 2 * 4));
    let mut cache = MlaCache::with_capacity(config, 2).unwrap();
    let (c_kv, k_pe) = (values(5 * c, 21, 1.0), values(5 * r, 22, 0.5));
    for l in 0..2 {
        cache.layer_mut(l).unwrap().append(&c_kv, &k_pe, 5).unwrap();
    }
    assert_eq!(cache.len(), 5);
    assert_eq!(cache.bytes(), 5 * config.bytes_per_token());
    assert!(cache.capacity_bytes() >= cache.bytes());
    let layer = cache.layer(1).unwrap();
    assert_eq!(layer.dtype(), CacheDType::Q8_0);
    let rows = latent_rows(&c_kv, &k_pe, 5);
    let mut held = vec![0.0f32; 5 * (c + r)];
    layer.rows().widen_into(&mut held, 0);
    for (j, (h, x)) in held.chunks(c + r).zip(rows.chunks(c + r)).enumerate() {
        for (block, (hb, xb)) in h.chunks(32).zip(x.chunks(32)).enumerate() {
            let step = xb.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
            for (a, b) in hb.iter().zip(xb) {
                assert!(
                    (a - b).abs() <= 0.5 * step * 1.01,
                    "row {j} block {block}: {a} vs {b}"
                );
            }
        }
    }
    assert_eq!(
        layer.c_kv_f32(),
        held.chunks(c + r)
            .flat_map(|h| h[..c].to_vec())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        layer.k_pe_f32(),
        held.chunks(c + r)
            .flat_map(|h| h[c..].to_vec())
            .collect::<Vec<_>>()
    );
    // A view that starts inside a row reads across the row's end.
    let mut part = vec![0.0f32; 50];
    layer.rows().widen_into(&mut part, 30);
    assert_eq!(part, held[30..80]);
    cache.truncate(3).unwrap();
    assert_eq!(
        (cache.len(), cache.bytes()),
        (3, 3 * config.bytes_per_token())
    );
    let mut again = vec![0.0f32; 3 * (c + r)];
    cache.layer(1).unwrap().rows().widen_into(&mut again, 0);
    assert_eq!(again, held[..3 * (c + r)]);
    cache.rollback(1);
    assert_eq!(cache.len(), 1);
    cache.clear();
    assert!(cache.is_empty());
    assert_eq!(
        deepblocks_mla::cache_dtype("Q8_0").unwrap(),
        CacheDType::Q8_0
    );
    assert_eq!(CacheDType::Q8_0.to_string(), "Q8_0");
}

/// Q8_0 rows handed to an attention core must be whole rows of the call's width with a scale
/// per 32 codes: anything else is an error naming the counts, from either core.
#[test]
fn q8_0_rows_that_do_not_fit_the_call_are_errors() {
    let shape = AttentionShape {
        t: 1,
        s: 2,
        n: 1,
        d: 2,
        r: 2,
        v: 2,
        c: 4,
        softmax_scale: 0.5,
    };
    let up = KvUpProjection::new(Weight::from_f32(vec![0.1; 16], 4, 4).unwrap(), 1, 2, 2).unwrap();
    let (q, mut out) = (vec![0.1f32; 4], vec![0.0f32; 2]);
    let codes = vec![128u8; 2 * 32];
    for (what, kv) in [
        (
            "one scale short",
            LatentRows::Q8_0 {
                codes: &codes,
                scales: &[1.0],
                width: 6,
            },
        ),
        (
            "another width",
            LatentRows::Q8_0 {
                codes: &codes[..24],
                scales: &[1.0; 2],
                width: 12,
            },
        ),
    ] {
        for core in [attention_naive as Core, attention_absorbed] {
            let err = core(&mut out, &q, kv, &up, &shape).unwrap_err();
            assert!(
                matches!(err, Error::LatentScales { .. } | Error::LatentRows { .. }),
                "{what}: {err}"
            );
        }
    }
    let err = attention_absorbed(
        &mut out,
        &q,
        LatentRows::Q8_0 {
            codes: &codes,
            scales: &[1.0],
            width: 6,
        },
        &up,
        &shape,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Q8_0 latent rows of width 6: 64 codes and 1 scales are not whole rows of 32 codes with one scale per 32"
    );
    // The right counts run.
    attention_absorbed(
        &mut out,
        &q,
        LatentRows::Q8_0 {
            codes: &codes,
            scales: &[1.0; 2],
            width: 6,
        },
        &up,
        &shape,
    )
    .unwrap();
}

/// A Q8_0 row is padded to whole blocks of codes: a layer of narrow rows whose f32 size fits but
/// whose padded rows would not is refused up front, not overflowed.
#[test]
fn a_q8_0_cache_of_padded_rows_too_large_to_address_is_an_error() {
    let config = MlaCacheConfig {
        num_layers: 1,
        kv_lora_rank: 1,
        qk_rope_head_dim: 1,
        max_positions: usize::MAX / 16,
        dtype: CacheDType::F32,
    };
    config.validate().unwrap(); // 8 bytes a row in f32
    let q8 = MlaCacheConfig {
        dtype: CacheDType::Q8_0,
        ..config
    };
    assert!(matches!(q8.validate(), Err(Error::TooLarge { .. }))); // 36 bytes a row
}

/// `Auto` at V2-Lite's shapes orders the prompts of the measured crossover (docs/mla.md, "Which
/// core, when") as measured on each kind of CPU: an f32 cache counts multiply-adds as they are; a
/// bf16 cache read in place on AVX-512 takes the absorbed core for 256 new tokens over 4,096, not
/// 512; on the tile unit or AVX512-BF16's dot products for 512 as well (each measured faster
/// there).
#[test]
fn auto_picks_the_core_measured_faster() {
    use AttentionPath::{Absorbed, Auto, Naive};
    let lite = |t, s| AttentionShape {
        t,
        s,
        n: 16,
        d: 128,
        r: 64,
        v: 128,
        c: 512,
        softmax_scale: 0.07,
    };
    let bf16_speedup = lite(1, 1).attention_speedup(CacheDType::BF16);
    let expected = if deepblocks_core::amx() {
        deepblocks_mla::TILE_SPEEDUP
    } else if deepblocks_core::bf16_dot() {
        deepblocks_mla::BF16_DOT_SPEEDUP
    } else if deepblocks_core::avx512() {
        deepblocks_mla::IN_PLACE_SPEEDUP
    } else {
        1.0
    };
    assert_eq!(bf16_speedup, expected);
    assert_eq!(lite(1, 1).attention_speedup(CacheDType::F32), 1.0);
    let integer = deepblocks_core::vnni() && deepblocks_core::quant::q8_rows::integer_mix();
    assert_eq!(
        lite(1, 1).attention_speedup(CacheDType::Q8_0),
        if integer {
            deepblocks_mla::INTEGER_SPEEDUP
        } else {
            1.0
        }
    );
    // Picks for an f32 cache, a bf16 cache read in place on AVX-512, one on the tile unit, a
    // Q8_0 cache in integers on AVX-512 VNNI, and a bf16 cache on AVX512-BF16's dot products.
    for (t, s, picks) in [
        (1, 4096, [Absorbed, Absorbed, Absorbed, Absorbed, Absorbed]),
        (64, 64, [Naive, Naive, Naive, Naive, Naive]),
        (256, 256, [Naive, Naive, Naive, Naive, Naive]),
        (2048, 2048, [Naive, Naive, Naive, Naive, Naive]),
        (64, 4096, [Absorbed, Absorbed, Absorbed, Absorbed, Absorbed]),
        (256, 4096, [Naive, Absorbed, Absorbed, Absorbed, Absorbed]),
        (512, 4096, [Naive, Naive, Absorbed, Absorbed, Absorbed]),
        (1024, 4096, [Naive, Naive, Naive, Absorbed, Naive]),
    ] {
        assert_eq!(
            Auto.resolve_for(&lite(t, s), CacheDType::Q8_0),
            if integer { picks[3] } else { picks[0] },
            "{t} over {s}, q8_0"
        );
        let sh = lite(t, s);
        assert_eq!(
            Auto.resolve_for(&sh, CacheDType::F32),
            picks[0],
            "{t} over {s}, f32"
        );
        let bf16_pick = if deepblocks_core::amx() {
            picks[2]
        } else if deepblocks_core::bf16_dot() {
            picks[4]
        } else if deepblocks_core::avx512() {
            picks[1]
        } else {
            picks[0]
        };
        assert_eq!(
            Auto.resolve_for(&sh, CacheDType::BF16),
            bf16_pick,
            "{t} over {s}, bf16"
        );
    }
}
