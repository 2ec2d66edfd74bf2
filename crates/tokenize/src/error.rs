//! The error type of deepblocks-tokenize.

use std::path::PathBuf;

/// The error type of the `tokenizers` crate.
pub type TokenizersError = tokenizers::Error;

/// Everything that can go wrong in deepblocks-tokenize. Each variant names the file, token, id or
/// text at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A `tokenizer.json` is not a tokenizer the `tokenizers` crate can load.
    #[error("{what}: not a valid tokenizer.json: {source}")]
    Malformed {
        /// The file (or `"tokenizer JSON"` for bytes given directly).
        what: String,
        /// What `tokenizers` reported.
        #[source]
        source: TokenizersError,
    },

    /// A `tokenizer_config.json` is not valid.
    #[error("{what}: invalid tokenizer_config.json: {reason}")]
    Config {
        /// The file (or `"tokenizer config JSON"`).
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A special token was asked for by a name the tokenizer does not have.
    #[error("unknown special token {name:?}")]
    UnknownSpecialToken {
        /// The name asked for (`bos`, `eos`, `pad`, `unk`, or a token such as
        /// `<｜end▁of▁sentence｜>`).
        name: String,
    },

    /// A token id is not in the vocabulary.
    #[error("token id {id} is not in the vocabulary (size {vocab})")]
    IdOutOfVocab {
        /// The id at fault.
        id: u32,
        /// The vocabulary size, added tokens included.
        vocab: usize,
    },

    /// `tokenizers` failed to encode a text.
    #[error("cannot encode {text:?}: {source}")]
    Encode {
        /// The start of the text (at most 60 characters).
        text: String,
        /// What `tokenizers` reported.
        #[source]
        source: TokenizersError,
    },

    /// `tokenizers` failed to decode ids.
    #[error("cannot decode ids: {source}")]
    Decode {
        /// What `tokenizers` reported.
        #[source]
        source: TokenizersError,
    },

    /// A special token for the byte-level tokenizer is empty or repeated.
    #[error("byte-level special token {token:?}: {reason}")]
    BadSpecialToken {
        /// The token at fault.
        token: String,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// A chat template does not parse, or fails while rendering.
    #[error("chat template{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    ChatTemplate {
        /// minijinja's message (or the template's own, from `raise_exception`).
        message: String,
        /// The template line at fault, when known.
        line: Option<usize>,
    },

    /// Chat messages a template cannot take.
    #[error("chat messages: {}{reason}", index.map(|i| format!("message {i} ")).unwrap_or_default())]
    ChatMessages {
        /// The message at fault (none when the whole value is not a list).
        index: Option<usize>,
        /// What is wrong.
        reason: String,
    },

    /// A conversation is to be rendered, but the tokenizer folder has no chat template.
    #[error(
        "the tokenizer has no chat template (tokenizer_config.json's chat_template, or chat_template.jinja)"
    )]
    NoChatTemplate,

    /// Text that should be a list of token ids is not.
    #[error("{text:?} is not a token id (expected a non-negative integer below 2^32)")]
    NotAnId {
        /// The offending piece of text.
        text: String,
    },
}

/// `Result` with deepblocks-tokenize's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The first 60 characters of `text`, for error messages.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
