//! Every user-facing error: the variant and the value it names.

use deepblocks_core::Weight;
use deepblocks_moe::{
    Error, Experts, Mlp, Moe, MoeConfig, Router, RouterConfig, Routing, Scoring, SharedExperts,
    TopkMethod, route_scores, stats,
};

/// `(what, expected, found)` of a core shape or length error (a length's found is `[len]`, its
/// expected the shape the buffer should hold).
fn shape_of(err: &Error) -> Option<(&str, Vec<usize>, Vec<usize>)> {
    use deepblocks_core::Error as E;
    match err {
        Error::Core(E::Shape {
            tensor,
            expected,
            found,
        }) => Some((tensor.as_str(), expected.clone(), found.clone())),
        Error::Core(E::Length {
            what, shape, found, ..
        }) => Some((what.as_str(), shape.clone(), vec![*found])),
        _ => None,
    }
}

fn zeros(rows: usize, cols: usize) -> Weight {
    Weight::from_f32(vec![0.0; rows * cols], rows, cols).unwrap()
}

fn grouped(e: usize, k: usize, n_group: usize, topk_group: usize) -> RouterConfig {
    RouterConfig {
        topk_method: TopkMethod::GroupLimitedGreedy {
            n_group,
            topk_group,
        },
        ..RouterConfig::new(e, k)
    }
}

fn noaux(e: usize, k: usize, n_group: usize, topk_group: usize) -> RouterConfig {
    RouterConfig {
        scoring_func: Scoring::Sigmoid,
        topk_method: TopkMethod::NoauxTc {
            n_group,
            topk_group,
        },
        ..RouterConfig::new(e, k)
    }
}

#[test]
fn k_larger_than_the_experts() {
    let err = RouterConfig::new(4, 5).validate().unwrap_err();
    assert!(
        matches!(err, Error::TooManyExpertsPerToken { k: 5, experts: 4 }),
        "{err}"
    );
    assert!(err.to_string().contains("num_experts_per_tok = 5"), "{err}");
    // The router constructor and the kernel refuse it too.
    let err = Router::new(RouterConfig::new(4, 5), zeros(4, 2), None).unwrap_err();
    assert!(matches!(err, Error::TooManyExpertsPerToken { k: 5, .. }));
    let err = route_scores(
        &mut [0; 5],
        &mut [0.0; 5],
        &[0.25; 4],
        None,
        &RouterConfig::new(4, 5),
        1,
    )
    .unwrap_err();
    assert!(matches!(err, Error::TooManyExpertsPerToken { k: 5, .. }));
}

#[test]
fn zero_k_zero_experts_and_a_bad_scale() {
    let err = RouterConfig::new(4, 0).validate().unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: "num_experts_per_tok", value, .. } if value == "0")
    );
    let err = RouterConfig::new(0, 1).validate().unwrap_err();
    assert!(matches!(
        &err,
        Error::Config {
            field: "n_routed_experts",
            ..
        }
    ));
    let config = RouterConfig {
        routed_scaling_factor: f32::NAN,
        ..RouterConfig::new(4, 1)
    };
    let err = config.validate().unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: "routed_scaling_factor", value, .. } if value == "NaN"),
        "{err}"
    );
}

#[test]
fn n_group_not_dividing_the_experts() {
    for n_group in [0, 3, 5] {
        let err = grouped(16, 2, n_group, 1).validate().unwrap_err();
        assert!(
            matches!(err, Error::GroupsDoNotDivide { n_group: g, experts: 16 } if g == n_group),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("n_group = {n_group}")));
    }
}

#[test]
fn topk_group_larger_than_n_group_or_zero() {
    let err = grouped(16, 2, 4, 5).validate().unwrap_err();
    assert!(
        matches!(
            err,
            Error::BadTopkGroup {
                topk_group: 5,
                n_group: 4
            }
        ),
        "{err}"
    );
    let err = noaux(16, 2, 4, 0).validate().unwrap_err();
    assert!(matches!(err, Error::BadTopkGroup { topk_group: 0, .. }));
}

#[test]
fn kept_groups_smaller_than_k() {
    // 2 kept groups of 2 experts cannot supply 5 distinct experts.
    let err = grouped(8, 5, 4, 2).validate().unwrap_err();
    assert!(
        matches!(
            err,
            Error::KeptGroupsTooSmall {
                k: 5,
                topk_group: 2,
                group_size: 2
            }
        ),
        "{err}"
    );
}

#[test]
fn noaux_tc_needs_groups_of_two() {
    let err = noaux(4, 1, 4, 2).validate().unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: "n_group", value, .. } if value == "4"),
        "{err}"
    );
}

#[test]
fn nan_gate_logits_name_the_token_expert_and_value() {
    let router = Router::new(RouterConfig::new(3, 1), zeros(3, 2), None).unwrap();
    let x = [0.0, 1.0, f32::NAN, 1.0]; // token 1 holds a NaN
    for result in [router.route(&x, 2), router.route_naive(&x, 2)] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, Error::NonFiniteGateLogit { token: 1, expert: 0, value } if value.is_nan()),
            "{err}"
        );
        assert!(err.to_string().contains("NaN"), "{err}");
    }
    // An infinite gate weight makes an infinite logit: named with its value.
    let gate = Weight::from_f32(vec![0.0, 0.0, 0.0, 0.0, f32::INFINITY, 0.0], 3, 2).unwrap();
    let router = Router::new(RouterConfig::new(3, 1), gate, None).unwrap();
    let err = router.route(&[1.0, 1.0], 1).unwrap_err();
    assert!(
        matches!(err, Error::NonFiniteGateLogit { token: 0, expert: 2, value } if value == f32::INFINITY),
        "{err}"
    );
}

#[test]
fn non_finite_scores_given_to_the_kernel() {
    let err = route_scores(
        &mut [0; 1],
        &mut [0.0; 1],
        &[0.5, f32::NAN],
        None,
        &RouterConfig::new(2, 1),
        1,
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::NonFinite { what: "scores", index: 1, value } if value.is_nan()),
        "{err}"
    );
}

#[test]
fn correction_bias_missing_unexpected_misshapen_or_nan() {
    let err = Router::new(noaux(8, 2, 4, 2), zeros(8, 3), None).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Config {
                field: "e_score_correction_bias",
                ..
            }
        ),
        "{err}"
    );
    let err = Router::new(RouterConfig::new(8, 2), zeros(8, 3), Some(vec![0.0; 8])).unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: "e_score_correction_bias", value, .. } if value == "[8 values]"),
        "{err}"
    );
    let err = Router::new(noaux(8, 2, 4, 2), zeros(8, 3), Some(vec![0.0; 7])).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, expected, found))
            if tensor == "e_score_correction_bias" && expected == [8] && found == [7]),
        "{err}"
    );
    let mut bias = vec![0.0; 8];
    bias[6] = f32::NAN;
    let err = Router::new(noaux(8, 2, 4, 2), zeros(8, 3), Some(bias)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFinite {
                what: "e_score_correction_bias",
                index: 6,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn wrong_shapes_name_the_tensor() {
    let err = Router::new(RouterConfig::new(4, 1), zeros(5, 3), None).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, expected, found))
            if tensor == "gate" && expected == [4, 3] && found == [5, 3]),
        "{err}"
    );
    let router = Router::new(RouterConfig::new(4, 1), zeros(4, 3), None).unwrap();
    let err = router.route(&[0.0; 7], 2).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, expected, found))
            if tensor == "x" && expected == [2, 3] && found == [7]),
        "{err}"
    );
    let err = router
        .route_nd(ndarray::Array2::zeros((2, 5)).view())
        .unwrap_err();
    assert!(matches!(shape_of(&err), Some((tensor, _, _)) if tensor == "x"));
    let err = router.gate_logits(&mut [0.0; 3], &[0.0; 3], 1).unwrap_err();
    assert!(matches!(shape_of(&err), Some((tensor, _, _)) if tensor == "logits"));
}

#[test]
fn mlp_and_experts_shapes() {
    let err = Mlp::new(zeros(4, 3), zeros(4, 2), zeros(3, 4)).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, _, _)) if tensor == "up_proj"),
        "{err}"
    );
    let err = Mlp::new(zeros(4, 3), zeros(4, 3), zeros(4, 3)).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, expected, _)) if tensor == "down_proj" && expected == [3, 4]),
        "{err}"
    );
    let err = Mlp::from_fused(zeros(5, 3), zeros(3, 2)).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, _, _)) if tensor == "gate_up_proj"),
        "{err}"
    );
    let mlp = Mlp::new(zeros(4, 3), zeros(4, 3), zeros(3, 4)).unwrap();
    let err = mlp.forward(&mut [0.0; 3], &[0.0; 4], 1).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, _, _)) if tensor == "x"),
        "{err}"
    );

    let err = Experts::from_mlps(vec![]).unwrap_err();
    assert!(matches!(
        err,
        Error::Config {
            field: "n_routed_experts",
            ..
        }
    ));
    let other = Mlp::new(zeros(2, 3), zeros(2, 3), zeros(3, 2)).unwrap();
    let err = Experts::from_mlps(vec![mlp.clone(), other]).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, _, _)) if tensor == "experts[1].down_proj"),
        "{err}"
    );
    // Packed: 3 experts of i = 2, h = 4 need 12 gate_up rows and 12 down rows.
    let err = Experts::from_packed(&zeros(10, 4), &zeros(12, 2), 3).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, expected, found))
            if tensor.starts_with("gate_up_proj (packed") && expected == [12, 4] && found == [10, 4]),
        "{err}"
    );
    let err = Experts::from_packed(&zeros(12, 4), &zeros(9, 2), 3).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, _, _)) if tensor.starts_with("down_proj (packed")),
        "{err}"
    );
    let err = Experts::from_packed(&zeros(12, 4), &zeros(12, 2), 0).unwrap_err();
    assert!(matches!(
        err,
        Error::Config {
            field: "n_routed_experts",
            ..
        }
    ));
}

fn layer_config(n_shared: usize) -> MoeConfig {
    MoeConfig {
        hidden_size: 3,
        moe_intermediate_size: 2,
        n_shared_experts: n_shared,
        router: RouterConfig::new(2, 1),
    }
}

fn experts(n: usize, h: usize, i: usize) -> Experts {
    Experts::from_mlps(
        (0..n)
            .map(|_| Mlp::new(zeros(i, h), zeros(i, h), zeros(h, i)).unwrap())
            .collect(),
    )
    .unwrap()
}

#[test]
fn moe_layer_weights_must_match_the_config() {
    let shared = || SharedExperts::Mlp(Mlp::new(zeros(4, 3), zeros(4, 3), zeros(3, 4)).unwrap());
    assert!(
        Moe::new(
            layer_config(2),
            zeros(2, 3),
            None,
            experts(2, 3, 2),
            shared()
        )
        .is_ok()
    );

    let err = Moe::new(
        layer_config(2),
        zeros(2, 4),
        None,
        experts(2, 3, 2),
        shared(),
    )
    .unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, _, _)) if tensor == "gate"),
        "{err}"
    );
    let err = Moe::new(
        layer_config(2),
        zeros(2, 3),
        None,
        experts(3, 3, 2),
        shared(),
    )
    .unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, expected, found)) if tensor == "experts" && expected == [2] && found == [3]),
        "{err}"
    );
    let err = Moe::new(
        layer_config(2),
        zeros(2, 3),
        None,
        experts(2, 3, 5),
        shared(),
    )
    .unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, _, _)) if tensor == "experts[0].down_proj"),
        "{err}"
    );
    // Shared width must be i · n_shared_experts = 2 · 3.
    let err = Moe::new(
        layer_config(3),
        zeros(2, 3),
        None,
        experts(2, 3, 2),
        shared(),
    )
    .unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, expected, _)) if tensor == "shared_experts.down_proj" && expected == [3, 6]),
        "{err}"
    );
    let err = Moe::new(
        layer_config(2),
        zeros(2, 3),
        None,
        experts(2, 3, 2),
        SharedExperts::None,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: "n_shared_experts", value, .. } if value == "2"),
        "{err}"
    );
    let err = Moe::new(
        layer_config(0),
        zeros(2, 3),
        None,
        experts(2, 3, 2),
        shared(),
    )
    .unwrap_err();
    assert!(matches!(
        &err,
        Error::Config {
            field: "n_shared_experts",
            ..
        }
    ));

    let moe = Moe::new(
        layer_config(0),
        zeros(2, 3),
        None,
        experts(2, 3, 2),
        SharedExperts::None,
    )
    .unwrap();
    let err = moe.forward(&mut [0.0; 3], &[0.0; 5], 1).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, _, _)) if tensor == "x"),
        "{err}"
    );
    let err = moe.forward(&mut [0.0; 2], &[0.0; 3], 1).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, _, _)) if tensor == "out"),
        "{err}"
    );
    // A routing over another number of experts.
    let routing = Routing::new(vec![2], vec![1.0], vec![0.25; 3], 1, 1, 3).unwrap();
    let err = moe
        .routed_grouped(&mut [0.0; 3], &[0.0; 3], &routing)
        .unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, expected, found)) if tensor.starts_with("routing") && expected == [2] && found == [3]),
        "{err}"
    );
}

#[test]
fn routings_built_by_hand_are_checked() {
    let err = Routing::new(vec![0, 4], vec![1.0; 2], vec![0.0; 8], 2, 1, 4).unwrap_err();
    assert!(
        matches!(
            err,
            Error::ExpertOutOfRange {
                token: 1,
                slot: 0,
                expert: 4,
                experts: 4
            }
        ),
        "{err}"
    );
    let err = Routing::new(vec![1, 3, 3], vec![1.0; 3], vec![0.0; 4], 1, 3, 4).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DuplicateExpert {
                token: 0,
                expert: 3
            }
        ),
        "{err}"
    );
    let err = Routing::new(vec![1], vec![f32::NAN], vec![0.0; 4], 1, 1, 4).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFinite {
                what: "weights",
                index: 0,
                ..
            }
        ),
        "{err}"
    );
    let err = Routing::new(vec![1, 2], vec![1.0], vec![0.0; 4], 1, 1, 4).unwrap_err();
    assert!(
        matches!(shape_of(&err), Some((tensor, _, _)) if tensor == "ids"),
        "{err}"
    );
}

#[test]
fn statistics_reject_impossible_device_splits() {
    let r = Routing::new(vec![0, 1], vec![1.0; 2], vec![0.25; 8], 2, 1, 4).unwrap();
    let err = stats::balance(&r, 3, 1).unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: "n_devices", value, .. } if value == "3"),
        "{err}"
    );
    let err = stats::balance(&r, 2, 3).unwrap_err();
    assert!(
        matches!(&err, Error::Config { field: "max_devices_per_token", value, .. } if value == "3"),
        "{err}"
    );
    let empty = Routing::new(vec![], vec![], vec![], 0, 1, 4).unwrap();
    let err = stats::balance(&empty, 2, 1).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Config {
                field: "routing",
                ..
            }
        ),
        "{err}"
    );
}
