//! Writes a model as a llama.cpp `deepseek2` GGUF file, quantized with one of deepblocks'
//! recipes (the formats llama.cpp's `llama-quantize` gives each matrix) or converted to a dtype.
//!
//! ```text
//! cargo run --release --example quantize -- --model DIR --recipe R --out FILE.gguf [--name NAME]
//! ```
//!
//! `R` is a recipe (`q8_0`, `q4_0`, `q4_k_m`) or a dtype (`bf16`, `f16`, `f32`). `fp8` has no GGUF
//! type and is refused. The folder's tokenizer (`tokenizer.json`, with `tokenizer_config.json`'s
//! bos, eos and chat template) goes into the file as `tokenizer.ggml.*`; a folder without one
//! writes `tokenizer.ggml.model = "none"`, as llama.cpp's converter does with `--no-vocab`.
//! `--model` may also be a `.gguf` file (rewritten in the recipe's formats).
//!
//! ```text
//! cargo run --release --example quantize -- --model models/tiny-shakespeare --recipe q8_0 --out /tmp/tiny-q8_0.gguf
//! cargo run --release --example perplexity -- --model /tmp/tiny-q8_0.gguf --file /tmp/val.txt --ctx 257
//! ```

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use deepblocks::deepseek::{LoadOptions, Recipe};

/// Write a model as a llama.cpp GGUF file.
#[derive(Parser)]
struct Args {
    /// The model folder (config.json, safetensors weights, tokenizer.json), or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// q8_0, q4_0 or q4_k_m (llama.cpp's mixes, as `--quant` applies them), or bf16, f16, f32.
    #[arg(long)]
    recipe: String,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
    /// `general.name` (default: the model folder's name).
    #[arg(long)]
    name: Option<String>,
    /// Threads for the kernels (default: `RAYON_NUM_THREADS`, else one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    common::exit(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    common::threads(args.threads)?;
    let options = match Recipe::from_name(&args.recipe) {
        Ok(Recipe::Fp8) => {
            return Err(
                "--recipe fp8: GGUF has no FP8 type; use q8_0, q4_0, q4_k_m, bf16, f16 or f32"
                    .into(),
            );
        }
        Ok(recipe) => LoadOptions {
            quant: Some(recipe),
            ..LoadOptions::default()
        },
        Err(recipe_error) => match common::dtype(Some(&args.recipe)) {
            Ok(dtype) => LoadOptions {
                dtype,
                ..LoadOptions::default()
            },
            Err(_) => return Err(format!("{recipe_error}; or a dtype: bf16, f16, f32").into()),
        },
    };
    let model_path = deepblocks::deepseek::resolve_model(&args.model)?;
    let tokenizer = common::tokenizer_if_any(&model_path)?;
    if tokenizer.is_none() {
        eprintln!(
            "note: {} has no tokenizer; writing tokenizer.ggml.model = \"none\"",
            args.model.display()
        );
    }
    let model = common::load(&args.model, options)?;
    let name = args.name.unwrap_or_else(|| {
        args.model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let started = Instant::now();
    model.write_gguf(&args.out, tokenizer.as_ref(), &name)?;
    let bytes = std::fs::metadata(&args.out)?.len();
    eprintln!(
        "wrote {} ({:.1} MB) in {:.2} s",
        args.out.display(),
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
