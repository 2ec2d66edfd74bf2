//! What the examples share: loading a model with a progress bar and a note about unknown
//! config keys, on stderr (the library itself writes nothing), and how they exit.
//!
//! Each example includes this file as `mod common;` and uses what it needs.
#![allow(dead_code)]

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use deepblocks::deepseek::{LoadOptions, LoadProgress, Model};
use indicatif::{ProgressBar, ProgressStyle};

/// Loads `dir` (a Hugging Face folder, a llama.cpp `.gguf` file, or `ORG/NAME` of a model in the
/// local Hugging Face cache) with `options`, drawing the
/// layers loaded as a bar when stderr is a terminal, then a line with the load time and any
/// config keys the reader did not know.
pub fn load(dir: &Path, options: LoadOptions) -> Result<Model, deepblocks::deepseek::Error> {
    let dir = &deepblocks::deepseek::resolve_model(dir)?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} layers {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(dir.display().to_string());
    let drawn = bar.clone();
    let options = LoadOptions {
        progress: Some(Arc::new(move |p: LoadProgress| {
            drawn.set_length(p.num_layers as u64);
            drawn.set_position(p.layers_loaded as u64);
        })),
        ..options
    };
    let started = Instant::now();
    // A llama.cpp GGUF file loads as it is; anything else is a Hugging Face folder.
    let model = if dir.extension().is_some_and(|e| e == "gguf") {
        Model::load_gguf(dir, &options)
    } else {
        Model::load_with(dir, &options)
    };
    bar.finish_and_clear();
    let model = model?;
    eprintln!(
        "loaded {} ({} layers, {:.1} MB of weights) in {:.2} s; computing on {}",
        dir.display(),
        model.layers().len(),
        model.weight_bytes() as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        threads_label(rayon::current_num_threads())
    );
    for f in &model.load_report().formats {
        let fallback = f
            .fallback_from
            .map(|w| format!(" (rows not whole {w} blocks)"))
            .unwrap_or_default();
        eprintln!("  {:>4} × {} in {}{fallback}", f.tensors, f.kind, f.format);
    }
    // Any bf16 matrix that rounds its inputs: the output matrix or a layer's o_proj, as loaded.
    let rounds = |w: &deepblocks::core::Weight| {
        w.format() == deepblocks::core::WeightFormat::Float(deepblocks::core::DType::BF16)
            && w.bf16_products() == deepblocks::core::Bf16Products::Bf16
    };
    let bf16 = rounds(model.embeddings().lm_head_weight())
        || model
            .layers()
            .iter()
            .any(|l| rounds(l.self_attn().o_proj()));
    if bf16 {
        eprintln!(
            "  bf16 matrices multiply their inputs rounded to bf16{} (--bf16-products f32 keeps them f32)",
            if deepblocks::core::bf16_dot() {
                ", on vdpbf16ps"
            } else {
                ""
            }
        );
    }
    let unknown = &model.load_report().unknown_config_keys;
    if !unknown.is_empty() {
        eprintln!(
            "note: config.json keys not read (they may change what the model computes): {}",
            unknown.join(", ")
        );
    }
    Ok(model)
}

/// The model the examples use without `--model`: the small one shipped in `models/` of the
/// repository. The crates.io package leaves `models/` out; there the error says so.
pub fn shipped_model() -> Result<std::path::PathBuf, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-shakespeare");
    if dir.join("config.json").is_file() {
        Ok(dir)
    } else {
        Err(format!(
            "the shipped model is not in this copy of deepblocks ({} is absent: the crates.io \
             package leaves models/ out); pass --model, or run from a clone of \
             https://github.com/deepblocks/deepblocks",
            dir.display()
        ))
    }
}

/// The tokenizer of a model: a folder's `tokenizer.json` (and `tokenizer_config.json`), or a
/// `.gguf` file's `tokenizer.ggml.*` vocabulary (`ORG/NAME` resolved as [`load`] does).
pub fn tokenizer(
    path: &Path,
) -> Result<deepblocks::tokenize::Tokenizer, Box<dyn std::error::Error>> {
    let path = &deepblocks::deepseek::resolve_model(path)?;
    if path.extension().is_some_and(|e| e == "gguf") {
        let file = deepblocks::core::gguf::GgufFile::open(path)?;
        Ok(deepblocks::deepseek::tokenizer_from_gguf(&file)?)
    } else {
        Ok(deepblocks::tokenize::Tokenizer::from_dir(path)?)
    }
}

/// The tokenizer of a model when it has one (a folder's `tokenizer.json`, a `.gguf` file's
/// `tokenizer.ggml.tokens`), else `None`; `path` already resolved ([`resolve_model`]).
///
/// [`resolve_model`]: deepblocks::deepseek::resolve_model
pub fn tokenizer_if_any(
    path: &Path,
) -> Result<Option<deepblocks::tokenize::Tokenizer>, Box<dyn std::error::Error>> {
    let has = if path.extension().is_some_and(|e| e == "gguf") {
        let file = deepblocks::core::gguf::GgufFile::open(path)?;
        file.get("tokenizer.ggml.tokens").is_some()
    } else {
        path.join(deepblocks::tokenize::TOKENIZER_FILE).is_file()
    };
    if has {
        tokenizer(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The dtype of `--dtype NAME` (`f32`, `bf16` or `f16`): every matrix converted to it while
/// loading (an FP8 checkpoint dequantized, a bf16 one widened); `None` keeps the stored ones.
pub fn dtype(name: Option<&str>) -> Result<Option<deepblocks::core::DType>, String> {
    name.map(|n| {
        deepblocks::core::DType::from_name(n)
            .ok_or_else(|| format!("--dtype {n:?}: known dtypes are f32, bf16 and f16"))
    })
    .transpose()
}

/// The latent cache's element type from `--kv-cache NAME` (`bf16`, `f32`, `f16` or `q8_0`),
/// else `default`; another name is an error naming it.
pub fn kv_cache(
    name: Option<&str>,
    default: deepblocks::mla::CacheDType,
) -> Result<deepblocks::mla::CacheDType, deepblocks::mla::Error> {
    name.map_or(Ok(default), deepblocks::mla::cache_dtype)
}

/// How the bf16 matrices multiply, from `--bf16-products f32|bf16`; `default` without it.
#[allow(dead_code)] // not every example that includes this module takes the flag
pub fn bf16_products(
    name: Option<&str>,
    default: deepblocks::core::Bf16Products,
) -> Result<deepblocks::core::Bf16Products, deepblocks::core::Error> {
    name.map_or(Ok(default), deepblocks::core::Bf16Products::from_name)
}

/// Sets how many threads the kernels use (rayon's global pool) from `--threads N`; without it,
/// rayon's default (`RAYON_NUM_THREADS`, else one per core). Returns the count in use. Call it
/// before anything computes.
pub fn threads(n: Option<usize>) -> Result<usize, String> {
    if let Some(n) = n {
        if n == 0 {
            return Err("--threads 0: give at least 1".to_string());
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| format!("--threads {n}: {e}"))?;
    }
    Ok(rayon::current_num_threads())
}

/// Writes `text` to stdout at once. A reader that has gone away (`| head`) ends the output
/// quietly: a closed pipe is not the example's error.
pub fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result,
    }
}

/// `"1 thread"`, `"2 threads"`.
pub fn threads_label(n: usize) -> String {
    format!("{n} thread{}", if n == 1 { "" } else { "s" })
}

/// The kernels this process runs, for figures printed beside them: the instruction set, and the
/// extensions it may use (`DEEPBLOCKS_ISA` turns them off).
#[allow(dead_code)] // not every example prints it
pub fn kernels_label() -> String {
    use deepblocks::core::{amx, avx512, isa, vnni};
    let mut label = isa().name().to_string();
    for (on, name) in [(vnni(), "vnni"), (avx512(), "avx512f"), (amx(), "amx-bf16")] {
        if on {
            label.push('+');
            label.push_str(name);
        }
    }
    label
}

/// The exit of an example: success, or the error's message on stderr and status 1.
pub fn exit(result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
