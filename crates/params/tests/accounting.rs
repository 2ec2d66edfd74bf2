//! KV cache, FLOPs, the deployment sketch, layer rules and the JSON summary.

use deepblocks_config::{Architecture, DenseArchitecture, Ffn};
use deepblocks_params::{
    AttentionDims, Bits, DeploymentPlan, GPT3_175B, InputEmbedding, Kind, KvCache, KvLayout, Limit,
    MlaPath, dense_accounting, dense_kv_cache, flops, mla_accounting, mla_kv_cache, mla_tree,
};
use serde_json::{Value, json};

fn lite_json() -> Value {
    serde_json::from_str(include_str!(
        "../../../testdata/configs/deepseek-v2-lite.json"
    ))
    .unwrap()
}

fn parse(v: &Value) -> Architecture {
    Architecture::from_json(v).unwrap().architecture
}

fn v2() -> Architecture {
    Architecture::deepseek_v2()
}

fn lite() -> Architecture {
    Architecture::deepseek_v2_lite()
}

/// The DeepSeek-V2 report's Table 1, per layer, with n_h = 128, d_h = 128, n_g = 8,
/// d_c = 4·d_h, d_h^R = d_h/2.
#[test]
fn kv_cache_table_1() {
    let (n, d) = (128, 128);
    let mha = KvLayout::from_heads(n, n, d).unwrap();
    let gqa = KvLayout::from_heads(n, 8, d).unwrap();
    let mqa = KvLayout::from_heads(n, 1, d).unwrap();
    let mla = KvLayout::Mla {
        kv_lora_rank: 4 * d,
        qk_rope_head_dim: d / 2,
    };
    assert_eq!(
        [mha.label(), gqa.label(), mqa.label(), mla.label()],
        ["MHA", "GQA", "MQA", "MLA"]
    );
    assert_eq!(mha.elements_per_layer(), 2 * n * d);
    assert_eq!(gqa.elements_per_layer(), 2 * 8 * d);
    assert_eq!(mqa.elements_per_layer(), 2 * d);
    // (d_c + d_h^R) = 9/2·d_h: "equal to GQA with only 2.25 groups".
    assert_eq!(2 * mla.elements_per_layer(), 9 * d);
}

/// The headline: DeepSeek-V2 (MLA, 6 bits per element) caches 93.3% less per token than
/// DeepSeek 67B (GQA, 8 KV heads, bf16).
#[test]
fn kv_cache_reduction_93_3_percent() {
    let old = dense_kv_cache(&DenseArchitecture::deepseek_llm_67b()).unwrap();
    let new = mla_kv_cache(&v2());
    assert_eq!(old.layout.label(), "GQA");
    assert_eq!(old.elements_per_token(), 95 * 2 * 8 * 128);
    assert_eq!(new.elements_per_token(), 60 * (512 + 64));
    assert_eq!(old.bytes_per_token(Bits::BF16), 389_120.0);
    let six = Bits::new(6).unwrap();
    assert_eq!(new.bytes_per_token(six), 25_920.0);
    let reduction = 1.0 - new.bytes_per_token(six) / old.bytes_per_token(Bits::BF16);
    assert_eq!(format!("{:.1}", 100.0 * reduction), "93.3");
    // Bytes for many tokens round up whole bytes once, not per token.
    assert_eq!(new.bytes_for_tokens(3, six), Some(3 * 25_920));
    let odd = KvCache::new(
        1,
        KvLayout::Mla {
            kv_lora_rank: 1,
            qk_rope_head_dim: 0,
        },
    );
    assert_eq!(odd.bytes_for_tokens(3, six), Some(3)); // 18 bits
}

/// Per token, V2's MLA cache is 1.76% of what MHA over its 128 heads of 128 would keep.
#[test]
fn mla_against_mha_equivalent() {
    let c = v2();
    let mha = KvCache::new(60, KvLayout::from_heads(128, 128, 128).unwrap());
    let ratio = mla_kv_cache(&c).elements_per_token() as f64 / mha.elements_per_token() as f64;
    assert!((ratio - 0.017_578_125).abs() < 1e-12, "{ratio}");
}

#[test]
fn flops_per_token() {
    let acc = mla_accounting(&v2(), "DeepSeek-V2").unwrap();
    let tree = &acc.tree;
    // Matmul parameters: everything activated except the embedding lookup and the norms.
    let norms = tree.params_where(|k| k == Kind::Norm);
    assert_eq!(
        acc.activated_matmul(),
        tree.activated(InputEmbedding::Exclude) - norms
    );
    let ctx = 4096;
    let f = acc.flops_per_token(ctx, MlaPath::Expanded).unwrap();
    assert_eq!(f.matmul, 2 * acc.activated_matmul());
    assert_eq!(f.attention, 2 * 60 * 128 * (192 + 128) * ctx);
    assert_eq!(f.total, f.matmul + f.attention);
    let g = acc.flops_per_token(ctx, MlaPath::Absorbed).unwrap();
    assert_eq!(g.matmul, f.matmul);
    assert_eq!(g.attention, 2 * 60 * 128 * (512 + 64 + 512) * ctx);
    // About 42 GFLOPs per token of weights.
    assert!((f.matmul as f64 / 1e9 - 41.7).abs() < 0.1, "{}", f.matmul);

    // A prefill is the sum over its positions.
    let t = 37;
    let sum: u128 = (1..=t)
        .map(|l| u128::from(acc.flops_per_token(l, MlaPath::Expanded).unwrap().total))
        .sum();
    assert_eq!(acc.prefill_flops(t, MlaPath::Expanded).unwrap(), sum);
}

/// GPT-3 175B: 2·N with N the weights a token multiplies by (the tied unembedding included),
/// plus 4·l·d·L for attention.
#[test]
fn gpt3_flops() {
    let c = GPT3_175B;
    let acc = c.accounting().unwrap();
    let (l, d, v) = (c.n_layers, c.d_model, c.vocab);
    assert_eq!(acc.activated_matmul(), 12 * l * d * d + v * d);
    let f = acc.flops_per_token(2048, MlaPath::Expanded).unwrap();
    assert_eq!(f.attention, 4 * l * d * 2048);
    // MLA's absorbed path changes nothing for MHA.
    assert_eq!(acc.flops_per_token(2048, MlaPath::Absorbed).unwrap(), f);
}

#[test]
fn attention_flops_per_key_is_checked() {
    let dims = AttentionDims {
        layers: u64::MAX,
        heads: 2,
        qk_head_dim: 1,
        v_head_dim: 1,
    };
    let kv = KvLayout::Mha {
        heads: 2,
        head_dim: 1,
    };
    assert_eq!(
        flops::attention_flops_per_key(&dims, &kv, MlaPath::Expanded),
        None
    );
    let err = flops::token_flops(1, &dims, &kv, 1, MlaPath::Expanded).unwrap_err();
    assert!(
        matches!(err, deepblocks_params::Error::Overflow { .. }),
        "{err}"
    );
}

/// DeepSeek's rule: MoE when i ≥ first_k_dense_replace and i % moe_layer_freq == 0.
#[test]
fn moe_layer_freq_and_first_k_dense_replace() {
    let mut cfg = lite_json();
    cfg["moe_layer_freq"] = json!(2);
    cfg["first_k_dense_replace"] = json!(3);
    let c = parse(&cfg);
    let moe: Vec<usize> = (0..27).filter(|&i| c.is_moe_layer(i)).collect();
    assert_eq!(moe, (4..27).step_by(2).collect::<Vec<usize>>());
    assert_eq!(c.moe_layers(), 12);
    assert_eq!(c.dense_layers(), 15);
    let tree = mla_tree(&c).unwrap();
    assert_eq!(
        tree.get("mlp/up_proj").unwrap().as_tensor().unwrap().copies,
        15
    );
    assert_eq!(
        tree.child("mlp.gate").unwrap().as_tensor().unwrap().copies,
        12
    );
    // first_k_dense_replace past the last layer: all dense.
    cfg["first_k_dense_replace"] = json!(100);
    let c = parse(&cfg);
    assert_eq!(c.moe_layers(), 0);
    let acc = mla_accounting(&c, "dense").unwrap();
    assert_eq!(acc.routed_experts, 0);
    assert_eq!(acc.activated(InputEmbedding::Include), acc.total());
}

#[test]
fn no_routed_experts_means_dense() {
    let mut cfg = lite_json();
    cfg["n_routed_experts"] = Value::Null;
    let c = parse(&cfg);
    assert_eq!(c.ffn, Ffn::Dense);
    let tree = mla_tree(&c).unwrap();
    let names: Vec<&str> = tree.children().iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        ["embed_tokens", "self_attn", "mlp", "norms", "lm_head"]
    );
    assert_eq!(tree.activated(InputEmbedding::Include), tree.params());
}

#[test]
fn no_shared_experts() {
    for v in [Value::Null, json!(0)] {
        let mut cfg = lite_json();
        cfg["n_shared_experts"] = v;
        let tree = mla_tree(&parse(&cfg)).unwrap();
        assert!(tree.child("mlp.shared_experts").is_none());
        let full = mla_tree(&lite()).unwrap();
        let shared = full.child("mlp.shared_experts").unwrap().params();
        assert_eq!(tree.params() + shared, full.params());
    }
}

#[test]
fn tied_embeddings_drop_lm_head() {
    let mut cfg = lite_json();
    cfg["tie_word_embeddings"] = json!(true);
    let tied = mla_accounting(&parse(&cfg), "tied").unwrap();
    let untied = mla_accounting(&lite(), "untied").unwrap();
    assert!(tied.tree.child("lm_head").is_none());
    assert_eq!(tied.total() + 102_400 * 2048, untied.total());
    // The tied matrix is still multiplied by every token.
    assert_eq!(tied.activated_matmul(), untied.activated_matmul());
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
fn deployment_of_deepseek_v2_on_eight_devices() {
    let acc = mla_accounting(&v2(), "DeepSeek-V2").unwrap();
    let d = plan().plan(&acc).unwrap();
    let tree = &acc.tree;
    let routed = tree.params_where(|k| k == Kind::RoutedExpert);
    let replicated = tree.params_where(|k| matches!(k, Kind::Norm | Kind::Router | Kind::Bias));
    assert_eq!(d.expert_params, routed / 8);
    assert_eq!(d.replicated_params, replicated);
    let sharded = acc.total() - routed - replicated;
    assert!(d.tensor_parallel_params >= sharded / 8 && d.tensor_parallel_params <= sharded / 8 + 8);
    assert_eq!(
        d.weight_bytes,
        2 * (d.tensor_parallel_params + d.expert_params + d.replicated_params)
    );
    // Every tensor-parallel rank holds the whole latent cache.
    assert_eq!(d.kv_bits_per_token, 60 * 576 * 16);
    assert_eq!(d.free_bytes, 80_000_000_000 - d.weight_bytes);
    assert_eq!(d.max_context_memory, d.free_bytes * 8 / d.kv_bits_per_token);
    assert_eq!(
        (d.max_context, d.limited_by),
        (163_840, Limit::ModelContext)
    );

    // 64 sequences at once share the free memory: memory-bound.
    let d64 = DeploymentPlan {
        batch: 64,
        ..plan()
    }
    .plan(&acc)
    .unwrap();
    assert_eq!(d64.limited_by, Limit::Memory);
    assert_eq!(
        d64.max_context,
        d64.free_bytes * 8 / (64 * d64.kv_bits_per_token)
    );

    // One 80 GB device cannot hold 236B bf16 weights.
    let one = DeploymentPlan {
        devices: 1,
        tensor_parallel: 1,
        expert_parallel: 1,
        ..plan()
    };
    let d1 = one.plan(&acc).unwrap();
    assert_eq!(
        (d1.max_context, d1.limited_by, d1.free_bytes),
        (0, Limit::Weights, 0)
    );
}

/// This machine: 24 GB, one "device". V2-Lite fits in 8-bit weights, not in bf16.
#[test]
fn deployment_of_lite_on_this_machine() {
    let acc = mla_accounting(&lite(), "DeepSeek-V2-Lite").unwrap();
    let here = DeploymentPlan {
        devices: 1,
        memory_per_device: 24_000_000_000,
        reserve_per_device: 2_000_000_000,
        tensor_parallel: 1,
        expert_parallel: 1,
        weight_bits: Bits::BF16,
        kv_bits: Bits::BF16,
        batch: 1,
    };
    assert_eq!(here.plan(&acc).unwrap().limited_by, Limit::Weights);
    let int8 = DeploymentPlan {
        weight_bits: Bits::FP8,
        ..here
    };
    let d = int8.plan(&acc).unwrap();
    assert_eq!(d.weight_bytes, acc.total());
    assert_eq!(d.kv_bytes_per_token, 27.0 * 576.0 * 2.0);
    assert_eq!(d.limited_by, Limit::ModelContext);
}

/// GQA heads split over tensor-parallel ranks; past the group count they are replicated.
#[test]
fn gqa_cache_splits_over_tensor_parallel_ranks() {
    let acc = dense_accounting(&DenseArchitecture::deepseek_llm_67b(), "67B").unwrap();
    for (tp, groups_per_rank) in [(1, 8), (2, 4), (8, 1), (16, 1), (64, 1)] {
        let d = DeploymentPlan {
            devices: tp,
            tensor_parallel: tp,
            expert_parallel: 1,
            ..plan()
        }
        .plan(&acc)
        .unwrap();
        assert_eq!(
            d.kv_bits_per_token,
            95 * 2 * groups_per_rank * 128 * 16,
            "tp {tp}"
        );
    }
}

/// The JSON contract of the `params` example.
#[test]
fn summary_json_keys() {
    let acc = mla_accounting(&v2(), "DeepSeek-V2").unwrap();
    let s = serde_json::to_value(acc.summary(4096).unwrap()).unwrap();
    assert_eq!(s["total"], json!(235_741_434_880u64));
    assert_eq!(s["activated"], json!(21_375_800_320u64));
    assert_eq!(s["activated_excl_embedding"], json!(20_851_512_320u64));
    assert_eq!(s["kv_cache_elements_per_token"], json!(34_560));
    assert_eq!(s["kv_cache"]["layout"]["type"], json!("mla"));
    let components = s["components"].as_array().unwrap();
    let sum: u64 = components
        .iter()
        .map(|c| c["params"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 235_741_434_880);
    let experts = components
        .iter()
        .find(|c| c["name"] == "mlp.experts")
        .unwrap();
    let up = &experts["children"][1];
    assert_eq!(up["name"], "up_proj");
    assert_eq!(up["kind"], "routed_expert");
    assert_eq!(up["shape"], json!([1536, 5120]));
    assert_eq!(up["active_copies"], json!(59 * 6));
    assert_eq!(
        up["checkpoint"],
        "model.layers.*.mlp.experts.*.up_proj.weight"
    );
}
