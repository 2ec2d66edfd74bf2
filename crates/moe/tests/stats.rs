//! The balance statistics of DeepSeek-V2 §2.2.3 on hand-worked cases, and their invariants.

use deepblocks_moe::{Routing, stats};
use proptest::prelude::*;

#[test]
fn a_hand_worked_unbalanced_routing() {
    // N = 4 experts on D = 2 devices ({0, 1}, {2, 3}), K = 1, T = 2, M = 1.
    // Token 0 → expert 0, token 1 → expert 1: everything lands on device 0.
    let scores = vec![0.7, 0.1, 0.1, 0.1, 0.2, 0.6, 0.1, 0.1];
    let r = Routing::new(vec![0, 1], vec![1.0, 1.0], scores, 2, 1, 4).unwrap();
    let b = stats::balance(&r, 2, 1).unwrap();
    assert_eq!(b.counts, vec![1, 1, 0, 0]);
    // f_i = N / (K T) · count = 2 · count; P_i = mean score.
    assert_eq!(b.f, vec![2.0, 2.0, 0.0, 0.0]);
    let p = [0.45, 0.35, 0.1, 0.1];
    for (a, e) in b.p.iter().zip(p) {
        assert!((a - e).abs() < 1e-7, "{a} vs {e}");
    }
    assert!((b.expert_loss - (2.0 * 0.45 + 2.0 * 0.35)).abs() < 1e-7);
    // f'_d = mean f over the device = [2, 0]; P'_d = [0.8, 0.2].
    assert_eq!(b.device_f, vec![2.0, 0.0]);
    assert!((b.device_p[0] - 0.8).abs() < 1e-7 && (b.device_p[1] - 0.2).abs() < 1e-7);
    assert!((b.device_loss - 1.6).abs() < 1e-7);
    // Both tokens are sent to device 0: f''_0 = D / (M T) · 2 = 2.
    assert_eq!(b.device_tokens, vec![2, 0]);
    assert_eq!(b.comm_f, vec![2.0, 0.0]);
    assert!((b.comm_loss - 1.6).abs() < 1e-7);
}

#[test]
fn a_token_counts_once_per_device_it_reaches() {
    // K = 3: experts 0 and 1 are on device 0, expert 5 on device 2 (N = 6, D = 3, M = 2).
    let r = Routing::new(vec![0, 1, 5], vec![1.0; 3], vec![1.0 / 6.0; 6], 1, 3, 6).unwrap();
    let b = stats::balance(&r, 3, 2).unwrap();
    assert_eq!(b.device_tokens, vec![1, 0, 1]);
    // f''_d = D / (M T) · tokens = 1.5 · tokens.
    assert_eq!(b.comm_f, vec![1.5, 0.0, 1.5]);
}

proptest! {
    /// Σ_i f_i = N always; Σ_i P_i = 1 for softmax scores; Σ_d f''_d = D/(M·T) · Σ_t (devices
    /// token t reaches); the losses equal their definitions.
    #[test]
    fn invariants(
        (t, k, n_dev, per_dev, ids, raw) in (1usize..8, 1usize..4, 1usize..4, 1usize..4)
            .prop_filter("k experts must exist", |(_, k, d, p)| *k <= d * p)
            .prop_flat_map(|(t, k, d, p)| {
                let n = d * p;
                (
                    Just(t), Just(k), Just(d), Just(p),
                    proptest::collection::vec(Just((0..n).collect::<Vec<usize>>()).prop_shuffle(), t),
                    proptest::collection::vec(0.01f32..1.0, t * n),
                )
            })
    ) {
        let n = n_dev * per_dev;
        let ids: Vec<usize> = ids.iter().flat_map(|perm| perm[..k].to_vec()).collect();
        let mut scores = raw.clone();
        for row in scores.chunks_mut(n) {
            let s: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
        }
        let r = Routing::new(ids.clone(), vec![1.0; t * k], scores.clone(), t, k, n).unwrap();
        let m = n_dev.min(k);
        let b = stats::balance(&r, n_dev, m).unwrap();
        prop_assert!((b.f.iter().sum::<f64>() - n as f64).abs() < 1e-9);
        prop_assert!((b.p.iter().sum::<f64>() - 1.0).abs() < 1e-5);
        let reached: usize = (0..t)
            .map(|tok| {
                let mut d: Vec<usize> = ids[tok * k..(tok + 1) * k].iter().map(|i| i / per_dev).collect();
                d.sort_unstable();
                d.dedup();
                d.len()
            })
            .sum();
        let want = n_dev as f64 / (m * t) as f64 * reached as f64;
        prop_assert!((b.comm_f.iter().sum::<f64>() - want).abs() < 1e-9);
        let exp: f64 = b.f.iter().zip(&b.p).map(|(f, p)| f * p).sum();
        prop_assert!((b.expert_loss - exp).abs() < 1e-12);
        prop_assert_eq!(stats::expert_counts(&r).iter().sum::<usize>(), t * k);
    }
}
