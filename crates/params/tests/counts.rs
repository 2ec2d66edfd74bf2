//! Counts against the published figures, against transformers' own counts (meta-device models,
//! `testdata/params/hf_counts.json`) and against the tensors of saved checkpoints.

use std::collections::BTreeMap;
use std::path::PathBuf;

use deepblocks_config::{AnyArchitecture, Architecture, DenseArchitecture, QueryProjection};
use deepblocks_params::{
    Accounting, Component, GPT3_175B, GPT3_FAMILY, InputEmbedding, Kind, dense_tree, mla_tree,
};
use serde_json::Value;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(testdata(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn hf_counts() -> Value {
    serde_json::from_str(&read("params/hf_counts.json")).expect("hf_counts.json")
}

fn deepseek(rel: &str) -> Architecture {
    Architecture::from_json_str(&read(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .architecture
}

#[test]
fn gpt3_walkthrough_table() {
    let t = GPT3_175B.walkthrough().unwrap();
    let expect = [
        ("embedding", 617_558_016, 1),
        ("key", 14_495_514_624, 9216),
        ("query", 14_495_514_624, 9216),
        ("value", 14_495_514_624, 9216),
        ("output", 14_495_514_624, 96),
        ("up-projection", 57_982_058_496, 96),
        ("down-projection", 57_982_058_496, 96),
        ("unembedding", 617_558_016, 1),
    ];
    let got: Vec<(&str, u64, u64)> = t
        .children()
        .iter()
        .map(|c| (c.name(), c.params(), c.matrices()))
        .collect();
    assert_eq!(got, expect);
    assert_eq!(t.params(), 175_181_291_520);
    assert_eq!(t.matrices(), 27_938);
}

/// The paper's count (biases, norms, positions, tied unembedding) equals GPT2LMHeadModel's
/// `numel` sum for every row of Table 2.1.
#[test]
fn gpt3_family_matches_transformers_gpt2() {
    let hf = hf_counts();
    for cfg in GPT3_FAMILY {
        let full = cfg.full().unwrap();
        let want = hf["gpt3"][cfg.name]["total"].as_u64().unwrap();
        assert_eq!(full.params(), want, "{}", cfg.name);
        // Per tensor too: GPT-2 names, layer index starred.
        let tensors = hf["gpt3"][cfg.name]["tensors"].as_object().unwrap();
        let mine = by_checkpoint(&full);
        for (name, n) in tensors {
            let key = name.trim_start_matches("transformer.");
            assert_eq!(mine.get(key), n.as_u64().as_ref(), "{} {name}", cfg.name);
        }
        assert_eq!(mine.len(), tensors.len(), "{}", cfg.name);
    }
    assert_eq!(GPT3_175B.full().unwrap().params(), 174_604_259_328);
}

/// Within 5% of the nominal size printed beside each row.
#[test]
fn gpt3_family_near_nominal() {
    for cfg in GPT3_FAMILY {
        let nominal: f64 = {
            let (num, unit) = cfg.nominal.split_at(cfg.nominal.len() - 1);
            num.parse::<f64>().unwrap() * if unit == "B" { 1e9 } else { 1e6 }
        };
        let got = cfg.full().unwrap().params() as f64;
        assert!(
            (got / nominal - 1.0).abs() < 0.05,
            "{}: {got} vs {nominal}",
            cfg.name
        );
    }
}

/// The two conventions differ by exactly: + separate unembedding, − positions, − per-layer
/// biases and norms (13·d with d_attn = d_model, d_ff = 4·d_model), − the final norm.
#[test]
fn gpt3_conventions_differ_by_the_stated_terms() {
    let c = GPT3_175B;
    let (v, d, l, n_ctx) = (c.vocab, c.d_model, c.n_layers, c.n_ctx);
    let walk = c.walkthrough().unwrap().params();
    let full = c.full().unwrap();
    assert_eq!(walk + n_ctx * d + l * 13 * d + 2 * d, full.params() + v * d);
    assert_eq!(full.params_where(|k| k == Kind::Bias), l * 9 * d);
    assert_eq!(full.params_where(|k| k == Kind::Norm), l * 4 * d + 2 * d);
    assert_eq!(
        c.non_embedding().unwrap(),
        full.params() - v * d - n_ctx * d
    );
}

#[test]
fn gpt3_rows_whose_heads_do_not_make_d_model_are_refused_where_heads_matter() {
    for cfg in GPT3_FAMILY {
        let consistent = cfg.n_heads * cfg.d_head == cfg.d_model;
        assert_eq!(
            consistent,
            !matches!(cfg.name, "GPT-3 XL" | "GPT-3 13B"),
            "{}",
            cfg.name
        );
        if !consistent {
            for err in [
                cfg.walkthrough().unwrap_err(),
                cfg.kv_cache().unwrap_err(),
                cfg.accounting().unwrap_err(),
            ] {
                assert_eq!(err.field(), Some("n_heads"), "{}: {err}", cfg.name);
            }
            cfg.full().unwrap();
        }
    }
}

/// Sums a tree's leaves by checkpoint name.
fn by_checkpoint(tree: &Component) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for leaf in tree.leaves() {
        let t = leaf.as_tensor().unwrap();
        *out.entry(t.checkpoint.clone()).or_insert(0) += leaf.params();
    }
    out
}

/// transformers 5 keeps routed experts packed: `experts.gate_up_proj` [E, 2i, h] and
/// `experts.down_proj` [E, h, i]; the checkpoint (and our tree) has them per expert.
fn packed_name(checkpoint: &str) -> String {
    checkpoint
        .replace("mlp.experts.*.gate_proj.weight", "mlp.experts.gate_up_proj")
        .replace("mlp.experts.*.up_proj.weight", "mlp.experts.gate_up_proj")
        .replace("mlp.experts.*.down_proj.weight", "mlp.experts.down_proj")
}

#[test]
fn deepseek_v2_counts_equal_transformers() {
    let hf = hf_counts();
    for (name, total, activated, excl) in [
        (
            "deepseek-v2",
            235_741_434_880u64,
            21_375_800_320u64,
            20_851_512_320u64,
        ),
        (
            "deepseek-v2-lite",
            15_706_484_224,
            2_661_150_208,
            2_451_435_008,
        ),
    ] {
        for form in ["json", "tf5.json"] {
            let cfg = deepseek(&format!("configs/{name}.{form}"));
            let tree = mla_tree(&cfg).unwrap();
            assert_eq!(tree.params(), total, "{name}.{form}");
            assert_eq!(
                tree.activated(InputEmbedding::Include),
                activated,
                "{name}.{form}"
            );
            assert_eq!(
                tree.activated(InputEmbedding::Exclude),
                excl,
                "{name}.{form}"
            );
            assert_eq!(hf[name]["total"].as_u64(), Some(total));
            assert_eq!(hf[name]["activated"].as_u64(), Some(activated));

            // Tensor by tensor, with transformers' packed expert names.
            let mut mine: BTreeMap<String, u64> = BTreeMap::new();
            for (ckpt, n) in by_checkpoint(&tree) {
                *mine.entry(packed_name(&ckpt)).or_insert(0) += n;
            }
            let theirs: BTreeMap<String, u64> = hf[name]["tensors"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect();
            assert_eq!(mine, theirs, "{name}.{form}");
        }
    }
}

/// Our counts per transformers parameter name (experts packed) and transformers' own, its
/// parameters and the `e_score_correction_bias` buffers together.
fn packed_counts(tree: &Component, hf: &Value) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut mine: BTreeMap<String, u64> = BTreeMap::new();
    for (ckpt, n) in by_checkpoint(tree) {
        *mine.entry(packed_name(&ckpt)).or_insert(0) += n;
    }
    let mut theirs: BTreeMap<String, u64> = BTreeMap::new();
    for group in ["tensors", "buffers"] {
        for (k, v) in hf[group].as_object().unwrap() {
            theirs.insert(k.clone(), v.as_u64().unwrap());
        }
    }
    (mine, theirs)
}

/// DeepSeek-V3 (R1's hub config): "671B total, 37B activated" (arXiv 2412.19437), equal to
/// transformers' meta-device count tensor by tensor once the checkpoint's
/// `e_score_correction_bias`, a buffer to transformers, is set apart.
#[test]
fn deepseek_v3_counts_equal_transformers() {
    let hf = &hf_counts()["deepseek-v3"];
    let cfg = deepseek("configs/deepseek-v3.json");
    assert_eq!(cfg.num_nextn_predict_layers, 1);
    assert_eq!(
        cfg.quantization.map(|q| q.weight_block_size),
        Some([128, 128])
    );
    let tree = mla_tree(&cfg).unwrap();
    let (mine, theirs) = packed_counts(&tree, hf);
    assert_eq!(mine, theirs);
    let bias = hf["buffers"]["model.layers.*.mlp.gate.e_score_correction_bias"]
        .as_u64()
        .unwrap();
    assert_eq!(bias, 58 * 256);
    assert_eq!(tree.params() - bias, hf["total"].as_u64().unwrap());
    assert_eq!(tree.params(), 671_026_419_200);
    assert_eq!(
        tree.activated(InputEmbedding::Include) - bias,
        hf["activated"].as_u64().unwrap()
    );
    let billions = |n: u64| n as f64 / 1e9;
    assert_eq!(format!("{:.0}", billions(tree.params())), "671");
    assert_eq!(
        format!("{:.0}", billions(tree.activated(InputEmbedding::Exclude))),
        "37"
    );
}

/// The rest of the V3 family from their real configs (`testdata/configs/README.md` says where each
/// comes from): equal to transformers' meta-device count tensor by tensor, the
/// `e_score_correction_bias` buffers set apart; the published sizes: Moonlight "16B total, 3B
/// activated", Kimi K2 "1 trillion total, 32 billion activated" (1.026T), GLM-4.7-Flash
/// "30B-A3B". Kimi K2's 32B, like V2-Lite's 2.4B, is the count without the input embedding (with
/// it, 32.86B); Moonlight's 3B rounds either count (2.91B / 2.58B); GLM's "A3B" truncates both
/// (3.90B / 3.58B).
#[test]
fn v3_family_counts_equal_transformers() {
    let hf = hf_counts();
    let billions = |n: u64| n as f64 / 1e9;
    // (file, MoE layers, routed experts, total, with / without the input embedding, published)
    for (name, moe_layers, experts, total, with_embed, without, published) in [
        (
            "moonlight-16b-a3b-instruct",
            26u64,
            64u64,
            15_960_110_208u64,
            2_914_776_192u64,
            2_579_231_872u64,
            ("16", Some("3")),
        ),
        (
            "kimi-k2-instruct-0905",
            60,
            384,
            1_026_408_232_448,
            32_861_500_928,
            31_687_095_808,
            ("1026", Some("32")),
        ),
        (
            "glm-4.7-flash",
            46,
            64,
            29_943_393_920,
            3_896_766_080,
            3_579_571_840,
            ("30", None),
        ),
    ] {
        let hf = &hf[name];
        let cfg = deepseek(&format!("configs/{name}.json"));
        let tree = mla_tree(&cfg).unwrap();
        let (mine, theirs) = packed_counts(&tree, hf);
        assert_eq!(mine, theirs, "{name}");
        let bias = hf["buffers"]["model.layers.*.mlp.gate.e_score_correction_bias"]
            .as_u64()
            .unwrap();
        assert_eq!(bias, moe_layers * experts, "{name}");
        assert_eq!(
            tree.params() - bias,
            hf["total"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            tree.activated(InputEmbedding::Include) - bias,
            hf["activated"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(tree.params(), total, "{name}");
        assert_eq!(
            tree.activated(InputEmbedding::Include),
            with_embed,
            "{name}"
        );
        assert_eq!(tree.activated(InputEmbedding::Exclude), without, "{name}");
        assert_eq!(format!("{:.0}", billions(total)), published.0, "{name}");
        if let Some(active) = published.1 {
            assert_eq!(format!("{:.0}", billions(without)), active, "{name}");
        } else {
            // "A3B": the name truncates (3.58B without the input embedding, 3.90B with it).
            assert_eq!(billions(without) as u64, 3, "{name}");
        }
    }
}

/// GLM-4.7-Flash declares one multi-token-prediction layer (as V3 does); Moonlight and Kimi K2
/// none. The layer is a MoE decoder layer plus its projection, norms and copies of the embedding
/// and head, reported apart from the model.
#[test]
fn v3_family_mtp_layers_are_counted_apart() {
    let glm = deepseek("configs/glm-4.7-flash.json");
    assert_eq!(glm.num_nextn_predict_layers, 1);
    let main = mla_tree(&glm).unwrap();
    let mtp = deepblocks_params::mtp_tree(&glm).unwrap().unwrap();
    let (h, v, layers, moe_layers) = (2048u64, 154_880u64, 47u64, 46u64);
    let layer = moe_layer_params(&main, layers, moe_layers, h);
    assert_eq!(mtp.params(), layer + 3 * h + 2 * h * h + 2 * v * h);
    for name in ["moonlight-16b-a3b-instruct", "kimi-k2-instruct-0905"] {
        let cfg = deepseek(&format!("configs/{name}.json"));
        assert_eq!(cfg.num_nextn_predict_layers, 0, "{name}");
        assert!(
            deepblocks_params::mtp_tree(&cfg).unwrap().is_none(),
            "{name}"
        );
    }
}

/// One MoE decoder layer of `main` (`layers` layers, `moe_layers` of them MoE, hidden size `h`):
/// attention, router and its bias, shared and routed experts, the layer's two norms (the final
/// norm, `h`, set apart).
fn moe_layer_params(main: &Component, layers: u64, moe_layers: u64, h: u64) -> u64 {
    let per = |name: &str, n: u64| main.get(name).unwrap().params() / n;
    per("self_attn", layers)
        + per("mlp.gate", moe_layers)
        + per("mlp.gate.e_score_correction_bias", moe_layers)
        + per("mlp.shared_experts", moe_layers)
        + per("mlp.experts", moe_layers)
        + (main.get("norms").unwrap().params() - h) / layers
}

/// DeepSeek-V3's one multi-token-prediction layer: a MoE decoder layer plus its projection,
/// norms and copies of the embedding and head — 13.46B; with the 671.03B of the model, 684.49B
/// (DeepSeek's README: "685B, which includes 671B of the Main Model weights and 14B of the
/// Multi-Token Prediction (MTP) Module weights").
#[test]
fn deepseek_v3_mtp_layer_is_counted_apart() {
    let cfg = deepseek("configs/deepseek-v3.json");
    let main = mla_tree(&cfg).unwrap();
    let mtp = deepblocks_params::mtp_tree(&cfg).unwrap().unwrap();
    // A MoE layer of the main model: attention, router and bias, shared and routed experts, norms.
    let (h, v) = (7168u64, 129_280u64);
    let layer = moe_layer_params(&main, 61, 58, h);
    assert_eq!(mtp.params(), layer + 3 * h + 2 * h * h + 2 * v * h);
    assert_eq!(mtp.params(), 13_463_426_304);
    assert_eq!(
        format!("{:.0}", (main.params() + mtp.params()) as f64 / 1e9),
        "684"
    );
    // None without MTP layers.
    assert!(
        deepblocks_params::mtp_tree(&deepseek("configs/deepseek-v2.json"))
            .unwrap()
            .is_none()
    );
}

/// The hub and transformers-5 forms read to the same config.
#[test]
fn deepseek_v2_both_config_forms_agree() {
    for name in ["deepseek-v2", "deepseek-v2-lite"] {
        assert_eq!(
            deepseek(&format!("configs/{name}.json")),
            deepseek(&format!("configs/{name}.tf5.json")),
            "{name}"
        );
    }
}

/// Published: DeepSeek-V2 "236B total, 21B activated"; V2-Lite "15.7B total, 2.4B activated".
/// Without the input embedding the activated counts are 20.85B and 2.45B. V2's 21B does not tell
/// the conventions apart (21.38B rounds to 21B as well) but V2-Lite's 2.4B does: with the
/// embedding it would be 2.66B, without the lm_head too 2.24B.
#[test]
fn published_activated_figures_exclude_the_input_embedding() {
    let billions = |n: u64| n as f64 / 1e9;
    let v2 = mla_tree(&deepseek("configs/deepseek-v2.json")).unwrap();
    let lite = mla_tree(&deepseek("configs/deepseek-v2-lite.json")).unwrap();
    assert_eq!(format!("{:.0}", billions(v2.params())), "236");
    assert_eq!(
        format!("{:.0}", billions(v2.activated(InputEmbedding::Exclude))),
        "21"
    );
    assert_eq!(format!("{:.1}", billions(lite.params())), "15.7");
    let lite_excl = billions(lite.activated(InputEmbedding::Exclude));
    assert!((2.4..2.5).contains(&lite_excl), "{lite_excl}");
    let lite_incl = billions(lite.activated(InputEmbedding::Include));
    assert!(lite_incl > 2.6, "{lite_incl}");
    let lm_head = lite.child("lm_head").unwrap().params();
    let lite_no_head = billions(lite.activated(InputEmbedding::Exclude) - lm_head);
    assert!(lite_no_head < 2.3, "{lite_no_head}");
}

#[test]
fn deepseek_v2_breakdown() {
    let v2 = mla_tree(&deepseek("configs/deepseek-v2.json")).unwrap();
    let names: Vec<&str> = v2.children().iter().map(Component::name).collect();
    assert_eq!(
        names,
        [
            "embed_tokens",
            "self_attn",
            "mlp",
            "mlp.gate",
            "mlp.shared_experts",
            "mlp.experts",
            "norms",
            "lm_head"
        ]
    );
    let attn: Vec<&str> = v2
        .child("self_attn")
        .unwrap()
        .children()
        .iter()
        .map(Component::name)
        .collect();
    assert_eq!(
        attn,
        [
            "q_a_proj",
            "q_b_proj",
            "kv_a_proj_with_mqa",
            "kv_b_proj",
            "o_proj"
        ]
    );
    // 1 dense layer, 59 MoE layers of 160 experts, 6 active.
    assert_eq!(v2.get("mlp/gate_proj").unwrap().params(), 12288 * 5120);
    let up = v2
        .get("mlp.experts/up_proj")
        .unwrap()
        .as_tensor()
        .unwrap()
        .clone();
    assert_eq!((up.copies, up.active_copies), (59 * 160, 59 * 6));
    assert_eq!(up.shape, [1536, 5120]);
    let kv_b = v2
        .get("self_attn/kv_b_proj")
        .unwrap()
        .as_tensor()
        .unwrap()
        .clone();
    assert_eq!(kv_b.shape, [128 * (128 + 128), 512]);
    assert_eq!(kv_b.checkpoint, "model.layers.*.self_attn.kv_b_proj.weight");
    // Matrices: per layer 5 attention, 3 dense MLP (1 layer) or router + 3 shared + 3·160 routed.
    assert_eq!(v2.matrices(), 1 + 60 * 5 + 3 + 59 * (1 + 3 + 3 * 160) + 1);
}

#[test]
fn deepseek_v2_lite_has_a_full_rank_query() {
    let lite = deepseek("configs/deepseek-v2-lite.json");
    let tree = mla_tree(&lite).unwrap();
    assert!(tree.get("self_attn/q_proj").is_some());
    assert!(tree.get("self_attn/q_a_proj").is_none());
    assert!(tree.get("norms/q_a_layernorm").is_none());
    assert_eq!(
        tree.get("self_attn/q_proj")
            .unwrap()
            .as_tensor()
            .unwrap()
            .shape,
        [16 * 192, 2048]
    );
}

#[test]
fn deepseek_llm_67b_matches_transformers_llama() {
    let tree = dense_tree(&DenseArchitecture::deepseek_llm_67b()).unwrap();
    assert_eq!(
        Some(tree.params()),
        hf_counts()["deepseek-llm-67b"]["total"].as_u64()
    );
    assert_eq!(tree.params(), 67_425_001_472);
}

/// Reads a safetensors header and sums tensor sizes by name, layer and expert indices starred.
fn header_sums(rel: &str) -> BTreeMap<String, u64> {
    let bytes = std::fs::read(testdata(rel)).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut out = BTreeMap::new();
    for (name, info) in meta.tensors() {
        let starred: Vec<&str> = name
            .split('.')
            .map(|p| if p.parse::<u64>().is_ok() { "*" } else { p })
            .collect();
        let n: u64 = info.shape.iter().map(|&d| d as u64).product();
        *out.entry(starred.join(".")).or_insert(0) += n;
    }
    out
}

/// The count from config.json equals the sum of tensor sizes in the checkpoint that
/// `save_pretrained` wrote (scripts/golden/params_tiny.py), in total and tensor by tensor.
#[test]
fn tiny_checkpoints_count_equals_safetensors_header() {
    for (dir, file_name) in [
        ("params-tiny", "model.safetensors"),
        ("params-tiny", "model-packed.safetensors"),
        ("params-tiny-tied", "model.safetensors"),
    ] {
        let cfg = AnyArchitecture::from_file(testdata(&format!("{dir}/config.json")))
            .unwrap()
            .architecture;
        let tree = Accounting::of(&cfg, dir).unwrap().tree;
        let file = header_sums(&format!("{dir}/{file_name}"));
        assert_eq!(tree.params(), file.values().sum::<u64>(), "{dir}");
        let mut mine = by_checkpoint(&tree);
        // The header may store experts packed (transformers 5 in memory) or per expert (the hub
        // layout save_pretrained writes); compare in whichever layout the file uses.
        let packed = file.keys().any(|k| k.ends_with("experts.gate_up_proj"));
        assert_eq!(packed, file_name.contains("packed"));
        if packed {
            mine = mine.into_iter().fold(BTreeMap::new(), |mut m, (k, v)| {
                *m.entry(packed_name(&k)).or_insert(0) += v;
                m
            });
        }
        assert_eq!(mine, file, "{dir}");
    }
}

#[test]
fn tiny_checkpoints_exercise_the_optional_parts() {
    let tiny = deepseek("params-tiny/config.json");
    let tied = deepseek("params-tiny-tied/config.json");
    assert_eq!(tiny.dense_layers(), 2);
    assert!(matches!(
        tiny.attention.q_proj,
        QueryProjection::LowRank { .. }
    ));
    assert_eq!(tied.attention.q_proj, QueryProjection::Full);
    assert!(tied.tie_word_embeddings);
    assert_eq!(tied.moe().unwrap().n_shared_experts, 2);
    let tree = mla_tree(&tied).unwrap();
    assert!(tree.child("lm_head").is_none());
    assert!(!header_sums("params-tiny-tied/model.safetensors").contains_key("lm_head.weight"));
}
