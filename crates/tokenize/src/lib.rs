//! # deepblocks-tokenize
//!
//! Text ↔ token ids for DeepSeek-V2-family models, as a thin layer over Hugging Face's
//! `tokenizers` crate (no BPE of our own):
//!
//! - [`Tokenizer`]: `tokenizer.json` plus `tokenizer_config.json` (bos/eos, chat template);
//!   encode with or without special tokens, decode, special tokens by role (`bos`, `eos`) or
//!   by name. Ids the vocabulary lacks are an [`Error::IdOutOfVocab`], not silently skipped.
//! - The DeepSeek-V2-Chat prompt ([`deepseek_v2_chat`], [`Tokenizer::encode_chat`]):
//!   `<｜begin▁of▁sentence｜>User: {msg}\n\nAssistant:`, assistant turns closed by
//!   `<｜end▁of▁sentence｜>`, an optional system message first — the `chat_template` of
//!   DeepSeek-V2-Chat's `tokenizer_config.json`, implemented natively.
//! - [`StreamDecoder`]: ids in one at a time, complete UTF-8 out, never a broken character;
//!   everything it emits concatenates to the decode of all ids at once.
//! - [`Tokenizer::byte_level`]: 256 byte ids plus special tokens, for toy models and tests.
//!
//! DeepSeek-V2's tokenizer is a byte-level BPE (DeepSeek-V2 report, arXiv 2405.04434, §3.1: the
//! DeepSeek 67B tokenizer, byte-level BPE, vocabulary 100K): text is split by a chain of
//! regexes (newlines, runs of letters, punctuation, CJK, single digits), each piece mapped to
//! bytes, and each byte to one of 256 printable characters; BPE merges then work on those
//! characters. The token `Ġthe` is the bytes ` the`.
//!
//! ```
//! use deepblocks_tokenize::{Message, Tokenizer, DEEPSEEK_BOS, DEEPSEEK_EOS};
//!
//! let tok = Tokenizer::byte_level(&[DEEPSEEK_BOS, DEEPSEEK_EOS])?;
//! // The special tokens follow the 256 bytes.
//! assert_eq!(tok.special_token_id(DEEPSEEK_EOS)?, 257);
//! let ids = tok.encode_chat(&[Message::user("Hi")], true)?;
//! assert_eq!(ids[0], 256); // bos
//! assert_eq!(tok.decode(&ids, false)?, "<｜begin▁of▁sentence｜>User: Hi\n\nAssistant:");
//! assert_eq!(tok.decode(&ids, true)?, "User: Hi\n\nAssistant:");
//! assert!(tok.decode(&[258], false).is_err()); // not in the vocabulary
//! # Ok::<(), deepblocks_tokenize::Error>(())
//! ```

#![deny(missing_docs)]

mod bytes;
mod chat;
mod config;
mod error;
mod gguf;
mod stream;
mod template;
mod tokenizer;

pub use bytes::byte_to_char;
pub use chat::{DEEPSEEK_BOS, DEEPSEEK_EOS, Message, Role, deepseek_v2_chat};
pub use config::TokenizerConfig;
pub use error::{Error, Result, TokenizersError};
pub use gguf::{GGUF_PRE_TOKENIZERS, GgufVocab, GgufVocabData};
pub use stream::StreamDecoder;
pub use template::{ChatTemplate, ROLES, messages_json};
pub use tokenizer::{CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, Tokenizer};

/// Token ids as the `tokenize` example prints them: decimal, separated by single spaces.
///
/// ```
/// assert_eq!(deepblocks_tokenize::format_ids(&[1, 22, 333]), "1 22 333");
/// ```
pub fn format_ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

/// Parses token ids separated by whitespace and/or commas (the inverse of [`format_ids`]).
///
/// ```
/// assert_eq!(deepblocks_tokenize::parse_ids(" 1 22,333\n")?, vec![1, 22, 333]);
/// assert!(deepblocks_tokenize::parse_ids("1 x").is_err());
/// # Ok::<(), deepblocks_tokenize::Error>(())
/// ```
///
/// # Errors
/// [`Error::NotAnId`] naming the first piece that is not an integer in `0..2^32`.
pub fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u32>().map_err(|_| Error::NotAnId {
                text: s.to_string(),
            })
        })
        .collect()
}

// The README's example is a doctest too, so what crates.io shows is what runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
