//! Property tests: the math of RoPE, stated over every implementation.
//!
//! Angles are f32 products `f32(p)·θ_i`, as in transformers, so an identity that is exact in real
//! numbers (`R_1·R_p = R_{p+1}`, `⟨R_m q, R_n k⟩ = ⟨R_{m+s} q, R_{n+s} k⟩`) holds up to the rounding
//! of those angles: at most half an ulp of `p·θ_i ≤ p`, i.e. `p·2⁻²⁴` rad per angle. The tolerances
//! below are that bound, not a fudge factor.

use approx::assert_relative_eq;
use deepblocks_rope::{
    Layout, RopeConfig, RopeScaling, RopeTable, YarnScaling, rope_apply, rope_apply_inplace,
    rope_apply_inplace_strided, rope_apply_inplace_strided_naive, rope_apply_naive,
};
use deepblocks_testkit::strategies::values;
use proptest::prelude::*;

const EPS24: f64 = 1.0 / (1u64 << 24) as f64;

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::Interleaved), Just(Layout::HalfSplit)]
}

/// Plain RoPE or YaRN with random parameters (cos/sin factor not always 1).
fn scaling() -> impl Strategy<Value = RopeScaling> {
    prop_oneof![
        Just(RopeScaling::None),
        (
            1.0f64..64.0,
            prop::sample::select(vec![512usize, 2048, 4096]),
            (1.0f64..4.0, 8.0f64..64.0),
            prop::option::of(0.1f64..1.5),
            prop::option::of(0.1f64..1.5),
            any::<bool>(),
        )
            .prop_map(
                |(factor, l0, (slow, fast), mscale, mscale_all_dim, truncate)| {
                    RopeScaling::Yarn(YarnScaling {
                        beta_fast: fast,
                        beta_slow: slow,
                        mscale,
                        mscale_all_dim,
                        truncate,
                        ..YarnScaling::new(factor, l0)
                    })
                }
            ),
    ]
}

/// A table of rotary dimension `2·h` with `h ≤ 40` over 163,840 positions.
fn table() -> impl Strategy<Value = RopeTable> {
    (1usize..=40, 100.0f64..1e6, layout(), scaling()).prop_map(|(h, theta, layout, scaling)| {
        RopeTable::new(RopeConfig::new(2 * h, theta, 163_840, layout).with_scaling(scaling))
            .expect("valid config")
    })
}

/// A kernel case: shape (t, n, r, stride, offset) plus data for `x[t, n, stride]` and
/// `cos`/`sin[t, r/2]`.
#[allow(clippy::type_complexity)]
fn kernel_case() -> impl Strategy<
    Value = (
        (usize, usize, usize, usize, usize),
        Vec<f32>,
        Vec<f32>,
        Vec<f32>,
    ),
> {
    (1usize..=5, 1usize..=4, 1usize..=20, 0usize..=5)
        .prop_flat_map(|(t, n, h, extra)| (Just((t, n, h, extra)), 0..=extra))
        .prop_flat_map(|((t, n, h, extra), offset)| {
            let (r, stride) = (2 * h, 2 * h + extra);
            (
                Just((t, n, r, stride, offset)),
                values(t * n * stride, 4.0),
                values(t * h, 1.0),
                values(t * h, 1.0),
            )
        })
}

/// `(x_a, x_b)` of pair `i` for every head of `v[t·n·r]`.
fn pairs(v: &[f32], r: usize, layout: Layout) -> Vec<(f32, f32)> {
    v.chunks_exact(r)
        .flat_map(|head| {
            (0..r / 2).map(move |i| {
                let (a, b) = layout.pair(i, r);
                (head[a], head[b])
            })
        })
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

fn norm(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// Rotates one head `x[r]` at position `p`.
fn rotated(table: &RopeTable, x: &[f32], p: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    table.apply(&mut out, x, &[p], 1).expect("valid position");
    out
}

/// De-interleaves each head: `(x_0, x_1, x_2, x_3, …) ↦ (x_0, x_2, …, x_1, x_3, …)`, which moves
/// interleaved pair `i` to half-split pair `i`.
fn deinterleave(v: &[f32], r: usize) -> Vec<f32> {
    v.chunks_exact(r)
        .flat_map(|head| {
            let evens = head.iter().step_by(2);
            let odds = head.iter().skip(1).step_by(2);
            evens.chain(odds).copied().collect::<Vec<_>>()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Fast kernels and their naive twins evaluate the same products in the same order: equal
    /// bit for bit, and the strided one leaves everything outside the rotary part untouched.
    #[test]
    fn fast_kernels_equal_their_naive_twins(
        ((t, n, r, stride, offset), x, cos, sin) in kernel_case(),
        layout in layout(),
    ) {
        let mut fast = x.clone();
        let mut naive = x.clone();
        rope_apply_inplace_strided(&mut fast, &cos, &sin, t, n, r, stride, offset, layout);
        rope_apply_inplace_strided_naive(&mut naive, &cos, &sin, t, n, r, stride, offset, layout);
        prop_assert_eq!(&fast, &naive);
        for (row, (f, x)) in fast.chunks_exact(stride).zip(x.chunks_exact(stride)).enumerate() {
            prop_assert_eq!(&f[..offset], &x[..offset], "row {} before the rotary part", row);
            prop_assert_eq!(&f[offset + r..], &x[offset + r..], "row {} after it", row);
        }

        // Contiguous heads: out-of-place, in place and naive agree too.
        let xc: Vec<f32> = x.chunks_exact(stride).flat_map(|row| &row[offset..offset + r]).copied().collect();
        let mut out = vec![f32::NAN; xc.len()];
        let mut out_naive = vec![f32::NAN; xc.len()];
        rope_apply(&mut out, &xc, &cos, &sin, t, n, r, layout);
        rope_apply_naive(&mut out_naive, &xc, &cos, &sin, t, n, r, layout);
        let mut inplace = xc.clone();
        rope_apply_inplace(&mut inplace, &cos, &sin, t, n, r, layout);
        prop_assert_eq!(&out, &out_naive);
        prop_assert_eq!(&out, &inplace);
        let strided: Vec<f32> = fast.chunks_exact(stride).flat_map(|row| &row[offset..offset + r]).copied().collect();
        prop_assert_eq!(&out, &strided);
    }

    /// Each pair turns rigidly: its norm is kept, times the cos/sin factor.
    #[test]
    fn rotation_keeps_the_norm_of_each_pair(
        table in table(),
        p in 0usize..163_840,
        seed in values(80, 3.0),
    ) {
        let r = table.dim();
        let x = &seed[..r];
        let out = rotated(&table, x, p);
        let m = table.cos_sin_factor() as f64;
        for ((a, b), (c, d)) in pairs(x, r, table.layout()).into_iter().zip(pairs(&out, r, table.layout())) {
            let before = (a as f64).hypot(b as f64);
            let after = (c as f64).hypot(d as f64);
            prop_assert!((after - m * before).abs() <= 1e-6 * m * before + 1e-7,
                "pair ({a}, {b}) -> ({c}, {d}): |{after}| vs {m}·|{before}|");
        }
    }

    /// ⟨R_m q, R_n k⟩ depends on n − m only: shifting both positions changes nothing beyond the
    /// rounding of the four angles involved.
    #[test]
    fn scores_depend_on_the_offset_only(
        table in table(),
        (m, n, s) in (0usize..8192, 0usize..8192, 0usize..8192),
        qk in values(160, 2.0),
    ) {
        let r = table.dim();
        let (q, k) = (&qk[..r], &qk[80..80 + r]);
        let base = dot(&rotated(&table, q, m), &rotated(&table, k, n));
        let shifted = dot(&rotated(&table, q, m + s), &rotated(&table, k, n + s));
        let f2 = (table.cos_sin_factor() as f64).powi(2);
        let p_max = (m.max(n) + s) as f64;
        let tol = f2 * norm(q) * norm(k) * (4.0 * p_max * EPS24 + 1e-5);
        prop_assert!((base - shifted).abs() <= tol, "{base} vs {shifted} (tol {tol})");
    }

    /// YaRN with factor 1 is plain RoPE: no pair is interpolated (inv_freq agrees to the last
    /// bit up to transformers' blend `f·(1 − e) + f·e`, which can round one ulp away), and both
    /// the cos/sin factor and the softmax factor are 1.
    #[test]
    fn yarn_with_factor_one_is_plain_rope(
        (h, theta, layout) in (1usize..=64, 100.0f64..1e6, layout()),
        yarn in scaling().prop_filter("YaRN only", |s| matches!(s, RopeScaling::Yarn(_))),
        p in 0usize..4096,
        x in values(128, 2.0),
    ) {
        let RopeScaling::Yarn(yarn) = yarn else { unreachable!() };
        let plain = RopeConfig::new(2 * h, theta, 8192, layout);
        let one = plain.with_scaling(RopeScaling::Yarn(YarnScaling { factor: 1.0, ..yarn }));
        let (plain, one) = (RopeTable::new(plain).unwrap(), RopeTable::new(one).unwrap());
        for (a, b) in one.inv_freq().iter().zip(plain.inv_freq()) {
            prop_assert!((a - b).abs() <= f32::EPSILON * b, "{a} vs {b}");
        }
        prop_assert_eq!(one.cos_sin_factor(), 1.0);
        prop_assert_eq!(one.softmax_factor(), 1.0);
        prop_assert_eq!(one.softmax_scale(64).unwrap(), plain.softmax_scale(64).unwrap());
        let x = &x[..2 * h];
        let (a, b) = (rotated(&one, x, p), rotated(&plain, x, p));
        let tol = norm(x) as f32 * (p as f32 + 1.0) * 2.0 * f32::EPSILON + 1e-6;
        for (a, b) in a.iter().zip(&b) {
            prop_assert!((a - b).abs() <= tol, "{a} vs {b} at position {p}");
        }
    }

    /// Rotating by p and then by 1 is rotating by p + 1 (up to the rounding of three angles).
    #[test]
    fn rotating_at_p_then_by_one_is_rotating_at_p_plus_one(
        (h, theta, layout) in (1usize..=40, 100.0f64..1e6, layout()),
        p in 0usize..163_838,
        x in values(80, 2.0),
    ) {
        let table = RopeTable::new(RopeConfig::new(2 * h, theta, 163_840, layout)).unwrap();
        let x = &x[..2 * h];
        let twice = rotated(&table, &rotated(&table, x, p), 1);
        let once = rotated(&table, x, p + 1);
        for ((a, b), (c, d)) in pairs(&twice, 2 * h, layout).into_iter().zip(pairs(&once, 2 * h, layout)) {
            let tol = (a as f64).hypot(b as f64) * (3.0 * (p + 1) as f64 * EPS24 + 1e-6) + 1e-7;
            prop_assert!(((a - c) as f64).hypot((b - d) as f64) <= tol,
                "({a}, {b}) vs ({c}, {d}) at p = {p}");
        }
    }

    /// The two layouts are the same rotation up to the permutation that de-interleaves a head:
    /// interleaved(x) = P⁻¹ · half_split(P·x), bit for bit.
    #[test]
    fn layouts_agree_up_to_the_permutation(
        (h, n, t) in (1usize..=40, 1usize..=3, 1usize..=4),
        start in 0usize..163_000,
        scaling in scaling(),
        x in values(4 * 3 * 80, 2.0),
    ) {
        let r = 2 * h;
        let cfg = RopeConfig::new(r, 10_000.0, 163_840, Layout::Interleaved).with_scaling(scaling);
        let inter = RopeTable::new(cfg).unwrap();
        let half = RopeTable::new(RopeConfig { layout: Layout::HalfSplit, ..cfg }).unwrap();
        let x = &x[..t * n * r];
        let positions: Vec<usize> = (start..start + t).collect();
        let mut a = vec![0.0; x.len()];
        inter.apply(&mut a, x, &positions, n).unwrap();
        let mut b = vec![0.0; x.len()];
        half.apply(&mut b, &deinterleave(x, r), &positions, n).unwrap();
        prop_assert_eq!(deinterleave(&a, r), b);
        if r > 2 {
            // And they are not the same map: applying the wrong one changes the result.
            let mut wrong = vec![0.0; x.len()];
            half.apply(&mut wrong, x, &positions, n).unwrap();
            prop_assume!(start > 0 && x.iter().any(|&v| v != 0.0));
            prop_assert_ne!(wrong, a);
        }
    }
}

proptest! {
    // Each case builds a table of up to 163,840 rows: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A decode loop that extends the table one step at a time, a table built at once and a
    /// table that computes every row on the fly give the same bits.
    #[test]
    fn extending_step_by_step_equals_building_at_once(
        table in table(),
        start in 0usize..160_000,
        steps in 1usize..8,
        x in values(8 * 3 * 80, 2.0),
    ) {
        let config = *table.config();
        let (r, n) = (config.dim, 3);
        let x = &x[..steps * n * r];
        let positions: Vec<usize> = (start..start + steps).collect();

        let mut stepwise = RopeTable::new(config).unwrap();
        let mut by_step = Vec::new();
        for (j, &p) in positions.iter().enumerate() {
            stepwise.extend_to(p + 1).unwrap();
            let mut out = vec![0.0; n * r];
            stepwise.apply(&mut out, &x[j * n * r..(j + 1) * n * r], &[p], n).unwrap();
            by_step.extend(out);
        }
        let built = RopeTable::with_len(config, start + steps).unwrap();
        let mut at_once = vec![0.0; x.len()];
        built.apply(&mut at_once, x, &positions, n).unwrap();
        let mut lazy = vec![0.0; x.len()];
        table.apply(&mut lazy, x, &positions, n).unwrap();
        prop_assert_eq!(&by_step, &at_once);
        prop_assert_eq!(&lazy, &at_once);
        // Rows gathered out of order agree with the table's rows.
        let reversed: Vec<usize> = positions.iter().rev().copied().collect();
        let rows = built.cos_sin(&reversed).unwrap();
        let h = r / 2;
        for (j, &p) in reversed.iter().enumerate() {
            prop_assert_eq!(&rows.cos()[j * h..(j + 1) * h], &built.cos()[p * h..(p + 1) * h]);
            prop_assert_eq!(&rows.sin()[j * h..(j + 1) * h], &built.sin()[p * h..(p + 1) * h]);
        }
    }
}

#[test]
fn position_zero_is_the_identity_times_the_cos_sin_factor() {
    let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.37).sin()).collect();
    let plain = RopeTable::new(RopeConfig::new(64, 1e4, 8, Layout::Interleaved)).unwrap();
    assert_eq!(rotated(&plain, &x, 0), x);
    let yarn = YarnScaling {
        mscale: Some(1.0),
        mscale_all_dim: Some(0.707),
        ..YarnScaling::new(40.0, 4096)
    };
    let cfg = RopeConfig::new(64, 1e4, 8, Layout::HalfSplit).with_scaling(RopeScaling::Yarn(yarn));
    let table = RopeTable::new(cfg).unwrap();
    let m = table.cos_sin_factor();
    assert_relative_eq!(m as f64, 1.085_726_399, epsilon = 1e-7); // rounded to f32
    let expected: Vec<f32> = x.iter().map(|v| v * m).collect();
    assert_eq!(rotated(&table, &x, 0), expected);
}

#[test]
fn scores_depend_on_the_offset_only_far_beyond_4096_with_deepseek_yarn() {
    let yarn = YarnScaling {
        mscale: Some(0.707),
        mscale_all_dim: Some(0.707),
        ..YarnScaling::new(40.0, 4096)
    };
    let cfg = RopeConfig::new(64, 1e4, 163_840, Layout::Interleaved)
        .with_scaling(RopeScaling::Yarn(yarn));
    let table = RopeTable::with_len(cfg, 163_840).unwrap();
    let q: Vec<f32> = (0..64).map(|i| (i as f32 * 0.91).cos()).collect();
    let k: Vec<f32> = (0..64).map(|i| (i as f32 * 0.53 + 1.0).sin()).collect();
    for (m, n) in [(10, 3), (4100, 4000), (1000, 1000)] {
        let near = dot(&rotated(&table, &q, m), &rotated(&table, &k, n));
        for s in [100_000usize, 150_000, 163_839 - m.max(n)] {
            let far = dot(&rotated(&table, &q, m + s), &rotated(&table, &k, n + s));
            let tol = norm(&q) * norm(&k) * (4.0 * (m.max(n) + s) as f64 * EPS24 + 1e-5);
            assert!(
                (near - far).abs() <= tol,
                "m={m} n={n} s={s}: {near} vs {far}"
            );
        }
    }
}

#[test]
fn large_blocks_take_the_threaded_path_and_still_equal_naive() {
    // t·n·r = 128·128·64 (a DeepSeek-V2 prefill block) is above the threading threshold.
    let (t, n, r) = (128, 128, 64);
    let x: Vec<f32> = (0..t * n * r)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let cos: Vec<f32> = (0..t * r / 2).map(|i| (i as f32 * 0.01).cos()).collect();
    let sin: Vec<f32> = (0..t * r / 2).map(|i| (i as f32 * 0.01).sin()).collect();
    for layout in [Layout::Interleaved, Layout::HalfSplit] {
        let mut fast = vec![0.0; x.len()];
        let mut naive = vec![0.0; x.len()];
        rope_apply(&mut fast, &x, &cos, &sin, t, n, r, layout);
        rope_apply_naive(&mut naive, &x, &cos, &sin, t, n, r, layout);
        assert_eq!(fast, naive);
        let mut inplace = x.clone();
        rope_apply_inplace(&mut inplace, &cos, &sin, t, n, r, layout);
        assert_eq!(inplace, naive);
    }
}

#[test]
fn mla_shapes_rotate_in_place_inside_q_and_the_kv_latent_row() {
    // q[t, n, d + r] rotates its last r per head; [t, c + r] rotates its last r per token.
    let (t, n, d, r, c) = (3, 2, 5, 8, 6);
    let table = RopeTable::new(RopeConfig::new(r, 1e4, 1024, Layout::Interleaved)).unwrap();
    let positions = [40, 41, 42];
    let q: Vec<f32> = (0..t * n * (d + r)).map(|i| i as f32 * 0.1 - 3.0).collect();
    let mut q_rot = q.clone();
    table
        .apply_inplace_strided(&mut q_rot, &positions, n, d + r, d)
        .unwrap();
    let q_pe: Vec<f32> = q
        .chunks_exact(d + r)
        .flat_map(|h| &h[d..])
        .copied()
        .collect();
    let mut expected = vec![0.0; q_pe.len()];
    table.apply(&mut expected, &q_pe, &positions, n).unwrap();
    for (head, (rot, orig)) in q_rot
        .chunks_exact(d + r)
        .zip(q.chunks_exact(d + r))
        .enumerate()
    {
        assert_eq!(&rot[..d], &orig[..d], "q_nope of head row {head} untouched");
        assert_eq!(&rot[d..], &expected[head * r..(head + 1) * r]);
    }
    let kv: Vec<f32> = (0..t * (c + r)).map(|i| 1.0 - i as f32 * 0.05).collect();
    let mut kv_rot = kv.clone();
    table
        .apply_inplace_strided(&mut kv_rot, &positions, 1, c + r, c)
        .unwrap();
    let k_pe: Vec<f32> = kv
        .chunks_exact(c + r)
        .flat_map(|row| &row[c..])
        .copied()
        .collect();
    let mut expected = vec![0.0; k_pe.len()];
    table.apply(&mut expected, &k_pe, &positions, 1).unwrap();
    for (j, row) in kv_rot.chunks_exact(c + r).enumerate() {
        assert_eq!(&row[..c], &kv[j * (c + r)..j * (c + r) + c]);
        assert_eq!(&row[c..], &expected[j * r..(j + 1) * r]);
    }
}

#[test]
fn ndarray_wrapper_equals_the_slice_api_on_any_memory_order() {
    let table = RopeTable::new(RopeConfig::new(6, 1e4, 64, Layout::HalfSplit)).unwrap();
    let (t, n, r) = (3, 2, 6);
    let x: Vec<f32> = (0..t * n * r).map(|i| (i as f32 * 0.7).sin()).collect();
    let positions = [9, 2, 30];
    let mut expected = vec![0.0; x.len()];
    table.apply(&mut expected, &x, &positions, n).unwrap();
    let a = ndarray::Array3::from_shape_vec((t, n, r), x).unwrap();
    assert_eq!(
        table
            .apply_nd(a.view(), &positions)
            .unwrap()
            .as_slice()
            .unwrap(),
        &expected[..]
    );
    // The same values stored head-major: a non-contiguous [t, n, r] view.
    let head_major = a.permuted_axes([1, 0, 2]).as_standard_layout().into_owned();
    let view = head_major.view().permuted_axes([1, 0, 2]);
    assert!(!view.is_standard_layout());
    assert_eq!(
        table
            .apply_nd(view, &positions)
            .unwrap()
            .as_slice()
            .unwrap(),
        &expected[..]
    );
}
