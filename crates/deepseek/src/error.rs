//! The error type of deepblocks-deepseek.

/// Everything that can go wrong loading or running a model. The model crate wraps the errors of
/// the crates it uses directly; each failure has one variant, in the crate that detects it, and
/// names the file, key, tensor, token or position at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// From deepblocks-config: `config.json` is unreadable, names an unsupported family, or has a
    /// bad key (naming the file and the key).
    #[error(transparent)]
    Config(#[from] deepblocks_config::Error),
    /// From deepblocks-core: the checkpoint (a missing file, a corrupt header, a missing tensor
    /// with its expected shape, a tensor of the wrong shape or dtype) or a buffer of the wrong
    /// length (the `logits` passed to [`crate::Model::forward_into`]).
    #[error(transparent)]
    Core(#[from] deepblocks_core::Error),
    /// From deepblocks-norm.
    #[error(transparent)]
    Norm(#[from] deepblocks_norm::Error),
    /// From deepblocks-rope.
    #[error(transparent)]
    Rope(#[from] deepblocks_rope::Error),
    /// From deepblocks-mla: no tokens, a full context, a cache made for another model.
    #[error(transparent)]
    Mla(#[from] deepblocks_mla::Error),
    /// From deepblocks-moe (e.g. NaN gate logits).
    #[error(transparent)]
    Moe(#[from] deepblocks_moe::Error),
    /// From deepblocks-embed: a token id outside the vocabulary, naming it and its position.
    #[error(transparent)]
    Embed(#[from] deepblocks_embed::Error),
    /// From deepblocks-tokenize (generation from text).
    #[error(transparent)]
    Tokenize(#[from] deepblocks_tokenize::Error),
    /// From deepblocks-sample (invalid sampling options, NaN logits).
    #[error(transparent)]
    Sample(#[from] deepblocks_sample::Error),
    /// A perplexity window does not fit the model's context (or predicts nothing).
    #[error(
        "a perplexity window of {window} tokens is not possible: it must be between 2 and \
         max_position_embeddings = {max_position_embeddings}"
    )]
    Window {
        /// The window length asked for (`--ctx`).
        window: usize,
        /// The model's context.
        max_position_embeddings: usize,
    },
    /// Too few tokens to score.
    #[error("{tokens} tokens are fewer than one window of {window}")]
    TooFewTokens {
        /// Tokens given.
        tokens: usize,
        /// Tokens a window needs.
        window: usize,
    },
    /// A tensor is stored in FP8 blocks (or has block scales beside it), but `config.json` has
    /// no `quantization_config` to give the block shape.
    #[error(
        "tensor {tensor:?} is stored in FP8 blocks, but config.json has no quantization_config \
         (its weight_block_size gives the blocks' shape)"
    )]
    Fp8WithoutQuantizationConfig {
        /// The tensor.
        tensor: String,
    },
    /// Reading a conversation's input or writing its replies failed.
    #[error("chat {what}: {source}")]
    ChatIo {
        /// `input` or `output`.
        what: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A GGUF file cannot be read as a container.
    #[error(transparent)]
    Gguf(#[from] deepblocks_core::gguf::GgufError),
    /// A GGUF file's metadata does not describe a model of the MLA family.
    #[error("{path}: {key}: {reason}")]
    GgufMetadata {
        /// The file.
        path: String,
        /// The metadata key at fault.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A model cannot be written as a llama.cpp `deepseek2` GGUF file.
    #[error("cannot write GGUF: {what}: {reason}")]
    GgufUnwritable {
        /// The tensor, metadata key or config key at fault.
        what: String,
        /// Why.
        reason: String,
    },
    /// `generation_config.json` is not valid.
    #[error("{path}: {reason}")]
    GenerationConfig {
        /// The file.
        path: String,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// `--model` names neither a file or folder nor a model in the local Hugging Face cache.
    #[error("{spec}: {reason}")]
    ModelNotFound {
        /// What was given.
        spec: String,
        /// Where it was looked for, and how to get it.
        reason: String,
    },
    /// A quantization recipe name is not one deepblocks knows.
    #[error("unknown quantization recipe {name:?}; known: {known}")]
    UnknownRecipe {
        /// The name given.
        name: String,
        /// The known recipes, comma-separated.
        known: String,
    },
    /// The checkpoint holds tensors the architecture description does not use.
    #[error(
        "{location}: {} tensor(s) the config does not account for ({}{}): {explanation}",
        tensors.len(),
        tensors.iter().take(4).cloned().collect::<Vec<_>>().join(", "),
        if tensors.len() > 4 { ", …" } else { "" }
    )]
    UnexpectedTensors {
        /// The checkpoint file or index.
        location: String,
        /// The tensors, sorted.
        tensors: Vec<String>,
        /// The config key that would account for them, or that none does.
        explanation: String,
    },
    /// `num_hidden_layers` asks for more decoder layers than the checkpoint holds.
    #[error(
        "{location}: config.json's num_hidden_layers is {num_hidden_layers}, but the checkpoint \
         holds {found} decoder layer(s) (no tensor starts with model.layers.{found}.)"
    )]
    MissingLayers {
        /// The checkpoint file or index.
        location: String,
        /// The config's layer count.
        num_hidden_layers: usize,
        /// Layers `0..found` of the checkpoint have tensors.
        found: usize,
    },
    /// A weight holds a NaN or an infinity (found by `LoadOptions::check_weights`).
    #[error("tensor {tensor:?}: element {index} is {value}, not a finite number")]
    NonFiniteWeight {
        /// The checkpoint name.
        tensor: String,
        /// The flat index of the first such element.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// A block's output holds a NaN or an infinity: where non-finite values start.
    #[error(
        "{}{block}: output element {index} is {value}, not a finite number (a NaN or infinite \
         weight, or an overflow; LoadOptions::check_weights scans the weights)",
        layer.map(|l| format!("layer {l} ")).unwrap_or_default()
    )]
    NonFiniteOutput {
        /// The decoder layer, `None` for the final norm and `lm_head`.
        layer: Option<usize>,
        /// `attention`, `mlp` or `lm_head`.
        block: &'static str,
        /// The flat index of the first such element.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// Any error raised inside decoder layer `layer` (the router's NaN gate logits, ...).
    #[error("layer {layer}: {source}")]
    Layer {
        /// The decoder layer.
        layer: usize,
        /// What went wrong there.
        #[source]
        source: Box<Error>,
    },
    /// A block could not be built from the tensors under a checkpoint prefix.
    #[error("{prefix}: {source}")]
    Block {
        /// The checkpoint prefix of the block (`model.layers.3.self_attn`).
        prefix: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
}

/// `Result` with this crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
