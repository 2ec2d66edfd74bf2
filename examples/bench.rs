//! Prefill and decode speed of a model, for comparison with other implementations.
//!
//! ```text
//! cargo run --release --example bench -- --model DIR --prompt-len P --gen N [--quant q8_0|q4_0|q4_k_m|fp8]
//! ```
//!
//! Prefills `P` tokens (deterministic pseudo-random ids), then decodes `N` tokens greedily, and
//! prints on its last line `{"prefill_tok_s": …, "decode_tok_s": …, "peak_rss_mb": …}`. Peak RSS is
//! the process's high-water mark (`VmHWM`), which counts the memory-mapped weights it touched.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use deepblocks::deepseek::{LoadOptions, Model, Positions, Recipe};

/// Time prefill and greedy decode.
#[derive(Parser)]
struct Args {
    /// The model folder.
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
    /// The latent KV cache's element type: bf16 (the default: half the bytes per step), f32
    /// (exact latents), f16 or q8_0 (8-bit blocks: 56% of bf16's bytes).
    #[arg(long, value_name = "DTYPE")]
    kv_cache: Option<String>,
    /// How the bf16 matrices multiply: bf16 (inputs rounded to bf16, `vdpbf16ps` where the CPU
    /// has AVX512-BF16) or f32 (inputs as given). Default: bf16 where the CPU has AVX512-BF16,
    /// f32 elsewhere.
    #[arg(long, value_name = "PRODUCTS")]
    bf16_products: Option<String>,
    /// Prompt tokens to prefill.
    #[arg(long, default_value_t = 128)]
    prompt_len: usize,
    /// Tokens to decode after the prompt.
    #[arg(long = "gen", default_value_t = 32)]
    generate: usize,
    /// Untimed runs of the whole thing first (page in the weights, warm the caches).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Scan every weight for NaN and infinities while loading (names the first bad tensor).
    #[arg(long)]
    check_weights: bool,
    /// Threads for the kernels (default: `RAYON_NUM_THREADS`, else one per core).
    #[arg(long)]
    threads: Option<usize>,
}

/// The process's peak resident set, in MiB, from /proc/self/status (Linux); 0 elsewhere.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// One prefill of `prompt` and `steps` greedy decode steps: (prefill seconds, decode seconds).
fn once(
    model: &Model,
    prompt: &[u32],
    steps: usize,
) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let mut cache = model.new_cache(prompt.len() + steps)?;
    let t0 = Instant::now();
    let mut logits = model.forward(prompt, &mut cache, Positions::Last)?;
    let prefill = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..steps {
        let id = argmax(&logits);
        logits = model.forward(&[id], &mut cache, Positions::Last)?;
    }
    Ok((prefill, t1.elapsed().as_secs_f64()))
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let threads = common::threads(args.threads)?;
    let model = common::load(
        &args.model,
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
    let vocab = model.config().vocab_size as u64;
    // Refuse work the context cannot hold before allocating the prompt or timing anything.
    let max = model.config().max_position_embeddings;
    let wanted = args.prompt_len.saturating_add(args.generate);
    if args.prompt_len == 0 || wanted > max {
        return Err(format!(
            "--prompt-len {} + --gen {} must be between 1 and max_position_embeddings = {max}",
            args.prompt_len, args.generate
        )
        .into());
    }
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let prompt: Vec<u32> = (0..args.prompt_len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab) as u32
        })
        .collect();
    for _ in 0..args.warmup {
        once(&model, &prompt, args.generate.min(4))?;
    }
    let (prefill, decode) = once(&model, &prompt, args.generate)?;
    let prefill_tok_s = args.prompt_len as f64 / prefill;
    let decode_tok_s = args.generate as f64 / decode;
    eprintln!(
        "{}, {} kernels, {} latent cache: prefill {} tokens in {prefill:.3} s, decode {} tokens \
         in {decode:.3} s",
        common::threads_label(threads),
        common::kernels_label(),
        model.cache_config().dtype,
        args.prompt_len,
        args.generate
    );
    println!(
        "{{\"prefill_tok_s\": {prefill_tok_s:.2}, \"decode_tok_s\": {decode_tok_s:.2}, \"peak_rss_mb\": {:.1}}}",
        peak_rss_mb()
    );
    Ok(())
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}
