//! Property tests: the math of each step, over random logits and configs.

use deepblocks_sample::{
    Sampler, SamplingConfig, distribution, rank_order, top_k_mask, top_k_mask_naive, top_p_mask,
    top_p_mask_naive,
};
use proptest::prelude::*;

/// 1..=48 logits in [-8, 8], some of them −∞ (never all), with ties likely (a 0.25 grid).
fn logits() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec((-32i32..=32, 0u8..10), 1..=48).prop_map(|v| {
        let mut x: Vec<f32> = v
            .iter()
            .map(|&(q, m)| {
                if m == 0 {
                    f32::NEG_INFINITY
                } else {
                    q as f32 * 0.25
                }
            })
            .collect();
        if x.iter().all(|v| *v == f32::NEG_INFINITY) {
            x[0] = 0.0;
        }
        x
    })
}

fn config() -> impl Strategy<Value = SamplingConfig> {
    (0.05f32..3.0, 0usize..12, 0.05f32..=1.0, 0.0f32..0.5).prop_map(
        |(temperature, top_k, top_p, min_p)| SamplingConfig {
            temperature,
            top_k,
            top_p,
            min_p,
            ..SamplingConfig::default()
        },
    )
}

/// `softmax(z / T)` in f64 with the platform's exp (an independent reference).
fn reference_softmax(x: &[f32], t: f32) -> Vec<f64> {
    let z: Vec<f64> = x.iter().map(|&v| v as f64 / t as f64).collect();
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|&v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Token ids ranked best first (higher logit, then lower id).
fn ranked(x: &[f32]) -> Vec<u32> {
    let z: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut idx: Vec<u32> = (0..x.len() as u32).collect();
    idx.sort_by(rank_order(&z));
    idx
}

proptest! {
    #[test]
    fn probabilities_are_a_distribution(x in logits(), c in config()) {
        let p = distribution(&c, &x, &[]).unwrap();
        let sum: f64 = p.iter().sum();
        prop_assert!((sum - 1.0).abs() < 1e-12, "sum {sum}");
        for (i, (&pi, &xi)) in p.iter().zip(&x).enumerate() {
            prop_assert!(pi >= 0.0);
            if xi == f32::NEG_INFINITY {
                prop_assert_eq!(pi, 0.0, "masked token {} has probability", i);
            }
        }
    }

    #[test]
    fn untruncated_distribution_is_softmax_over_temperature(x in logits(), t in 0.05f32..4.0) {
        let c = SamplingConfig { temperature: t, ..SamplingConfig::default() };
        let p = distribution(&c, &x, &[]).unwrap();
        let want = reference_softmax(&x, t);
        for (a, b) in p.iter().zip(&want) {
            prop_assert!(approx::abs_diff_eq!(*a, *b, epsilon = 1e-14), "{a} vs {b}");
        }
    }

    #[test]
    fn temperature_to_zero_is_argmax(x in logits(), seed in any::<u64>()) {
        let best = ranked(&x)[0];
        // T = 0 is exactly greedy, whatever the seed.
        let mut s = Sampler::new(SamplingConfig::greedy(), seed).unwrap();
        prop_assert_eq!(s.sample(&x, &[]).unwrap().token, best);
        // As T falls, the mass on the best logit value rises towards 1.
        let max = x[best as usize];
        let mass_on_max = |t: f32| {
            let c = SamplingConfig { temperature: t, ..SamplingConfig::default() };
            let p = distribution(&c, &x, &[]).unwrap();
            x.iter().zip(&p).filter(|(v, _)| **v == max).map(|(_, p)| p).sum::<f64>()
        };
        let mut last = 0.0;
        for t in [4.0, 1.0, 0.25, 0.05, 0.01, 0.001] {
            let m = mass_on_max(t);
            prop_assert!(m >= last - 1e-12, "mass on the max fell from {last} to {m} at T={t}");
            last = m;
        }
        // The grid step is 0.25: at T = 0.001 every other token is below e^-250.
        prop_assert!((last - 1.0).abs() < 1e-12);
    }

    #[test]
    fn top_k_never_picks_outside_the_top_k(
        x in logits(), k in 1usize..8, t in 0.1f32..3.0, seed in any::<u64>()
    ) {
        let c = SamplingConfig { temperature: t, top_k: k, ..SamplingConfig::default() };
        let allowed = &ranked(&x)[..k.min(x.len())];
        let p = distribution(&c, &x, &[]).unwrap();
        prop_assert!(p.iter().filter(|&&v| v > 0.0).count() <= k);
        let mut s = Sampler::new(c, seed).unwrap();
        for _ in 0..20 {
            let tok = s.sample(&x, &[]).unwrap().token;
            prop_assert!(allowed.contains(&tok), "token {tok} not in top {k}: {allowed:?}");
        }
    }

    #[test]
    fn top_k_selection_equals_the_full_sort(x in logits(), k in 0usize..50) {
        let z: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let (mut fast, mut naive) = (z.clone(), z.clone());
        top_k_mask(&mut fast, k);
        top_k_mask_naive(&mut naive, k);
        prop_assert_eq!(fast, naive);
    }

    #[test]
    fn top_p_selection_equals_the_full_sort(
        raw in prop::collection::vec(-40i32..=40, 1..3000), p in 0.01f32..=1.0,
    ) {
        // Up to 3000 tokens on a coarse grid (many ties), so the nucleus often outgrows the
        // first partially selected candidates.
        let z: Vec<f64> = raw.iter().map(|&q| q as f64 * 0.05).collect();
        let (mut fast, mut naive) = (z.clone(), z.clone());
        top_p_mask(&mut fast, p);
        top_p_mask_naive(&mut naive, p);
        prop_assert_eq!(fast, naive);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p(x in logits(), p in 0.01f32..=1.0, t in 0.2f32..3.0) {
        let c = SamplingConfig { temperature: t, top_p: p, ..SamplingConfig::default() };
        let kept = distribution(&c, &x, &[]).unwrap();
        let q = reference_softmax(&x, t);
        let order = ranked(&x);
        let n = kept.iter().filter(|&&v| v > 0.0).count();
        // The kept set is a prefix of the ranking...
        for (r, &i) in order.iter().enumerate() {
            prop_assert_eq!(kept[i as usize] > 0.0, r < n, "rank {} (id {})", r, i);
        }
        // ...whose mass reaches p, while one token fewer does not.
        let mass = |m: usize| order[..m].iter().map(|&i| q[i as usize]).sum::<f64>();
        prop_assert!(mass(n) >= p as f64 - 1e-12, "mass {} < p {p}", mass(n));
        prop_assert!(mass(n - 1) < p as f64 + 1e-12, "{} tokens already reach {p}", n - 1);
        // The kept tokens keep their relative probabilities.
        let total = mass(n);
        for &i in &order[..n] {
            let i = i as usize;
            prop_assert!(approx::relative_eq!(kept[i], q[i] / total, max_relative = 1e-12));
        }
    }

    #[test]
    fn min_p_keeps_tokens_above_a_fraction_of_the_best(x in logits(), m in 0.0f32..=1.0) {
        let c = SamplingConfig { min_p: m, ..SamplingConfig::default() };
        let kept = distribution(&c, &x, &[]).unwrap();
        let q = reference_softmax(&x, 1.0);
        let qmax = q.iter().copied().fold(0.0, f64::max);
        for (i, (&k, &qi)) in kept.iter().zip(&q).enumerate() {
            // Away from the boundary (1e-12 relative), kept ⟺ q_i ≥ m·q_max.
            let margin = qi - m as f64 * qmax;
            if margin.abs() > 1e-12 * qmax {
                prop_assert_eq!(k > 0.0, margin > 0.0, "id {}", i);
            }
        }
    }

    #[test]
    fn penalties_only_lower_seen_tokens(x in logits(), hist in prop::collection::vec(0u32..48, 0..20)) {
        let hist: Vec<u32> = hist.into_iter().filter(|&h| (h as usize) < x.len()).collect();
        let c = SamplingConfig {
            repetition_penalty: 1.5, frequency_penalty: 0.3, presence_penalty: 0.2,
            ..SamplingConfig::default()
        };
        let plain = distribution(&SamplingConfig::default(), &x, &[]).unwrap();
        let pen = distribution(&c, &x, &hist).unwrap();
        // Penalties only lower the logits of seen tokens, so an unseen token's probability can
        // only rise.
        for i in 0..x.len() {
            if !hist.contains(&(i as u32)) {
                prop_assert!(pen[i] >= plain[i] * (1.0 - 1e-12));
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens(x in logits(), c in config(), seed in any::<u64>()) {
        let mut a = Sampler::new(c, seed).unwrap();
        let mut b = Sampler::new(c, seed).unwrap();
        for _ in 0..10 {
            prop_assert_eq!(a.sample(&x, &[]).unwrap(), b.sample(&x, &[]).unwrap());
        }
    }

    #[test]
    fn logprob_is_the_log_of_the_drawn_tokens_probability(x in logits(), c in config(), seed in any::<u64>()) {
        let p = distribution(&c, &x, &[]).unwrap();
        let q = reference_softmax(&x, 1.0);
        let s = Sampler::new(c, seed).unwrap().sample(&x, &[]).unwrap();
        let i = s.token as usize;
        prop_assert!(p[i] > 0.0);
        prop_assert!((s.logprob as f64 - p[i].ln()).abs() < 1e-5, "{} vs {}", s.logprob, p[i].ln());
        prop_assert!((s.model_logprob as f64 - q[i].ln()).abs() < 1e-5);
    }
}
