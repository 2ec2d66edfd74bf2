//! Parameter, KV-cache and FLOP accounting for a `config.json` (DeepSeek-V2 or Llama).
//!
//! ```text
//! cargo run --release --example params -- --config FILE [--json]
//!     [--context L] [--kv-bits B]
//!     [--devices N --memory-gb G [--tp T] [--ep E] [--weight-bits B] [--batch S] [--reserve-gb R]]
//! ```
//!
//! Prints the parameter tree (every tensor with its shape, copies, parameters, matrices and
//! activated parameters per token), the totals, the KV cache per token and the forward FLOPs per
//! token at `--context` keys (default 4096). With `--devices` it adds the deployment sketch: the
//! weight and KV bytes per device under tensor-parallel degree `--tp` and expert-parallel degree
//! `--ep`, and the longest context that fits.
//!
//! `--json` prints one JSON object instead: `total`, `activated` (per token, embeddings
//! included), `activated_excl_embedding`, `kv_cache_elements_per_token`, `components` (the
//! per-component breakdown, each with `name`, `params`, `matrices`, `activated` and either the
//! tensor's `kind`, `shape`, `copies`, `active_copies`, `checkpoint` or its `children`), and more
//! (see `deepblocks_params::Summary`); `deployment` when `--devices` is given.

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use deepblocks::config::AnyArchitecture;
use deepblocks::params::{
    Accounting, Bits, DeploymentPlan, DeploymentReport, InputEmbedding, Limit, MlaPath, thousands,
};

#[derive(Parser)]
#[command(about = "Parameter, KV-cache and FLOP accounting for a config.json")]
struct Args {
    /// A config.json (model_type deepseek_v2, deepseek_v3, kimi_k2, glm4_moe_lite or llama; hub or
    /// transformers-5 form).
    #[arg(long)]
    config: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Keys attended by the token whose FLOPs are counted.
    #[arg(long, default_value_t = 4096)]
    context: u64,
    /// Bits per KV-cache element for the bytes figures (16 = bf16; DeepSeek-V2 reports 6).
    #[arg(long, default_value_t = 16)]
    kv_bits: u32,
    /// Devices for the deployment sketch.
    #[arg(long)]
    devices: Option<u64>,
    /// Memory per device in GB (10^9 bytes).
    #[arg(long, default_value_t = 80.0)]
    memory_gb: f64,
    /// Memory per device held back for activations and workspace, in GB.
    #[arg(long, default_value_t = 0.0)]
    reserve_gb: f64,
    /// Tensor-parallel degree (default: all devices).
    #[arg(long)]
    tp: Option<u64>,
    /// Expert-parallel degree (default: all devices for an MoE model, 1 for a dense one).
    #[arg(long)]
    ep: Option<u64>,
    /// Bits per weight (16 = bf16, 8 = FP8/int8).
    #[arg(long, default_value_t = 16)]
    weight_bits: u32,
    /// Sequences decoded at once per tensor-parallel group.
    #[arg(long, default_value_t = 1)]
    batch: u64,
}

fn gb(field: &str, x: f64) -> Result<u64, String> {
    if x.is_finite() && x >= 0.0 && x * 1e9 < u64::MAX as f64 {
        Ok((x * 1e9).round() as u64)
    } else {
        Err(format!(
            "--{field} {x}: must be a non-negative number of GB"
        ))
    }
}

fn model_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    if stem == "config" {
        path.parent()
            .and_then(|p| p.file_name())
            .and_then(|s| s.to_str())
            .unwrap_or(stem)
            .to_string()
    } else {
        stem.to_string()
    }
}

/// Whole bytes with thousands separators, fractional ones (sub-byte element widths) with two
/// decimals.
fn bytes(x: f64) -> String {
    if x.fract() == 0.0 && x < u64::MAX as f64 {
        thousands(x as u64)
    } else {
        format!("{x:.2}")
    }
}

/// `235.74B`, `15.71M`, `41.44K`, `12`.
fn short(n: u64) -> String {
    let x = n as f64;
    match n {
        1_000_000_000.. => format!("{:.2}B", x / 1e9),
        1_000_000.. => format!("{:.2}M", x / 1e6),
        1_000.. => format!("{:.2}K", x / 1e3),
        _ => n.to_string(),
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = AnyArchitecture::from_file(&args.config)?;
    if !config.unknown_keys.is_empty() {
        eprintln!(
            "note: {} keys not read (they may change the architecture): {}",
            args.config.display(),
            config.unknown_keys.join(", ")
        );
    }
    let acc = Accounting::of(&config.architecture, &model_name(&args.config))?;
    let kv_bits = Bits::new(args.kv_bits).map_err(|e| format!("--kv-bits: {e}"))?;
    let deployment = match args.devices {
        None => None,
        Some(devices) => {
            let plan = DeploymentPlan {
                devices,
                memory_per_device: gb("memory-gb", args.memory_gb)?,
                reserve_per_device: gb("reserve-gb", args.reserve_gb)?,
                tensor_parallel: args.tp.unwrap_or(devices),
                expert_parallel: args.ep.unwrap_or(if acc.routed_experts > 0 {
                    devices
                } else {
                    1
                }),
                weight_bits: Bits::new(args.weight_bits)
                    .map_err(|e| format!("--weight-bits: {e}"))?,
                kv_bits,
                batch: args.batch,
            };
            Some((plan, plan.plan(&acc)?))
        }
    };

    if args.json {
        let mut summary = acc.summary(args.context)?;
        summary.deployment =
            deployment.map(|(plan, per_device)| DeploymentReport { plan, per_device });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }

    print_text(&acc, args, kv_bits)?;
    if let AnyArchitecture::Mla(arch) = &config.architecture
        && let Some(mtp) = deepblocks::params::mtp_tree(arch)?
    {
        println!(
            "multi-token prediction      {:>19}  ({}, {} layer(s) in the checkpoint, not in the total: inference skips them)",
            thousands(mtp.params()),
            short(mtp.params()),
            arch.num_nextn_predict_layers
        );
    }
    if let Some((plan, d)) = deployment {
        println!(
            "\ndeployment: {} devices × {:.0} GB (reserve {:.0} GB), tensor parallel {}, expert parallel {}, \
             {}-bit weights, {}-bit KV cache, {} sequence(s) per group",
            plan.devices,
            plan.memory_per_device as f64 / 1e9,
            plan.reserve_per_device as f64 / 1e9,
            plan.tensor_parallel,
            plan.expert_parallel,
            plan.weight_bits.get(),
            plan.kv_bits.get(),
            plan.batch
        );
        println!(
            "  weights per device     {:>8.2} GB  (tensor-parallel {}, experts {}, replicated {} parameters)",
            d.weight_bytes as f64 / 1e9,
            thousands(d.tensor_parallel_params),
            thousands(d.expert_params),
            thousands(d.replicated_params)
        );
        println!(
            "  KV cache per device    {:>8} bytes per token per sequence",
            bytes(d.kv_bytes_per_token)
        );
        println!(
            "  free for the cache     {:>8.2} GB",
            d.free_bytes as f64 / 1e9
        );
        match d.limited_by {
            Limit::Weights => println!(
                "  longest context            none: the weights alone do not fit in {:.2} GB",
                args.memory_gb
            ),
            Limit::Memory => println!(
                "  longest context        {:>8} tokens, limited by memory (the model allows {})",
                thousands(d.max_context),
                thousands(acc.max_position_embeddings)
            ),
            Limit::ModelContext => println!(
                "  longest context        {:>8} tokens, limited by max_position_embeddings (memory would hold {})",
                thousands(d.max_context),
                thousands(d.max_context_memory)
            ),
        }
    }
    Ok(())
}

fn print_text(acc: &Accounting, args: &Args, kv_bits: Bits) -> deepblocks::params::Result<()> {
    println!("{}  ({})\n", acc.name, args.config.display());
    print!("{}", acc.tree.table());
    let total = acc.total();
    let act = acc.activated(InputEmbedding::Include);
    let excl = acc.activated(InputEmbedding::Exclude);
    println!();
    println!(
        "total parameters            {:>19}  ({})",
        thousands(total),
        short(total)
    );
    println!(
        "activated per token         {:>19}  ({}, embeddings included)",
        thousands(act),
        short(act)
    );
    println!(
        "  without input embedding   {:>19}  ({}, as DeepSeek reports)",
        thousands(excl),
        short(excl)
    );
    println!(
        "matrices                    {:>19}",
        thousands(acc.tree.matrices())
    );
    let kv = acc.kv;
    println!(
        "KV cache per token          {:>19}  elements ({} × {} layers); {} bytes at {} bits",
        thousands(kv.elements_per_token()),
        kv.layout.label(),
        kv.layers,
        bytes(kv.bytes_per_token(kv_bits)),
        kv_bits.get()
    );
    let f = acc.flops_per_token(args.context, MlaPath::Expanded)?;
    println!(
        "forward FLOPs per token     {:>19}  at context {}: 2·N_matmul {} + attention {}",
        thousands(f.total),
        thousands(args.context),
        thousands(f.matmul),
        thousands(f.attention)
    );
    if kv.layout.label() == "MLA" {
        let g = acc.flops_per_token(args.context, MlaPath::Absorbed)?;
        println!(
            "  absorbed MLA              {:>19}  attention {}",
            thousands(g.total),
            thousands(g.attention)
        );
    }
    println!(
        "configured context          {:>19}",
        thousands(acc.max_position_embeddings)
    );
    Ok(())
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}
