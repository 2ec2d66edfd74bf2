//! Perplexity of a text under a model, scored in windows through the latent cache.
//!
//! ```text
//! cargo run --release --example perplexity -- --model DIR --file TEXT [--quant R] [--ctx N]
//! ```
//!
//! The text is tokenized with the model's `tokenizer.json` (no special tokens added), then
//! scored in consecutive, non-overlapping windows of `N` tokens, `N − 1` predictions each (a last
//! shorter window is not scored), as `scripts/train_tiny.py` scores its held-out text. `N`
//! defaults to the model's context, at most 512. Progress goes to stderr; the last line
//! of stdout is JSON: `{"tokens": …, "nll": …, "perplexity": …}` (`nll` the mean per token).
//!
//! ```text
//! # the shipped model on the last 10% of its training text, as train_tiny.py held it out
//! python3 -c "t=open('tinyshakespeare.txt').read(); open('/tmp/val.txt','w').write(t[int(len(t)*0.9):])"
//! cargo run --release --example perplexity -- --model models/tiny-shakespeare --file /tmp/val.txt --ctx 257
//! ```

mod common;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use deepblocks::deepseek::{LoadOptions, Recipe};

/// Bytes of text encoded at a time (the ids are those of the whole text).
const PIECE_BYTES: usize = 1 << 16;

/// Score a text's perplexity.
#[derive(Parser)]
struct Args {
    /// The model folder (config.json, safetensors weights, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// The text (UTF-8).
    #[arg(long)]
    file: PathBuf,
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
    /// Tokens per window (each scores all but its first); default: the model's context, at
    /// most 512.
    #[arg(long)]
    ctx: Option<usize>,
    /// Threads for the kernels (default: `RAYON_NUM_THREADS`, else one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    common::exit(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    common::threads(args.threads)?;
    let text =
        std::fs::read_to_string(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let tokenizer = common::tokenizer(&args.model)?;
    let model = common::load(
        &args.model,
        LoadOptions {
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
    let ctx = args
        .ctx
        .unwrap_or_else(|| model.config().max_position_embeddings.min(512));
    let tokens = tokenizer.encode_in_pieces(&text, PIECE_BYTES)?;
    eprintln!(
        "{}: {} tokens, windows of {} ({} predictions each)",
        args.file.display(),
        tokens.len(),
        ctx,
        ctx.saturating_sub(1)
    );
    let terminal = std::io::stderr().is_terminal();
    let nll = model.perplexity(&tokens, ctx, |done, total| {
        if terminal {
            eprint!("\rwindow {done}/{total}");
            if done == total {
                eprintln!();
            }
        } else if done * 10 / total != (done - 1) * 10 / total {
            // Not a terminal: a line at every tenth of the windows.
            eprintln!("window {done}/{total}");
        }
    })?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{{\"tokens\": {}, \"nll\": {:.6}, \"perplexity\": {:.4}}}",
        nll.tokens,
        nll.mean(),
        nll.perplexity()
    )?;
    Ok(())
}
