//! Reading config.json: every config of the repository reads, the presets equal the released
//! configs, both rope forms agree, and every bad key is an error naming it.

use std::path::{Path, PathBuf};

use deepblocks_config::{
    AnyArchitecture, Architecture, Error, Family, Ffn, LayerKind, QueryProjection, RopeScaling,
    RoutingRule, ScoringFunc, TopkSelection, WeightingRule,
};
use deepblocks_testkit::testdata_dir;
use serde_json::{Value, json};

fn configs_dir() -> PathBuf {
    testdata_dir().join("configs")
}

fn real(name: &str) -> Value {
    let text = std::fs::read_to_string(configs_dir().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn v2() -> Value {
    real("deepseek-v2.json")
}

fn parse(v: &Value) -> Result<Architecture, Error> {
    Architecture::from_json(v).map(|p| p.architecture)
}

fn refused(v: &Value) -> Error {
    let err = parse(v).expect_err("should be refused");
    // The dispatching reader refuses it the same way.
    let again = AnyArchitecture::from_json(v).expect_err("should be refused");
    assert_eq!(err.to_string(), again.to_string());
    err
}

#[track_caller]
fn assert_names(err: &Error, key: &str) {
    assert_eq!(err.key(), Some(key), "{err}");
    assert!(err.to_string().contains(key), "{err}");
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base.as_object_mut().unwrap().insert(key.to_string(), value);
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().unwrap().remove(key);
    base
}

/// Every `config.json` (and `configs/*.json`) below `dir`.
fn config_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            config_files(&path, out);
        } else if path.file_name().is_some_and(|n| n == "config.json")
            || (path.parent().is_some_and(|p| p.ends_with("configs"))
                && path.extension().is_some_and(|e| e == "json"))
        {
            out.push(path);
        }
    }
}

#[test]
fn every_config_of_the_repository_reads() {
    let mut files = Vec::new();
    config_files(&testdata_dir(), &mut files);
    let models = testdata_dir().join("../models");
    config_files(&models, &mut files);
    assert!(files.len() >= 13, "found only {files:?}");
    for path in &files {
        let parsed = Architecture::from_file(path).unwrap_or_else(|e| panic!("{e}"));
        let text = std::fs::read_to_string(path).unwrap();
        let written: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            Some(parsed.architecture.family.model_type()),
            written["model_type"].as_str(),
            "{}",
            path.display()
        );
        assert!(
            parsed.unknown_keys.is_empty(),
            "{}: unknown keys {:?}",
            path.display(),
            parsed.unknown_keys
        );
    }
}

/// The vendored copies in testdata/configs are the project's shared real configs, byte for
/// byte (checked where the shared folder exists; CI's clean checkout has only the copies).
#[test]
fn vendored_configs_equal_the_shared_ones() {
    let shared = testdata_dir().join("../../shared/configs");
    let Ok(entries) = std::fs::read_dir(&shared) else {
        eprintln!("{} not present: nothing to compare", shared.display());
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        let ours = std::fs::read(configs_dir().join(name)).unwrap();
        assert_eq!(ours, std::fs::read(&path).unwrap(), "{}", path.display());
        Architecture::from_file(&path).unwrap();
    }
}

#[test]
fn presets_equal_the_released_configs() {
    assert_eq!(parse(&v2()).unwrap(), Architecture::deepseek_v2());
    assert_eq!(
        parse(&real("deepseek-v2-lite.json")).unwrap(),
        Architecture::deepseek_v2_lite()
    );
    for preset in [
        Architecture::deepseek_v2(),
        Architecture::deepseek_v2_lite(),
    ] {
        preset.validate().unwrap();
    }
}

#[test]
fn both_rope_forms_read_the_same() {
    for name in ["deepseek-v2", "deepseek-v2-lite"] {
        let hub = parse(&real(&format!("{name}.json"))).unwrap();
        let t5 = parse(&real(&format!("{name}.tf5.json"))).unwrap();
        assert_eq!(hub, t5, "{name}");
    }
    // Both forms at once are fine when they agree...
    let both = with(
        v2(),
        "rope_parameters",
        real("deepseek-v2.tf5.json")["rope_parameters"].clone(),
    );
    assert_eq!(parse(&both).unwrap(), Architecture::deepseek_v2());
    // ...and an error naming rope_scaling when they do not.
    let mut disagree = both.clone();
    disagree["rope_parameters"]["factor"] = json!(8);
    assert_names(&refused(&disagree), "rope_scaling");
    // A null rope_scaling beside rope_parameters is no disagreement.
    let t5 = with(real("deepseek-v2.tf5.json"), "rope_scaling", Value::Null);
    assert_eq!(parse(&t5).unwrap(), Architecture::deepseek_v2());
    // No scaling at all: plain RoPE with the default base.
    let plain = parse(&without(without(v2(), "rope_scaling"), "rope_theta")).unwrap();
    assert_eq!(plain.rope.scaling, RopeScaling::None);
    assert_eq!(plain.rope.rope_theta, 10_000.0);
    // A YaRN without original_max_position_embeddings takes max_position_embeddings, as
    // transformers' standardisation does.
    let mut cfg = v2();
    cfg["rope_scaling"]
        .as_object_mut()
        .unwrap()
        .remove("original_max_position_embeddings");
    let RopeScaling::Yarn(y) = parse(&cfg).unwrap().rope.scaling else {
        panic!("yarn")
    };
    assert_eq!(y.original_max_position_embeddings, 163_840);
}

#[test]
fn rope_errors_name_the_key_of_the_form_used() {
    let t5 = real("deepseek-v2.tf5.json");
    // A top-level rope_theta must agree with rope_parameters'.
    assert_names(
        &refused(&with(t5.clone(), "rope_theta", json!(500000))),
        "rope_theta",
    );
    parse(&with(t5.clone(), "rope_theta", json!(10000))).unwrap();
    // type and rope_type must agree.
    let mut cfg = t5.clone();
    cfg["rope_parameters"]["type"] = json!("linear");
    assert_names(&refused(&cfg), "rope_parameters.type");
    // An unknown RoPE type is unsupported.
    let mut cfg = v2();
    cfg["rope_scaling"]["type"] = json!("longrope");
    let err = refused(&cfg);
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert_names(&err, "rope_scaling.type");
    // YaRN without its factor.
    let mut cfg = v2();
    cfg["rope_scaling"]
        .as_object_mut()
        .unwrap()
        .remove("factor");
    let err = refused(&cfg);
    assert!(matches!(err, Error::MissingKey { .. }), "{err}");
    assert_names(&err, "rope_scaling.factor");
    // Values the rope block refuses, named by the config key, not the block's field.
    let mut cfg = v2();
    cfg["rope_scaling"]["factor"] = json!(-40);
    assert_names(&refused(&cfg), "rope_scaling.factor");
    let mut cfg = t5.clone();
    cfg["rope_parameters"]["beta_fast"] = json!(0.5);
    assert_names(&refused(&cfg), "rope_parameters.beta_fast");
    assert_names(
        &refused(&with(v2(), "rope_theta", json!(0.5))),
        "rope_theta",
    );
    let odd = with(
        with(v2(), "qk_rope_head_dim", json!(63)),
        "head_dim",
        Value::Null,
    );
    let err = refused(&odd);
    assert_names(&err, "qk_rope_head_dim");
    assert!(err.to_string().contains("63"), "{err}");
    // Not an object.
    let err = refused(&with(v2(), "rope_scaling", json!("yarn")));
    assert!(matches!(err, Error::NotAnObject { .. }), "{err}");
    assert_names(&err, "rope_scaling");
}

#[test]
fn unknown_keys_are_collected_not_fatal() {
    let mut cfg = with(v2(), "num_experts_per_token", json!(6));
    cfg["rope_scaling"]["beta_fastest"] = json!(32);
    let parsed = Architecture::from_json(&cfg).unwrap();
    assert_eq!(
        parsed.unknown_keys,
        ["num_experts_per_token", "rope_scaling.beta_fastest"]
    );
    assert_eq!(parsed.architecture, Architecture::deepseek_v2());
    // Inert keys (training losses, bookkeeping) are known, not unknown.
    let parsed =
        Architecture::from_json(&with(v2(), "router_aux_loss_coef", json!(0.001))).unwrap();
    assert!(parsed.unknown_keys.is_empty(), "{:?}", parsed.unknown_keys);
}

#[test]
fn model_type_decides_the_family() {
    // DeepSeek-V2's routing under a V3 model_type is refused, never run with either rule.
    for v3 in ["deepseek_v3", "kimi_k2"] {
        let err = parse(&with(v2(), "model_type", json!(v3))).unwrap_err();
        assert!(
            matches!(&err, Error::Unsupported { key, .. } if key == "scoring_func"),
            "{err}"
        );
        assert!(err.to_string().contains(v3), "{err}");
    }
    let err = parse(&with(v2(), "model_type", json!("qwen3_moe"))).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownModelType { model_type, .. } if model_type == "qwen3_moe"),
        "{err}"
    );
    assert!(
        err.to_string().contains("deepseek_v2") && err.to_string().contains("glm4_moe_lite"),
        "lists the supported: {err}"
    );
    let err = parse(&with(v2(), "model_type", json!("qwen2"))).unwrap_err();
    assert!(err.to_string().contains("qwen2"), "{err}");
    let err = refused(&without(v2(), "model_type"));
    assert!(matches!(err, Error::MissingKey { .. }), "{err}");
    assert_names(&err, "model_type");
    let err = refused(&with(v2(), "model_type", json!(2)));
    assert!(matches!(err, Error::WrongType { .. }), "{err}");
    // The dispatching reader lists llama as well.
    let err = AnyArchitecture::from_json(&with(v2(), "model_type", json!("qwen2"))).unwrap_err();
    assert!(err.to_string().contains("llama"), "{err}");
}

#[test]
fn the_routing_rule_follows_the_family() {
    let v2 = Architecture::deepseek_v2();
    let moe = v2.moe().unwrap();
    assert_eq!(moe.routing.scoring_func, ScoringFunc::Softmax);
    assert_eq!(moe.routing.weighting, WeightingRule::NormalizeOrScale);
    assert_eq!(
        Family::DeepseekV2.weighting(),
        WeightingRule::NormalizeOrScale
    );
    // norm_topk_prob is read, and the family's rule stays whatever the file says.
    let c = parse(&with(self::v2(), "norm_topk_prob", json!(true))).unwrap();
    let routing = c.moe().unwrap().routing;
    assert!(routing.norm_topk_prob);
    assert_eq!(routing.weighting, WeightingRule::NormalizeOrScale);
}

#[test]
fn missing_required_keys() {
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
        let err = refused(&without(v2(), key));
        assert!(matches!(err, Error::MissingKey { .. }), "{key}: {err}");
        assert_names(&err, key);
    }
    // intermediate_size is needed only when some layer is dense.
    let all_moe = with(
        without(v2(), "intermediate_size"),
        "first_k_dense_replace",
        json!(0),
    );
    assert_eq!(parse(&all_moe).unwrap().dense_layers(), 0);
}

#[test]
fn zero_sizes_are_named() {
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
        let err = refused(&with(v2(), key, json!(0)));
        assert!(matches!(err, Error::Invalid { .. }), "{key}: {err}");
        assert_names(&err, key);
    }
}

#[test]
fn wrong_types_are_named() {
    for (key, value) in [
        ("hidden_size", json!("5120")),
        ("hidden_size", json!(5120.5)),
        ("num_hidden_layers", json!(-1)),
        ("tie_word_embeddings", json!("no")),
        ("norm_topk_prob", json!("yes")),
        ("topk_method", json!(3)),
        ("routed_scaling_factor", json!("16")),
        ("rope_theta", json!([1])),
        ("eos_token_id", json!("</s>")),
        ("eos_token_id", json!([1, -2])),
    ] {
        let err = refused(&with(v2(), key, value.clone()));
        assert!(
            matches!(err, Error::WrongType { .. }),
            "{key}={value}: {err}"
        );
        assert_names(&err, key);
    }
    let err = parse(&json!([1, 2])).unwrap_err();
    assert!(matches!(err, Error::NotAnObject { .. }), "{err}");
}

#[test]
fn values_are_checked_for_meaning() {
    for (key, value) in [
        ("routed_scaling_factor", json!(-1e30)),
        ("routed_scaling_factor", json!(0)),
        ("rms_norm_eps", json!(-1e-6)),
        ("rms_norm_eps", json!(0)),
        ("eos_token_id", json!(102_400)),
        ("bos_token_id", json!(200_000)),
    ] {
        let err = refused(&with(v2(), key, value.clone()));
        assert!(matches!(err, Error::Invalid { .. }), "{key}={value}: {err}");
        assert_names(&err, key);
    }
}

#[test]
fn routing_keys_must_agree() {
    // 160 experts do not split into 7 groups.
    let err = refused(&with(v2(), "n_group", json!(7)));
    assert_names(&err, "n_group");
    assert!(err.to_string().contains("160"), "{err}");
    assert_names(&refused(&with(v2(), "topk_group", json!(9))), "topk_group");
    assert_names(
        &refused(&with(v2(), "num_experts_per_tok", json!(161))),
        "num_experts_per_tok",
    );
    // More experts per token than the kept groups hold: 1 group of 20.
    let cfg = with(
        with(v2(), "topk_group", json!(1)),
        "num_experts_per_tok",
        json!(21),
    );
    assert_names(&refused(&cfg), "num_experts_per_tok");
    // Grouped routing needs its group keys.
    assert_names(&refused(&without(v2(), "n_group")), "n_group");
    assert_names(
        &refused(&with(v2(), "topk_group", Value::Null)),
        "topk_group",
    );
}

#[test]
fn known_keys_with_values_we_do_not_implement_are_unsupported() {
    for (key, value) in [
        ("hidden_act", json!("gelu")),
        ("attention_bias", json!(true)),
        ("mlp_bias", json!(true)),
        ("topk_method", json!("random")),
        ("topk_method", json!("noaux_tc")),
        ("scoring_func", json!("sigmoid")),
        ("scoring_func", json!("relu")),
    ] {
        let err = refused(&with(v2(), key, value.clone()));
        assert!(
            matches!(err, Error::Unsupported { .. }),
            "{key}={value}: {err}"
        );
        assert_names(&err, key);
    }
    // V3's methods name the family they belong to.
    let err = refused(&with(v2(), "topk_method", json!("noaux_tc")));
    assert!(err.to_string().contains("deepseek_v3"), "{err}");
}

#[test]
fn a_description_built_in_code_is_held_to_its_family_rules() {
    let good = Architecture::deepseek_v2();
    good.validate().unwrap();
    let with_routing = |edit: &dyn Fn(&mut RoutingRule)| {
        let mut a = good.clone();
        let Ffn::Moe(m) = &mut a.ffn else {
            unreachable!("DeepSeek-V2 is MoE")
        };
        edit(&mut m.routing);
        a.validate().unwrap_err()
    };
    let err = with_routing(&|r| r.scoring_func = ScoringFunc::Sigmoid);
    assert_names(&err, "scoring_func");
    let err = with_routing(&|r| {
        r.topk_method = TopkSelection::NoauxTc {
            n_group: 8,
            topk_group: 3,
        }
    });
    assert_names(&err, "topk_method");
    let err = with_routing(&|r| r.weighting = WeightingRule::NormalizeThenScale);
    assert_names(&err, "weighting");
    assert!(err.to_string().contains("DeepSeek-V3"), "{err}");
    // transformers 5's reading of a V2 config is a V2 rule.
    let mut t5 = good.clone();
    if let Ffn::Moe(m) = &mut t5.ffn {
        m.routing.weighting = WeightingRule::ScaleOnly;
    }
    t5.validate().unwrap();
}

#[test]
fn derived_keys_must_agree() {
    let t5 = real("deepseek-v2.tf5.json");
    assert_names(
        &refused(&with(t5.clone(), "qk_head_dim", json!(128))),
        "qk_head_dim",
    );
    assert_names(&refused(&with(t5, "head_dim", json!(128))), "head_dim");
    // transformers' DeepseekV2Config refuses heads that do not divide the hidden size.
    assert_names(
        &refused(&with(v2(), "num_attention_heads", json!(96))),
        "num_attention_heads",
    );
    assert_names(
        &refused(&with(v2(), "num_key_value_heads", json!(48))),
        "num_key_value_heads",
    );
}

#[test]
fn optional_parts_are_enums() {
    let lite = parse(&real("deepseek-v2-lite.json")).unwrap();
    assert_eq!(lite.attention.q_proj, QueryProjection::Full);
    assert_eq!(
        lite.moe().unwrap().routing.topk_method,
        TopkSelection::Greedy
    );
    let eos = parse(&with(v2(), "eos_token_id", json!([100_001, 100_002]))).unwrap();
    assert_eq!(eos.eos_token_ids, vec![100_001, 100_002]);
    // No routed experts: a dense model; the MoE keys are then inert.
    let dense = parse(&with(v2(), "n_routed_experts", Value::Null)).unwrap();
    assert_eq!(dense.ffn, Ffn::Dense);
    assert!((0..60).all(|l| dense.layer_kind(l) == LayerKind::Dense));
    // No shared experts.
    let c = parse(&with(v2(), "n_shared_experts", Value::Null)).unwrap();
    assert_eq!(c.moe().unwrap().n_shared_experts, 0);
}

#[test]
fn the_layer_schedule_is_deepseeks_rule() {
    let mut c = Architecture::deepseek_v2_lite();
    assert_eq!(c.layer_kind(0), LayerKind::Dense);
    assert!((1..27).all(|l| c.is_moe_layer(l)));
    let Ffn::Moe(m) = &mut c.ffn else { panic!() };
    m.moe_layer_freq = 2;
    assert!(c.is_moe_layer(2) && !c.is_moe_layer(3));
    for (l, first_k, freq) in [(27, 1, 1), (27, 1, 2), (60, 3, 4), (5, 9, 1), (1, 0, 3)] {
        let mut c = Architecture::deepseek_v2_lite();
        c.num_hidden_layers = l;
        let Ffn::Moe(m) = &mut c.ffn else { panic!() };
        m.first_k_dense_replace = first_k;
        m.moe_layer_freq = freq;
        let counted = (0..l).filter(|&i| c.is_moe_layer(i)).count();
        assert_eq!(c.moe_layers(), counted, "{l} {first_k} {freq}");
        assert_eq!(c.dense_layers() + c.moe_layers(), l);
    }
}

#[test]
fn files_are_named_in_errors() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("config-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("not-json.json");
    std::fs::write(&bad, "{\"model_type\": ").unwrap();
    let err = Architecture::from_file(&bad).unwrap_err();
    assert!(matches!(err.inner(), Error::Json(_)), "{err}");
    assert!(err.to_string().contains("not-json.json"), "{err}");
    let typo = dir.join("typo.json");
    std::fs::write(&typo, with(v2(), "hidden_size", json!("x")).to_string()).unwrap();
    let err = Architecture::from_file(&typo).unwrap_err();
    assert!(
        matches!(&err, Error::InFile { path, .. } if path == &typo),
        "{err}"
    );
    assert_names(&err, "hidden_size");
    assert!(err.to_string().contains("typo.json"), "{err}");
    let err = Architecture::from_file("/nonexistent/config.json").unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path.ends_with("config.json")),
        "{err}"
    );
}

#[test]
fn sizes_too_large_for_the_machine_are_errors() {
    let err = refused(&with(
        with(v2(), "vocab_size", json!(u64::MAX / 2)),
        "eos_token_id",
        json!(1),
    ));
    assert!(matches!(err, Error::Overflow { .. }), "{err}");
    assert!(err.to_string().contains("embed_tokens"), "{err}");
    let err = refused(&with(v2(), "kv_lora_rank", json!(u64::MAX)));
    assert!(matches!(err, Error::Overflow { .. }), "{err}");
}

#[test]
fn llama_configs_read_for_the_accounting() {
    let llama = json!({
        "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
        "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "max_position_embeddings": 4096, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5, "hidden_act": "silu", "torch_dtype": "bfloat16"
    });
    let read = |v: &Value| deepblocks_config::DenseArchitecture::from_json(v);
    let c = read(&llama).unwrap().architecture;
    assert_eq!(c.head_dim, 128);
    let AnyArchitecture::Dense(d) = AnyArchitecture::from_json(&llama).unwrap().architecture else {
        panic!("dense")
    };
    assert_eq!(d, c);
    // Heads must divide hidden when head_dim is derived...
    let err = read(&with(llama.clone(), "num_attention_heads", json!(48))).unwrap_err();
    assert_names(&err, "num_attention_heads");
    // ...but not when it is given.
    let given = with(
        with(llama.clone(), "num_attention_heads", json!(48)),
        "head_dim",
        json!(64),
    );
    assert_eq!(read(&given).unwrap().architecture.head_dim, 64);
    let err = read(&with(llama.clone(), "num_key_value_heads", json!(5))).unwrap_err();
    assert_names(&err, "num_key_value_heads");
    let parsed = read(&with(llama.clone(), "sliding_window", json!(4096))).unwrap();
    assert_eq!(parsed.unknown_keys, ["sliding_window"]);
    let err = read(&without(llama.clone(), "intermediate_size")).unwrap_err();
    assert_names(&err, "intermediate_size");
    // The MLA reader refuses a llama config by its model_type.
    let err = parse(&llama).unwrap_err();
    assert!(err.to_string().contains("llama"), "{err}");
}

#[test]
fn llama_3_rope_scaling() {
    let cfg = json!({
        "model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
        "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
        "max_position_embeddings": 131072, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    });
    let c = deepblocks_config::DenseArchitecture::from_json(&cfg)
        .unwrap()
        .architecture;
    assert_eq!(c.rope.extended_context(), Some(65_536));
    let mut bad = cfg;
    bad["rope_scaling"]["high_freq_factor"] = json!(0);
    let err = deepblocks_config::DenseArchitecture::from_json(&bad).unwrap_err();
    assert_names(&err, "rope_scaling.high_freq_factor");
}
