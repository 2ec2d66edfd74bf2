//! The grouped (prefill) and decode dispatch paths equal the naive per-token twin, for both
//! weight layouts and every stored dtype.

use deepblocks_core::{DType, Weight};
use deepblocks_moe::{Experts, Mlp, Moe, MoeConfig, RouterConfig, SharedExperts, TopkMethod};
use proptest::prelude::*;

/// A deterministic generator of values in [-1, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn weight(&mut self, rows: usize, cols: usize, std: f32, dtype: DType) -> Weight {
        let data = (0..rows * cols).map(|_| std * self.next()).collect();
        Weight::from_f32(data, rows, cols).unwrap().to_dtype(dtype)
    }
}

#[derive(Clone, Copy, Debug)]
struct Shape {
    t: usize,
    h: usize,
    i: usize,
    n_group: usize,
    group_size: usize,
    k: usize,
    n_shared: usize,
    packed: bool,
    dtype: DType,
    seed: u64,
}

fn shapes() -> impl Strategy<Value = Shape> {
    (
        1usize..12,
        1usize..40,
        1usize..24,
        1usize..4,
        1usize..5,
        0usize..3,
        any::<bool>(),
        prop_oneof![Just(DType::F32), Just(DType::BF16), Just(DType::F16)],
        any::<u64>(),
    )
        .prop_flat_map(
            |(t, h, i, n_group, group_size, n_shared, packed, dtype, seed)| {
                (1..=n_group * group_size).prop_map(move |k| Shape {
                    t,
                    h,
                    i,
                    n_group,
                    group_size,
                    k,
                    n_shared,
                    packed,
                    dtype,
                    seed,
                })
            },
        )
}

fn build(s: Shape) -> (Moe, Vec<f32>) {
    let e = s.n_group * s.group_size;
    let mut rng = Lcg(s.seed);
    let experts = if s.packed {
        Experts::from_packed(
            &rng.weight(e * 2 * s.i, s.h, 0.3, s.dtype),
            &rng.weight(e * s.h, s.i, 0.3, s.dtype),
            e,
        )
        .unwrap()
    } else {
        Experts::from_mlps(
            (0..e)
                .map(|_| {
                    Mlp::new(
                        rng.weight(s.i, s.h, 0.3, s.dtype),
                        rng.weight(s.i, s.h, 0.3, s.dtype),
                        rng.weight(s.h, s.i, 0.3, s.dtype),
                    )
                    .unwrap()
                })
                .collect(),
        )
        .unwrap()
    };
    let shared = if s.n_shared == 0 {
        SharedExperts::None
    } else {
        let w = s.i * s.n_shared;
        SharedExperts::Mlp(
            Mlp::new(
                rng.weight(w, s.h, 0.3, s.dtype),
                rng.weight(w, s.h, 0.3, s.dtype),
                rng.weight(s.h, w, 0.3, s.dtype),
            )
            .unwrap(),
        )
    };
    let topk_group = s.n_group.min(2);
    let k = s.k.min(topk_group * s.group_size);
    let config = MoeConfig {
        hidden_size: s.h,
        moe_intermediate_size: s.i,
        n_shared_experts: s.n_shared,
        router: RouterConfig {
            topk_method: TopkMethod::GroupLimitedGreedy {
                n_group: s.n_group,
                topk_group,
            },
            routed_scaling_factor: 16.0,
            ..RouterConfig::new(e, k)
        },
    };
    let gate = rng.weight(e, s.h, 1.0, s.dtype);
    let moe = Moe::new(config, gate, None, experts, shared).unwrap();
    let x = (0..s.t * s.h).map(|_| rng.next()).collect();
    (moe, x)
}

/// Whether two scores are closer than the rounding differences between the kernels.
fn near_tie(scores: &[f32]) -> bool {
    let mut s = scores.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    s.windows(2).any(|p| p[0] - p[1] < 1e-5)
}

fn assert_near(got: &[f32], want: &[f32], what: &str) {
    for (n, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{what} at {n}: {a} vs {b}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For one routing, the three dispatch paths give the same routed sum.
    #[test]
    fn grouped_and_decode_equal_naive(s in shapes()) {
        let (moe, x) = build(s);
        let routing = moe.router().route(&x, s.t).unwrap();
        let n = s.t * s.h;
        let mut naive = vec![f32::NAN; n];
        moe.routed_naive(&mut naive, &x, &routing).unwrap();
        let mut grouped = vec![f32::NAN; n];
        moe.routed_grouped(&mut grouped, &x, &routing).unwrap();
        let mut decode = vec![f32::NAN; n];
        moe.routed_decode(&mut decode, &x, &routing).unwrap();
        assert_near(&grouped, &naive, "grouped");
        assert_near(&decode, &naive, "decode");
    }

    /// The whole layer equals its naive twin, and each token alone equals its row of the batch.
    #[test]
    fn forward_equals_naive_and_rows_are_independent(s in shapes()) {
        let (moe, x) = build(s);
        let n = s.t * s.h;
        let mut fast = vec![0.0; n];
        let r_fast = moe.forward(&mut fast, &x, s.t).unwrap();
        let mut naive = vec![0.0; n];
        let r_naive = moe.forward_naive(&mut naive, &x, s.t).unwrap();
        let h = s.h;
        for token in 0..s.t {
            let rows = token * h..(token + 1) * h;
            // The paths round the gate logits differently; a token whose choice hangs on a near
            // tie may legitimately route differently, and is skipped.
            if r_fast.token_ids(token) == r_naive.token_ids(token) {
                assert_near(&fast[rows.clone()], &naive[rows.clone()], "forward");
            } else {
                prop_assert!(near_tie(r_naive.token_scores(token)));
            }
            let mut one = vec![0.0; h];
            let r_one = moe.forward(&mut one, &x[rows.clone()], 1).unwrap();
            if r_one.token_ids(0) == r_fast.token_ids(token) {
                assert_near(&one, &fast[rows], "single token");
            } else {
                prop_assert!(near_tie(r_fast.token_scores(token)));
            }
        }
    }
}

#[test]
fn routed_sum_is_the_weighted_sum_of_the_chosen_experts() {
    // Direct check of the layer's equation on one token: Σ_j g_j FFN_{id_j}(x), each expert run alone.
    let s = Shape {
        t: 1,
        h: 8,
        i: 4,
        n_group: 2,
        group_size: 3,
        k: 3,
        n_shared: 1,
        packed: true,
        dtype: DType::F32,
        seed: 7,
    };
    let (moe, x) = build(s);
    let routing = moe.router().route(&x, 1).unwrap();
    let mut want = vec![0.0f32; s.h];
    for (&j, &g) in routing.token_ids(0).iter().zip(routing.token_weights(0)) {
        let mut y = vec![0.0; s.h];
        moe.experts().get(j).forward_naive(&mut y, &x, 1).unwrap();
        for (w, v) in want.iter_mut().zip(&y) {
            *w += g * v;
        }
    }
    let SharedExperts::Mlp(shared) = moe.shared_experts() else {
        panic!("built with a shared expert")
    };
    let mut y = vec![0.0; s.h];
    shared.forward_naive(&mut y, &x, 1).unwrap();
    for (w, v) in want.iter_mut().zip(&y) {
        *w += v;
    }
    let mut got = vec![0.0; s.h];
    moe.forward(&mut got, &x, 1).unwrap();
    assert_near(&got, &want, "routed + shared sum");
}

#[test]
fn a_batch_concentrated_on_one_expert_dispatches_correctly() {
    // k = e: every token uses every expert, the largest groups the plan can make.
    let s = Shape {
        t: 33,
        h: 16,
        i: 8,
        n_group: 1,
        group_size: 4,
        k: 4,
        n_shared: 0,
        packed: false,
        dtype: DType::BF16,
        seed: 3,
    };
    let (moe, x) = build(s);
    let routing = moe.router().route(&x, s.t).unwrap();
    assert!(
        deepblocks_moe::stats::expert_counts(&routing)
            .iter()
            .all(|&c| c == s.t)
    );
    let mut naive = vec![0.0; s.t * s.h];
    moe.routed_naive(&mut naive, &x, &routing).unwrap();
    let mut grouped = vec![0.0; s.t * s.h];
    moe.routed_grouped(&mut grouped, &x, &routing).unwrap();
    assert_near(&grouped, &naive, "grouped");
}

#[test]
fn weight_bytes_count_every_matrix_once_in_its_stored_dtype() {
    for packed in [false, true] {
        for dtype in [DType::F32, DType::BF16] {
            let (h, i, e, n_shared) = (8, 6, 4, 2);
            let s = Shape {
                t: 1,
                h,
                i,
                n_group: 2,
                group_size: 2,
                k: 2,
                n_shared,
                packed,
                dtype,
                seed: 7,
            };
            let (moe, _) = build(s);
            // Router [e, h]; e experts of gate, up [i, h] and down [h, i]; the shared MLP of
            // width n_shared · i.
            let params = e * h + e * 3 * i * h + 3 * n_shared * i * h;
            let want = params * dtype.size_bytes();
            assert_eq!(moe.weight_bytes(), want, "packed {packed}, {dtype:?}");
            let shared_mlp = match moe.shared_experts() {
                SharedExperts::Mlp(m) => m.clone(),
                SharedExperts::None => unreachable!("built with shared experts"),
            };
            assert_eq!(
                shared_mlp.weight_bytes(),
                3 * n_shared * i * h * dtype.size_bytes()
            );
        }
    }
}
