//! The error type of deepblocks-embed.

/// Everything that can go wrong in deepblocks-embed. Each variant names the thing at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A token id is not a row of the embedding matrix.
    #[error("token id {id} is out of range for a vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The id at fault.
        id: u32,
        /// The vocabulary size `V` (ids run `0..V`).
        vocab: usize,
    },

    /// A buffer or vector does not have the length its role needs.
    #[error("{what}: expected {expected} values, found {found}")]
    Length {
        /// The argument at fault (`hidden`, `query`, `logits`, ...).
        what: &'static str,
        /// The length needed.
        expected: usize,
        /// The length given.
        found: usize,
    },

    /// A checkpoint tensor that should be a `[V, h]` matrix has another rank.
    #[error(
        "tensor {tensor:?} has shape {shape:?}; an embedding or lm_head must be [vocab, hidden]"
    )]
    NotAMatrix {
        /// The tensor name.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
    },

    /// A separate `lm_head` does not have the embedding's shape `[V, h]`.
    #[error("lm_head has shape {found:?}, but the embedding is {expected:?}")]
    LmHeadShape {
        /// The embedding's `[V, h]`.
        expected: [usize; 2],
        /// The lm_head's shape.
        found: [usize; 2],
    },

    /// Logits were asked for the last position of an empty sequence.
    #[error("no positions: logits of the last position need at least one token")]
    NoPositions,

    /// An error from deepblocks-core (reading a checkpoint, a shape check).
    #[error(transparent)]
    Core(#[from] deepblocks_core::Error),
}

/// `Result` with deepblocks-embed's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
