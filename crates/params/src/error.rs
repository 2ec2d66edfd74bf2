//! The error type of deepblocks-params.

/// Everything that can go wrong counting a model or planning with it. Each variant names the
/// setting at fault and carries the offending value; a config's own problems come from
/// `deepblocks-config` as [`Error::Config`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The architecture description is not valid (naming the `config.json` key).
    #[error(transparent)]
    Config(#[from] deepblocks_config::Error),

    /// A value is out of range or inconsistent with another (a zero size, heads that do not
    /// divide the hidden size where that is required, a tensor-parallel degree that does not
    /// divide the device count...).
    #[error("`{field}` = {value}: {reason}")]
    Invalid {
        /// The key or setting at fault.
        field: String,
        /// Its value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A count does not fit in 64 bits (only absurd configs get here).
    #[error("`{what}` overflows a 64-bit count")]
    Overflow {
        /// The component or quantity whose count overflowed.
        what: String,
    },
}

/// `Result` with this crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The key or setting this error names, when it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Config(e) => e.key(),
            Error::Invalid { field, .. } => Some(field),
            Error::Overflow { .. } => None,
        }
    }

    pub(crate) fn invalid(field: &str, value: impl ToString, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
