//! The error type of deepblocks-mla.

/// Everything that can go wrong in deepblocks-mla; each variant names the field, weight or
/// position at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From deepblocks-core: a weight of the wrong shape, a buffer of the wrong length.
    #[error(transparent)]
    Core(#[from] deepblocks_core::Error),
    /// From deepblocks-norm (the latent norms).
    #[error(transparent)]
    Norm(#[from] deepblocks_norm::Error),
    /// From deepblocks-rope (a position past the table's maximum, ...).
    #[error(transparent)]
    Rope(#[from] deepblocks_rope::Error),
    /// A dimension of the config is zero.
    #[error("MlaConfig.{field} is 0; it must be at least 1")]
    ZeroDim {
        /// The field.
        field: &'static str,
    },
    /// `softmax_scale` is not a positive finite number.
    #[error("MlaConfig.softmax_scale = {0} must be finite and > 0")]
    SoftmaxScale(f32),
    /// The config's sizes make a weight too large for this machine's `usize`.
    #[error("MLA weight {weight}: its size overflows for this config")]
    TooLarge {
        /// The weight.
        weight: &'static str,
    },
    /// The config and the weights disagree on the kind of query projection.
    #[error("the config asks for a {config} query projection, but the weights hold {weights}")]
    QProjKind {
        /// What the config says.
        config: &'static str,
        /// What the weights are.
        weights: &'static str,
    },
    /// A forward pass was given no tokens.
    #[error("no tokens to run (t = 0)")]
    EmptyInput,
    /// The rotary rows handed to [`crate::Mla::forward_with`] are not one per new token.
    #[error(
        "{t} rotary table rows for {expected_t} tokens: gather the rows of positions \
         cache.len()..cache.len() + t"
    )]
    RopeRows {
        /// Rows given.
        t: usize,
        /// Tokens in the call.
        expected_t: usize,
    },
    /// The rotary rows handed to [`crate::Mla::forward_with`] are for another rotary width.
    #[error(
        "the rotary table rows are {r} wide, but the layer's qk_rope_head_dim is {expected_r}: \
         build the table for this layer's width"
    )]
    RopeWidth {
        /// The rows' rotary width.
        r: usize,
        /// The layer's `qk_rope_head_dim`.
        expected_r: usize,
    },
    /// An attention core was asked for more new queries than cached tokens.
    #[error("attention over {s} cached tokens cannot hold {t} new queries (t must be ≤ s)")]
    QueriesPastCache {
        /// New queries.
        t: usize,
        /// Cached tokens.
        s: usize,
    },
    /// Appending would take the cache past its maximum length.
    #[error(
        "the KV cache holds {cached} tokens; {adding} more would reach position {}, past \
         max_position_embeddings = {max_position_embeddings}",
        cached.saturating_add(*adding).saturating_sub(1)
    )]
    ContextFull {
        /// Tokens already cached.
        cached: usize,
        /// Tokens being added.
        adding: usize,
        /// The maximum context.
        max_position_embeddings: usize,
    },
    /// Memory for the cache could not be reserved.
    #[error(
        "could not reserve memory for {tokens} tokens of a KV cache layer ({bytes} bytes); \
         ask for a smaller capacity or context"
    )]
    CacheAlloc {
        /// Tokens the layer was to hold.
        tokens: usize,
        /// Bytes that asks for.
        bytes: usize,
    },
    /// The layers of a cache hold different numbers of tokens (a layer was appended to on its
    /// own, outside a forward pass).
    #[error(
        "KV cache layer {layer} holds {len} tokens but layer 0 holds {first}: every layer must \
         hold the same tokens (truncate the cache to the shortest)"
    )]
    UnevenCache {
        /// The first layer that differs from layer 0.
        layer: usize,
        /// Its length.
        len: usize,
        /// Layer 0's length.
        first: usize,
    },
    /// A cache layer index is out of range.
    #[error("KV cache layer {layer} does not exist (the cache has {layers} layers)")]
    NoSuchLayer {
        /// The index asked for.
        layer: usize,
        /// Layers in the cache.
        layers: usize,
    },
    /// A cache was made for another model or layer than the one using it.
    #[error("the KV cache has {what} = {cache}, but this model needs {expected}")]
    CacheMismatch {
        /// The size that differs (`layers`, `kv_lora_rank`, `qk_rope_head_dim`,
        /// `max_positions`).
        what: &'static str,
        /// The cache's.
        cache: usize,
        /// The model's.
        expected: usize,
    },
    /// A cache element type that is not one the cache can hold.
    #[error("KV cache dtype {name:?} is not supported: use f32, bf16, f16 or q8_0")]
    CacheDType {
        /// The name given.
        name: String,
    },
    /// The cached rows handed to an attention core are not `s · (c + r)` elements.
    #[error("the latent rows hold {len} elements, not s·(c + r) = {s}·{width}")]
    LatentRows {
        /// Elements given.
        len: usize,
        /// Cached tokens `s` of the call.
        s: usize,
        /// `c + r`.
        width: usize,
    },
    /// `Q8_0` latent rows that are not whole rows of `c + r` codes with one scale per 32 codes
    /// (or were made for another width).
    #[error(
        "Q8_0 latent rows of width {width}: {codes} codes and {scales} scales are not whole \
         rows of {} codes with one scale per 32",
        width.div_ceil(32) * 32
    )]
    LatentScales {
        /// Codes given.
        codes: usize,
        /// Scales given.
        scales: usize,
        /// Values per row, `c + r`.
        width: usize,
    },
    /// `truncate` was asked to grow the cache.
    #[error("cannot truncate a KV cache of {len} tokens to {to}: truncation only shortens")]
    TruncateBeyond {
        /// Current length.
        len: usize,
        /// Requested length.
        to: usize,
    },
}

/// `Result` with this crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
