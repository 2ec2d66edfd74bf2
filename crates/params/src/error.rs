//! The error type of deepblocks-params.

use std::path::PathBuf;

/// Everything that can go wrong while reading a config or planning with it. Each variant names
/// the field at fault (a config.json key, `rope_scaling.factor` for a nested one, or a deployment
/// setting such as `tensor_parallel`) and carries the offending value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The text is not JSON (the message carries line and column).
    #[error("config is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// The config file is not JSON (the message carries line and column).
    #[error("{}: not valid JSON: {source}", path.display())]
    JsonFile {
        /// The file at fault.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// The JSON value where an object was expected (the top level, `rope_scaling`, ...) is not one.
    #[error("config field `{field}` should be a JSON object, found {found}")]
    NotAnObject {
        /// `(top level)` or the key of the nested object.
        field: String,
        /// The JSON text found instead.
        found: String,
    },

    /// A field the count depends on is absent.
    #[error("config field `{field}` is missing")]
    MissingField {
        /// The key that should be present.
        field: String,
    },

    /// A field is present with the wrong JSON type (a string where a count is expected, a float
    /// where an integer is, a negative count...).
    #[error("config field `{field}` should be {expected}, found {found}")]
    WrongType {
        /// The key at fault.
        field: String,
        /// What the field should hold.
        expected: &'static str,
        /// The JSON text found instead.
        found: String,
    },

    /// A key this crate does not know. Unknown keys are refused rather than ignored, since a
    /// field we skipped could change the architecture and so the count.
    #[error("config field `{field}` is not known for model_type `{model_type}`")]
    UnknownField {
        /// The unknown key.
        field: String,
        /// The model type whose fields were expected.
        model_type: String,
    },

    /// A field has a value that is out of range or inconsistent with another field (a zero size,
    /// heads that do not divide the hidden size where that is required, `n_group` not dividing
    /// the number of experts, a tensor-parallel degree that does not divide the device count...).
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
    /// The field or setting this error names, when it names one (every variant but `Io`, `Json`,
    /// `JsonFile` and `Overflow`).
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::NotAnObject { field, .. }
            | Error::MissingField { field }
            | Error::WrongType { field, .. }
            | Error::UnknownField { field, .. }
            | Error::Invalid { field, .. } => Some(field),
            Error::Io { .. } | Error::Json(_) | Error::JsonFile { .. } | Error::Overflow { .. } => {
                None
            }
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
