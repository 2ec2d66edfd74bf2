//! The bad inputs of docs/testing.md's table, each run here: the table in the doc is rendered from
//! this list, so a case cannot be documented without being tested, nor change without the doc.
//! On a mismatch the test prints the table to paste between the markers.

use std::path::{Path, PathBuf};

use deepblocks::config::Architecture;
use deepblocks::core::SafeTensorsStore;
use deepblocks::core::quant::BlockFormat;
use deepblocks::core::quant::fp8::Fp8Block;
use deepblocks::core::{Buffer, Weight};
use deepblocks::deepseek::{LoadOptions, MlaCache, MlaCacheConfig, Model, Positions, Recipe};
use deepblocks_testkit::{F32Tensor, read_f32_tensors, write_f32_tensors};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> PathBuf {
    root().join("testdata/deepseek/b_fullq_greedy")
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("bad-inputs")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn v2() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("testdata/configs/deepseek-v2.json")).unwrap(),
    )
    .unwrap()
}

/// The error of reading DeepSeek-V2's config with `edit` applied.
fn config_error(edit: impl FnOnce(&mut Value)) -> String {
    let mut v = v2();
    edit(&mut v);
    Architecture::from_json(&v).unwrap_err().to_string()
}

/// A checkpoint's tensors: name, shape, f32 values.
type Tensors = Vec<F32Tensor>;

/// A copy of the f32 fixture with its config edited and its tensors passed through `tensors`.
fn folder(
    name: &str,
    config: impl FnOnce(&mut Value),
    tensors: impl FnOnce(&mut Tensors),
) -> PathBuf {
    folder_of("b_fullq_greedy", name, config, tensors)
}

/// [`folder`] from the golden checkpoint `variant`.
fn folder_of(
    variant: &str,
    name: &str,
    config: impl FnOnce(&mut Value),
    tensors: impl FnOnce(&mut Tensors),
) -> PathBuf {
    let src = root().join("testdata/deepseek").join(variant);
    let dst = scratch(name);
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config(&mut cfg);
    std::fs::write(dst.join("config.json"), cfg.to_string()).unwrap();
    let mut all: Tensors = read_f32_tensors(&src.join("model.safetensors"));
    tensors(&mut all);
    write_f32_tensors(&dst.join("model.safetensors"), &all);
    dst
}

/// A copy of the golden checkpoint `variant` with its config edited, the tensors `keep` says
/// kept as stored (any dtype), and `add` (a name and shape of f32 ones) added.
fn raw_folder(
    variant: &str,
    name: &str,
    config: impl FnOnce(&mut Value),
    keep: impl Fn(&str) -> bool,
    add: Option<(&str, Vec<usize>)>,
) -> PathBuf {
    use safetensors::tensor::{Dtype, TensorView};
    let src = root().join("testdata/deepseek").join(variant);
    let dst = scratch(name);
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config(&mut cfg);
    std::fs::write(dst.join("config.json"), cfg.to_string()).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView<'_>)> =
        st.tensors().into_iter().filter(|(n, _)| keep(n)).collect();
    let ones: Vec<u8> = add
        .as_ref()
        .map(|(_, shape)| {
            let n: usize = shape.iter().product();
            (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect()
        })
        .unwrap_or_default();
    if let Some((n, shape)) = &add {
        views.push((
            n.to_string(),
            TensorView::new(Dtype::F32, shape.clone(), &ones).unwrap(),
        ));
    }
    safetensors::serialize_to_file(views, None, &dst.join("model.safetensors")).unwrap();
    dst
}

fn load_error(dir: &Path, options: LoadOptions) -> String {
    Model::load_with(dir, &options).unwrap_err().to_string()
}

fn poison(name: &'static str) -> impl FnOnce(&mut Tensors) {
    move |all| {
        for (n, _, v) in all.iter_mut() {
            if n == name {
                v[3] = f32::NAN;
            }
        }
    }
}

fn forward_error(dir: &Path, tokens: &[u32]) -> String {
    let model = Model::load(dir).unwrap();
    let mut cache = model.new_cache(8).unwrap();
    model
        .forward(tokens, &mut cache, Positions::Last)
        .unwrap_err()
        .to_string()
}

/// `(case, what the error says, the error)`.
type Case = (&'static str, &'static str, Box<dyn Fn() -> String>);

fn cases() -> Vec<Case> {
    let none = |_: &mut Tensors| {};
    vec![
        (
            "config.json: a count written as a string (`\"hidden_size\": \"5120\"`)",
            "`hidden_size` must be a non-negative integer",
            Box::new(|| config_error(|v| v["hidden_size"] = json!("5120"))),
        ),
        (
            "config.json: `q_lora_rank` absent (ambiguous: transformers defaults it to one model's size)",
            "`q_lora_rank` is missing",
            Box::new(|| {
                config_error(|v| {
                    v.as_object_mut().unwrap().remove("q_lora_rank");
                })
            }),
        ),
        (
            "config.json: a `model_type` outside the supported list (`qwen3_moe`)",
            "model_type \"qwen3_moe\" is not supported; supported: deepseek_v2, deepseek_v3, kimi_k2, glm4_moe_lite",
            Box::new(|| config_error(|v| v["model_type"] = json!("qwen3_moe"))),
        ),
        (
            "config.json: DeepSeek-V2's routing under `model_type: deepseek_v3`",
            "`scoring_func` = \"softmax\" is not supported: deepseek_v3 scores experts with sigmoid",
            Box::new(|| config_error(|v| v["model_type"] = json!("deepseek_v3"))),
        ),
        (
            "config.json: a `quantization_config` of another method (`awq`)",
            "`quantization_config.quant_method` = \"awq\" is not supported",
            Box::new(|| {
                config_error(|v| v["quantization_config"] = json!({"quant_method": "awq"}))
            }),
        ),
        (
            "an FP8 tensor without its block scales (`weight_scale_inv`)",
            "model.layers.0.self_attn.o_proj.weight_scale_inv",
            Box::new(|| {
                let scale = "model.layers.0.self_attn.o_proj.weight_scale_inv";
                let d = raw_folder(
                    "v3_fp8_blocks",
                    "fp8-no-scale",
                    |_| {},
                    |n| n != scale,
                    None,
                );
                load_error(&d, LoadOptions::default())
            }),
        ),
        (
            "FP8 tensors with no `quantization_config` in config.json",
            "is stored in FP8 blocks, but config.json has no quantization_config",
            Box::new(|| {
                let d = raw_folder(
                    "v3_fp8_blocks",
                    "fp8-no-config",
                    |c| {
                        c.as_object_mut().unwrap().remove("quantization_config");
                    },
                    |_| true,
                    None,
                );
                load_error(&d, LoadOptions::default())
            }),
        ),
        (
            "block scales beside a tensor not stored in FP8",
            "has FP8 block scales (\"model.layers.0.self_attn.o_proj.weight_scale_inv\") but is stored as F32",
            Box::new(|| {
                let d = raw_folder(
                    "v3_groups_bias_mtp",
                    "scale-no-fp8",
                    |c| {
                        c["quantization_config"] =
                            json!({"quant_method": "fp8", "weight_block_size": [8, 12]})
                    },
                    |_| true,
                    Some((
                        "model.layers.0.self_attn.o_proj.weight_scale_inv",
                        vec![4, 3],
                    )),
                );
                load_error(&d, LoadOptions::default())
            }),
        ),
        (
            "a DeepSeek-V3 checkpoint without a layer's `e_score_correction_bias`",
            "model.layers.1.mlp.gate.e_score_correction_bias",
            Box::new(|| {
                let bias = "model.layers.1.mlp.gate.e_score_correction_bias";
                let d = folder_of(
                    "v3_groups_bias_mtp",
                    "v3-no-bias",
                    |_| {},
                    |all| all.retain(|(n, _, _)| n != bias),
                );
                load_error(&d, LoadOptions::default())
            }),
        ),
        (
            "config.json: a known key with an unimplemented value (`attention_bias: true`)",
            "`attention_bias` = true is not supported",
            Box::new(|| config_error(|v| v["attention_bias"] = json!(true))),
        ),
        (
            "config.json: `routed_scaling_factor: -1e30`",
            "`routed_scaling_factor` = -1000000000000000000000000000000: must be a finite number > 0",
            Box::new(|| config_error(|v| v["routed_scaling_factor"] = json!(-1e30))),
        ),
        (
            "config.json: `rms_norm_eps: 0`",
            "`rms_norm_eps` = 0: must be a finite number > 0",
            Box::new(|| config_error(|v| v["rms_norm_eps"] = json!(0))),
        ),
        (
            "config.json: an `eos_token_id` outside the vocabulary",
            "`eos_token_id` = 102400: is not below vocab_size = 102400",
            Box::new(|| config_error(|v| v["eos_token_id"] = json!(102_400))),
        ),
        (
            "config.json: `n_group` not dividing the experts",
            "`n_group` = 7: must divide n_routed_experts = 160",
            Box::new(|| config_error(|v| v["n_group"] = json!(7))),
        ),
        (
            "config.json: YaRN with `beta_fast` below `beta_slow`",
            "`rope_scaling.beta_fast` = 0.5: must be at least rope_scaling.beta_slow = 1",
            Box::new(|| config_error(|v| v["rope_scaling"]["beta_fast"] = json!(0.5))),
        ),
        (
            "config.json: `rope_scaling` and `rope_parameters` that disagree",
            "`rope_scaling` = (present): disagrees with rope_parameters",
            Box::new(|| {
                config_error(|v| {
                    v["rope_parameters"] = json!({"rope_type": "linear", "factor": 2.0})
                })
            }),
        ),
        (
            "config.json: sizes whose tensors overflow memory addresses",
            "embed_tokens [V, h] overflows",
            Box::new(|| {
                config_error(|v| {
                    v["vocab_size"] = json!(u64::MAX / 2);
                    v["eos_token_id"] = json!(1);
                })
            }),
        ),
        (
            "config.json: not JSON",
            "not valid JSON",
            Box::new(|| {
                let d = scratch("not-json");
                std::fs::write(d.join("config.json"), "{").unwrap();
                load_error(&d, LoadOptions::default())
            }),
        ),
        (
            "a folder without weights",
            "no model.safetensors or model.safetensors.index.json in this folder",
            Box::new(|| {
                let d = scratch("no-weights");
                std::fs::copy(fixture().join("config.json"), d.join("config.json")).unwrap();
                load_error(&d, LoadOptions::default())
            }),
        ),
        (
            "a misspelt optional key (`n_shared_expert`) with the shared-expert tensors in the file",
            "n_shared_experts is 0 (or absent), but the checkpoint has shared experts (config.json has keys deepblocks does not know: n_shared_expert",
            Box::new(move || {
                load_error(
                    &folder(
                        "typo",
                        |c| {
                            let n = c
                                .as_object_mut()
                                .unwrap()
                                .remove("n_shared_experts")
                                .unwrap();
                            c["n_shared_expert"] = n;
                        },
                        none,
                    ),
                    LoadOptions::default(),
                )
            }),
        ),
        (
            "`num_hidden_layers` smaller than the checkpoint's",
            "num_hidden_layers is 2, but the checkpoint has layers up to 2",
            Box::new(move || {
                load_error(
                    &folder("fewer-layers", |c| c["num_hidden_layers"] = json!(2), none),
                    LoadOptions::default(),
                )
            }),
        ),
        (
            "`num_hidden_layers: 1e9`",
            "config.json's num_hidden_layers is 1000000000, but the checkpoint holds 3 decoder layer(s)",
            Box::new(move || {
                load_error(
                    &folder(
                        "many-layers",
                        |c| c["num_hidden_layers"] = json!(1_000_000_000),
                        none,
                    ),
                    LoadOptions::default(),
                )
            }),
        ),
        (
            "`tie_word_embeddings: true` while `lm_head.weight` exists",
            "tie_word_embeddings is true, but the checkpoint has its own lm_head.weight",
            Box::new(move || {
                load_error(
                    &folder("tied", |c| c["tie_word_embeddings"] = json!(true), none),
                    LoadOptions::default(),
                )
            }),
        ),
        (
            "a tensor no config key explains",
            "1 tensor(s) the config does not account for (model.extra.weight): no config key accounts for them",
            Box::new(|| {
                load_error(
                    &folder(
                        "extra",
                        |_| {},
                        |all| all.push(("model.extra.weight".into(), vec![2], vec![0.0; 2])),
                    ),
                    LoadOptions::default(),
                )
            }),
        ),
        (
            "a tensor missing from the file",
            "tensor \"lm_head.weight\" (expected shape [96, 32]) not found",
            Box::new(|| {
                load_error(
                    &folder(
                        "missing",
                        |_| {},
                        |all| all.retain(|t| t.0 != "lm_head.weight"),
                    ),
                    LoadOptions::default(),
                )
            }),
        ),
        (
            "a tensor of the wrong shape",
            "model.layers.1.mlp.gate.weight: expected shape [10, 32], found [8, 32]",
            Box::new(move || {
                load_error(
                    &folder("shape", |c| c["n_routed_experts"] = json!(10), none),
                    LoadOptions::default(),
                )
            }),
        ),
        (
            "a NaN in `lm_head.weight`, loaded with `check_weights`",
            "tensor \"lm_head.weight\": element 3 is NaN, not a finite number",
            Box::new(|| {
                load_error(
                    &folder("nan-head", |_| {}, poison("lm_head.weight")),
                    LoadOptions {
                        check_weights: true,
                        ..LoadOptions::default()
                    },
                )
            }),
        ),
        (
            "a NaN in a matrix quantized while loading (`quant: q8_0`)",
            "lm_head.weight: element 3 is NaN, which cannot be quantized",
            Box::new(|| {
                load_error(
                    &folder("nan-quant", |_| {}, poison("lm_head.weight")),
                    LoadOptions {
                        quant: Some(Recipe::Q8_0),
                        ..LoadOptions::default()
                    },
                )
            }),
        ),
        (
            "an unknown quantization recipe (`--quant q3_k`)",
            "unknown quantization recipe \"q3_k\"; known: q8_0, q4_0, q4_k_m, fp8",
            Box::new(|| Recipe::from_name("q3_k").unwrap_err().to_string()),
        ),
        (
            "block-format bytes that do not fill the shape",
            "Q4_K weight bytes: 143 elements cannot hold shape [1, 144]",
            Box::new(|| {
                Weight::from_blocks(BlockFormat::Q4_K, vec![0; 143], 1, 256)
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "FP8 weights whose scale grid is not ceil(out/bo) × ceil(in/bi)",
            "w: an FP8 [200, 300] matrix in blocks of 128×128 needs a scale grid of [2, 3], found [2, 2]",
            Box::new(|| {
                Weight::from_fp8(
                    Fp8Block::DEEPSEEK_V3,
                    Buffer::from_vec(vec![0; 200 * 300]),
                    Buffer::from_vec(vec![1.0; 4]),
                    [2, 2],
                    200,
                    300,
                    "w",
                )
                .unwrap_err()
                .to_string()
            }),
        ),
        (
            "an FP8 NaN code",
            "w (an FP8 NaN code): element 7 is NaN",
            Box::new(|| {
                let mut codes = vec![0x38; 16];
                codes[7] = 0x7f;
                Weight::from_fp8(
                    Fp8Block::DEEPSEEK_V3,
                    Buffer::from_vec(codes),
                    Buffer::from_vec(vec![1.0]),
                    [1, 1],
                    4,
                    4,
                    "w",
                )
                .unwrap_err()
                .to_string()
            }),
        ),
        (
            "a block format for rows that are not whole blocks",
            "rows of 100 weights are not whole Q8_0 blocks of 32",
            Box::new(|| {
                Weight::from_f32(vec![0.5; 200], 2, 100)
                    .unwrap()
                    .quantize(BlockFormat::Q8_0, "w")
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "a NaN in `model.norm.weight`, run",
            "lm_head: output element 0 is NaN",
            Box::new(|| {
                forward_error(
                    &folder("nan-norm", |_| {}, poison("model.norm.weight")),
                    &[5, 6],
                )
            }),
        ),
        (
            "a NaN in a layer's `o_proj`, run",
            "layer 1 attention: output element",
            Box::new(|| {
                forward_error(
                    &folder(
                        "nan-o-proj",
                        |_| {},
                        poison("model.layers.1.self_attn.o_proj.weight"),
                    ),
                    &[5, 6],
                )
            }),
        ),
        (
            "a NaN in a router's gate, run",
            "layer 2: router: gate logit of token 0 for expert",
            Box::new(|| {
                forward_error(
                    &folder("nan-gate", |_| {}, poison("model.layers.2.mlp.gate.weight")),
                    &[5, 6],
                )
            }),
        ),
        (
            "a token id outside the vocabulary",
            "token id 96 at position 1 is out of range for a vocabulary of 96",
            Box::new(|| forward_error(&fixture(), &[5, 96])),
        ),
        (
            "a prompt longer than the context",
            "the KV cache holds 0 tokens; 65 more would reach position 64, past max_position_embeddings = 64",
            Box::new(|| forward_error(&fixture(), &[5; 65])),
        ),
        (
            "a perplexity window longer than the context (`--ctx 65`)",
            "a perplexity window of 65 tokens is not possible: it must be between 2 and max_position_embeddings = 64",
            Box::new(|| {
                let m = Model::load(fixture()).unwrap();
                m.perplexity(&[5; 200], 65, |_, _| {})
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "a text shorter than one perplexity window",
            "10 tokens are fewer than one window of 33",
            Box::new(|| {
                let m = Model::load(fixture()).unwrap();
                m.perplexity(&[5; 10], 33, |_, _| {})
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "a logits buffer of the wrong length",
            "logits: 95 elements cannot hold shape [1, 96]",
            Box::new(|| {
                let m = Model::load(fixture()).unwrap();
                let mut c = m.new_cache(4).unwrap();
                m.forward_into(&mut [0.0; 95], &[5], &mut c, Positions::Last)
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "a cache made for another model",
            "the KV cache has layers = 7, but this model needs 3",
            Box::new(|| {
                let m = Model::load(fixture()).unwrap();
                let mut c = MlaCache::new(MlaCacheConfig {
                    num_layers: 7,
                    ..m.cache_config()
                })
                .unwrap();
                m.forward(&[5], &mut c, Positions::Last)
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "a KV cache element type the cache cannot hold (`--kv-cache q4_0`)",
            "KV cache dtype \"q4_0\" is not supported: use f32, bf16, f16 or q8_0",
            Box::new(|| {
                deepblocks::mla::cache_dtype("q4_0")
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "bf16 products the kernels do not have (`--bf16-products int8`)",
            "bf16 products \"int8\" are not known: use f32 or bf16",
            Box::new(|| {
                deepblocks::core::Bf16Products::from_name("int8")
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "a cache whose layers hold different token counts (one appended to alone)",
            "KV cache layer 1 holds 0 tokens but layer 0 holds 1",
            Box::new(|| {
                let m = Model::load(fixture()).unwrap();
                let config = m.cache_config();
                let mut c = MlaCache::new(config).unwrap();
                c.layer_mut(0)
                    .unwrap()
                    .append(
                        &vec![0.0; config.kv_lora_rank],
                        &vec![0.0; config.qk_rope_head_dim],
                        1,
                    )
                    .unwrap();
                m.forward(&[5], &mut c, Positions::Last)
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "a truncated safetensors file",
            "run past the",
            Box::new(|| {
                let d = scratch("truncated");
                let b = std::fs::read(fixture().join("model.safetensors")).unwrap();
                std::fs::write(d.join("model.safetensors"), &b[..b.len() - 9]).unwrap();
                SafeTensorsStore::open(&d).unwrap_err().to_string()
            }),
        ),
        (
            "a chat template that does not parse",
            "chat template, line 2: syntax error",
            Box::new(|| {
                deepblocks::tokenize::ChatTemplate::new("{{ bos_token }}\n{% if %}")
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "a chat template that fails while rendering (its own `raise_exception`)",
            "the template raised: Conversation roles must alternate",
            Box::new(|| {
                let t = deepblocks::tokenize::ChatTemplate::new(
                    "{% if messages|length > 1 %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}",
                )
                .unwrap();
                let m = json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]);
                t.render(&m, "", "", false).unwrap_err().to_string()
            }),
        ),
        (
            "a chat message with an unknown role",
            "chat messages: message 1 has role \"robot\"; known roles: system, user, assistant, tool",
            Box::new(|| {
                let t = deepblocks::tokenize::ChatTemplate::new("{{ messages|length }}").unwrap();
                let m =
                    json!([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]);
                t.render(&m, "", "", false).unwrap_err().to_string()
            }),
        ),
        (
            "MESSAGES.json that is not a list (`--chat`)",
            "chat messages: the messages are an object, not a list",
            Box::new(|| {
                let t = deepblocks::tokenize::ChatTemplate::new("{{ messages|length }}").unwrap();
                t.render(&json!({"role": "user"}), "", "", false)
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "a file given as GGUF that is not one",
            "model.gguf: not a GGUF file",
            Box::new(|| {
                deepblocks::core::gguf::GgufFile::from_bytes("model.gguf", b"PK\x03\x04....")
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "a GGUF version we do not read",
            "GGUF version 2; only version 3 is read",
            Box::new(|| {
                let mut b = b"GGUF".to_vec();
                b.extend(2u32.to_le_bytes());
                b.extend([0u8; 16]);
                deepblocks::core::gguf::GgufFile::from_bytes("model.gguf", &b)
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "a GGUF metadata array longer than the file",
            "an array of 1099511627776 elements cannot fit",
            Box::new(|| {
                let mut b = b"GGUF".to_vec();
                b.extend(3u32.to_le_bytes());
                b.extend(0u64.to_le_bytes()); // tensors
                b.extend(1u64.to_le_bytes()); // metadata
                b.extend(1u64.to_le_bytes());
                b.push(b'k');
                b.extend(9u32.to_le_bytes()); // array
                b.extend(4u32.to_le_bytes()); // of u32
                b.extend((1u64 << 40).to_le_bytes());
                deepblocks::core::gguf::GgufFile::from_bytes("model.gguf", &b)
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "writing GGUF from a model with FP8 weights",
            "cannot write GGUF: blk.0.attn_q_a.weight: FP8_E4M3",
            Box::new(|| {
                let options = LoadOptions {
                    quant: Some(Recipe::Fp8),
                    ..LoadOptions::default()
                };
                let gguf = root().join("testdata/gguf/a_lowrank_group_yarn.gguf");
                Model::load_gguf(gguf, &options)
                    .unwrap()
                    .to_gguf(None, "x")
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "a GGUF tensor to write sized unlike its dimensions",
            "tensor \"w\": ne [4, 3] in F32 is 48 bytes; the parts hold 32",
            Box::new(|| {
                let w = Weight::from_f32(vec![0.5; 8], 2, 4).unwrap();
                let mut out = deepblocks::core::gguf::GgufWriter::new();
                out.add_stacked("w", &[4, 3], &[w]).unwrap_err().to_string()
            }),
        ),
        (
            "a tokenizer GGUF cannot hold (a normalizer)",
            "tokenizer.json normalizer",
            Box::new(|| {
                let mut spec: Value = serde_json::from_str(
                    &std::fs::read_to_string(root().join("models/tiny-shakespeare/tokenizer.json"))
                        .unwrap(),
                )
                .unwrap();
                spec["normalizer"] = json!({"type": "NFC"});
                deepblocks::tokenize::Tokenizer::from_json_bytes(spec.to_string().as_bytes())
                    .unwrap()
                    .to_gguf_vocab()
                    .unwrap_err()
                    .to_string()
            }),
        ),
        (
            "`--model ORG/NAME` not in the Hugging Face cache",
            "fetch it with `huggingface-cli download deepseek-ai/DeepSeek-V2-Lite-Chat`",
            Box::new(|| {
                let empty = scratch("empty-hf-cache");
                deepblocks::deepseek::resolve_model_in(
                    Path::new("deepseek-ai/DeepSeek-V2-Lite-Chat"),
                    Some(&empty),
                )
                .unwrap_err()
                .to_string()
            }),
        ),
        (
            "safetensors offsets that overlap",
            "tensors \"a\" and \"b\" overlap",
            Box::new(|| {
                let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
                let mut b = (header.len() as u64).to_le_bytes().to_vec();
                b.extend_from_slice(header.as_bytes());
                b.extend_from_slice(&[0; 12]);
                SafeTensorsStore::from_bytes("overlap.safetensors", &b)
                    .unwrap_err()
                    .to_string()
            }),
        ),
    ]
}

#[test]
fn every_documented_bad_input_gives_its_error() {
    let mut table = String::from("| bad input | the error says |\n|---|---|\n");
    for (case, says, run) in cases() {
        let err = run();
        assert!(
            err.contains(says),
            "{case}: the error is\n  {err}\nnot containing\n  {says}"
        );
        table.push_str(&format!("| {case} | {} |\n", says.replace('|', "\\|")));
    }
    let doc = std::fs::read_to_string(root().join("docs/testing.md")).unwrap();
    let (begin, end) = ("<!-- bad-inputs:begin -->\n", "<!-- bad-inputs:end -->");
    let documented = doc
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(table, _)| table)
        .unwrap_or("");
    assert_eq!(
        documented, table,
        "docs/testing.md's table of bad inputs is out of date; between the markers it should read:\n{table}"
    );
}
