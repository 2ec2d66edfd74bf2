//! A conversation with a model, in the terminal or through a pipe.
//!
//! ```text
//! cargo run --release --example chat -- --model DIR [--quant R] [--system S]
//!     [--max-tokens N] [--temperature T] [--top-p P] [--seed S]
//! ```
//!
//! Each line read from stdin is a user turn; the reply streams to stdout and ends with a newline.
//! The conversation is rendered by the tokenizer folder's own chat template each turn, and the
//! latent KV cache is kept across turns: a turn prefills only the tokens past the longest common
//! prefix of its prompt and what the cache holds (`ChatSession`). `generation_config.json`
//! supplies the default temperature, top-p, top-k and the eos ids (a list is allowed); the flags
//! override them. Without a model folder, the shipped `models/tiny-shakespeare`. Per-turn token
//! counts (reused from the cache, prefilled, generated) go to stderr.
//!
//! ```text
//! printf 'ROMEO:\nJULIET:\n' | cargo run --release --example chat -- --temperature 0
//! ```

mod common;

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use deepblocks::deepseek::{
    ChatSession, GenerateOptions, GenerationDefaults, LoadOptions, Recipe, SamplingConfig,
};

#[derive(Parser)]
#[command(about = "Chat with a model, keeping the KV cache across turns")]
struct Args {
    /// Model folder (config.json, safetensors weights, tokenizer.json). Defaults to the shipped
    /// tiny Shakespeare model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Quantize the weights while loading: q8_0, q4_0, q4_k_m or fp8.
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
    /// A system message before the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Maximum tokens per reply.
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature (default: generation_config.json's, else 0.8); 0 is greedy.
    #[arg(long)]
    temperature: Option<f32>,
    /// Nucleus sampling (default: generation_config.json's, else 0.95).
    #[arg(long)]
    top_p: Option<f32>,
    /// Seed of the sampler (turn i samples with seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads for the kernels (default: `RAYON_NUM_THREADS`, else one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    common::exit(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    common::threads(args.threads)?;
    let dir = match &args.model {
        Some(dir) => dir.clone(),
        None => common::shipped_model()?,
    };
    let dir = deepblocks::deepseek::resolve_model(&dir)?;
    let tokenizer = common::tokenizer(&dir)?;
    let model = common::load(
        &dir,
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
    let defaults = GenerationDefaults::from_dir(&dir)?;
    let mut sampling = defaults.apply(SamplingConfig {
        temperature: 0.8,
        top_p: 0.95,
        ..SamplingConfig::default()
    });
    if let Some(t) = args.temperature {
        sampling.temperature = t;
    }
    if let Some(p) = args.top_p {
        sampling.top_p = p;
    }
    let options = GenerateOptions {
        max_tokens: args.max_tokens,
        sampling,
        seed: args.seed,
    };
    if tokenizer.chat_template().is_none() {
        eprintln!("note: the tokenizer has no chat template; using DeepSeek-V2-Chat's format");
    }
    let mut session = ChatSession::new(
        &model,
        &tokenizer,
        args.system.as_deref(),
        options,
        &defaults.eos_token_ids,
    )?;
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut stdout = std::io::stdout().lock();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let mut failed = None;
        let turn = session.send(&line, |text| {
            if failed.is_none()
                && let Err(e) = stdout
                    .write_all(text.as_bytes())
                    .and_then(|()| stdout.flush())
            {
                failed = Some(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        writeln!(stdout)?;
        eprintln!(
            "[{} prompt tokens: {} from the cache, {} prefilled; {} generated, {:?}]",
            turn.prompt_tokens,
            turn.reused_tokens,
            turn.prompt_tokens - turn.reused_tokens,
            turn.reply_tokens,
            turn.stop
        );
    }
    Ok(())
}
