//! The error type of deepblocks-embed.

/// Everything that can go wrong in deepblocks-embed. Each variant names the thing at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A token id is not a row of the embedding matrix.
    #[error("token id {id} at position {position} is out of range for a vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The id at fault.
        id: u32,
        /// Its index in the input.
        position: usize,
        /// The vocabulary size `V` (ids run `0..V`).
        vocab: usize,
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

    /// An error from deepblocks-core: a buffer of the wrong length or shape.
    #[error(transparent)]
    Core(#[from] deepblocks_core::Error),
}

/// `Result` with deepblocks-embed's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
