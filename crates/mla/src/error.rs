//! The error type of deepblocks-mla.

/// Everything that can go wrong in deepblocks-mla; each variant names the field, tensor or
/// position at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From deepblocks-core: a file, a missing tensor, a tensor's shape or dtype.
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
    /// A weight handed to [`crate::Mla::new`] does not have the shape the config implies.
    #[error("MLA weight {name}: expected shape {expected:?}, found {found:?}")]
    WeightShape {
        /// The checkpoint name of the weight (`kv_b_proj`, `q_a_layernorm`, ...).
        name: &'static str,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape it has.
        found: Vec<usize>,
    },
    /// The config and the weights disagree on the kind of query projection.
    #[error("the config asks for a {config} query projection, but the weights hold {weights}")]
    QProjKind {
        /// What the config says.
        config: &'static str,
        /// What the weights are.
        weights: &'static str,
    },
    /// The input is not `[t, hidden_size]`, or `t` is 0.
    #[error("MLA input: {found} values is not [t = {t}, hidden_size = {hidden}] (t must be ≥ 1)")]
    Input {
        /// Tokens requested.
        t: usize,
        /// `hidden_size`.
        hidden: usize,
        /// Length of the input (or output) slice.
        found: usize,
    },
    /// Appending would take the cache past `max_position_embeddings`.
    #[error(
        "the KV cache holds {cached} tokens; {adding} more would reach position {}, past \
         max_position_embeddings = {max_position_embeddings}",
        cached + adding - 1
    )]
    ContextFull {
        /// Tokens already cached.
        cached: usize,
        /// Tokens being added.
        adding: usize,
        /// The maximum context.
        max_position_embeddings: usize,
    },
    /// A cache layer index is out of range.
    #[error("KV cache layer {layer} does not exist (the cache has {layers} layers)")]
    NoSuchLayer {
        /// The index asked for.
        layer: usize,
        /// Layers in the cache.
        layers: usize,
    },
    /// A cache was made for other dimensions than the attention using it.
    #[error(
        "KV cache rows are [c {cache_c} + r {cache_r}], but this attention needs [c {c} + r {r}]"
    )]
    CacheMismatch {
        /// The cache's latent width.
        cache_c: usize,
        /// The cache's rope width.
        cache_r: usize,
        /// The attention's `kv_lora_rank`.
        c: usize,
        /// The attention's `qk_rope_head_dim`.
        r: usize,
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
