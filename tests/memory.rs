//! The README's table of memory per model and format, computed so that it cannot drift: the
//! tensors and their shapes come from the parameter tree (`deepblocks-params`, every tensor with its
//! checkpoint name), the format each tensor gets from the quantization recipes
//! (`deepblocks-deepseek`'s `Recipe::choose`, the loader's own rule), and the bytes of a format
//! from `deepblocks-core`. The computation is checked against what the loader really holds
//! (`Model::weight_bytes`, `MlaCache::bytes`) on the shipped model in every format, on the FP8
//! fixture as stored, and on a GGUF file written from the shipped model; the README must show the
//! table rendered here (on a mismatch the test prints it, to paste between the markers).

use std::path::{Path, PathBuf};

use deepblocks::config::{Architecture, LayerKind};
use deepblocks::core::quant::fp8::Fp8Block;
use deepblocks::core::{DType, SafeTensorsStore, WeightFormat};
use deepblocks::deepseek::{Choice, LoadOptions, Model, Positions, Recipe, Role, blocks};
use deepblocks::params::{Kind, mla_tree, thousands};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How the weights are loaded: as the checkpoint stores them, converted to a dtype
/// (`--dtype`), or quantized by a recipe (`--quant`).
#[derive(Clone, Copy, Debug)]
enum Load {
    AsStored,
    Dtype(DType),
    Quant(Recipe),
}

/// The bytes of a `[rows, cols]` matrix in `format`.
fn matrix_bytes(format: WeightFormat, rows: u64, cols: u64) -> u64 {
    format
        .bytes(rows as usize, cols as usize)
        .unwrap_or_else(|| panic!("a [{rows}, {cols}] matrix in {format}")) as u64
}

/// The layers a tensor of the tree repeats over: the dense or the MoE layers for the
/// feed-forward tensors, every layer for the rest; `[None]` for a tensor outside the layers.
fn layers_of(arch: &Architecture, checkpoint: &str) -> Vec<Option<usize>> {
    if !checkpoint.starts_with("model.layers.*.") {
        return vec![None];
    }
    let kind = if checkpoint.contains(".mlp.gate.")
        || checkpoint.contains(".mlp.experts.")
        || checkpoint.contains(".mlp.shared_experts.")
    {
        Some(LayerKind::Moe)
    } else if checkpoint.contains(".mlp.") {
        Some(LayerKind::Dense)
    } else {
        None
    };
    (0..arch.num_hidden_layers)
        .filter(|&l| kind.is_none_or(|k| arch.layer_kind(l) == k))
        .map(Some)
        .collect()
}

/// Bytes of weights a model of `arch` holds when loaded by `load` from a checkpoint that stores
/// matrix `name` in `stored(name)`: what `Model::weight_bytes` reports for it.
fn weight_bytes(arch: &Architecture, stored: &dyn Fn(&str) -> WeightFormat, load: Load) -> u64 {
    let tree = mla_tree(arch).unwrap();
    let a = &arch.attention;
    let (n, c, d, v) = (
        a.num_attention_heads as u64,
        a.kv_lora_rank as u64,
        a.qk_nope_head_dim as u64,
        a.v_head_dim as u64,
    );
    let num_layers = arch.num_hidden_layers;
    // The format the loader gives matrix `name` (of rows `cols` long).
    let format = |name: &str, cols: u64| -> WeightFormat {
        match load {
            Load::AsStored => stored(name),
            Load::Dtype(dtype) => WeightFormat::Float(dtype),
            Load::Quant(recipe) => {
                let role = match Role::of(name) {
                    Role::TokenEmbedding if arch.tie_word_embeddings => Role::Output,
                    role => role,
                };
                match recipe.choose(role, num_layers, cols as usize) {
                    Choice::Keep if role == Role::Router => WeightFormat::Float(DType::F32),
                    Choice::Keep => stored(name),
                    Choice::Quantize { format, .. } => format,
                }
            }
        }
    };
    let mut total = 0u64;
    for leaf in tree.leaves() {
        let t = leaf.as_tensor().expect("a leaf is a tensor");
        if matches!(t.kind, Kind::Norm | Kind::Bias) {
            total += 4 * t.numel() * t.copies; // kept in f32
            continue;
        }
        let [rows, cols] = t.shape[..] else {
            panic!("{}: a matrix", t.checkpoint)
        };
        let layers = layers_of(arch, &t.checkpoint);
        let per_layer = t.copies / layers.len() as u64;
        assert_eq!(
            per_layer * layers.len() as u64,
            t.copies,
            "{}",
            t.checkpoint
        );
        for layer in layers {
            // The first `*` is the layer, a second one the expert (all experts alike).
            let name = match layer {
                Some(l) => t.checkpoint.replacen('*', &l.to_string(), 1),
                None => t.checkpoint.clone(),
            }
            .replace('*', "0");
            let bytes = if name.ends_with("kv_b_proj.weight") {
                match load {
                    // Block recipes split it as llama.cpp does: W_UKᵀ [n·c, d], W_UV [n·v, c].
                    Load::Quant(r) if r != Recipe::Fp8 => {
                        let k_b = format!("{name}:attn_k_b");
                        let v_b = format!("{name}:attn_v_b");
                        matrix_bytes(format(&k_b, d), n * c, d)
                            + matrix_bytes(format(&v_b, c), n * v, c)
                    }
                    // Kept whole, with the absorbed path's transposed copy of W_UK [n·c, d]:
                    // in the float dtype of kv_b_proj, else in f32.
                    _ => {
                        let f = format(&name, cols);
                        let copy = match f {
                            WeightFormat::Float(dtype) => dtype.size_bytes() as u64,
                            _ => 4,
                        };
                        matrix_bytes(f, rows, cols) + n * c * d * copy
                    }
                }
            } else {
                matrix_bytes(format(&name, cols), rows, cols)
            };
            total += per_layer * bytes;
        }
    }
    total
}

/// How the hub's checkpoints store a matrix: bf16, or, for a checkpoint with a
/// `quantization_config` (DeepSeek-V3, R1, Kimi K2), FP8 blocks for every linear layer but the
/// embeddings, `lm_head` and the routers (DeepSeek-V3's layout).
fn published(arch: &Architecture) -> impl Fn(&str) -> WeightFormat + '_ {
    move |name: &str| match arch.quantization {
        Some(q)
            if !matches!(
                Role::of(name),
                Role::TokenEmbedding | Role::Output | Role::Router
            ) =>
        {
            let [rows, cols] = q.weight_block_size;
            WeightFormat::Fp8(Fp8Block { rows, cols })
        }
        _ => WeightFormat::Float(DType::BF16),
    }
}

/// How a safetensors checkpoint stores each matrix, from its header.
fn stored_in(dir: &Path, arch: &Architecture) -> impl Fn(&str) -> WeightFormat {
    let store = SafeTensorsStore::open(dir).unwrap();
    let formats: std::collections::HashMap<String, WeightFormat> = store
        .infos()
        .filter_map(|i| {
            let f = if i.dtype_name == "F8_E4M3" {
                let [rows, cols] = arch.quantization.unwrap().weight_block_size;
                WeightFormat::Fp8(Fp8Block { rows, cols })
            } else {
                WeightFormat::Float(i.dtype?)
            };
            Some((i.name.clone(), f))
        })
        .collect();
    move |name: &str| formats[name]
}

fn load(path: &Path, load: Load) -> Model {
    let options = LoadOptions {
        quant: match load {
            Load::Quant(r) => Some(r),
            _ => None,
        },
        dtype: match load {
            Load::Dtype(d) => Some(d),
            _ => None,
        },
        ..LoadOptions::default()
    };
    if path.extension().is_some_and(|e| e == "gguf") {
        Model::load_gguf(path, &options).unwrap()
    } else {
        Model::load_with(path, &options).unwrap()
    }
}

fn arch_of(dir: &Path) -> Architecture {
    Architecture::from_file(dir.join("config.json"))
        .unwrap()
        .architecture
}

#[test]
fn the_computation_is_what_the_loader_holds() {
    let tiny = root().join("models/tiny-shakespeare");
    let arch = arch_of(&tiny);
    let stored = stored_in(&tiny, &arch);
    let mut loads = vec![Load::AsStored, Load::Dtype(DType::F32)];
    loads.extend(Recipe::ALL.map(Load::Quant));
    for l in loads {
        assert_eq!(
            weight_bytes(&arch, &stored, l),
            load(&tiny, l).weight_bytes() as u64,
            "the shipped model, {l:?}"
        );
    }

    // FP8 blocks as a DeepSeek-V3 checkpoint stores them (some matrices f32 beside them).
    let fp8 = root().join("testdata/deepseek/v3_fp8_blocks");
    let arch = arch_of(&fp8);
    let stored = stored_in(&fp8, &arch);
    for l in [Load::AsStored, Load::Quant(Recipe::Q8_0)] {
        assert_eq!(
            weight_bytes(&arch, &stored, l),
            load(&fp8, l).weight_bytes() as u64,
            "the FP8 fixture, {l:?}"
        );
    }

    // A GGUF written from the quantized model loads in place at the same size.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("memory");
    std::fs::create_dir_all(&dir).unwrap();
    let arch = arch_of(&tiny);
    let stored = stored_in(&tiny, &arch);
    for recipe in [Recipe::Q8_0, Recipe::Q4_0, Recipe::Q4_K_M] {
        let file = dir.join(format!("tiny.{recipe}.gguf"));
        load(&tiny, Load::Quant(recipe))
            .write_gguf(&file, None, "tiny")
            .unwrap();
        assert_eq!(
            weight_bytes(&arch, &stored, Load::Quant(recipe)),
            load(&file, Load::AsStored).weight_bytes() as u64,
            "the GGUF written with {recipe}"
        );
    }
}

/// Latent cache bytes per token in the default element type (bf16): `(c + r) · l · 2`.
fn cache_bytes_per_token(arch: &Architecture) -> u64 {
    blocks::cache_config(arch, deepblocks::deepseek::DEFAULT_CACHE_DTYPE).bytes_per_token() as u64
}

#[test]
fn the_cache_holds_what_the_computation_says() {
    let tiny = root().join("models/tiny-shakespeare");
    let model = load(&tiny, Load::AsStored);
    let mut cache = model.new_cache(8).unwrap();
    model
        .forward(&[5, 6, 7, 8, 9], &mut cache, Positions::Last)
        .unwrap();
    assert_eq!(
        cache.bytes() as u64,
        5 * cache_bytes_per_token(model.config())
    );
}

/// The models of `testdata/configs/`, in the table's order: name, file, Hugging Face repository.
const MODELS: [(&str, &str, &str); 6] = [
    (
        "DeepSeek-V2-Lite(-Chat)",
        "deepseek-v2-lite.json",
        "deepseek-ai/DeepSeek-V2-Lite-Chat",
    ),
    (
        "Moonlight-16B-A3B",
        "moonlight-16b-a3b-instruct.json",
        "moonshotai/Moonlight-16B-A3B-Instruct",
    ),
    (
        "GLM-4.7-Flash",
        "glm-4.7-flash.json",
        "zai-org/GLM-4.7-Flash",
    ),
    (
        "DeepSeek-V2(-Chat), V2.5",
        "deepseek-v2.json",
        "deepseek-ai/DeepSeek-V2-Chat",
    ),
    (
        "DeepSeek-V3, R1, V3.1",
        "deepseek-v3.json",
        "deepseek-ai/DeepSeek-R1",
    ),
    (
        "Kimi K2",
        "kimi-k2-instruct-0905.json",
        "moonshotai/Kimi-K2-Instruct-0905",
    ),
];

/// Tokens of context the cache column is for.
const CONTEXT: u64 = 4096;

/// `1,234.5`: billions (of bytes, of parameters) to one decimal.
fn gb(n: u64) -> String {
    let s = format!("{:.1}", n as f64 / 1e9);
    let (whole, tenths) = s.split_once('.').expect("one decimal");
    format!("{}.{tenths}", thousands(whole.parse().unwrap()))
}

/// The README's table.
fn table() -> String {
    let mut out = String::from(
        "| model | `model_type` | published as | parameters | bf16 | fp8 | `q8_0` | `q4_k_m` | `q4_0` | cache per 4,096 tokens |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, file, repo) in MODELS {
        let path = root().join("testdata/configs").join(file);
        let arch = Architecture::from_file(&path).unwrap().architecture;
        let stored = published(&arch);
        let fp8 = match arch.quantization {
            Some(_) => Load::AsStored,
            None => Load::Quant(Recipe::Fp8),
        };
        let cells = [
            Load::Dtype(DType::BF16),
            fp8,
            Load::Quant(Recipe::Q8_0),
            Load::Quant(Recipe::Q4_K_M),
            Load::Quant(Recipe::Q4_0),
        ]
        .map(|l| format!("{} GB", gb(weight_bytes(&arch, &stored, l))));
        let params = mla_tree(&arch).unwrap().params();
        out.push_str(&format!(
            "| [{name}](https://huggingface.co/{repo}) | `{}` | {} | {}B | {} | {:.0} MB |\n",
            arch.family.model_type(),
            if arch.quantization.is_some() {
                "FP8"
            } else {
                "bf16"
            },
            gb(params),
            cells.join(" | "),
            (CONTEXT * cache_bytes_per_token(&arch)) as f64 / 1e6,
        ));
    }
    out
}

#[test]
fn the_readme_shows_the_computed_table() {
    let table = table();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let (begin, end) = ("<!-- memory:begin -->\n", "<!-- memory:end -->");
    let shown = readme
        .split_once(begin)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(table, _)| table)
        .unwrap_or("");
    assert_eq!(
        shown, table,
        "README.md's memory table is out of date; between the markers it should read:\n{table}"
    );
}
