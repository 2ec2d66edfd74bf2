//! The vector tools of deepblocks-embed: lookup, cosine similarity, nearest neighbours, analogy
//! (`a − b + c`) and the tied unembedding.
//!
//! By default the example builds a small embedding matrix of its own: 16 words over 11
//! interpretable features (royal, male, female, adult, young, animal, feline, canine, fruit, red,
//! yellow) plus a little deterministic noise, stored in bf16 as a checkpoint would be. On it
//! `king − man + woman` lands on `queen`, as in the word-vector literature. With `--model` (a
//! Hugging Face folder, a `.gguf` file or `ORG/NAME` in the local Hugging Face cache) it reads the
//! model's `embed_tokens` instead; tokens are given as ids, or as words when the model has a
//! tokenizer (a word that is one token; DeepSeek's tokenizer keeps the leading space, so
//! `" king"` is usually one token where `"king"` is not). A vocabulary under 32,000 tokens gets
//! a note on stderr that it is too small for meaningful neighbours (the shipped model has 4,096;
//! the MLA models this repository runs have 102,400 to 163,840).
//!
//! ```text
//! cargo run --release --example embeddings
//! cargo run --release --example embeddings -- --model DIR --tokens 100,2000 --analogy 5,6,7
//! cargo run --release --example embeddings -- --model models/tiny-shakespeare --tokens " king" --analogy " king, man, woman"
//! ```

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use deepblocks::core::{DType, Weight};
use deepblocks::deepseek::LoadOptions;
use deepblocks::embed::{Embedding, Embeddings, LmHead, Neighbour, Positions, cosine_similarity};
use deepblocks::params::thousands;
use deepblocks::tokenize::Tokenizer;

#[derive(Parser)]
#[command(about = "Cosine similarity, nearest neighbours and analogies over embedding rows")]
struct Args {
    /// A model (Hugging Face folder, .gguf file, or ORG/NAME in the local Hugging Face cache);
    /// its token embedding replaces the toy matrix.
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
    let mut out = String::new();
    writeln!(
        out,
        "Toy embedding E[V {}, h {}] in {} ({} bytes); features: {}",
        e.vocab_size(),
        e.hidden_size(),
        e.format(),
        e.weight().bytes(),
        FEATURES.join(", ")
    )?;

    writeln!(
        out,
        "\nLookup: ids [king, kitten] → x[2, {}]",
        e.hidden_size()
    )?;
    let x = e.lookup_nd(&[id_of("king"), id_of("kitten")])?;
    for (word, row) in ["king", "kitten"].iter().zip(x.rows()) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:5.2}")).collect();
        writeln!(out, "  {word:>8} [{}]", cells.join(" "))?;
    }

    writeln!(out, "\nCosine similarity")?;
    for (a, b) in [
        ("king", "queen"),
        ("king", "man"),
        ("king", "apple"),
        ("cat", "kitten"),
        ("cat", "dog"),
        ("apple", "banana"),
    ] {
        let s = cosine_similarity(&e.row(id_of(a))?, &e.row(id_of(b))?)?;
        writeln!(out, "  cos({a}, {b}) = {s:6.3}")?;
    }

    writeln!(out, "\nNearest neighbours (k = {k})")?;
    for word in ["king", "kitten", "apple"] {
        let n = e.neighbours(id_of(word), k)?;
        let list: Vec<String> = n
            .iter()
            .map(|n| format!("{} {:.3}", name(n.id), n.similarity))
            .collect();
        writeln!(out, "  {word:>8}: {}", list.join(", "))?;
    }

    writeln!(out, "\nAnalogies a − b + c (inputs excluded)")?;
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
        writeln!(out, "  {a} − {b} + {c} = {}", list.join(", "))?;
    }

    writeln!(out, "\nTied unembedding: logits = x · Eᵀ for x = E[queen]")?;
    let m = Embeddings::new(e, LmHead::Tied)?;
    let x = m.embed_tokens().lookup_nd(&[id_of("queen")])?;
    let logits = m.logits_nd(x.view(), Positions::Last)?;
    let mut ranked: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    for &(id, l) in ranked.iter().take(4) {
        writeln!(out, "  {:>8} {l:6.3}", name(id as u32))?;
    }
    common::emit(&out)?;
    Ok(())
}

/// Vocabularies smaller than this get a note that their neighbours mean little.
const SMALL_VOCAB: usize = 32_000;

/// A token given as an id, or as a text the tokenizer encodes to exactly one token; either must
/// be inside the vocabulary of `vocab` tokens.
fn resolve(
    arg: &str,
    tok: Option<&Tokenizer>,
    vocab: usize,
) -> Result<u32, Box<dyn std::error::Error>> {
    let id = if let Ok(id) = arg.trim().parse::<u32>() {
        id
    } else {
        let tok =
            tok.ok_or_else(|| format!("{arg:?} is not an id and the model has no tokenizer"))?;
        match tok.encode(arg, false)?[..] {
            [id] => id,
            ref ids => {
                return Err(format!("{arg:?} is {} tokens ({ids:?}), not one", ids.len()).into());
            }
        }
    };
    if id as usize >= vocab {
        return Err(
            format!("token {arg:?}: id {id} is past the vocabulary of {vocab} tokens").into(),
        );
    }
    Ok(id)
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

fn model(path: &Path, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let path = deepblocks::deepseek::resolve_model(path)?;
    // The model's own loader (memory-mapped: of the weights, only the embedding is read here).
    let model = common::load(&path, LoadOptions::default())?;
    let tok = common::tokenizer_if_any(&path)?;
    let tok = tok.as_ref();
    let e = model.embeddings().embed_tokens();
    let vocab = e.vocab_size();
    // Every token is checked before anything is printed.
    let tokens = args
        .tokens
        .iter()
        .map(|a| resolve(a, tok, vocab))
        .collect::<Result<Vec<_>, _>>()?;
    let analogy = match &args.analogy[..] {
        [] => None,
        [a, b, c] => Some([
            resolve(a, tok, vocab)?,
            resolve(b, tok, vocab)?,
            resolve(c, tok, vocab)?,
        ]),
        other => return Err(format!("--analogy takes three tokens, got {other:?}").into()),
    };
    let mut out = String::new();
    writeln!(
        out,
        "{}: embed_tokens [V {}, h {}] in {} ({:.1} MB){}",
        path.display(),
        vocab,
        e.hidden_size(),
        e.format(),
        e.weight().bytes() as f64 / 1e6,
        if tok.is_some() {
            ", with its tokenizer"
        } else {
            ""
        }
    )?;
    for &id in &tokens {
        writeln!(
            out,
            "  nearest to {}: {}",
            label(id, tok),
            list(&e.neighbours(id, args.k)?, tok)
        )?;
    }
    if let Some([a, b, c]) = analogy {
        writeln!(
            out,
            "  {} − {} + {} = {}",
            label(a, tok),
            label(b, tok),
            label(c, tok),
            list(&e.analogy(a, b, c, args.k)?, tok)
        )?;
    }
    if vocab < SMALL_VOCAB {
        eprintln!(
            "note: a vocabulary of {} tokens is too small for meaningful neighbours \
             (DeepSeek-V2's has 102,400): read these as a demonstration of the tools, not of \
             what the model learned",
            thousands(vocab as u64)
        );
    }
    common::emit(&out)?;
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
