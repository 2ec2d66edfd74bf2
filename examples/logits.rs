//! Logits of a token sequence, for comparison with other implementations.
//!
//! ```text
//! cargo run --release --example logits -- --model DIR --tokens 1,2,3 --out FILE [--quant q8_0|q4_0|q4_k_m|fp8]
//! ```
//!
//! Loads the Hugging Face model folder `DIR` (config.json and safetensors weights), runs the
//! tokens as one prompt, and writes a safetensors file with one f32 tensor `logits` of shape
//! `[tokens, vocab]` (every position).

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use deepblocks::deepseek::{LoadOptions, Positions, Recipe};

/// Logits of every position of a token sequence, written as safetensors.
#[derive(Parser)]
struct Args {
    /// The model folder (config.json, model.safetensors or its sharded index).
    #[arg(long)]
    model: PathBuf,
    /// Quantize the weights while loading: q8_0, q4_0, q4_k_m (llama.cpp's mixes) or fp8
    /// (FP8 E4M3 in 128 × 128 blocks).
    #[arg(long)]
    quant: Option<String>,
    /// Convert every matrix to this dtype while loading (f32, bf16, f16): dequantizes an FP8
    /// checkpoint, widens a bf16 one. Default: keep the stored dtypes.
    #[arg(long)]
    dtype: Option<String>,
    /// The latent KV cache's element type: f32 (the default here: exact latents, for
    /// comparing logits), bf16 (what generation uses by default), f16 or q8_0.
    #[arg(long, value_name = "DTYPE")]
    kv_cache: Option<String>,
    /// How the bf16 matrices multiply: bf16 (inputs rounded to bf16, `vdpbf16ps` where the CPU
    /// has AVX512-BF16) or f32 (inputs as given). Default: f32 (logits are for comparing with other implementations).
    #[arg(long, value_name = "PRODUCTS")]
    bf16_products: Option<String>,
    /// Token ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    tokens: Vec<u32>,
    /// The safetensors file to write.
    #[arg(long)]
    out: PathBuf,
    /// Threads for the kernels (default: `RAYON_NUM_THREADS`, else one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    common::threads(args.threads)?;
    // Logits are for comparing with other implementations: a NaN weight is named up front.
    let model = common::load(
        &args.model,
        LoadOptions {
            check_weights: true,
            quant: args.quant.as_deref().map(Recipe::from_name).transpose()?,
            dtype: common::dtype(args.dtype.as_deref())?,
            cache_dtype: common::kv_cache(
                args.kv_cache.as_deref(),
                deepblocks::mla::CacheDType::F32,
            )?,
            bf16_products: common::bf16_products(
                args.bf16_products.as_deref(),
                deepblocks::core::Bf16Products::F32,
            )?,
            ..LoadOptions::default()
        },
    )?;
    let mut cache = model.new_cache(args.tokens.len())?;
    let logits = model.forward(&args.tokens, &mut cache, Positions::All)?;
    let (t, v) = (args.tokens.len(), model.config().vocab_size);
    let bytes: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![t, v], &bytes)?;
    safetensors::serialize_to_file([("logits", view)], None, &args.out)
        .map_err(|e| format!("{}: {e}", args.out.display()))?;
    eprintln!("wrote logits [{t}, {v}] to {}", args.out.display());
    Ok(())
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}
