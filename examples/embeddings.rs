//! The vector tools of deepblocks-embed: lookup, cosine similarity, nearest neighbours, analogy
//! (`a − b + c`) and the tied unembedding.
//!
//! The shipped model does not exist yet, so by default the example builds a small embedding matrix
//! of its own: 16 words over 11 interpretable features (royal, male, female, adult, young, animal,
//! feline, canine, fruit, red, yellow) plus a little deterministic noise, stored in bf16 as a
//! checkpoint would be. On it `king − man + woman` lands on `queen`, as in the word-vector
//! literature. Point it at any Hugging Face model folder with `--model DIR` to read
//! `model.embed_tokens.weight` instead; tokens are given as ids, or as words when the folder has a
//! `tokenizer.json` (a word that is one token; DeepSeek's tokenizer keeps the leading space, so
//! `" king"` is usually one token where `"king"` is not).
//!
//! ```text
//! cargo run --release --example embeddings
//! cargo run --release --example embeddings -- --model DIR --tokens 100,2000 --analogy 5,6,7
//! cargo run --release --example embeddings -- --model DIR --tokens " king" --analogy " king, man, woman"
//! ```

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use deepblocks::core::{DType, Weight};
use deepblocks::deepseek::Model;
use deepblocks::embed::{Embedding, Embeddings, LmHead, Neighbour, Positions, cosine_similarity};
use deepblocks::tokenize::{TOKENIZER_FILE, Tokenizer};

#[derive(Parser)]
#[command(about = "Cosine similarity, nearest neighbours and analogies over embedding rows")]
struct Args {
    /// A Hugging Face model folder; its `model.embed_tokens.weight` replaces the toy matrix.
    #[arg(long)]
    model: Option<PathBuf>,
    /// With --model: tokens whose nearest neighbours to print, comma-separated: ids, or texts
    /// that are one token each (needs the folder's tokenizer.json).
    #[arg(long, value_delimiter = ',')]
    tokens: Vec<String>,
    /// With --model: three tokens a,b,c (ids or one-token texts) for the analogy a − b + c.
    #[arg(long, value_delimiter = ',')]
    analogy: Vec<String>,
    /// Neighbours to print.
    #[arg(long, default_value_t = 5)]
    k: usize,
}

const FEATURES: [&str; 11] = [
    "royal", "male", "female", "adult", "young", "animal", "feline", "canine", "fruit", "red",
    "yellow",
];

/// Each word and the features it has (value 1; everything else 0, plus noise).
const WORDS: [(&str, &[usize]); 16] = [
    ("king", &[0, 1, 3]),
    ("queen", &[0, 2, 3]),
    ("prince", &[0, 1, 4]),
    ("princess", &[0, 2, 4]),
    ("man", &[1, 3]),
    ("woman", &[2, 3]),
    ("boy", &[1, 4]),
    ("girl", &[2, 4]),
    ("cat", &[5, 6, 3]),
    ("kitten", &[5, 6, 4]),
    ("dog", &[5, 7, 3]),
    ("puppy", &[5, 7, 4]),
    ("apple", &[8, 9]),
    ("cherry", &[8, 9, 4]),
    ("banana", &[8, 10]),
    ("lemon", &[8, 10, 3]),
];

/// The toy matrix `E[16, 11]` in bf16: features plus noise uniform in ±0.05 from a fixed xorshift.
fn toy_embedding() -> Result<Embedding, deepblocks::core::Error> {
    let h = FEATURES.len();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 * 0.1 - 0.05
    };
    let mut data = Vec::with_capacity(WORDS.len() * h);
    for (_, feats) in WORDS {
        for f in 0..h {
            let base = if feats.contains(&f) { 1.0 } else { 0.0 };
            data.push(base + noise());
        }
    }
    let w = Weight::from_f32(data, WORDS.len(), h)?.to_dtype(DType::BF16);
    Ok(Embedding::new(w))
}

fn id_of(word: &str) -> u32 {
    WORDS
        .iter()
        .position(|(w, _)| *w == word)
        .unwrap_or_else(|| panic!("{word} is not in the toy vocabulary")) as u32
}

fn name(id: u32) -> &'static str {
    WORDS[id as usize].0
}

fn toy(k: usize) -> Result<(), Box<dyn std::error::Error>> {
    let e = toy_embedding()?;
    println!(
        "Toy embedding E[V {}, h {}] in {} ({} bytes); features: {}",
        e.vocab_size(),
        e.hidden_size(),
        e.format(),
        e.weight().bytes(),
        FEATURES.join(", ")
    );

    println!("\nLookup: ids [king, kitten] → x[2, {}]", e.hidden_size());
    let x = e.lookup_nd(&[id_of("king"), id_of("kitten")])?;
    for (word, row) in ["king", "kitten"].iter().zip(x.rows()) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:5.2}")).collect();
        println!("  {word:>8} [{}]", cells.join(" "));
    }

    println!("\nCosine similarity");
    for (a, b) in [
        ("king", "queen"),
        ("king", "man"),
        ("king", "apple"),
        ("cat", "kitten"),
        ("cat", "dog"),
        ("apple", "banana"),
    ] {
        let s = cosine_similarity(&e.row(id_of(a))?, &e.row(id_of(b))?)?;
        println!("  cos({a}, {b}) = {s:6.3}");
    }

    println!("\nNearest neighbours (k = {k})");
    for word in ["king", "kitten", "apple"] {
        let n = e.neighbours(id_of(word), k)?;
        let list: Vec<String> = n
            .iter()
            .map(|n| format!("{} {:.3}", name(n.id), n.similarity))
            .collect();
        println!("  {word:>8}: {}", list.join(", "));
    }

    println!("\nAnalogies a − b + c (inputs excluded)");
    for (a, b, c) in [
        ("king", "man", "woman"),
        ("prince", "boy", "girl"),
        ("kitten", "cat", "dog"),
        ("apple", "cherry", "lemon"), // red fruit → yellow fruit
    ] {
        let best = e.analogy(id_of(a), id_of(b), id_of(c), 3)?;
        let list: Vec<String> = best
            .iter()
            .map(|n| format!("{} {:.3}", name(n.id), n.similarity))
            .collect();
        println!("  {a} − {b} + {c} = {}", list.join(", "));
    }

    println!("\nTied unembedding: logits = x · Eᵀ for x = E[queen]");
    let m = Embeddings::new(e, LmHead::Tied)?;
    let x = m.embed_tokens().lookup_nd(&[id_of("queen")])?;
    let logits = m.logits_nd(x.view(), Positions::Last)?;
    let mut ranked: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    for &(id, l) in ranked.iter().take(4) {
        println!("  {:>8} {l:6.3}", name(id as u32));
    }
    Ok(())
}

/// A token given as an id, or as a text the tokenizer encodes to exactly one token.
fn resolve(arg: &str, tok: Option<&Tokenizer>) -> Result<u32, Box<dyn std::error::Error>> {
    if let Ok(id) = arg.trim().parse::<u32>() {
        return Ok(id);
    }
    let tok =
        tok.ok_or_else(|| format!("{arg:?} is not an id and the folder has no {TOKENIZER_FILE}"))?;
    match tok.encode(arg, false)?[..] {
        [id] => Ok(id),
        ref ids => Err(format!("{arg:?} is {} tokens ({ids:?}), not one", ids.len()).into()),
    }
}

/// A token for display: its text when there is a tokenizer, else its id.
fn label(id: u32, tok: Option<&Tokenizer>) -> String {
    match tok.and_then(|t| t.decode(&[id], false).ok()) {
        Some(text) => format!("{text:?}"),
        None => format!("#{id}"),
    }
}

fn list(n: &[Neighbour], tok: Option<&Tokenizer>) -> String {
    n.iter()
        .map(|n| format!("{} {:.3}", label(n.id, tok), n.similarity))
        .collect::<Vec<_>>()
        .join(", ")
}

fn model(dir: &PathBuf, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    // The model's own loader reads the checkpoint (memory-mapped: only the embedding is paged in).
    let model = Model::load(dir)?;
    let e = model.embeddings().embed_tokens();
    let tok = if dir.join(TOKENIZER_FILE).is_file() {
        Some(Tokenizer::from_dir(dir)?)
    } else {
        None
    };
    let tok = tok.as_ref();
    println!(
        "{}: embed_tokens [V {}, h {}] in {} ({:.1} MB){}",
        dir.display(),
        e.vocab_size(),
        e.hidden_size(),
        e.format(),
        e.weight().bytes() as f64 / 1e6,
        if tok.is_some() {
            ", with its tokenizer"
        } else {
            ""
        }
    );
    for arg in &args.tokens {
        let id = resolve(arg, tok)?;
        println!(
            "  nearest to {}: {}",
            label(id, tok),
            list(&e.neighbours(id, args.k)?, tok)
        );
    }
    match &args.analogy[..] {
        [] => {}
        [a, b, c] => {
            let (a, b, c) = (resolve(a, tok)?, resolve(b, tok)?, resolve(c, tok)?);
            println!(
                "  {} − {} + {} = {}",
                label(a, tok),
                label(b, tok),
                label(c, tok),
                list(&e.analogy(a, b, c, args.k)?, tok)
            );
        }
        other => return Err(format!("--analogy takes three tokens, got {other:?}").into()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.model {
        Some(dir) => model(dir, &args),
        None => toy(args.k),
    };
    common::exit(result)
}
