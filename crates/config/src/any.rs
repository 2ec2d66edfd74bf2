//! Any config the workspace reads, dispatched on `model_type`.

use std::path::Path;

use serde_json::Value;

use crate::read::{Parsed, model_type, read_json_file};
use crate::{Architecture, DenseArchitecture, Family, Result};

/// A described architecture of either kind: an MLA-family model deepblocks runs, or a dense
/// Llama-style one the accounting compares against.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyArchitecture {
    /// A `model_type` of the MLA family ([`Family`]).
    Mla(Architecture),
    /// `model_type` `llama`.
    Dense(DenseArchitecture),
}

impl AnyArchitecture {
    /// Reads a `config.json` file of either kind.
    ///
    /// # Errors
    /// As [`Architecture::from_file`] / [`DenseArchitecture::from_file`]; an unknown
    /// `model_type` lists the MLA families and `llama`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Parsed<AnyArchitecture>> {
        let path = path.as_ref();
        AnyArchitecture::from_json(&read_json_file(path)?).map_err(|e| e.in_file(path))
    }

    /// Reads a `config.json` text of either kind.
    ///
    /// # Errors
    /// As [`AnyArchitecture::from_json`].
    pub fn from_json_str(text: &str) -> Result<Parsed<AnyArchitecture>> {
        AnyArchitecture::from_json(&serde_json::from_str(text)?)
    }

    /// Reads a parsed `config.json` of either kind.
    ///
    /// # Errors
    /// As [`Architecture::from_json`] / [`DenseArchitecture::from_json`].
    pub fn from_json(value: &Value) -> Result<Parsed<AnyArchitecture>> {
        if model_type(value)? == "llama" {
            let p = DenseArchitecture::from_json(value)?;
            return Ok(Parsed {
                architecture: AnyArchitecture::Dense(p.architecture),
                unknown_keys: p.unknown_keys,
            });
        }
        match Architecture::from_json(value) {
            Ok(p) => Ok(Parsed {
                architecture: AnyArchitecture::Mla(p.architecture),
                unknown_keys: p.unknown_keys,
            }),
            Err(crate::Error::UnknownModelType { model_type, .. }) => {
                Err(crate::Error::UnknownModelType {
                    model_type,
                    supported: format!("{}, llama (accounting only)", Family::supported()),
                })
            }
            Err(e) => Err(e),
        }
    }
}
