//! Property tests of the router: they state what a routing must satisfy and run over the fast
//! kernel and its naive twin.

use approx::assert_relative_eq;
use deepblocks_core::{DType, Weight};
use deepblocks_moe::{
    Router, RouterConfig, Scoring, TopkMethod, Weighting, route_scores, route_scores_naive,
};
use proptest::prelude::*;

type SelectFn = fn(
    &mut [usize],
    &mut [f32],
    &[f32],
    Option<&[f32]>,
    &RouterConfig,
    usize,
) -> deepblocks_moe::Result<()>;

const KERNELS: [(&str, SelectFn); 2] = [("fast", route_scores), ("naive", route_scores_naive)];

/// A valid router configuration plus scores for `t` tokens (and a bias for noaux_tc). With
/// `coarse`, scores come from a set of 5 values so that ties are frequent.
fn case(coarse: bool) -> impl Strategy<Value = (RouterConfig, Vec<f32>, Option<Vec<f32>>, usize)> {
    (
        1usize..=4,
        1usize..=5,
        0usize..3,
        1usize..=5,
        any::<bool>(),
        0usize..4,
    )
        .prop_flat_map(move |(n_group, group_size, method, t, norm, weighting)| {
            let group_size = if method == 2 {
                group_size.max(2)
            } else {
                group_size
            };
            let e = n_group * group_size;
            (1..=n_group).prop_flat_map(move |topk_group| {
                let kmax = if method == 0 {
                    e
                } else {
                    topk_group * group_size
                };
                let value = if coarse {
                    (0u8..5).prop_map(|v| v as f32 / 4.0).boxed()
                } else {
                    (0.0f32..1.0).boxed()
                };
                (
                    1..=kmax,
                    proptest::collection::vec(value, t * e),
                    proptest::collection::vec(-0.5f32..0.5, e),
                    0.5f32..20.0,
                )
                    .prop_map(move |(k, scores, bias, rho)| {
                        let topk_method = match method {
                            0 => TopkMethod::Greedy,
                            1 => TopkMethod::GroupLimitedGreedy {
                                n_group,
                                topk_group,
                            },
                            _ => TopkMethod::NoauxTc {
                                n_group,
                                topk_group,
                            },
                        };
                        let config = RouterConfig {
                            topk_method,
                            norm_topk_prob: norm,
                            routed_scaling_factor: rho,
                            weighting: [
                                Weighting::NormalizeOrScale,
                                Weighting::NormalizeThenScale,
                                Weighting::ScaleOnly,
                                Weighting::AlwaysNormalizeThenScale,
                            ][weighting],
                            scoring_func: if method == 2 {
                                Scoring::Sigmoid
                            } else {
                                Scoring::Softmax
                            },
                            ..RouterConfig::new(e, k)
                        };
                        let bias = (method == 2).then_some(bias);
                        (config, scores, bias, t)
                    })
            })
        })
}

/// The selection values: scores plus the correction bias under noaux_tc.
fn choice(scores: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    match bias {
        Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
        None => scores.to_vec(),
    }
}

/// Group scores from the definitions: the best member, or the sum of the two best for noaux_tc.
fn group_scores(c: &[f32], config: &RouterConfig) -> Vec<f32> {
    let (n_group, _) = config.topk_method.groups().expect("grouped method");
    let size = config.n_routed_experts / n_group;
    c.chunks(size)
        .map(|g| {
            let mut v = g.to_vec();
            v.sort_by(|a, b| b.total_cmp(a));
            match config.topk_method {
                TopkMethod::NoauxTc { .. } => v[0] + v[1],
                _ => v[0],
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Every routing picks k distinct experts; grouped methods pick only inside groups that are
    /// among the topk_group best; no eligible expert left out beats a chosen one; and the
    /// weights are the unbiased scores of the chosen experts, scaled or normalised by the policy.
    #[test]
    fn routing_obeys_its_definition((config, scores, bias, t) in case(false)) {
        let (e, k) = (config.n_routed_experts, config.num_experts_per_tok);
        for (name, select) in KERNELS {
            let mut ids = vec![0; t * k];
            let mut w = vec![0.0; t * k];
            select(&mut ids, &mut w, &scores, bias.as_deref(), &config, t).unwrap();
            for token in 0..t {
                let s = &scores[token * e..(token + 1) * e];
                let c = choice(s, bias.as_deref());
                let chosen = &ids[token * k..(token + 1) * k];
                let mut distinct = chosen.to_vec();
                distinct.sort_unstable();
                distinct.dedup();
                prop_assert_eq!(distinct.len(), k, "{} token {}: {:?}", name, token, chosen);
                prop_assert!(chosen.iter().all(|&i| i < e));

                let eligible: Vec<bool> = match config.topk_method.groups() {
                    None => vec![true; e],
                    Some((n_group, topk_group)) => {
                        let size = e / n_group;
                        let g = group_scores(&c, &config);
                        // A group is kept iff fewer than topk_group groups beat it (ties aside).
                        let kept: Vec<bool> = (0..n_group)
                            .map(|a| g.iter().filter(|&&b| b > g[a]).count() < topk_group)
                            .collect();
                        for &i in chosen {
                            prop_assert!(kept[i / size], "{} token {}: expert {} in a dropped group; groups {:?}", name, token, i, g);
                        }
                        (0..e).map(|i| kept[i / size]).collect()
                    }
                };
                let worst = chosen.iter().map(|&i| c[i]).fold(f32::INFINITY, f32::min);
                for i in (0..e).filter(|i| eligible[*i] && !chosen.contains(i)) {
                    prop_assert!(c[i] <= worst, "{} token {}: left out {} ({}) beats {}", name, token, i, c[i], worst);
                }

                let raw: Vec<f32> = chosen.iter().map(|&i| s[i]).collect();
                let sum: f32 = raw.iter().sum();
                let rho = config.routed_scaling_factor;
                let normalize = config.norm_topk_prob
                    && match config.weighting {
                        Weighting::ScaleOnly => false,
                        Weighting::AlwaysNormalizeThenScale => true,
                        _ => k > 1,
                    };
                let then_scale = matches!(config.weighting, Weighting::NormalizeThenScale | Weighting::AlwaysNormalizeThenScale);
                let tw = &w[token * k..(token + 1) * k];
                for (j, (&got, &r)) in tw.iter().zip(&raw).enumerate() {
                    let want = match (normalize, config.weighting) {
                        (true, _) if then_scale => rho * r / (sum + 1e-20),
                        (true, _) => r / (sum + 1e-20),
                        (false, _) => rho * r,
                    };
                    prop_assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{} token {} slot {}: {} vs {}", name, token, j, got, want);
                }
                // The sum rule under normalisation.
                if normalize && sum > 1e-3 {
                    let total: f32 = tw.iter().sum();
                    let want = if then_scale { rho } else { 1.0 };
                    prop_assert!((total - want).abs() <= 1e-5 * want, "{}: Σw = {} vs {}", name, total, want);
                }
            }
        }
    }

    /// With frequent ties the fast kernel and the naive one still agree exactly on the ids (both
    /// break ties to the lower index) and closely on the weights.
    #[test]
    fn fast_and_naive_agree_even_with_ties((config, scores, bias, t) in case(true)) {
        let k = config.num_experts_per_tok;
        let run = |select: SelectFn| {
            let mut ids = vec![0; t * k];
            let mut w = vec![0.0; t * k];
            select(&mut ids, &mut w, &scores, bias.as_deref(), &config, t).unwrap();
            (ids, w)
        };
        let (ids_fast, w_fast) = run(route_scores);
        let (ids_naive, w_naive) = run(route_scores_naive);
        prop_assert_eq!(ids_fast, ids_naive);
        for (a, b) in w_fast.iter().zip(&w_naive) {
            prop_assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{} vs {}", a, b);
        }
    }

    /// The full router (gate linear in bf16 and f32, scoring, selection) against its naive twin:
    /// equal ids whenever the decision is not a near tie, close weights and scores.
    #[test]
    fn router_matches_its_naive_twin(
        (config, _, bias, t) in case(false),
        h in 1usize..40,
        seed in any::<u64>(),
        bf16 in any::<bool>(),
    ) {
        let e = config.n_routed_experts;
        let mut rng = seed;
        let mut next = move || {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            (rng >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let x: Vec<f32> = (0..t * h).map(|_| next()).collect();
        let gate = Weight::from_f32((0..e * h).map(|_| next()).collect(), e, h).unwrap();
        let gate = if bf16 { gate.to_dtype(DType::BF16) } else { gate };
        let router = Router::new(config.clone(), gate, bias).unwrap();
        let fast = router.route(&x, t).unwrap();
        let naive = router.route_naive(&x, t).unwrap();
        for (a, b) in fast.scores().iter().zip(naive.scores()) {
            prop_assert!((a - b).abs() < 1e-5, "scores {} vs {}", a, b);
        }
        let k = config.num_experts_per_tok;
        let mut skipped = 0;
        for token in 0..t {
            // Skip tokens whose choice hangs on values closer than the two paths' rounding.
            let c = choice(naive.token_scores(token), router.e_score_correction_bias());
            let close = |v: &[f32]| {
                let mut v = v.to_vec();
                v.sort_by(|a, b| b.total_cmp(a));
                // Exactly equal values (identical bf16 gate rows when h is tiny) are computed
                // identically by both paths and resolve by index; only near ties are ambiguous.
                v.windows(2).any(|p| p[0] > p[1] && p[0] - p[1] < 1e-6)
            };
            let groups_close = config.topk_method.groups().is_some() && close(&group_scores(&c, &config));
            if close(&c) || groups_close {
                skipped += 1;
                continue;
            }
            prop_assert_eq!(fast.token_ids(token), naive.token_ids(token));
            for (a, b) in fast.token_weights(token).iter().zip(naive.token_weights(token)) {
                prop_assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "weights {} vs {}", a, b);
            }
        }
        prop_assert_eq!(fast.ids().len(), t * k);
        // Near ties are rare with continuous data: most tokens are compared.
        prop_assert!(skipped * 4 <= t.max(4) * 3, "skipped {} of {}", skipped, t);
    }
}

#[test]
fn ties_go_to_the_lower_index_for_groups_and_experts() {
    // 8 experts, 4 groups of 2; every score equal: groups 0 and 1 are kept, experts 0, 1, 2.
    let config = RouterConfig {
        topk_method: TopkMethod::GroupLimitedGreedy {
            n_group: 4,
            topk_group: 2,
        },
        ..RouterConfig::new(8, 3)
    };
    let scores = [0.125f32; 8];
    for (name, select) in KERNELS {
        let (mut ids, mut w) = ([0; 3], [0.0; 3]);
        select(&mut ids, &mut w, &scores, None, &config, 1).unwrap();
        assert_eq!(ids, [0, 1, 2], "{name}");
        assert_eq!(w, [0.125; 3], "{name}");
    }
    // A tie between groups 1 and 3 for the second place: group 1 wins.
    let scores = [0.9f32, 0.0, 0.5, 0.0, 0.1, 0.1, 0.0, 0.5];
    for (name, select) in KERNELS {
        let (mut ids, mut w) = ([0; 3], [0.0; 3]);
        select(&mut ids, &mut w, &scores, None, &config, 1).unwrap();
        assert_eq!(ids, [0, 2, 1], "{name}");
    }
}

#[test]
fn group_limit_excludes_a_strong_expert_in_a_weak_group() {
    // The worked example of docs/moe.md, from scores (softmax of the logits).
    let logits = [2.0f32, 1.9, 2.5, -1.0, 2.2, 0.0, 0.1, 0.5];
    let mut s = logits;
    deepblocks_core::softmax_rows(&mut s, 1, 8);
    let config = RouterConfig {
        topk_method: TopkMethod::GroupLimitedGreedy {
            n_group: 4,
            topk_group: 2,
        },
        routed_scaling_factor: 16.0,
        ..RouterConfig::new(8, 3)
    };
    let (mut ids, mut w) = ([0; 3], [0.0; 3]);
    route_scores(&mut ids, &mut w, &s, None, &config, 1).unwrap();
    assert_eq!(ids, [2, 4, 5]);
    assert_relative_eq!(w[0], 16.0 * s[2], max_relative = 1e-6);
    // Greedy takes expert 0 instead of 5.
    let greedy = RouterConfig {
        topk_method: TopkMethod::Greedy,
        ..config
    };
    route_scores(&mut ids, &mut w, &s, None, &greedy, 1).unwrap();
    assert_eq!(ids, [2, 4, 0]);
}

#[test]
fn docs_worked_example_noaux_tc() {
    // docs/moe.md: the same logits through DeepSeek-V3's router. Expert 2 has the highest
    // sigmoid score but a bias of −0.3; group 3 scores its two best, not its best.
    let logits = [2.0f32, 1.9, 2.5, -1.0, 2.2, 0.0, 0.1, 0.5];
    let mut s = logits;
    Scoring::Sigmoid.apply_rows(&mut s, 1, 8);
    let bias = [0.0f32, 0.0, -0.3, 0.0, 0.0, 0.1, 0.2, 0.0];
    let config = RouterConfig {
        scoring_func: Scoring::Sigmoid,
        topk_method: TopkMethod::NoauxTc {
            n_group: 4,
            topk_group: 2,
        },
        norm_topk_prob: true,
        routed_scaling_factor: 2.5,
        weighting: Weighting::NormalizeThenScale,
        ..RouterConfig::new(8, 3)
    };
    for (name, select) in KERNELS {
        let (mut ids, mut w) = ([0; 3], [0.0; 3]);
        select(&mut ids, &mut w, &s, Some(&bias), &config, 1).unwrap();
        assert_eq!(ids, [4, 0, 1], "{name}");
        for (a, b) in w.iter().zip([0.848_991, 0.830_646, 0.820_362]) {
            assert!((a - b).abs() < 2e-6, "{name}: {a} vs {b}");
        }
    }
    // Under DeepSeek-V2's rule the same flags normalise without scaling.
    let v2 = RouterConfig {
        weighting: Weighting::NormalizeOrScale,
        ..config
    };
    let (mut ids, mut w) = ([0; 3], [0.0; 3]);
    route_scores(&mut ids, &mut w, &s, Some(&bias), &v2, 1).unwrap();
    for (a, b) in w.iter().zip([0.339_597, 0.332_259, 0.328_145]) {
        assert!((a - b).abs() < 2e-6, "{a} vs {b}");
    }
}

/// Kept from a shrunk proptest case: with h = 1 and a bf16 gate, two experts can have identical
/// gate rows, hence exactly equal logits for every token. Both paths compute those equal values
/// identically and give the tie to the lower index.
#[test]
fn identical_gate_rows_tie_identically_in_both_paths() {
    let gate = Weight::from_f32(vec![0.25, -0.5, 0.75, 0.75, 0.1], 5, 1)
        .unwrap()
        .to_dtype(DType::BF16);
    let router = Router::new(RouterConfig::new(5, 2), gate, None).unwrap();
    let x = [1.0f32, -1.0, 0.5, 2.0];
    let fast = router.route(&x, 4).unwrap();
    let naive = router.route_naive(&x, 4).unwrap();
    assert_eq!(fast.ids(), naive.ids());
    // Positive inputs: experts 2 and 3 tie at the top and come out as [2, 3].
    assert_eq!(fast.token_ids(0), &[2, 3]);
    assert_eq!(fast.token_weights(0)[0], fast.token_weights(0)[1]);
    // x = −1: logits −0.25, 0.5, −0.75, −0.75, −0.1, so experts 1 then 4.
    assert_eq!(fast.token_ids(1), &[1, 4]);
}
