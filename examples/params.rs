//! Parameter, KV-cache and FLOP accounting for a `config.json` (DeepSeek-V2 or Llama).
//!
//! ```text
//! cargo run --release --example params -- --config FILE [--json]
//!     [--context L] [--kv-bits B]
//!     [--devices N --memory-gb G [--tp T] [--ep E] [--weight-bits B] [--batch S] [--reserve-gb R]]
//! ```
//!
//! Prints the parameter tree (every tensor with its shape, copies, parameters, share of the total
//! as a percentage and a bar, matrices and activated parameters per token), the totals, the KV cache per token and the forward FLOPs per
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
    Accounting, Bits, Deployment, DeploymentPlan, DeploymentReport, InputEmbedding, Limit, MlaPath,
    thousands,
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

    // Everything is computed before the first line is printed: an error leaves stdout empty.
    let mtp = match &config.architecture {
        AnyArchitecture::Mla(arch) => deepblocks::params::mtp_tree(arch)?
            .map(|tree| (tree.params(), arch.num_nextn_predict_layers)),
        _ => None,
    };
    let mut out = text(&acc, args, kv_bits)?;
    if let Some((params, layers)) = mtp {
        out += &format!(
            "multi-token prediction      {:>19}  ({}, {layers} layer{} in the checkpoint, not in the total: inference skips {})\n",
            thousands(params),
            short(params),
            if layers == 1 { "" } else { "s" },
            if layers == 1 { "it" } else { "them" },
        );
    }
    if let Some((plan, d)) = deployment {
        out += &deployment_text(&acc, &plan, &d);
    }
    common::emit(&out)?;
    Ok(())
}

/// `80`, `0.5`, `1.25`: GB with at most two decimals, trailing zeros dropped.
fn gb_label(bytes: u64) -> String {
    let s = format!("{:.2}", bytes as f64 / 1e9);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `1 sequence`, `4 sequences`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

/// The deployment sketch, in sentences.
fn deployment_text(acc: &Accounting, plan: &DeploymentPlan, d: &Deployment) -> String {
    let mut out = String::new();
    let one = plan.devices == 1;
    let reserve = match (plan.reserve_per_device, one) {
        (0, true) => "none of it held in reserve".to_string(),
        (0, false) => "none held in reserve".to_string(),
        (r, true) => format!("{} GB of it held in reserve", gb_label(r)),
        (r, false) => format!("{} GB of each held in reserve", gb_label(r)),
    };
    out += &format!(
        "\nDeployment sketch: {} of {} GB, {reserve}.\n",
        plural(plan.devices, "device", "devices"),
        gb_label(plan.memory_per_device)
    );
    let everywhere = if one {
        "on the device"
    } else {
        "on every device"
    };
    let tp = match plan.tensor_parallel {
        1 => format!("Attention, dense layers, embeddings and lm_head are whole {everywhere}"),
        t => format!(
            "Attention, dense layers, embeddings and lm_head are split {t} ways (tensor parallel)"
        ),
    };
    let ep = match (acc.routed_experts, plan.expert_parallel) {
        (0, _) => String::new(),
        (e, 1) => format!("; all {e} routed experts are {everywhere}"),
        (e, p) => format!(
            "; the {e} routed experts are spread over {p} devices, {} on each (expert parallel)",
            e / p
        ),
    };
    out += &format!("{tp}{ep}.\n");
    let bits = if plan.weight_bits == plan.kv_bits {
        format!("{}-bit weights and KV cache", plan.weight_bits.get())
    } else {
        format!(
            "{}-bit weights, {}-bit KV cache",
            plan.weight_bits.get(),
            plan.kv_bits.get()
        )
    };
    let group = match plan.tensor_parallel {
        1 if one => String::new(),
        1 => " on each device".to_string(),
        t => format!(" by each group of {t} tensor-parallel devices"),
    };
    out += &format!(
        "{bits}; {} decoded at a time{group}.\n\n",
        plural(plan.batch, "sequence", "sequences")
    );
    out += &format!(
        "  weights per device     {:>10} GB  ({} tensor-parallel, {} expert and {} replicated parameters)\n",
        format!("{:.2}", d.weight_bytes as f64 / 1e9),
        thousands(d.tensor_parallel_params),
        thousands(d.expert_params),
        thousands(d.replicated_params)
    );
    out += &format!(
        "  KV cache per device    {:>10} bytes for each token of each sequence\n",
        bytes(d.kv_bytes_per_token)
    );
    out += &format!(
        "  free for the cache     {:>10} GB\n",
        format!("{:.2}", d.free_bytes as f64 / 1e9)
    );
    out += &match d.limited_by {
        Limit::Weights => format!(
            "  longest context              none: the weights alone ({:.2} GB per device) do not fit in {} GB{}\n",
            d.weight_bytes as f64 / 1e9,
            gb_label(plan.memory_per_device),
            match plan.reserve_per_device {
                0 => String::new(),
                r => format!(" less the {} GB reserve", gb_label(r)),
            }
        ),
        Limit::Memory => format!(
            "  longest context        {:>10} tokens: memory runs out first (the model allows {})\n",
            thousands(d.max_context),
            thousands(acc.max_position_embeddings)
        ),
        Limit::ModelContext => format!(
            "  longest context        {:>10} tokens: the model's max_position_embeddings (memory would hold {})\n",
            thousands(d.max_context),
            thousands(d.max_context_memory)
        ),
    };
    out
}

/// The tree, the totals, the KV cache and the FLOPs, as text.
fn text(acc: &Accounting, args: &Args, kv_bits: Bits) -> deepblocks::params::Result<String> {
    let f = acc.flops_per_token(args.context, MlaPath::Expanded)?;
    let absorbed = if acc.kv.layout.label() == "MLA" {
        Some(acc.flops_per_token(args.context, MlaPath::Absorbed)?)
    } else {
        None
    };
    let mut out = format!("{}  ({})\n\n", acc.name, args.config.display());
    out += &acc.tree.table();
    let total = acc.total();
    let act = acc.activated(InputEmbedding::Include);
    let excl = acc.activated(InputEmbedding::Exclude);
    out += "\n";
    out += &format!(
        "total parameters            {:>19}  ({})\n",
        thousands(total),
        short(total)
    );
    out += &format!(
        "activated per token         {:>19}  ({}, embeddings included)\n",
        thousands(act),
        short(act)
    );
    out += &format!(
        "  without input embedding   {:>19}  ({}, as DeepSeek reports)\n",
        thousands(excl),
        short(excl)
    );
    out += &format!(
        "matrices                    {:>19}\n",
        thousands(acc.tree.matrices())
    );
    let kv = acc.kv;
    out += &format!(
        "KV cache per token          {:>19}  elements ({} × {} layers); {} bytes at {} bits\n",
        thousands(kv.elements_per_token()),
        kv.layout.label(),
        kv.layers,
        bytes(kv.bytes_per_token(kv_bits)),
        kv_bits.get()
    );
    out += &format!(
        "forward FLOPs per token     {:>19}  at context {}: 2·N_matmul {} + attention {}\n",
        thousands(f.total),
        thousands(args.context),
        thousands(f.matmul),
        thousands(f.attention)
    );
    if let Some(g) = absorbed {
        out += &format!(
            "  absorbed MLA              {:>19}  attention {}\n",
            thousands(g.total),
            thousands(g.attention)
        );
    }
    out += &format!(
        "configured context          {:>19}\n",
        thousands(acc.max_position_embeddings)
    );
    Ok(out)
}

fn main() -> ExitCode {
    common::exit(run(&Args::parse()))
}
