//! Golden tests against Hugging Face transformers 5 (`scripts/golden/rope.py` →
//! `testdata/rope.safetensors`): inverse frequencies, attention factors, cos/sin tables at
//! positions up to 163,839, queries and keys rotated by DeepSeek-V2's `apply_rotary_emb`
//! (interleaved) and Llama's `apply_rotary_pos_emb` (half-split), and the softmax scale.

use deepblocks_rope::{
    DynamicNtkScaling, Error, Layout, LinearScaling, Llama3Scaling, RopeConfig, RopeScaling,
    RopeTable, YarnScaling,
};
use deepblocks_testkit::{Golden, close_report};

/// DeepSeek-V2's YaRN parameters (config.json `rope_scaling`).
fn deepseek_yarn() -> YarnScaling {
    YarnScaling {
        mscale: Some(0.707),
        mscale_all_dim: Some(0.707),
        ..YarnScaling::new(40.0, 4096)
    }
}

fn config(dim: usize, theta: f64, max: usize, scaling: RopeScaling) -> RopeConfig {
    RopeConfig::new(dim, theta, max, Layout::Interleaved).with_scaling(scaling)
}

fn positions(g: &Golden, name: &str) -> Vec<usize> {
    g.data(&format!("{name}.positions"))
        .iter()
        .map(|&p| p as usize)
        .collect()
}

/// Largest difference in units of the last place of the expected value.
fn max_ulps(actual: &[f32], expected: &[f32]) -> f32 {
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| {
            let ulp = f32::from_bits(e.abs().to_bits() + 1) - e.abs();
            (a - e).abs() / ulp
        })
        .fold(0.0, f32::max)
}

/// Compares a table with variant `name`: inv_freq within `inv_ulps` ulps, the attention factor
/// exactly (after rounding to f32), cos/sin within `atol`. Returns the max |Δ| of cos/sin.
fn check_table(g: &Golden, name: &str, table: &RopeTable, inv_ulps: f32, atol: f32) -> f32 {
    let inv = g.data(&format!("{name}.inv_freq"));
    let ulps = max_ulps(table.inv_freq(), inv);
    assert!(
        ulps <= inv_ulps,
        "{name}: inv_freq differs by {ulps} ulps (allowed {inv_ulps})"
    );
    let factor: f64 = g.meta(&format!("{name}.attention_factor"));
    assert_eq!(
        table.cos_sin_factor(),
        factor as f32,
        "{name}: attention factor"
    );

    let pos = positions(g, name);
    let rows = table.cos_sin(&pos).unwrap();
    let mut worst = 0.0f32;
    for (what, ours) in [("cos", rows.cos()), ("sin", rows.sin())] {
        let r = close_report(ours, g.data(&format!("{name}.{what}")), atol, 0.0);
        eprintln!("{name}.{what}: inv_freq max {ulps} ulp; {r}");
        assert_eq!(r.violations, 0, "{name}.{what}: {r}");
        worst = worst.max(r.max_abs);
    }
    worst
}

/// Rotates `{name}.q` [t, n, r] and `{name}.k` [t, n_k, r] and compares with `_out`.
fn check_rotation(g: &Golden, name: &str, table: &RopeTable, pos: &[usize]) {
    for which in ["q", "k"] {
        let shape = g.shape(&format!("{name}.{which}")).to_vec();
        let x = g.data(&format!("{name}.{which}"));
        let expected = g.data(&format!("{name}.{which}_out"));
        let n = shape[1];
        let mut out = vec![0.0; x.len()];
        table.apply(&mut out, x, pos, n).unwrap();
        let r = close_report(&out, expected, 2e-6, 1e-6);
        eprintln!("{name}.{which}_out {shape:?}: {r}");
        assert_eq!(r.violations, 0, "{name}.{which}_out: {r}");
        // In place and through the table rows gathered once: the same bits.
        let mut inplace = x.to_vec();
        table.apply_inplace(&mut inplace, pos, n).unwrap();
        assert_eq!(inplace, out);
    }
}

#[test]
fn plain_rope_matches_transformers_far_beyond_4096() {
    let g = Golden::load("rope");
    let table =
        RopeTable::with_len(config(64, 10_000.0, 163_840, RopeScaling::None), 4096).unwrap();
    check_table(&g, "default", &table, 0.0, 2e-7);
    let pos = positions(&g, "default");
    assert!(pos.iter().any(|&p| p >= 100_000));
    check_rotation(&g, "default", &table, &pos);
    let scale: f64 = g.meta("default.softmax_scale");
    assert_eq!(table.softmax_scale(96).unwrap(), scale as f32);
}

#[test]
fn deepseek_v2_yarn_matches_transformers_far_beyond_4096() {
    let g = Golden::load("rope");
    let cfg = config(64, 10_000.0, 163_840, RopeScaling::Yarn(deepseek_yarn()));
    let table = RopeTable::new(cfg).unwrap(); // no rows yet: every row is computed on the fly
    check_table(&g, "yarn", &table, 0.0, 2e-7);
    let pos = positions(&g, "yarn");
    check_rotation(&g, "yarn", &table, &pos);
    // The softmax scale of DeepseekV2Attention with qk_head_dim = 32 + 64.
    let scale: f64 = g.meta("yarn.softmax_scale");
    assert_eq!(table.softmax_scale(96).unwrap(), scale as f32);
    assert_eq!(table.cos_sin_factor(), 1.0);
    // A fully built table gives the same bits as rows computed on the fly.
    let full = RopeTable::with_len(cfg, 163_840).unwrap();
    assert_eq!(full.len(), 163_840);
    let rows = full.cos_sin(&pos).unwrap();
    let lazy = table.cos_sin(&pos).unwrap();
    assert_eq!((rows.cos(), rows.sin()), (lazy.cos(), lazy.sin()));
}

#[test]
fn yarn_cos_sin_factor_variants_match_transformers() {
    let g = Golden::load("rope");
    // mscale 1 over mscale_all_dim 0.707: a cos/sin factor of 1.0857.
    let yarn = YarnScaling {
        mscale: Some(1.0),
        ..deepseek_yarn()
    };
    let table = RopeTable::new(config(64, 1e4, 163_840, RopeScaling::Yarn(yarn))).unwrap();
    check_table(&g, "yarn_mscale", &table, 0.0, 3e-7);
    // Only mscale: transformers falls back to mscale(40, 1) = 1.3689 (DeepSeek's code would not).
    let yarn = YarnScaling {
        mscale_all_dim: None,
        ..deepseek_yarn()
    };
    let table = RopeTable::new(config(64, 1e4, 163_840, RopeScaling::Yarn(yarn))).unwrap();
    check_table(&g, "yarn_mscale_only", &table, 0.0, 3e-7);
    assert_eq!(table.softmax_factor(), 1.0);
}

#[test]
fn yarn_without_truncation_matches_transformers() {
    let g = Golden::load("rope");
    let yarn = YarnScaling {
        beta_fast: 24.0,
        beta_slow: 2.0,
        truncate: false,
        ..YarnScaling::new(16.0, 2048)
    };
    let (low, high) = yarn.correction_range(64, 1e4);
    assert!(low.fract() != 0.0 && high.fract() != 0.0, "({low}, {high})");
    let table = RopeTable::new(config(64, 1e4, 32_768, RopeScaling::Yarn(yarn))).unwrap();
    check_table(&g, "yarn_notrunc", &table, 0.0, 3e-7);
}

/// Kimi K2's YaRN (θ 50,000, factor 64 from 4,096, `beta_fast` = `beta_slow` = 1, both mscales 1):
/// the two correction dimensions are one and the same before rounding, one apart after it
/// (floor and ceil).
#[test]
fn yarn_with_equal_betas_matches_transformers() {
    let g = Golden::load("rope");
    let yarn = YarnScaling {
        factor: 64.0,
        original_max_position_embeddings: 4096,
        beta_fast: 1.0,
        beta_slow: 1.0,
        mscale: Some(1.0),
        mscale_all_dim: Some(1.0),
        ..deepseek_yarn()
    };
    let (low, high) = yarn.correction_range(64, 5e4);
    assert_eq!((low, high), (19.0, 20.0));
    let table = RopeTable::new(config(64, 5e4, 262_144, RopeScaling::Yarn(yarn))).unwrap();
    // θ = 50,000: torch's f32 `pow` rounds some of these frequencies one ulp off the correctly
    // rounded value we compute (the tables at θ = 10,000 agree bit for bit); cos and sin then
    // differ by at most position × that ulp, and by rounding elsewhere.
    let name = "yarn_equal_betas";
    let inv = g.data(&format!("{name}.inv_freq"));
    assert!(max_ulps(table.inv_freq(), inv) <= 1.0);
    let factor: f64 = g.meta(&format!("{name}.attention_factor"));
    assert_eq!(table.cos_sin_factor(), factor as f32);
    let pos = positions(&g, name);
    let rows = table.cos_sin(&pos).unwrap();
    let half = inv.len();
    for (what, ours) in [("cos", rows.cos()), ("sin", rows.sin())] {
        let want = g.data(&format!("{name}.{what}"));
        for (k, (&a, &e)) in ours.iter().zip(want).enumerate() {
            let (p, i) = (pos[k / half], k % half);
            let ulp_off = (table.inv_freq()[i] - inv[i]).abs();
            let bound = p as f32 * ulp_off * 1.01 + 3e-7;
            assert!(
                (a - e).abs() <= bound,
                "{what}[{p}, {i}]: {a} vs {e} (bound {bound})"
            );
        }
    }
}

#[test]
fn yarn_factor_one_matches_transformers() {
    let g = Golden::load("rope");
    let yarn = YarnScaling {
        factor: 1.0,
        ..deepseek_yarn()
    };
    let table = RopeTable::new(config(64, 1e4, 4096, RopeScaling::Yarn(yarn))).unwrap();
    check_table(&g, "yarn_factor1", &table, 0.0, 2e-7);
}

#[test]
fn linear_scaling_matches_transformers() {
    let g = Golden::load("rope");
    let scaling = RopeScaling::Linear(LinearScaling { factor: 4.0 });
    let table = RopeTable::new(config(64, 1e4, 16_384, scaling)).unwrap();
    check_table(&g, "linear", &table, 0.0, 2e-7);
}

#[test]
fn llama3_scaling_matches_transformers() {
    let g = Golden::load("rope");
    let scaling = RopeScaling::Llama3(Llama3Scaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    });
    let table = RopeTable::new(config(128, 500_000.0, 131_072, scaling)).unwrap();
    check_table(&g, "llama3", &table, 0.0, 2e-7);
}

#[test]
fn dynamic_ntk_follows_transformers_sequence_by_sequence() {
    let g = Golden::load("rope");
    let original: usize = g.meta("dynamic.original");
    let scaling = RopeScaling::DynamicNtk(DynamicNtkScaling {
        factor: 2.7,
        original_max_position_embeddings: original,
    });
    let mut table = RopeTable::new(config(64, 1e4, 32_768, scaling)).unwrap();
    // Each step: transformers' forward with these positions sees seq_len = max + 1.
    for (name, inv_ulps, atol) in [
        ("dynamic_init", 0.0, 2e-7),
        // torch's f32 `pow` of the grown (non-round) base 44349.832 is one ulp off the correctly
        // rounded power at pair 15, which makes inv_freq[15] 2 ulps off (≈ 9e-10); at position
        // 9000 that is ≈ 8e-6 rad of angle. Everything else agrees bit for bit.
        ("dynamic_grown", 2.0, 2e-5),
        ("dynamic_regrown", 2.0, 2e-5),
        ("dynamic_reset", 0.0, 2e-7),
    ] {
        let pos = positions(&g, name);
        let seq_len = pos.iter().max().unwrap() + 1;
        if name == "dynamic_grown" {
            // Not extended yet: the table refuses rather than rotate with stale frequencies.
            assert_eq!(
                table.cos_sin(&pos).unwrap_err(),
                Error::DynamicNotExtended {
                    position: seq_len - 1,
                    seq_len: original
                }
            );
        }
        table.extend_to(seq_len).unwrap();
        check_table(&g, name, &table, inv_ulps, atol);
    }
}

#[test]
fn half_split_matches_llama_rotate_half() {
    let g = Golden::load("rope");
    let cfg = RopeConfig::new(64, 10_000.0, 163_840, Layout::HalfSplit);
    let table = RopeTable::new(cfg).unwrap();
    let pos = positions(&g, "half");
    check_rotation(&g, "half", &table, &pos);
}
