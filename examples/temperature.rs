//! What temperature does to a distribution: one row of logits, `softmax(z / T)` at several
//! temperatures, printed as text bar charts. Low temperatures sharpen the distribution towards the
//! argmax (T = 0 is greedy decoding); high temperatures flatten it towards uniform.
//!
//! ```text
//! cargo run --release --example temperature
//! cargo run --release --example temperature -- --logits 3,2.5,1,0.2,-1 --temperatures 0,0.3,1,3
//! cargo run --release --example temperature -- --top-p 0.9     # show the nucleus cut as well
//! ```

mod common;

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Parser;
use deepblocks::sample::{Sampler, SamplingConfig, distribution};

#[derive(Parser)]
#[command(about = "Print softmax(logits / T) at several temperatures as bar charts")]
struct Args {
    /// Comma-separated logits (one per token).
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true,
          default_values_t = [4.0f32, 3.2, 2.9, 2.0, 1.1, 0.4, -0.5, -1.6])]
    logits: Vec<f32>,
    /// Names for the tokens, comma-separated (defaults to a small made-up vocabulary).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Comma-separated temperatures (0 = greedy).
    #[arg(long, value_delimiter = ',', default_values_t = [0.0f32, 0.25, 0.5, 1.0, 1.5, 3.0])]
    temperatures: Vec<f32>,
    /// Top-p (nucleus) cut applied after the temperature.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Draws per temperature for the empirical check (0 to skip).
    #[arg(long, default_value_t = 10_000)]
    draws: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

const WIDTH: usize = 40;
const DEFAULT_LABELS: [&str; 8] = ["cat", "dog", "mat", "hat", "sat", "the", "on", "zebra"];

fn main() -> ExitCode {
    common::exit(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let labels: Vec<String> = (0..args.logits.len())
        .map(|i| {
            args.labels
                .get(i)
                .cloned()
                .or_else(|| DEFAULT_LABELS.get(i).map(|s| s.to_string()))
                .unwrap_or_else(|| format!("#{i}"))
        })
        .collect();
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1);

    // Every distribution (and draw) first: a bad temperature is an error before anything prints.
    let mut panels = Vec::with_capacity(args.temperatures.len());
    for &t in &args.temperatures {
        let config = SamplingConfig {
            temperature: t,
            top_p: args.top_p,
            ..SamplingConfig::default()
        };
        let p = distribution(&config, &args.logits, &[])?;
        // Empirical frequencies from the seeded sampler, as a check on the bars.
        let mut counts = vec![0usize; p.len()];
        if args.draws > 0 {
            let mut s = Sampler::new(config, args.seed)?;
            for _ in 0..args.draws {
                counts[s.sample(&args.logits, &[])?.token as usize] += 1;
            }
        }
        panels.push((t, p, counts));
    }

    let mut out = String::new();
    writeln!(out, "The cat sat on the ___   (logits: {:?})", args.logits)?;
    for (t, p, counts) in panels {
        let entropy = p
            .iter()
            .filter(|&&v| v > 0.0)
            .map(|&v| -v * v.log2())
            .sum::<f64>()
            .max(0.0);
        let kind = if t == 0.0 { " (greedy)" } else { "" };
        writeln!(out)?;
        writeln!(out, "T = {t}{kind}   entropy {entropy:.2} bits")?;
        for (i, &pi) in p.iter().enumerate() {
            let filled = (pi * WIDTH as f64).round() as usize;
            let bar: String = "█".repeat(filled) + &"·".repeat(WIDTH - filled);
            let drawn = if args.draws > 0 {
                format!(
                    "  drawn {:5.1}%",
                    100.0 * counts[i] as f64 / args.draws as f64
                )
            } else {
                String::new()
            };
            writeln!(
                out,
                "  {:>w$} {bar} {:5.1}%{drawn}",
                labels[i],
                100.0 * pi,
                w = label_width
            )?;
        }
    }
    common::emit(&out)?;
    Ok(())
}
