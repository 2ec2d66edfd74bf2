//! A strict reader over one JSON object: typed getters that name the field at fault, and a
//! final check that every key was either read or declared as known-but-irrelevant.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Keys any `transformers` config may carry that do not change the architecture: bookkeeping,
/// token ids, training and runtime switches. Model-specific ones are passed to
/// [`Fields::finish`].
pub(crate) const GENERIC_KEYS: &[&str] = &[
    "_name_or_path",
    "add_cross_attention",
    "architectures",
    "auto_map",
    "bos_token_id",
    "chunk_size_feed_forward",
    "cross_attention_hidden_size",
    "decoder_start_token_id",
    "dtype",
    "eos_token_id",
    "finetuning_task",
    "id2label",
    "initializer_range",
    "is_decoder",
    "is_encoder_decoder",
    "label2id",
    "output_attentions",
    "output_hidden_states",
    "pad_token_id",
    "prefix",
    "problem_type",
    "pruned_heads",
    "return_dict",
    "sep_token_id",
    "task_specific_params",
    "tie_encoder_decoder",
    "tokenizer_class",
    "torch_dtype",
    "torchscript",
    "transformers_version",
    "use_bfloat16",
    "use_cache",
];

pub(crate) struct Fields<'a> {
    /// `""` at the top level, `"rope_scaling."` inside a nested object.
    prefix: String,
    model_type: String,
    map: &'a Map<String, Value>,
    seen: BTreeSet<&'a str>,
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

impl<'a> Fields<'a> {
    pub(crate) fn new(value: &'a Value, prefix: &str, model_type: &str) -> Result<Fields<'a>> {
        let map = value.as_object().ok_or_else(|| Error::NotAnObject {
            field: if prefix.is_empty() {
                "(top level)".to_string()
            } else {
                prefix.trim_end_matches('.').to_string()
            },
            found: short(value),
        })?;
        Ok(Fields {
            prefix: prefix.to_string(),
            model_type: model_type.to_string(),
            map,
            seen: BTreeSet::new(),
        })
    }

    /// The full name of a key, with the prefix of its nested object.
    pub(crate) fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value of a key, absent and `null` both giving `None`; marks the key as read.
    pub(crate) fn raw(&mut self, key: &'a str) -> Option<&'a Value> {
        self.seen.insert(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether the key is present (even as `null`).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn wrong(&self, key: &str, expected: &'static str, v: &Value) -> Error {
        Error::WrongType {
            field: self.name(key),
            expected,
            found: short(v),
        }
    }

    fn missing(&self, key: &str) -> Error {
        Error::MissingField {
            field: self.name(key),
        }
    }

    /// An optional non-negative integer.
    pub(crate) fn opt_u64(&mut self, key: &'a str) -> Result<Option<u64>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer", v)),
        }
    }

    /// An optional size: an integer of at least 1 (`null` and absent give `None`).
    pub(crate) fn opt_size(&mut self, key: &'a str) -> Result<Option<u64>> {
        match self.opt_u64(key)? {
            Some(0) => Err(Error::invalid(&self.name(key), 0, "must be at least 1")),
            other => Ok(other),
        }
    }

    /// A required size (an integer of at least 1).
    pub(crate) fn size(&mut self, key: &'a str) -> Result<u64> {
        self.opt_size(key)?.ok_or_else(|| self.missing(key))
    }

    /// A size with a default when absent.
    pub(crate) fn size_or(&mut self, key: &'a str, default: u64) -> Result<u64> {
        Ok(self.opt_size(key)?.unwrap_or(default))
    }

    /// A non-negative integer with a default when absent.
    pub(crate) fn u64_or(&mut self, key: &'a str, default: u64) -> Result<u64> {
        Ok(self.opt_u64(key)?.unwrap_or(default))
    }

    /// An optional number.
    pub(crate) fn opt_f64(&mut self, key: &'a str) -> Result<Option<f64>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a number", v)),
        }
    }

    /// A required positive, finite number.
    pub(crate) fn positive_f64(&mut self, key: &'a str) -> Result<f64> {
        let x = self.opt_f64(key)?.ok_or_else(|| self.missing(key))?;
        if x > 0.0 && x.is_finite() {
            Ok(x)
        } else {
            Err(Error::invalid(&self.name(key), x, "must be positive"))
        }
    }

    /// A boolean with a default when absent.
    pub(crate) fn bool_or(&mut self, key: &'a str, default: bool) -> Result<bool> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.wrong(key, "true or false", v)),
        }
    }

    /// An optional string.
    pub(crate) fn opt_str(&mut self, key: &'a str) -> Result<Option<&'a str>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a string", v)),
        }
    }

    /// Marks keys as known without reading them (they do not change the count).
    pub(crate) fn ignore(&mut self, keys: &[&'a str]) {
        self.seen.extend(keys.iter().copied());
    }

    /// Fails on the first key (in sorted order) that was neither read nor ignored.
    pub(crate) fn finish(self) -> Result<()> {
        match self.map.keys().find(|k| !self.seen.contains(k.as_str())) {
            None => Ok(()),
            Some(k) => Err(Error::UnknownField {
                field: self.name(k),
                model_type: self.model_type.clone(),
            }),
        }
    }
}
