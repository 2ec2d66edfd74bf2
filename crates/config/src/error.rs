//! The error type of deepblocks-config.

use std::path::{Path, PathBuf};

/// Everything that can go wrong reading a `config.json`. Each variant names the key at fault (a
/// top-level key, or `rope_scaling.factor` for a nested one) and carries the offending value;
/// [`Error::InFile`] adds the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The text is not JSON (the message carries line and column).
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// The top level, or a nested value that must be an object (`rope_scaling`), is not one.
    #[error("`{key}` must be a JSON object, found {found}")]
    NotAnObject {
        /// `(top level)` or the key of the nested object.
        key: String,
        /// The JSON text found instead.
        found: String,
    },

    /// A key the description needs is absent (or `null` where a value is required).
    #[error("`{key}` is missing")]
    MissingKey {
        /// The key.
        key: String,
    },

    /// A key holds a value of the wrong JSON type (a string where a count is expected, a float
    /// where an integer is, a negative count ...).
    #[error("`{key}` must be {expected}, found {found}")]
    WrongType {
        /// The key.
        key: String,
        /// What it must hold.
        expected: &'static str,
        /// The JSON text found.
        found: String,
    },

    /// A value is out of range or inconsistent with another key (a zero size, `n_group` not
    /// dividing `n_routed_experts`, `rope_scaling` and `rope_parameters` that disagree ...).
    #[error("`{key}` = {value}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// Its value as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A key we know, holding a value deepblocks does not implement (`attention_bias: true`,
    /// `hidden_act: "gelu"`, a top-k method of another family ...).
    #[error("`{key}` = {value} is not supported: {reason}")]
    Unsupported {
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// Why, and what is.
        reason: String,
    },

    /// `model_type` names an architecture deepblocks does not have.
    #[error("model_type {model_type:?} is not supported; supported: {supported}")]
    UnknownModelType {
        /// The `model_type` as written.
        model_type: String,
        /// The supported ones, comma-separated.
        supported: String,
    },

    /// A size derived from the config (a tensor's element count) does not fit in a `usize`.
    #[error("{what} overflows: the config's sizes are too large for this machine")]
    Overflow {
        /// The derived size (e.g. `kv_b_proj [n·(d+v), c]`).
        what: String,
    },

    /// Any of the above, in a file.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        #[source]
        source: Box<Error>,
    },
}

/// `Result` with this crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The key this error names, when it names one (looking through [`Error::InFile`]).
    ///
    /// ```
    /// let err = deepblocks_config::Architecture::from_json_str("{\"model_type\": 3}").unwrap_err();
    /// assert_eq!(err.key(), Some("model_type"));
    /// ```
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::NotAnObject { key, .. }
            | Error::MissingKey { key }
            | Error::WrongType { key, .. }
            | Error::Invalid { key, .. }
            | Error::Unsupported { key, .. } => Some(key),
            Error::UnknownModelType { .. } => Some("model_type"),
            Error::InFile { source, .. } => source.key(),
            Error::Io { .. } | Error::Json(_) | Error::Overflow { .. } => None,
        }
    }

    /// The error without its file ([`Error::InFile`] unwrapped), for matching on the failure.
    pub fn inner(&self) -> &Error {
        match self {
            Error::InFile { source, .. } => source.inner(),
            other => other,
        }
    }

    /// This error, located in `path` (errors that already name a file are left as they are).
    pub(crate) fn in_file(self, path: &Path) -> Error {
        match self {
            Error::Io { .. } | Error::InFile { .. } => self,
            other => Error::InFile {
                path: path.to_path_buf(),
                source: Box::new(other),
            },
        }
    }

    pub(crate) fn invalid(key: &str, value: impl ToString, reason: impl Into<String>) -> Error {
        Error::Invalid {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(key: &str, value: impl ToString, reason: impl Into<String>) -> Error {
        Error::Unsupported {
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
