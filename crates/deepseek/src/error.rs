//! The error type of deepblocks-deepseek.

use std::path::PathBuf;

/// Everything that can go wrong loading or running a DeepSeek-V2 model; each variant names the
/// file, field, tensor or token at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From deepblocks-core (a corrupt file, a tensor's shape or dtype).
    #[error(transparent)]
    Core(#[from] deepblocks_core::Error),
    /// From deepblocks-norm.
    #[error(transparent)]
    Norm(#[from] deepblocks_norm::Error),
    /// From deepblocks-rope (an invalid RoPE config).
    #[error(transparent)]
    Rope(#[from] deepblocks_rope::Error),
    /// From deepblocks-mla.
    #[error(transparent)]
    Mla(#[from] deepblocks_mla::Error),
    /// From deepblocks-moe (an invalid routing config, NaN gate logits).
    #[error(transparent)]
    Moe(#[from] deepblocks_moe::Error),
    /// From deepblocks-embed.
    #[error(transparent)]
    Embed(#[from] deepblocks_embed::Error),
    /// From deepblocks-tokenize (generation from text).
    #[error(transparent)]
    Tokenize(#[from] deepblocks_tokenize::Error),
    /// From deepblocks-sample (invalid sampling options, NaN logits).
    #[error(transparent)]
    Sample(#[from] deepblocks_sample::Error),
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not JSON.
    #[error("{}: not valid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A required `config.json` field is absent or null.
    #[error("config.json: required field {field:?} is missing")]
    MissingField {
        /// The field.
        field: &'static str,
    },
    /// A `config.json` field has a value of the wrong type or out of range.
    #[error("config.json: {field} = {value}: {reason}")]
    Field {
        /// The field.
        field: String,
        /// Its value as written.
        value: String,
        /// What it must be.
        reason: &'static str,
    },
    /// A `config.json` field asks for something this implementation does not do.
    #[error("config.json: {field} = {value} is not supported: {reason}")]
    Unsupported {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why, and what is.
        reason: &'static str,
    },
    /// A tensor the config implies is not in the checkpoint.
    #[error("tensor {name:?} (expected shape {expected:?}) is missing from {location}")]
    MissingTensor {
        /// Its checkpoint name.
        name: String,
        /// The shape it should have.
        expected: Vec<usize>,
        /// The file or index searched.
        location: String,
    },
    /// `forward` was given no tokens.
    #[error("forward: the token sequence is empty")]
    EmptyInput,
    /// A token id is not below the vocabulary size.
    #[error(
        "token id {id} at position {position} is out of range for a vocabulary of {vocab_size}"
    )]
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// Its index in the input.
        position: usize,
        /// `vocab_size`.
        vocab_size: usize,
    },
    /// The cache plus the new tokens would pass `max_position_embeddings`.
    #[error(
        "context too long: {cached} cached + {adding} new tokens > max_position_embeddings = {max_position_embeddings}"
    )]
    ContextTooLong {
        /// Tokens already in the cache.
        cached: usize,
        /// Tokens given.
        adding: usize,
        /// The model's maximum context.
        max_position_embeddings: usize,
    },
    /// A cache made for another model.
    #[error("the KV cache has {layers} layers; this model has {expected}")]
    CacheLayers {
        /// The cache's layer count.
        layers: usize,
        /// The model's.
        expected: usize,
    },
}

/// `Result` with this crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
