//! Golden tests against Hugging Face transformers 5 (fixtures from `scripts/golden/moe_*.py`), and
//! a DeepSeek-V3 `noaux_tc` check against an independent reference written here from the
//! formulas.
//!
//! torch.topk(sorted=False) gives the k ids in no particular order, so ids are compared as sets
//! and weights matched by id. The fixtures have no near ties (the script checks), so the
//! comparison does not depend on tie-breaking.

use deepblocks_core::{DType, SafeTensorsStore, Weight};
use deepblocks_moe::{
    Experts, Mlp, Moe, MoeConfig, Router, RouterConfig, Routing, Scoring, SharedExperts,
    TopkMethod, Weighting,
};
use deepblocks_testkit::{Golden, close_report, testdata_dir};

/// The fixture's router configuration from its metadata (DeepSeek's weighting rule).
fn router_config(g: &Golden) -> RouterConfig {
    let (n_group, topk_group) = (g.meta("n_group"), g.meta("topk_group"));
    let topk_method = match g.meta::<String>("topk_method").as_str() {
        "greedy" => TopkMethod::Greedy,
        "group_limited_greedy" => TopkMethod::GroupLimitedGreedy {
            n_group,
            topk_group,
        },
        "noaux_tc" => TopkMethod::NoauxTc {
            n_group,
            topk_group,
        },
        other => panic!("unknown topk_method {other}"),
    };
    RouterConfig {
        scoring_func: match g.meta::<String>("scoring_func").as_str() {
            "softmax" => Scoring::Softmax,
            "sigmoid" => Scoring::Sigmoid,
            other => panic!("unknown scoring_func {other}"),
        },
        topk_method,
        norm_topk_prob: g.meta::<String>("norm_topk_prob") == "True",
        routed_scaling_factor: g.meta("routed_scaling_factor"),
        weighting: Weighting::NormalizeOrScale,
        ..RouterConfig::new(g.meta("n_routed_experts"), g.meta("num_experts_per_tok"))
    }
}

/// The fixture's MoE layer configuration from its metadata.
fn config(g: &Golden) -> MoeConfig {
    MoeConfig {
        hidden_size: g.meta("hidden_size"),
        moe_intermediate_size: g.meta("moe_intermediate_size"),
        n_shared_experts: g.meta("n_shared_experts"),
        router: router_config(g),
    }
}

fn f32_weight(g: &Golden, name: &str, rows: usize, cols: usize) -> Weight {
    Weight::from_f32(g.data(name).to_vec(), rows, cols).unwrap()
}

/// Per token, (id, weight) pairs sorted by id.
fn by_id(ids: &[usize], weights: &[f32], t: usize, k: usize) -> Vec<Vec<(usize, f32)>> {
    (0..t)
        .map(|token| {
            let mut v: Vec<(usize, f32)> = (0..k)
                .map(|j| (ids[token * k + j], weights[token * k + j]))
                .collect();
            v.sort_by_key(|p| p.0);
            v
        })
        .collect()
}

/// Asserts that `routing` picks the fixture's experts (as sets) with its weights (matched by
/// id) and returns the max weight difference.
fn check_routing(routing: &Routing, g: &Golden, what: &str) -> f32 {
    let (t, k) = (routing.tokens(), routing.k());
    let want_ids: Vec<usize> = g.data("topk_ids").iter().map(|&v| v as usize).collect();
    let got = by_id(routing.ids(), routing.weights(), t, k);
    let want = by_id(&want_ids, g.data("topk_weights"), t, k);
    let mut max = 0.0f32;
    for (token, (a, b)) in got.iter().zip(&want).enumerate() {
        let ids_a: Vec<usize> = a.iter().map(|p| p.0).collect();
        let ids_b: Vec<usize> = b.iter().map(|p| p.0).collect();
        assert_eq!(ids_a, ids_b, "{what}: token {token} experts");
        for (&(_, wa), &(_, wb)) in a.iter().zip(b) {
            max = max.max((wa - wb).abs());
        }
    }
    eprintln!("{what}: routing matches; max |Δweight| = {max:e}");
    max
}

fn report(what: &str, got: &[f32], want: &[f32], atol: f32) -> f32 {
    let r = close_report(got, want, atol, 1e-5);
    eprintln!("{what}: {r}");
    assert_eq!(r.violations, 0, "{what}: {r}");
    r.max_abs
}

/// The fixture's layer, experts built from transformers 5's packed tensors.
fn packed_moe(g: &Golden, dtype: DType) -> Moe {
    let c = config(g);
    let (e, h, i) = (
        c.router.n_routed_experts,
        c.hidden_size,
        c.moe_intermediate_size,
    );
    let w = |name: &str, rows, cols| f32_weight(g, name, rows, cols).to_dtype(dtype);
    let experts = Experts::from_packed(
        &w("experts.gate_up_proj", e * 2 * i, h),
        &w("experts.down_proj", e * h, i),
        e,
    )
    .unwrap();
    let width = i * c.n_shared_experts;
    let shared = Mlp::new(
        w("shared_experts.gate_proj.weight", width, h),
        w("shared_experts.up_proj.weight", width, h),
        w("shared_experts.down_proj.weight", h, width),
    )
    .unwrap();
    Moe::new(
        c,
        w("gate.weight", e, h),
        None,
        experts,
        SharedExperts::Mlp(shared),
    )
    .unwrap()
}

/// The same layer with one `Mlp` per expert, as the hub checkpoints store them
/// (`mlp.experts.{j}.gate_proj.weight` ...): split here out of the packed tensor.
fn per_expert_moe(g: &Golden) -> Moe {
    let c = config(g);
    let (e, h, i) = (
        c.router.n_routed_experts,
        c.hidden_size,
        c.moe_intermediate_size,
    );
    let gate_up = g.data("experts.gate_up_proj"); // [e, 2i, h]
    let down = g.data("experts.down_proj"); // [e, h, i]
    let mlps = (0..e)
        .map(|j| {
            let base = j * 2 * i * h;
            Mlp::new(
                Weight::from_f32(gate_up[base..base + i * h].to_vec(), i, h).unwrap(),
                Weight::from_f32(gate_up[base + i * h..base + 2 * i * h].to_vec(), i, h).unwrap(),
                Weight::from_f32(down[j * h * i..(j + 1) * h * i].to_vec(), h, i).unwrap(),
            )
            .unwrap()
        })
        .collect();
    let packed = packed_moe(g, DType::F32);
    Moe::new(
        c,
        f32_weight(g, "gate.weight", e, h),
        None,
        Experts::from_mlps(mlps).unwrap(),
        packed.shared_experts().clone(),
    )
    .unwrap()
}

/// Runs every path of `moe` on the fixture and compares with transformers.
fn check_layer(g: &Golden, moe: &Moe, what: &str, atol: f32) {
    let (t, h) = (g.meta::<usize>("t"), moe.config().hidden_size);
    let x = g.data("x");
    let want = g.data("out");

    let mut logits = vec![0.0; t * moe.router().n_experts()];
    moe.router().gate_logits(&mut logits, x, t).unwrap();
    report(
        &format!("{what} router logits"),
        &logits,
        g.data("router_logits"),
        1e-5,
    );

    let mut out = vec![0.0; t * h];
    let routing = moe.forward(&mut out, x, t).unwrap();
    check_routing(&routing, g, &format!("{what} forward"));
    report(&format!("{what} forward (grouped)"), &out, want, atol);

    let mut out_naive = vec![0.0; t * h];
    let routing_naive = moe.forward_naive(&mut out_naive, x, t).unwrap();
    check_routing(&routing_naive, g, &format!("{what} forward_naive"));
    report(&format!("{what} forward_naive"), &out_naive, want, atol);

    // Decode: one token at a time.
    let mut decoded = vec![0.0; t * h];
    for token in 0..t {
        moe.forward(
            &mut decoded[token * h..(token + 1) * h],
            &x[token * h..(token + 1) * h],
            1,
        )
        .unwrap();
    }
    report(
        &format!("{what} forward one token at a time (decode)"),
        &decoded,
        want,
        atol,
    );
}

#[test]
fn v2_group_limited_greedy_with_scale_16_matches_transformers() {
    let g = Golden::load("moe_v2_group");
    assert_eq!(g.meta::<f32>("routed_scaling_factor"), 16.0);
    let moe = packed_moe(&g, DType::F32);
    check_layer(&g, &moe, "v2 group f32 packed", 2e-5);
    check_layer(&g, &per_expert_moe(&g), "v2 group f32 per-expert", 2e-5);

    // The fixture can tell group-limited routing from plain top-k: it differs on many tokens.
    let t = g.meta::<usize>("t");
    let greedy: Vec<usize> = g.data("greedy_ids").iter().map(|&v| v as usize).collect();
    let mut out = vec![0.0; t * moe.config().hidden_size];
    let routing = moe.forward(&mut out, g.data("x"), t).unwrap();
    let k = routing.k();
    let differ = (0..t)
        .filter(|&token| {
            let mut a = routing.token_ids(token).to_vec();
            let mut b = greedy[token * k..(token + 1) * k].to_vec();
            a.sort_unstable();
            b.sort_unstable();
            a != b
        })
        .count();
    assert!(differ >= t / 4, "only {differ} tokens differ from greedy");
}

#[test]
fn v2_group_weights_are_scaled_not_normalised() {
    // With norm_topk_prob = false both DeepSeek's rule and transformers' multiply by 16: the
    // weights of a token sum to 16 · (its k scores), well above 1.
    let g = Golden::load("moe_v2_group");
    let moe = packed_moe(&g, DType::F32);
    let t = g.meta::<usize>("t");
    let routing = moe.router().route(g.data("x"), t).unwrap();
    for token in 0..t {
        let s = routing.token_scores(token);
        let sum_w: f32 = routing.token_weights(token).iter().sum();
        let sum_s: f32 = routing.token_ids(token).iter().map(|&i| s[i]).sum();
        assert!(
            (sum_w - 16.0 * sum_s).abs() < 1e-4,
            "token {token}: {sum_w} vs 16 · {sum_s}"
        );
        assert!(sum_w > 1.0);
    }
}

#[test]
fn v2_greedy_bf16_from_the_store_matches_transformers() {
    // The fixture stores the weights in bf16 (torch ran in f32 on the widened values): load
    // them through the store exactly as the model crate will, packed experts viewed as 2-D.
    let g = Golden::load("moe_v2_greedy");
    let store =
        SafeTensorsStore::open_file(testdata_dir().join("moe_v2_greedy.safetensors")).unwrap();
    let c = config(&g);
    let (e, h, i) = (
        c.router.n_routed_experts,
        c.hidden_size,
        c.moe_intermediate_size,
    );
    let gate_up = store
        .weight_reshaped("experts.gate_up_proj", &[e, 2 * i, h], e * 2 * i, h)
        .unwrap();
    let down = store
        .weight_reshaped("experts.down_proj", &[e, h, i], e * h, i)
        .unwrap();
    assert_eq!(gate_up.format(), DType::BF16.into());
    let experts = Experts::from_packed(&gate_up, &down, e).unwrap();
    let width = i * c.n_shared_experts;
    let shared = Mlp::new(
        store
            .weight("shared_experts.gate_proj.weight", [width, h])
            .unwrap(),
        store
            .weight("shared_experts.up_proj.weight", [width, h])
            .unwrap(),
        store
            .weight("shared_experts.down_proj.weight", [h, width])
            .unwrap(),
    )
    .unwrap();
    let gate = store.weight("gate.weight", [e, h]).unwrap();
    assert_eq!(gate.format(), DType::BF16.into());
    let moe = Moe::new(c, gate, None, experts, SharedExperts::Mlp(shared)).unwrap();
    check_layer(&g, &moe, "v2 greedy bf16 store", 2e-5);
}

fn v3_router(g: &Golden, bias: Vec<f32>) -> Router {
    let (e, h) = (g.meta("n_routed_experts"), g.meta("hidden_size"));
    let router_config = RouterConfig {
        weighting: Weighting::NormalizeThenScale,
        ..router_config(g)
    };
    assert_eq!(router_config.scoring_func, Scoring::Sigmoid);
    assert!(router_config.norm_topk_prob);
    Router::new(
        router_config,
        f32_weight(g, "gate.weight", e, h),
        Some(bias),
    )
    .unwrap()
}

#[test]
fn v3_noaux_tc_matches_transformers_deepseek_v3_router() {
    let g = Golden::load("moe_v3_router");
    let t = g.meta::<usize>("t");
    let router = v3_router(&g, g.data("e_score_correction_bias").to_vec());
    let mut logits = vec![0.0; t * router.n_experts()];
    router.gate_logits(&mut logits, g.data("x"), t).unwrap();
    report("v3 router logits", &logits, g.data("router_logits"), 1e-5);
    let routing = router.route(g.data("x"), t).unwrap();
    assert!(check_routing(&routing, &g, "v3 noaux_tc") < 1e-5);
    let naive = router.route_naive(g.data("x"), t).unwrap();
    assert!(check_routing(&naive, &g, "v3 noaux_tc naive") < 1e-5);

    // The correction bias decides: without it (a zero bias) the routing is the fixture's
    // `unbiased_ids`, which differs from the biased one on many tokens.
    let unbiased = v3_router(&g, vec![0.0; router.n_experts()])
        .route(g.data("x"), t)
        .unwrap();
    let k = routing.k();
    let sorted = |v: &[usize]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    };
    let want: Vec<usize> = g.data("unbiased_ids").iter().map(|&v| v as usize).collect();
    let mut differ = 0;
    for token in 0..t {
        assert_eq!(
            sorted(unbiased.token_ids(token)),
            sorted(&want[token * k..(token + 1) * k])
        );
        differ += (sorted(unbiased.token_ids(token)) != sorted(routing.token_ids(token))) as usize;
    }
    assert!(differ >= t / 4, "the bias changes only {differ} tokens");
}

/// DeepSeek-V3's gate written from the formulas, the way torch computes it: mask the dropped
/// groups with −∞, then take the arg-max k times.
fn v3_reference(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    (h, e, k, n_group, topk_group, rho): (usize, usize, usize, usize, usize, f32),
) -> Vec<(usize, f32)> {
    let s: Vec<f32> = (0..e)
        .map(|i| {
            let logit: f32 = (0..h).map(|j| x[j] * w[i * h + j]).sum();
            1.0 / (1.0 + (-logit).exp())
        })
        .collect();
    let c: Vec<f32> = s.iter().zip(bias).map(|(a, b)| a + b).collect();
    let size = e / n_group;
    let mut group: Vec<f32> = c
        .chunks(size)
        .map(|m| {
            let mut m = m.to_vec();
            m.sort_by(|a, b| b.partial_cmp(a).unwrap());
            m[0] + m[1]
        })
        .collect();
    let mut masked = vec![f32::NEG_INFINITY; e];
    for _ in 0..topk_group {
        let best = (0..n_group).fold(0, |b, gi| if group[gi] > group[b] { gi } else { b });
        masked[best * size..(best + 1) * size].copy_from_slice(&c[best * size..(best + 1) * size]);
        group[best] = f32::NEG_INFINITY;
    }
    let mut chosen = Vec::new();
    for _ in 0..k {
        let best = (0..e).fold(0, |b, i| if masked[i] > masked[b] { i } else { b });
        chosen.push(best);
        masked[best] = f32::NEG_INFINITY;
    }
    let sum: f32 = chosen.iter().map(|&i| s[i]).sum();
    let mut out: Vec<(usize, f32)> = chosen.iter().map(|&i| (i, rho * s[i] / sum)).collect();
    out.sort_by_key(|p| p.0);
    out
}

#[test]
fn v3_noaux_tc_matches_an_independent_reference() {
    let (h, e, k, n_group, topk_group, rho) = (24, 32, 8, 8, 4, 2.5f32);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let w: Vec<f32> = (0..e * h).map(|_| 0.4 * next()).collect();
    let bias: Vec<f32> = (0..e).map(|_| 0.1 * next()).collect();
    let config = RouterConfig {
        scoring_func: Scoring::Sigmoid,
        topk_method: TopkMethod::NoauxTc {
            n_group,
            topk_group,
        },
        norm_topk_prob: true,
        routed_scaling_factor: rho,
        weighting: Weighting::NormalizeThenScale,
        ..RouterConfig::new(e, k)
    };
    let router = Router::new(
        config,
        Weight::from_f32(w.clone(), e, h).unwrap(),
        Some(bias.clone()),
    )
    .unwrap();
    let t = 64;
    let x: Vec<f32> = (0..t * h).map(|_| next()).collect();
    let routing = router.route(&x, t).unwrap();
    let mut max = 0.0f32;
    for token in 0..t {
        let want = v3_reference(
            &x[token * h..(token + 1) * h],
            &w,
            &bias,
            (h, e, k, n_group, topk_group, rho),
        );
        let got = &by_id(routing.token_ids(token), routing.token_weights(token), 1, k)[0];
        let ids = |v: &[(usize, f32)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
        assert_eq!(ids(got), ids(&want), "token {token}");
        for (a, b) in got.iter().zip(&want) {
            max = max.max((a.1 - b.1).abs());
        }
        // Normalised then scaled: the weights sum to ρ.
        let total: f32 = routing.token_weights(token).iter().sum();
        assert!((total - rho).abs() < 1e-5, "token {token}: Σw = {total}");
    }
    eprintln!("v3 noaux_tc vs reference: max |Δweight| = {max:e}");
    assert!(max < 1e-5);
}
