//! The DeepSeek-V3 family end to end against transformers 5's `DeepseekV3ForCausalLM` on tiny
//! random checkpoints written by `scripts/golden/deepseek_v3.py`: sigmoid scores, `noaux_tc`
//! with a correction bias, normalise-then-scale weights, `rope_interleave` both ways, a
//! multi-token-prediction layer in the file, and a `kimi_k2`-typed folder.

use std::path::PathBuf;

use deepblocks_config::{Family, ScoringFunc, TopkSelection, WeightingRule};
use deepblocks_deepseek::{AttentionPath, CacheDType, Error, LoadOptions, Model, Positions};
use deepblocks_testkit::{Golden, assert_close, close_report, testdata_dir};

fn dir(variant: &str) -> PathBuf {
    testdata_dir().join("deepseek").join(variant)
}

/// Max |Δ logit| ≤ 1e-4 against transformers, for the full forward on both attention paths and
/// for decode through the latent cache after a 3-token prefill.
fn check_variant(variant: &str) -> Model {
    let g = Golden::load_path(&dir(variant).join("golden.safetensors"));
    let ids: Vec<u32> = g.data("input_ids").iter().map(|&v| v as u32).collect();
    let want = g.data("logits");
    let mut last = None;
    for path in [AttentionPath::Absorbed, AttentionPath::Naive] {
        let options = LoadOptions {
            prefill_attention: path,
            cache_dtype: CacheDType::F32,
            ..LoadOptions::default()
        };
        let model = Model::load_with(dir(variant), &options).unwrap();
        let mut cache = model.new_cache(ids.len()).unwrap();
        let got = model.forward(&ids, &mut cache, Positions::All).unwrap();
        let r = close_report(&got, want, 1e-4, 0.0);
        eprintln!(
            "{variant} {path:?} prefill vs transformers: max |Δ| = {:e}",
            r.max_abs
        );
        assert_close(&got, want, 1e-4, 0.0);

        let mut cache = model.new_cache(4).unwrap();
        let mut steps = model
            .forward(&ids[..3], &mut cache, Positions::All)
            .unwrap();
        for &id in &ids[3..] {
            steps.extend(model.forward(&[id], &mut cache, Positions::Last).unwrap());
        }
        let r = close_report(&steps, want, 1e-4, 0.0);
        eprintln!(
            "{variant} {path:?} decode vs transformers: max |Δ| = {:e}",
            r.max_abs
        );
        assert_close(&steps, want, 1e-4, 0.0);
        last = Some(model);
    }
    last.unwrap()
}

#[test]
fn golden_v3_noaux_tc_groups_bias_yarn_with_an_mtp_layer_in_the_file() {
    let model = check_variant("v3_groups_bias_mtp");
    let arch = model.config();
    assert_eq!(arch.family, Family::DeepseekV3);
    let routing = arch.moe().unwrap().routing;
    assert_eq!(routing.scoring_func, ScoringFunc::Sigmoid);
    assert_eq!(
        routing.topk_method,
        TopkSelection::NoauxTc {
            n_group: 4,
            topk_group: 2
        }
    );
    assert_eq!(routing.weighting, WeightingRule::AlwaysNormalizeThenScale);
    assert!(arch.rope_interleave);
    // The MTP layer is named in the report, not loaded.
    assert_eq!(arch.num_nextn_predict_layers, 1);
    let mtp = &model.load_report().mtp_tensors;
    assert!(
        !mtp.is_empty() && mtp.iter().all(|t| t.starts_with("model.layers.3.")),
        "{mtp:?}"
    );
    assert!(
        mtp.iter().any(|t| t == "model.layers.3.eh_proj.weight"),
        "{mtp:?}"
    );
}

#[test]
fn golden_glm_4_7_flash_wider_values_layer_types_and_its_own_eps() {
    let model = check_variant("glm_flash_vdim");
    let arch = model.config();
    assert_eq!(arch.family, Family::Glm4MoeLite);
    assert_eq!(
        (arch.attention.v_head_dim, arch.attention.qk_nope_head_dim),
        (12, 8)
    );
    assert_eq!(arch.moe().unwrap().first_k_dense_replace, 1);
    // The layers' ε; the latent norms keep 1e-6 (a model giving them 0.02 is off by ~1e-2).
    assert_eq!(arch.rms_norm_eps, 0.02);
    assert!(!model.load_report().mtp_tensors.is_empty());
}

#[test]
fn glm_layer_types_other_than_dense_then_sparse_are_refused_by_name() {
    for (name, types, says) in [
        (
            "glm-sparse-dense",
            serde_json::json!(["sparse", "dense", "sparse"]),
            "dense layers after MoE ones",
        ),
        (
            "glm-two-entries",
            serde_json::json!(["dense", "sparse"]),
            "must list num_hidden_layers = 3",
        ),
        (
            "glm-moe-typo",
            serde_json::json!(["dense", "moe", "sparse"]),
            "\"moe\"",
        ),
    ] {
        let folder = doctored(
            "glm_flash_vdim",
            name,
            |c| c["mlp_layer_types"] = types.clone(),
            None,
        );
        let err = Model::load_with(&folder, &LoadOptions::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("mlp_layer_types") && text.contains(says),
            "{text}"
        );
    }
    let folder = doctored(
        "glm_flash_vdim",
        "glm-disagreeing-first-k",
        |c| c["first_k_dense_replace"] = 2.into(),
        None,
    );
    let err = Model::load_with(&folder, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("first_k_dense_replace"), "{err}");
}

#[test]
fn golden_kimi_k2_rotate_half_pairs_one_expert_normalised_to_rho() {
    let model = check_variant("k2_halfsplit_k1");
    let arch = model.config();
    assert_eq!(arch.family, Family::KimiK2);
    assert!(!arch.rope_interleave);
    assert_eq!(arch.moe().unwrap().num_experts_per_tok, 1);
    assert!(model.load_report().mtp_tensors.is_empty());
}

/// Copies a golden folder with its config edited or a tensor dropped.
fn doctored(
    variant: &str,
    name: &str,
    edit: impl Fn(&mut serde_json::Value),
    drop: Option<&str>,
) -> PathBuf {
    let src = dir(variant);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("v3-tests")
        .join(name);
    std::fs::create_dir_all(&out).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(out.join("config.json"), cfg.to_string()).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    match drop {
        None => std::fs::write(out.join("model.safetensors"), bytes).unwrap(),
        Some(tensor) => {
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let kept: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
                .tensors()
                .into_iter()
                .filter(|(n, _)| n != tensor)
                .collect();
            safetensors::serialize_to_file(kept, None, &out.join("model.safetensors")).unwrap();
        }
    }
    out
}

#[test]
fn bad_v3_inputs_are_errors_naming_the_culprit() {
    // A V3 checkpoint without its correction bias.
    let bias = "model.layers.1.mlp.gate.e_score_correction_bias";
    let folder = doctored("v3_groups_bias_mtp", "no-bias", |_| {}, Some(bias));
    let err = Model::load_with(&folder, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains(bias), "{err}");

    // MTP tensors the config does not declare are unexpected, and the error says which key.
    let folder = doctored(
        "v3_groups_bias_mtp",
        "undeclared-mtp",
        |c| c["num_nextn_predict_layers"] = 0.into(),
        None,
    );
    let err = Model::load_with(&folder, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::UnexpectedTensors { .. }), "{err}");
    assert!(
        err.to_string().contains("num_nextn_predict_layers"),
        "{err}"
    );

    // V2's routing keys under deepseek_v3 are refused, never run.
    for (key, value) in [
        ("scoring_func", "softmax"),
        ("topk_method", "group_limited_greedy"),
    ] {
        let folder = doctored("v3_groups_bias_mtp", key, |c| c[key] = value.into(), None);
        let err = Model::load_with(&folder, &LoadOptions::default()).unwrap_err();
        assert!(err.to_string().contains(key), "{err}");
    }
    // Model-sized defaults of transformers are not guessed.
    for key in ["routed_scaling_factor", "first_k_dense_replace"] {
        let folder = doctored(
            "v3_groups_bias_mtp",
            &format!("no-{key}"),
            |c| {
                c.as_object_mut().unwrap().remove(key);
            },
            None,
        );
        let err = Model::load_with(&folder, &LoadOptions::default()).unwrap_err();
        assert!(err.to_string().contains(key), "{err}");
    }
    // A quantization_config of another method is refused by name.
    let folder = doctored(
        "v3_groups_bias_mtp",
        "awq-config",
        |c| c["quantization_config"] = serde_json::json!({"quant_method": "awq"}),
        None,
    );
    let err = Model::load_with(&folder, &LoadOptions::default()).unwrap_err();
    assert!(
        err.to_string().contains("quantization_config.quant_method"),
        "{err}"
    );
}

#[test]
fn golden_v3_fp8_blocks_load_natively_one_byte_per_weight() {
    let model = check_variant("v3_fp8_blocks");
    assert_eq!(
        model.config().quantization.map(|q| q.weight_block_size),
        Some([8, 12])
    );
    // Held as stored: one byte per FP8 weight plus its scales (not widened), plus the f32 W_UK
    // copy the absorbed attention keeps.
    let store = deepblocks_core::SafeTensorsStore::open(dir("v3_fp8_blocks")).unwrap();
    let file_bytes: usize = store
        .infos()
        .map(|t| {
            let elem = if t.dtype_name == "F8_E4M3" {
                1
            } else {
                t.dtype.unwrap().size_bytes()
            };
            t.numel() * elem
        })
        .sum();
    assert!(store.infos().filter(|t| t.dtype_name == "F8_E4M3").count() > 100);
    let (c, a) = (model.config(), &model.config().attention);
    let w_uk =
        c.num_hidden_layers * a.num_attention_heads * a.kv_lora_rank * a.qk_nope_head_dim * 4;
    assert_eq!(model.weight_bytes(), file_bytes + w_uk);
    // Every tensor was read; the scales are not counted as parameters.
    let report = model.load_report();
    assert_eq!(report.tensors, store.len());
    let scales: usize = store
        .infos()
        .filter(|t| t.name.ends_with("_scale_inv"))
        .map(|t| t.numel())
        .sum();
    let all: usize = store.infos().map(|t| t.numel()).sum();
    assert_eq!(report.parameters, all - scales);
}

#[test]
fn an_fp8_checkpoint_dequantizes_on_request() {
    let g = Golden::load_path(&dir("v3_fp8_blocks").join("golden.safetensors"));
    let ids: Vec<u32> = g.data("input_ids").iter().map(|&v| v as u32).collect();
    let options = LoadOptions {
        dtype: Some(deepblocks_core::DType::F32),
        cache_dtype: CacheDType::F32,
        ..LoadOptions::default()
    };
    let model = Model::load_with(dir("v3_fp8_blocks"), &options).unwrap();
    let mut cache = model.new_cache(ids.len()).unwrap();
    let got = model.forward(&ids, &mut cache, Positions::All).unwrap();
    // Dequantized to f32 exactly: the same logits as the FP8 kernels, to rounding.
    assert_close(&got, g.data("logits"), 1e-4, 0.0);
}

#[test]
fn bad_fp8_checkpoints_are_errors_naming_the_tensor() {
    // An FP8 tensor without its scales.
    let scale = "model.layers.0.self_attn.o_proj.weight_scale_inv";
    let folder = doctored("v3_fp8_blocks", "fp8-no-scale", |_| {}, Some(scale));
    let err = Model::load_with(&folder, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains(scale), "{err}");

    // FP8 tensors without quantization_config.
    let folder = doctored(
        "v3_fp8_blocks",
        "fp8-no-config",
        |c| {
            c.as_object_mut().unwrap().remove("quantization_config");
        },
        None,
    );
    let err = Model::load_with(&folder, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::Fp8WithoutQuantizationConfig { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("quantization_config"), "{err}");

    // A block shape whose scale grid the file does not have.
    let folder = doctored(
        "v3_fp8_blocks",
        "fp8-wrong-block",
        |c| c["quantization_config"]["weight_block_size"] = serde_json::json!([128, 128]),
        None,
    );
    let err = Model::load_with(&folder, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("needs a scale grid"), "{err}");
}
