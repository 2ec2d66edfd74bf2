//! Streams generated text from an MLA-family model (DeepSeek-V2, V3, Kimi K2, GLM-4.7-Flash).
//!
//! ```text
//! cargo run --release --example generate -- [--model DIR] --prompt S [--max-tokens N]
//!     [--temperature T] [--top-p P] [--seed S] [--quant q8_0|q4_0|q4_k_m|fp8]
//! ```
//!
//! Without `--model`, uses the small model shipped in `models/tiny-shakespeare`. When the folder's
//! tokenizer has a chat template, the prompt is sent as a user turn rendered by that template
//! (the model's own: DeepSeek-V2-Chat's, V3/R1's, ...); otherwise it is continued as plain text
//! (and echoed first). Reports prefill and decode tokens/s on stderr.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use deepblocks::deepseek::{GenerateOptions, LoadOptions, Recipe, SamplingConfig, StopReason};

/// Generate text with a DeepSeek-V2-family model.
#[derive(Parser)]
struct Args {
    /// Model folder (config.json, safetensors weights, tokenizer.json). Defaults to the shipped
    /// tiny Shakespeare model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Quantize the weights while loading: q8_0, q4_0, q4_k_m (llama.cpp's mixes) or fp8
    /// (FP8 E4M3 in 128 × 128 blocks).
    #[arg(long)]
    quant: Option<String>,
    /// Convert every matrix to this dtype while loading (f32, bf16, f16): dequantizes an FP8
    /// checkpoint, widens a bf16 one. Default: keep the stored dtypes.
    #[arg(long)]
    dtype: Option<String>,
    /// The latent KV cache's element type: bf16 (the default: half the bytes per step), f32
    /// (exact latents), f16 or q8_0 (8-bit blocks: 56% of bf16's bytes).
    #[arg(long, value_name = "DTYPE")]
    kv_cache: Option<String>,
    /// How the bf16 matrices multiply: bf16 (inputs rounded to bf16, `vdpbf16ps` where the CPU
    /// has AVX512-BF16) or f32 (inputs as given). Default: bf16 where the CPU has AVX512-BF16, f32 elsewhere.
    #[arg(long, value_name = "PRODUCTS")]
    bf16_products: Option<String>,
    /// The prompt.
    #[arg(long)]
    prompt: String,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 200)]
    max_tokens: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Nucleus sampling: keep the smallest set of tokens with this much probability.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Treat the prompt as plain text even if the tokenizer has a chat template.
    #[arg(long)]
    no_chat: bool,
    /// Scan every weight for NaN and infinities while loading (names the first bad tensor).
    #[arg(long)]
    check_weights: bool,
    /// Threads for the kernels (default: `RAYON_NUM_THREADS`, else one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    common::threads(args.threads)?;
    let dir = match &args.model {
        Some(dir) => dir.clone(),
        None => common::shipped_model()?,
    };
    let tokenizer = common::tokenizer(&dir)?;
    let model = common::load(
        &dir,
        LoadOptions {
            check_weights: args.check_weights,
            quant: args.quant.as_deref().map(Recipe::from_name).transpose()?,
            dtype: common::dtype(args.dtype.as_deref())?,
            cache_dtype: common::kv_cache(
                args.kv_cache.as_deref(),
                deepblocks::deepseek::DEFAULT_CACHE_DTYPE,
            )?,
            bf16_products: common::bf16_products(
                args.bf16_products.as_deref(),
                deepblocks::core::Bf16Products::auto(),
            )?,
            ..LoadOptions::default()
        },
    )?;
    let chat = !args.no_chat && tokenizer.chat_template().is_some();
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling: SamplingConfig {
            temperature: args.temperature,
            top_p: args.top_p,
            ..SamplingConfig::default()
        },
        seed: args.seed,
    };
    // Reject bad options before anything reaches stdout.
    options.sampling.validate()?;
    let mut out = std::io::stdout().lock();
    // The prompt is echoed with the first new text, so that a prompt the model refuses (too long
    // for its context) leaves stdout empty.
    let mut echo = (!chat).then_some(args.prompt.as_str());
    let generation = model.generate_text(&tokenizer, &args.prompt, chat, &options, |text| {
        let prompt = echo.take().unwrap_or("");
        // A closed stdout (e.g. `| head`) ends the output, not the program with a panic.
        let _ = write!(out, "{prompt}{text}").and_then(|()| out.flush());
    })?;
    if let Some(prompt) = echo {
        write!(out, "{prompt}")?;
    }
    writeln!(out)?;
    let why = match generation.stop {
        StopReason::Eos => "end of sequence",
        StopReason::MaxTokens => "max tokens",
        StopReason::ContextFull => "context full",
    };
    eprintln!(
        "[{} prompt tokens, {:.1} tok/s prefill; {} new tokens, {:.1} tok/s decode; stopped: {why}]",
        generation.prompt.len(),
        generation.prefill_tokens_per_second(),
        generation.tokens.len(),
        generation.decode_tokens_per_second(),
    );
    Ok(())
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}
