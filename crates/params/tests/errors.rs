//! Bad input: every error names the field at fault.

use deepblocks_params::{
    Bits, DeepSeekV2Config, DenseConfig, DeploymentPlan, Error, GPT3_175B, ModelConfig,
};
use serde_json::{Value, json};

fn v2() -> Value {
    let text = include_str!("../../../testdata/params/deepseek-v2.json");
    serde_json::from_str(text).unwrap()
}

fn v2_tf5() -> Value {
    let text = include_str!("../../../testdata/params/deepseek-v2.tf5.json");
    serde_json::from_str(text).unwrap()
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    let map = base.as_object_mut().unwrap();
    if value.is_null() && key.starts_with('-') {
        map.remove(&key[1..]);
    } else {
        map.insert(key.to_string(), value);
    }
    base
}

fn without(base: Value, key: &str) -> Value {
    with(base, &format!("-{key}"), Value::Null)
}

fn parse(v: &Value) -> Error {
    let err = DeepSeekV2Config::from_json(v).expect_err("should be refused");
    // The dispatching reader refuses it the same way.
    let again = ModelConfig::from_json_str(&v.to_string()).expect_err("should be refused");
    assert_eq!(err.to_string(), again.to_string());
    err
}

#[track_caller]
fn assert_names(err: &Error, field: &str) {
    assert_eq!(err.field(), Some(field), "{err}");
    assert!(err.to_string().contains(field), "{err}");
}

#[test]
fn missing_required_fields() {
    for key in [
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "kv_lora_rank",
        "qk_nope_head_dim",
        "qk_rope_head_dim",
        "v_head_dim",
        "q_lora_rank",
        "num_experts_per_tok",
        "moe_intermediate_size",
        "max_position_embeddings",
        "intermediate_size",
    ] {
        let err = parse(&without(v2(), key));
        assert!(matches!(err, Error::MissingField { .. }), "{key}: {err}");
        assert_names(&err, key);
    }
}

/// `intermediate_size` is only needed when some layer is dense.
#[test]
fn intermediate_size_is_optional_without_dense_layers() {
    let cfg = with(
        without(v2(), "intermediate_size"),
        "first_k_dense_replace",
        json!(0),
    );
    let c = DeepSeekV2Config::from_json(&cfg).unwrap();
    assert_eq!(c.dense_layers(), 0);
    assert!(c.tree().unwrap().child("mlp").is_none());
}

#[test]
fn zero_sizes() {
    for key in [
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "kv_lora_rank",
        "q_lora_rank",
        "v_head_dim",
        "n_routed_experts",
        "num_experts_per_tok",
        "moe_intermediate_size",
        "moe_layer_freq",
        "n_group",
        "max_position_embeddings",
    ] {
        let err = parse(&with(v2(), key, json!(0)));
        assert!(matches!(err, Error::Invalid { .. }), "{key}: {err}");
        assert_names(&err, key);
    }
}

#[test]
fn wrong_types() {
    for (key, value) in [
        ("hidden_size", json!("5120")),
        ("hidden_size", json!(5120.5)),
        ("num_hidden_layers", json!(-1)),
        ("tie_word_embeddings", json!("no")),
        ("topk_method", json!(3)),
        ("routed_scaling_factor", json!("16")),
        ("rope_theta", json!([1])),
    ] {
        let err = parse(&with(v2(), key, value.clone()));
        assert!(
            matches!(err, Error::WrongType { .. }),
            "{key}={value}: {err}"
        );
        assert_names(&err, key);
    }
}

#[test]
fn unknown_fields_are_refused() {
    let err = parse(&with(v2(), "num_experts_per_token", json!(6)));
    assert!(
        matches!(&err, Error::UnknownField { field, model_type } if field == "num_experts_per_token" && model_type == "deepseek_v2"),
        "{err}"
    );
    let mut cfg = v2();
    cfg["rope_scaling"]["beta_fastest"] = json!(32);
    let err = parse(&cfg);
    assert!(matches!(err, Error::UnknownField { .. }), "{err}");
    assert_names(&err, "rope_scaling.beta_fastest");
}

#[test]
fn heads_must_divide_hidden() {
    // transformers' DeepseekV2Config refuses it (validate_architecture); so do we.
    let err = parse(&with(v2(), "num_attention_heads", json!(96)));
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert_names(&err, "num_attention_heads");
    let err = parse(&with(v2(), "num_key_value_heads", json!(48)));
    assert_names(&err, "num_key_value_heads");
}

#[test]
fn routing_fields_must_agree() {
    // 160 experts do not split into 7 groups.
    let err = parse(&with(v2(), "n_group", json!(7)));
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert_names(&err, "n_group");
    assert!(err.to_string().contains("160"), "{err}");
    // More groups kept than exist.
    assert_names(&parse(&with(v2(), "topk_group", json!(9))), "topk_group");
    // More experts per token than experts.
    assert_names(
        &parse(&with(v2(), "num_experts_per_tok", json!(161))),
        "num_experts_per_tok",
    );
    // More experts per token than the kept groups hold: 1 group of 20.
    let cfg = with(v2(), "topk_group", json!(1));
    let err = parse(&with(cfg, "num_experts_per_tok", json!(21)));
    assert_names(&err, "num_experts_per_tok");
    // Grouped routing needs its group fields.
    assert_names(&parse(&without(v2(), "n_group")), "n_group");
    assert_names(&parse(&without(v2(), "topk_group")), "topk_group");
    // Methods and scores DeepSeek-V2 does not have.
    assert_names(
        &parse(&with(v2(), "topk_method", json!("noaux_tc"))),
        "topk_method",
    );
    assert_names(
        &parse(&with(v2(), "scoring_func", json!("sigmoid"))),
        "scoring_func",
    );
}

#[test]
fn derived_fields_must_agree() {
    assert_names(
        &parse(&with(v2_tf5(), "qk_head_dim", json!(128))),
        "qk_head_dim",
    );
    assert_names(&parse(&with(v2_tf5(), "head_dim", json!(128))), "head_dim");
}

#[test]
fn rope_forms() {
    // Both forms at once is ambiguous.
    let both = with(v2(), "rope_parameters", v2_tf5()["rope_parameters"].clone());
    assert_names(&parse(&both), "rope_scaling");
    // A top-level rope_theta must agree with rope_parameters'.
    assert_names(
        &parse(&with(v2_tf5(), "rope_theta", json!(500000))),
        "rope_theta",
    );
    let same = with(v2_tf5(), "rope_theta", json!(10000));
    DeepSeekV2Config::from_json(&same).unwrap();
    // type and rope_type must agree.
    let mut cfg = v2_tf5();
    cfg["rope_parameters"]["type"] = json!("linear");
    assert_names(&parse(&cfg), "rope_parameters.type");
    // Unknown RoPE type.
    let mut cfg = v2();
    cfg["rope_scaling"]["type"] = json!("longrope");
    assert_names(&parse(&cfg), "rope_scaling.type");
    // YaRN without its factor.
    let mut cfg = v2();
    cfg["rope_scaling"]
        .as_object_mut()
        .unwrap()
        .remove("factor");
    let err = parse(&cfg);
    assert!(matches!(err, Error::MissingField { .. }), "{err}");
    assert_names(&err, "rope_scaling.factor");
    // A negative factor.
    let mut cfg = v2();
    cfg["rope_scaling"]["factor"] = json!(-40);
    assert_names(&parse(&cfg), "rope_scaling.factor");
    // Not an object.
    let err = parse(&with(v2(), "rope_scaling", json!("yarn")));
    assert!(matches!(err, Error::NotAnObject { .. }), "{err}");
    assert_names(&err, "rope_scaling");
    // No scaling at all is plain RoPE.
    let plain = DeepSeekV2Config::from_json(&with(v2(), "rope_scaling", Value::Null)).unwrap();
    assert_eq!(plain.rope.scaling, deepblocks_params::RopeScaling::None);
}

#[test]
fn model_type_dispatch() {
    let err = ModelConfig::from_json_str(&without(v2(), "model_type").to_string()).unwrap_err();
    assert!(matches!(err, Error::MissingField { .. }), "{err}");
    assert_names(&err, "model_type");
    let err =
        ModelConfig::from_json_str(&with(v2(), "model_type", json!("deepseek_v3")).to_string())
            .unwrap_err();
    assert_names(&err, "model_type");
    let err =
        ModelConfig::from_json_str(&with(v2(), "model_type", json!(2)).to_string()).unwrap_err();
    assert!(matches!(err, Error::WrongType { .. }), "{err}");
    // The typed readers check it too.
    let err = DeepSeekV2Config::from_json(&with(v2(), "model_type", json!("llama"))).unwrap_err();
    assert_names(&err, "model_type");
}

#[test]
fn not_json_not_an_object_no_file() {
    assert!(matches!(
        ModelConfig::from_json_str("{\"model_type\": ").unwrap_err(),
        Error::Json(_)
    ));
    let err = DeepSeekV2Config::from_json(&json!([1, 2])).unwrap_err();
    assert!(matches!(err, Error::NotAnObject { .. }), "{err}");
    // From a file, the error names the file.
    let bad =
        std::env::temp_dir().join(format!("deepblocks-params-bad-{}.json", std::process::id()));
    std::fs::write(&bad, "{\"model_type\": ").unwrap();
    let err = ModelConfig::from_file(&bad).unwrap_err();
    std::fs::remove_file(&bad).unwrap();
    assert!(
        matches!(&err, Error::JsonFile { path, .. } if path == &bad),
        "{err}"
    );
    assert!(err.to_string().contains("deepblocks-params-bad-"), "{err}");
    let err = ModelConfig::from_file("/nonexistent/config.json").unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("config.json")),
        "{err}"
    );
}

fn llama() -> Value {
    json!({
        "model_type": "llama",
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "torch_dtype": "bfloat16"
    })
}

#[test]
fn llama_configs() {
    let c = DenseConfig::from_json(&llama()).unwrap();
    assert_eq!(c.head_dim, 128);
    // Heads must divide hidden when head_dim is derived...
    let err = DenseConfig::from_json(&with(llama(), "num_attention_heads", json!(48))).unwrap_err();
    assert_names(&err, "num_attention_heads");
    // ...but not when it is given.
    let cfg = with(
        with(llama(), "num_attention_heads", json!(48)),
        "head_dim",
        json!(64),
    );
    let cfg = with(cfg, "num_key_value_heads", json!(8));
    assert_eq!(DenseConfig::from_json(&cfg).unwrap().head_dim, 64);
    // GQA groups must divide the heads.
    let err = DenseConfig::from_json(&with(llama(), "num_key_value_heads", json!(5))).unwrap_err();
    assert_names(&err, "num_key_value_heads");
    let err = DenseConfig::from_json(&with(llama(), "sliding_window", json!(4096))).unwrap_err();
    assert_names(&err, "sliding_window");
    let err = DenseConfig::from_json(&without(llama(), "intermediate_size")).unwrap_err();
    assert_names(&err, "intermediate_size");
}

#[test]
fn bits_out_of_range() {
    for b in [0, 65] {
        let err = Bits::new(b).unwrap_err();
        assert_names(&err, "bits");
    }
}

fn plan() -> DeploymentPlan {
    DeploymentPlan {
        devices: 8,
        memory_per_device: 80_000_000_000,
        reserve_per_device: 0,
        tensor_parallel: 8,
        expert_parallel: 8,
        weight_bits: Bits::BF16,
        kv_bits: Bits::BF16,
        batch: 1,
    }
}

#[test]
fn deployment_settings_must_fit_the_model() {
    let v2 = DeepSeekV2Config::from_json(&v2())
        .unwrap()
        .accounting("V2")
        .unwrap();
    let cases = [
        (
            DeploymentPlan {
                tensor_parallel: 3,
                ..plan()
            },
            "tensor_parallel",
        ), // not | 8 devices
        (
            DeploymentPlan {
                devices: 48,
                tensor_parallel: 48,
                expert_parallel: 16,
                ..plan()
            },
            "tensor_parallel", // not | 128 heads
        ),
        (
            DeploymentPlan {
                expert_parallel: 3,
                ..plan()
            },
            "expert_parallel",
        ),
        (
            DeploymentPlan {
                devices: 64,
                expert_parallel: 64, // not | 160 experts
                ..plan()
            },
            "expert_parallel",
        ),
        (
            DeploymentPlan {
                devices: 0,
                ..plan()
            },
            "devices",
        ),
        (DeploymentPlan { batch: 0, ..plan() }, "batch"),
        (
            DeploymentPlan {
                memory_per_device: 0,
                ..plan()
            },
            "memory_per_device",
        ),
    ];
    for (p, field) in cases {
        let err = p.plan(&v2).unwrap_err();
        assert_names(&err, field);
    }
    // A dense model has no experts to spread.
    let gpt3 = GPT3_175B.accounting().unwrap();
    let err = plan().plan(&gpt3).unwrap_err();
    assert_names(&err, "expert_parallel");
}

/// A config built by hand is checked by `tree()` like a parsed one: an error, never a panic.
#[test]
fn hand_built_configs_are_validated() {
    let good = DeepSeekV2Config::from_json(&v2()).unwrap();
    let mut c = good.clone();
    c.moe_layer_freq = 0;
    assert_names(&c.tree().unwrap_err(), "moe_layer_freq");
    let mut c = good.clone();
    c.kv_lora_rank = 0;
    assert_names(&c.validate().unwrap_err(), "kv_lora_rank");
    let mut c = good.clone();
    if let deepblocks_params::Ffn::Moe(m) = &mut c.ffn {
        m.num_experts_per_tok = 161;
    }
    assert_names(&c.tree().unwrap_err(), "num_experts_per_tok");
    let mut c = good;
    c.qk_rope_head_dim = u64::MAX;
    assert!(matches!(c.tree().unwrap_err(), Error::Overflow { .. }));

    let huge = deepblocks_params::Gpt3Config {
        n_layers: u64::MAX,
        ..GPT3_175B
    };
    assert!(matches!(huge.full().unwrap_err(), Error::Overflow { .. }));
    assert!(matches!(
        huge.walkthrough().unwrap_err(),
        Error::Overflow { .. }
    ));
}

#[test]
fn llama_3_rope_scaling() {
    let cfg = with(
        llama(),
        "rope_scaling",
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    );
    let c = DenseConfig::from_json(&cfg).unwrap();
    assert_eq!(c.rope.scaling.extended_context(), Some(65_536));
    let mut bad = cfg;
    bad["rope_scaling"]["high_freq_factor"] = json!(0);
    let err = DenseConfig::from_json(&bad).unwrap_err();
    assert_names(&err, "rope_scaling.high_freq_factor");
}
