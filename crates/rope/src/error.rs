//! The error type of deepblocks-rope.

/// Everything that can go wrong in deepblocks-rope. Each variant names the field or argument at
/// fault and carries the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The rotary dimension is odd or zero: features are rotated in pairs.
    #[error("{field} = {value}: the rotary dimension must be even and at least 2")]
    OddDim {
        /// The field (`dim`).
        field: &'static str,
        /// Its value.
        value: usize,
    },

    /// A number in a config is outside the range it must lie in (a factor ≤ 0, a NaN, a
    /// dimension too small for the scaling, ...).
    #[error("{field} = {value}: must be {expected}")]
    OutOfRange {
        /// The field, prefixed by its scaling (`yarn.factor`, `rope_theta`, ...).
        field: &'static str,
        /// Its value (integers are converted exactly).
        value: f64,
        /// The range it must lie in.
        expected: &'static str,
    },

    /// YaRN's correction range is reversed.
    #[error("yarn.beta_fast = {beta_fast} must be at least yarn.beta_slow = {beta_slow}")]
    BetaOrder {
        /// `beta_fast` (number of rotations at which extrapolation stops).
        beta_fast: f64,
        /// `beta_slow` (number of rotations at which interpolation starts).
        beta_slow: f64,
    },

    /// Llama-3's smoothing band is empty or reversed.
    #[error(
        "llama3.high_freq_factor = {high_freq_factor} must be greater than \
         llama3.low_freq_factor = {low_freq_factor}"
    )]
    FreqFactorOrder {
        /// `low_freq_factor`.
        low_freq_factor: f64,
        /// `high_freq_factor`.
        high_freq_factor: f64,
    },

    /// A position (or a table length) reaches past `max_position_embeddings`.
    #[error(
        "position {position} is past max_position_embeddings = {max_position_embeddings} \
         (positions run from 0 to max_position_embeddings - 1)"
    )]
    PositionPastMax {
        /// The position asked for.
        position: usize,
        /// The configured maximum (exclusive).
        max_position_embeddings: usize,
    },

    /// A dynamic-NTK table is asked to rotate a position its frequencies were not computed for.
    #[error(
        "position {position}: the dynamic NTK frequencies were computed for sequence length \
         {seq_len}; call extend_to({}) first",
        position + 1
    )]
    DynamicNotExtended {
        /// The largest position asked for.
        position: usize,
        /// The sequence length the current frequencies belong to.
        seq_len: usize,
    },

    /// A buffer's length does not match the shape it should hold.
    #[error("{what}: {found} elements cannot hold shape {shape:?} ({expected} elements)")]
    Length {
        /// The argument at fault (`x`, `out`, `positions`, ...).
        what: &'static str,
        /// The shape it should hold.
        shape: Vec<usize>,
        /// The element count of that shape.
        expected: usize,
        /// The buffer's actual length.
        found: usize,
    },

    /// An array does not have the expected shape.
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// The argument at fault.
        what: &'static str,
        /// The shape needed.
        expected: Vec<usize>,
        /// The shape given.
        found: Vec<usize>,
    },

    /// A strided head row cannot hold its rotary part.
    #[error(
        "rows of stride {stride} cannot hold a rotary part of {r} elements at offset {offset} \
         (need offset + r <= stride)"
    )]
    Stride {
        /// Elements from one head row to the next.
        stride: usize,
        /// Where the rotary part starts inside a row.
        offset: usize,
        /// The rotary dimension.
        r: usize,
    },
}

/// `Result` with deepblocks-rope's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Element count of `shape`, saturating on overflow (no buffer can hold `usize::MAX` floats, so a
/// saturated count always fails the length check that follows).
pub(crate) fn numel(shape: &[usize]) -> usize {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX)
}

/// `Err(Length)` unless `found == numel(shape)`.
pub(crate) fn check_len(what: &'static str, shape: &[usize], found: usize) -> Result<()> {
    let expected = numel(shape);
    if expected == found {
        Ok(())
    } else {
        Err(Error::Length {
            what,
            shape: shape.to_vec(),
            expected,
            found,
        })
    }
}
