//! GPT-3's parameters, component by component.
//!
//! ```text
//! cargo run --release --example gpt3_params
//! ```
//!
//! Prints the walk-through's table for GPT-3 175B (every weight matrix: embedding, key, query,
//! value, output, up- and down-projection, unembedding — 175,181,291,520 parameters in 27,938
//! matrices), then the paper's Table 2.1 family with the full count beside each nominal size, and
//! the conventions that separate the two counts. See docs/params.md.

mod common;

use std::process::ExitCode;

use clap::Parser;
use deepblocks::params::{GPT3_175B, GPT3_FAMILY, Gpt3Config, Kind, thousands};

/// GPT-3's parameters, component by component: the walk-through's table for GPT-3 175B, the
/// paper's Table 2.1 family, and the conventions that separate the two counts.
#[derive(Parser)]
struct Args {}

/// `println!` into a `String` (written to stdout at once, by `common::emit`).
macro_rules! outln {
    ($out:expr) => {
        $out.push('\n')
    };
    ($out:expr, $($arg:tt)*) => {{
        $out.push_str(&format!($($arg)*));
        $out.push('\n');
    }};
}

fn walkthrough_table(out: &mut String, cfg: &Gpt3Config) -> deepblocks::params::Result<()> {
    let tree = cfg.walkthrough()?;
    outln!(
        out,
        "{} — walk-through convention (weight matrices only)\n\
         d_model {}, {} layers, {} heads of {}, MLP {}, vocabulary {}\n",
        cfg.name,
        cfg.d_model,
        cfg.n_layers,
        cfg.n_heads,
        cfg.d_head,
        cfg.d_ff,
        cfg.vocab
    );
    let rows: Vec<[String; 5]> = tree
        .children()
        .iter()
        .map(|c| {
            let t = c.as_tensor().expect("the walk-through is flat");
            let shape = format!("{} × {}", thousands(t.shape[0]), thousands(t.shape[1]));
            [
                c.name().to_string(),
                shape,
                thousands(t.shape[0] * t.shape[1]),
                thousands(c.matrices()),
                thousands(c.params()),
            ]
        })
        .collect();
    let header = [
        "component",
        "matrix [out × in]",
        "per matrix",
        "matrices",
        "parameters",
    ]
    .map(String::from);
    let total = [
        "total".to_string(),
        String::new(),
        String::new(),
        thousands(tree.matrices()),
        thousands(tree.params()),
    ];
    print_table(out, &header, &rows, &total);
    Ok(())
}

fn family_table(out: &mut String) -> deepblocks::params::Result<()> {
    outln!(
        out,
        "\nGPT-3 family (Brown et al. 2020, Table 2.1; n_ctx 2048, vocabulary 50,257, d_ff = 4·d_model)\n\
         paper count: every parameter — embeddings, positions, biases, LayerNorms; unembedding tied\n"
    );
    let header = [
        "model",
        "nominal",
        "layers",
        "d_model",
        "heads × d_head",
        "paper count",
        "non-embedding",
        "walk-through",
    ]
    .map(String::from);
    let mut rows = Vec::new();
    for cfg in GPT3_FAMILY {
        let full = cfg.full()?;
        let walk = match cfg.walkthrough() {
            Ok(t) => thousands(t.params()),
            Err(_) => "— (*)".to_string(),
        };
        rows.push([
            cfg.name.to_string(),
            cfg.nominal.to_string(),
            cfg.n_layers.to_string(),
            thousands(cfg.d_model),
            format!("{} × {}", cfg.n_heads, cfg.d_head),
            thousands(full.params()),
            thousands(cfg.non_embedding()?),
            walk,
        ]);
    }
    print_table(out, &header, &rows, &[]);
    outln!(
        out,
        "\n(*) n_heads × d_head ≠ d_model in the paper's row (XL: 24 × 128 = 3072 for 2048; 13B: \
         40 × 128 = 5120 for 5140),\n    so there is no per-head split to count; the paper count \
         uses d_model-wide attention, as GPT-2 does."
    );
    Ok(())
}

fn conventions(out: &mut String) -> deepblocks::params::Result<()> {
    let c = GPT3_175B;
    let walk = c.walkthrough()?;
    let full = c.full()?;
    let (v, d, l, n_ctx) = (c.vocab, c.d_model, c.n_layers, c.n_ctx);
    let biases = full.params_where(|k| k == Kind::Bias);
    let norms = full.params_where(|k| k == Kind::Norm);
    outln!(out, "\nWhy the two 175B counts differ:");
    outln!(
        out,
        "  walk-through                         {:>19}",
        thousands(walk.params())
    );
    outln!(
        out,
        "  − separate unembedding (tied: V·d)   {:>19}",
        format!("−{}", thousands(v * d))
    );
    outln!(
        out,
        "  + learned positions (n_ctx·d)        {:>19}",
        format!("+{}", thousands(n_ctx * d))
    );
    outln!(
        out,
        "  + biases (9·d per layer)             {:>19}",
        format!("+{}", thousands(biases))
    );
    outln!(
        out,
        "  + LayerNorms (4·d per layer, + 2·d)  {:>19}",
        format!("+{}", thousands(norms))
    );
    outln!(
        out,
        "  = paper count                        {:>19}   ({} layers)",
        thousands(full.params()),
        l
    );
    assert_eq!(
        walk.params() - v * d + n_ctx * d + biases + norms,
        full.params()
    );
    Ok(())
}

fn print_table<const N: usize>(
    out: &mut String,
    header: &[String],
    rows: &[[String; N]],
    total: &[String],
) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows.iter().map(|r| r.as_slice()).chain([total]) {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                let pad = w - c.chars().count();
                if i == 0 {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect();
        outln!(out, "{}", parts.join("  "));
    };
    line(header);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&rule);
    for r in rows {
        line(r);
    }
    if !total.is_empty() {
        line(&rule);
        line(total);
    }
}

fn main() -> ExitCode {
    let Args {} = Args::parse();
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let mut out = String::new();
        walkthrough_table(&mut out, &GPT3_175B)?;
        family_table(&mut out)?;
        conventions(&mut out)?;
        common::emit(&out)?;
        Ok(())
    };
    common::exit(run())
}
