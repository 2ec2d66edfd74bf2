//! [`TokenizerConfig`]: what `tokenizer_config.json` adds to `tokenizer.json`.

use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

/// The parts of a Hugging Face `tokenizer_config.json` that matter here: which tokens are
/// bos/eos/pad/unk, whether bos/eos are added when encoding with special tokens, and the chat
/// template (kept verbatim; see [`crate::deepseek_v2_chat`] for the format implemented natively).
///
/// Token fields accept both forms the file uses: a string, or an `AddedToken` object with a
/// `content` field (`{"__type": "AddedToken", "content": "<｜begin▁of▁sentence｜>", ...}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenizerConfig {
    /// Beginning-of-sequence token.
    pub bos_token: Option<String>,
    /// End-of-sequence token.
    pub eos_token: Option<String>,
    /// Padding token.
    pub pad_token: Option<String>,
    /// Unknown token.
    pub unk_token: Option<String>,
    /// Whether encoding with special tokens prepends bos (`add_bos_token`).
    pub add_bos_token: Option<bool>,
    /// Whether encoding with special tokens appends eos (`add_eos_token`).
    pub add_eos_token: Option<bool>,
    /// The Jinja chat template, verbatim.
    pub chat_template: Option<String>,
}

impl TokenizerConfig {
    /// Reads a `tokenizer_config.json`.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read, [`Error::Config`] when it is not a valid config.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a `tokenizer_config.json`.
    ///
    /// ```
    /// use deepblocks_tokenize::TokenizerConfig;
    /// let c = TokenizerConfig::from_json(r#"{"bos_token": {"content": "<s>"}, "eos_token": "</s>"}"#)?;
    /// assert_eq!(c.bos_token.as_deref(), Some("<s>"));
    /// assert_eq!(c.eos_token.as_deref(), Some("</s>"));
    /// # Ok::<(), deepblocks_tokenize::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] when it is not a JSON object or a field has the wrong type.
    pub fn from_json(text: &str) -> Result<Self> {
        Self::parse(text, "tokenizer config JSON")
    }

    fn parse(text: &str, what: &str) -> Result<Self> {
        let bad = |reason: String| Error::Config {
            what: what.to_string(),
            reason,
        };
        let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let obj = value
            .as_object()
            .ok_or_else(|| bad("the top level is not a JSON object".into()))?;
        let token = |key: &str| -> Result<Option<String>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    _ => Err(bad(format!(
                        "{key} is an object without a string \"content\""
                    ))),
                },
                Some(other) => Err(bad(format!("{key} is {other}, not a token"))),
            }
        };
        let flag = |key: &str| -> Result<Option<bool>> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(bad(format!("{key} is {other}, not true or false"))),
            }
        };
        let chat_template = match obj.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            // Some configs hold named templates: [{"name": "default", "template": "..."}, ...].
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_string),
            Some(other) => return Err(bad(format!("chat_template is {other}, not a string"))),
        };
        Ok(TokenizerConfig {
            bos_token: token("bos_token")?,
            eos_token: token("eos_token")?,
            pad_token: token("pad_token")?,
            unk_token: token("unk_token")?,
            add_bos_token: flag("add_bos_token")?,
            add_eos_token: flag("add_eos_token")?,
            chat_template,
        })
    }
}
