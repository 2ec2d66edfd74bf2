//! The error type of deepblocks-sample.

/// Everything that can go wrong when sampling. Each variant names the value at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A sampling parameter is outside its allowed range.
    #[error("{name} = {value} is not allowed: expected {expected}")]
    Parameter {
        /// The parameter (`temperature`, `top_p`, `min_p`, `repetition_penalty`,
        /// `frequency_penalty`, `presence_penalty`, `u`).
        name: &'static str,
        /// The value given.
        value: f64,
        /// The allowed range, in words.
        expected: &'static str,
    },

    /// The logits slice is empty.
    #[error("the logits are empty: there is no token to sample")]
    EmptyLogits,

    /// A logit is NaN or +∞ (−∞ is allowed: it masks a token).
    #[error("logit {index} is {value}: logits must be finite, or -inf to mask a token")]
    NonFiniteLogit {
        /// Its position (the token id).
        index: usize,
        /// The value (NaN or +∞).
        value: f32,
    },

    /// Every logit is −∞, so no token has any probability.
    #[error("all {len} logits are -inf: no token can be sampled")]
    AllMasked {
        /// The number of logits.
        len: usize,
    },

    /// There are more logits than `u32` token ids.
    #[error("{len} logits: more than u32 token ids can name")]
    VocabTooLarge {
        /// The number of logits.
        len: usize,
    },

    /// A token id in the penalty history is not a position of the logits.
    #[error("history token id {id} is out of range for {vocab} logits")]
    TokenOutOfRange {
        /// The id at fault.
        id: u32,
        /// The number of logits (the vocabulary size).
        vocab: usize,
    },
}

/// `Result` with deepblocks-sample's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
