//! config.json: presets equal the released configs, both rope forms read the same, and every bad
//! field is an error naming it.

use deepblocks_deepseek::{Config, Error};
use deepblocks_testkit::testdata_dir;
use serde_json::{Value, json};

fn real(name: &str) -> Value {
    let path = testdata_dir().join("configs").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn presets_equal_the_released_configs() {
    assert_eq!(
        Config::from_json(&real("deepseek-v2.json")).unwrap(),
        Config::deepseek_v2()
    );
    assert_eq!(
        Config::from_json(&real("deepseek-v2-lite.json")).unwrap(),
        Config::deepseek_v2_lite()
    );
}

/// The hub form converted to transformers 5's: `rope_parameters` with `rope_type` and
/// `rope_theta` inside.
fn to_transformers5(mut v: Value) -> Value {
    let obj = v.as_object_mut().unwrap();
    let mut rp = obj.remove("rope_scaling").unwrap();
    let theta = obj.remove("rope_theta").unwrap();
    let rp_obj = rp.as_object_mut().unwrap();
    let kind = rp_obj.remove("type").unwrap();
    rp_obj.insert("rope_type".into(), kind);
    rp_obj.insert("rope_theta".into(), theta);
    obj.insert("rope_parameters".into(), rp);
    v
}

#[test]
fn both_rope_forms_read_the_same() {
    for name in ["deepseek-v2.json", "deepseek-v2-lite.json"] {
        let hub = Config::from_json(&real(name)).unwrap();
        let t5 = Config::from_json(&to_transformers5(real(name))).unwrap();
        assert_eq!(hub, t5, "{name}");
    }
    // No scaling at all: plain RoPE with the default base.
    let mut v = real("deepseek-v2-lite.json");
    v.as_object_mut().unwrap().remove("rope_scaling");
    v.as_object_mut().unwrap().remove("rope_theta");
    let c = Config::from_json(&v).unwrap();
    assert_eq!(c.rope_scaling, deepblocks_rope::RopeScaling::None);
    assert_eq!(c.rope_theta, 10_000.0);
}

#[test]
fn eos_may_be_a_list_and_q_lora_rank_null() {
    let mut v = real("deepseek-v2-lite.json");
    v["eos_token_id"] = json!([100_001, 100_002]);
    let c = Config::from_json(&v).unwrap();
    assert_eq!(c.eos_token_ids, vec![100_001, 100_002]);
    assert_eq!(c.q_lora_rank, None);
    assert!(matches!(
        c.mla_config().unwrap().q_proj,
        deepblocks_mla::QProjConfig::Full
    ));
}

fn with(field: &str, value: Value) -> Result<Config, Error> {
    let mut v = real("deepseek-v2.json");
    v.as_object_mut().unwrap().insert(field.into(), value);
    Config::from_json(&v)
}

fn without(field: &str) -> Result<Config, Error> {
    let mut v = real("deepseek-v2.json");
    v.as_object_mut().unwrap().remove(field);
    Config::from_json(&v)
}

#[test]
fn missing_and_mistyped_fields_are_named() {
    let err = without("kv_lora_rank").unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingField {
                field: "kv_lora_rank"
            }
        ),
        "{err}"
    );
    let err = with("hidden_size", json!("5120")).unwrap_err();
    assert!(
        matches!(&err, Error::Field { field, .. } if field == "hidden_size"),
        "{err}"
    );
    assert!(err.to_string().contains("\"5120\""), "{err}");
    let err = with("num_hidden_layers", json!(-3)).unwrap_err();
    assert!(
        matches!(&err, Error::Field { field, .. } if field == "num_hidden_layers"),
        "{err}"
    );
    let err = with("qk_nope_head_dim", json!(0)).unwrap_err();
    assert!(
        matches!(&err, Error::Field { field, .. } if field == "qk_nope_head_dim"),
        "{err}"
    );
    let err = with("q_lora_rank", json!(0)).unwrap_err();
    assert!(
        matches!(&err, Error::Field { field, .. } if field == "q_lora_rank"),
        "{err}"
    );
    let err = with("norm_topk_prob", json!("yes")).unwrap_err();
    assert!(
        matches!(&err, Error::Field { field, .. } if field == "norm_topk_prob"),
        "{err}"
    );
    let err = Config::from_json(&json!([1, 2])).unwrap_err();
    assert!(matches!(err, Error::Field { .. }), "{err}");
}

#[test]
fn inconsistent_routing_is_named() {
    // 160 experts do not split into 7 groups.
    let err = with("n_group", json!(7)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Moe(deepblocks_moe::Error::GroupsDoNotDivide {
                n_group: 7,
                experts: 160
            })
        ),
        "{err}"
    );
    let err = with("topk_group", json!(9)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Moe(deepblocks_moe::Error::BadTopkGroup { topk_group: 9, .. })
        ),
        "{err}"
    );
    let err = with("num_experts_per_tok", json!(161)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Moe(deepblocks_moe::Error::TooManyExpertsPerToken { k: 161, .. })
        ),
        "{err}"
    );
    let err = with("n_group", Value::Null).unwrap_err();
    assert!(
        matches!(&err, Error::Field { field, .. } if field == "n_group"),
        "{err}"
    );
}

#[test]
fn unsupported_features_are_refused_by_name() {
    let err = with("hidden_act", json!("gelu")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                field: "hidden_act",
                ..
            }
        ),
        "{err}"
    );
    let err = with("attention_bias", json!(true)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                field: "attention_bias",
                ..
            }
        ),
        "{err}"
    );
    let err = with("topk_method", json!("random")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                field: "topk_method",
                ..
            }
        ),
        "{err}"
    );
    let err = with("scoring_func", json!("relu")).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                field: "scoring_func",
                ..
            }
        ),
        "{err}"
    );
    let err = with(
        "rope_scaling",
        json!({"type": "ntk-by-parts", "factor": 2.0}),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                field: "rope_type",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn bad_rope_parameters_are_named() {
    let err = with(
        "rope_scaling",
        json!({"type": "yarn", "factor": -1.0, "original_max_position_embeddings": 4096}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("factor"), "{err}");
    let err = with(
        "rope_scaling",
        json!({"type": "yarn", "original_max_position_embeddings": 4096}),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::Field { field, .. } if field == "rope_scaling.factor"),
        "{err}"
    );
    let err = with(
        "rope_scaling",
        json!({"type": "yarn", "factor": 40, "beta_fast": 1, "beta_slow": 32, "original_max_position_embeddings": 4096}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("beta_fast"), "{err}");
    let err = with("qk_rope_head_dim", json!(63)).unwrap_err();
    assert!(err.to_string().contains("63"), "{err}");
}

#[test]
fn layer_kinds_follow_deepseeks_rule() {
    let mut c = Config::deepseek_v2_lite();
    assert!(!c.is_moe_layer(0));
    assert!((1..27).all(|l| c.is_moe_layer(l)));
    c.moe_layer_freq = 2;
    assert!(c.is_moe_layer(2) && !c.is_moe_layer(3));
    c.n_routed_experts = 0;
    assert!(!c.is_moe_layer(2));
}
