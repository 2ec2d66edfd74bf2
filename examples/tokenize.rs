//! Text to token ids and back, with any Hugging Face `tokenizer.json`.
//!
//! ```text
//! cargo run --release --example tokenize -- --tokenizer FILE (--text S | --file F) [--decode]
//! cargo run --release --example tokenize -- --tokenizer FILE --chat MESSAGES.json [--generation-prompt]
//! ```
//!
//! Without `--decode`: prints the ids of the text on one line, separated by spaces, with no
//! special tokens added (special tokens written in the text are still recognised); long texts are
//! encoded about 64 KiB at a time (`Tokenizer::encode_in_pieces`, same ids). With
//! `--decode`: reads ids (separated by spaces, commas or newlines) from `--text` or `--file` and
//! prints their text exactly, special tokens included, with no newline added. With `--chat`:
//! renders MESSAGES.json (a JSON list of `{"role", "content", ...}` objects, as transformers
//! takes them) with the tokenizer folder's own chat template (`chat_template.jinja`, or
//! `tokenizer_config.json`'s `chat_template`) and prints the prompt exactly, with no newline
//! added, as transformers' `apply_chat_template(tokenize=False)` returns it.
//!
//! ```text
//! cargo run --release --example tokenize -- --tokenizer testdata/tokenize/tokenizer.json --text "Hello 世界"
//! cargo run --release --example tokenize -- --tokenizer testdata/tokenize/tokenizer.json --text "1 2 3" --decode
//! ```

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Parser};
use deepblocks::tokenize::{Tokenizer, format_ids, parse_ids};

#[derive(Parser)]
#[command(about = "Encode text to token ids, or decode ids to text, with a tokenizer.json")]
#[command(group(ArgGroup::new("input").required(true).args(["text", "file", "chat"])))]
struct Args {
    /// The tokenizer.json (a tokenizer_config.json beside it is read too).
    #[arg(long)]
    tokenizer: PathBuf,
    /// The input text (ids with --decode).
    #[arg(long)]
    text: Option<String>,
    /// A file holding the input (UTF-8 text, or ids with --decode).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Decode ids to text instead of encoding.
    #[arg(long)]
    decode: bool,
    /// Render a conversation (a JSON file: a list of {"role", "content", ...} objects) with the
    /// tokenizer's chat template instead.
    #[arg(long)]
    chat: Option<PathBuf>,
    /// With --chat: end with the template's generation prompt (the assistant's turn to speak).
    #[arg(long, requires = "chat")]
    generation_prompt: bool,
}

/// Bytes of text encoded at a time.
const PIECE_BYTES: usize = 1 << 16;

fn main() -> ExitCode {
    common::exit(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let tokenizer = Tokenizer::from_file(&args.tokenizer)?;
    if let Some(path) = &args.chat {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let messages: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let prompt = tokenizer
            .render_chat(&messages, args.generation_prompt)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        write!(std::io::stdout().lock(), "{prompt}")?;
        return Ok(());
    }
    let input = match (&args.text, &args.file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, None) => unreachable!("clap requires --text, --file or --chat"),
    };
    let mut stdout = std::io::stdout().lock();
    if args.decode {
        let ids = parse_ids(&input)?;
        write!(stdout, "{}", tokenizer.decode(&ids, false)?)?;
    } else {
        // In pieces of about 64 KiB, each written as it is done: memory stays bounded for long
        // files, and the ids are those of the whole text (`Tokenizer::encode_in_pieces`).
        let mut start = 0;
        for end in tokenizer.piece_ends(&input, PIECE_BYTES)? {
            let ids = tokenizer.encode(&input[start..end], false)?;
            if start > 0 && !ids.is_empty() {
                write!(stdout, " ")?;
            }
            write!(stdout, "{}", format_ids(&ids))?;
            start = end;
        }
        writeln!(stdout)?;
    }
    Ok(())
}
