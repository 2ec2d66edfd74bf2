//! The error type of deepblocks-moe.

/// Everything that can go wrong in deepblocks-moe. Each variant carries the value at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from deepblocks-core: a weight of the wrong shape, a buffer of the wrong length.
    #[error(transparent)]
    Core(#[from] deepblocks_core::Error),

    /// `num_experts_per_tok` (k) exceeds the number of routed experts.
    #[error("num_experts_per_tok = {k} is more than the {experts} routed experts")]
    TooManyExpertsPerToken {
        /// The requested k.
        k: usize,
        /// The number of routed experts.
        experts: usize,
    },

    /// `n_group` is zero or does not divide the number of routed experts.
    #[error("n_group = {n_group} does not divide the {experts} routed experts into equal groups")]
    GroupsDoNotDivide {
        /// The requested number of groups.
        n_group: usize,
        /// The number of routed experts.
        experts: usize,
    },

    /// `topk_group` is zero or exceeds `n_group`.
    #[error("topk_group = {topk_group} is not in 1..={n_group} (n_group)")]
    BadTopkGroup {
        /// The requested number of kept groups.
        topk_group: usize,
        /// The number of groups.
        n_group: usize,
    },

    /// The kept groups hold fewer experts than `num_experts_per_tok`, so k distinct experts
    /// inside them cannot be chosen.
    #[error(
        "num_experts_per_tok = {k} cannot be chosen from topk_group = {topk_group} groups of {group_size} experts"
    )]
    KeptGroupsTooSmall {
        /// The requested k.
        k: usize,
        /// The number of kept groups.
        topk_group: usize,
        /// Experts per group.
        group_size: usize,
    },

    /// A gate logit is NaN or infinite (the hidden state or the gate weight holds a NaN, or the
    /// product overflowed).
    #[error(
        "router: gate logit of token {token} for expert {expert} is {value}, not a finite number"
    )]
    NonFiniteGateLogit {
        /// The token (row of the hidden states).
        token: usize,
        /// The expert (row of the gate weight).
        expert: usize,
        /// The logit.
        value: f32,
    },

    /// Any other invalid configuration value.
    #[error("invalid MoE configuration: {field} = {value}: {reason}")]
    Config {
        /// The configuration field (named as in config.json where it has a counterpart).
        field: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A routing names an expert outside `0..experts`.
    #[error("routing: token {token}, slot {slot} names expert {expert}, outside 0..{experts}")]
    ExpertOutOfRange {
        /// The token.
        token: usize,
        /// The position among the token's k choices.
        slot: usize,
        /// The expert id.
        expert: usize,
        /// The number of routed experts.
        experts: usize,
    },

    /// A routing selects the same expert twice for one token.
    #[error("routing: token {token} selects expert {expert} more than once")]
    DuplicateExpert {
        /// The token.
        token: usize,
        /// The repeated expert id.
        expert: usize,
    },

    /// A routing weight or score is NaN or infinite.
    #[error("routing: {what}[{index}] = {value} is not a finite number")]
    NonFinite {
        /// Which array (`weights`, `scores`, `e_score_correction_bias`).
        what: &'static str,
        /// The flat index.
        index: usize,
        /// The value.
        value: f32,
    },
}

/// `Result` with deepblocks-moe's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A core [`Shape`](deepblocks_core::Error::Shape) error naming the weight `what`.
    pub(crate) fn shape(what: impl Into<String>, expected: &[usize], found: &[usize]) -> Self {
        Error::Core(deepblocks_core::Error::shape(what, expected, found))
    }

    /// A core [`Length`](deepblocks_core::Error::Length) error naming the buffer `what`.
    pub(crate) fn length(what: impl Into<String>, shape: &[usize], found: usize) -> Self {
        Error::Core(deepblocks_core::Error::length(what, shape, found))
    }
}
