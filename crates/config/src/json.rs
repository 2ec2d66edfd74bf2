//! A reader over one JSON object: typed getters whose errors name the key, and a record of every
//! key read, so that what is left at the end can be reported as unknown. The only JSON field
//! helpers of the workspace.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::{Error, Result};

/// Keys any transformers config may carry that do not change the architecture: bookkeeping,
/// training and runtime switches, ids of tokens the model does not need.
pub(crate) const GENERIC_KEYS: &[&str] = &[
    "_name_or_path",
    "add_cross_attention",
    "architectures",
    "auto_map",
    "chunk_size_feed_forward",
    "cross_attention_hidden_size",
    "decoder_start_token_id",
    "dtype",
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

/// A JSON value shortened for an error message.
pub(crate) fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

pub(crate) struct Fields<'a> {
    /// `""` at the top level, `"rope_scaling."` inside a nested object.
    prefix: String,
    map: &'a Map<String, Value>,
    seen: BTreeSet<&'a str>,
    /// Unknown keys of nested objects read through this one.
    nested_unknown: Vec<String>,
}

impl<'a> Fields<'a> {
    /// The object `value`, whose keys are named `{prefix}{key}` in errors.
    pub(crate) fn new(value: &'a Value, prefix: &str) -> Result<Fields<'a>> {
        let map = value.as_object().ok_or_else(|| Error::NotAnObject {
            key: if prefix.is_empty() {
                "(top level)".to_string()
            } else {
                prefix.trim_end_matches('.').to_string()
            },
            found: short(value),
        })?;
        Ok(Fields {
            prefix: prefix.to_string(),
            map,
            seen: BTreeSet::new(),
            nested_unknown: Vec::new(),
        })
    }

    /// The full name of `key` for messages (`rope_scaling.factor`).
    pub(crate) fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value of `key`, marking it read; `null` counts as absent.
    pub(crate) fn raw(&mut self, key: &'a str) -> Option<&'a Value> {
        self.seen.insert(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Whether `key` is written at all (even as `null`), without marking it read.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn wrong(&self, key: &str, expected: &'static str, v: &Value) -> Error {
        Error::WrongType {
            key: self.name(key),
            expected,
            found: short(v),
        }
    }

    pub(crate) fn missing(&self, key: &str) -> Error {
        Error::MissingKey {
            key: self.name(key),
        }
    }

    /// An optional non-negative integer that fits in a `usize`.
    pub(crate) fn opt_usize(&mut self, key: &'a str) -> Result<Option<usize>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|u| usize::try_from(u).ok())
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a non-negative integer", v)),
        }
    }

    /// An optional size: an integer of at least 1 (`null` and absent give `None`).
    pub(crate) fn opt_size(&mut self, key: &'a str) -> Result<Option<usize>> {
        match self.opt_usize(key)? {
            Some(0) => Err(Error::invalid(&self.name(key), 0, "must be at least 1")),
            other => Ok(other),
        }
    }

    /// A required size (an integer of at least 1).
    pub(crate) fn size(&mut self, key: &'a str) -> Result<usize> {
        self.opt_size(key)?.ok_or_else(|| self.missing(key))
    }

    /// A size with a default when absent.
    pub(crate) fn size_or(&mut self, key: &'a str, default: usize) -> Result<usize> {
        Ok(self.opt_size(key)?.unwrap_or(default))
    }

    /// A non-negative integer with a default when absent.
    pub(crate) fn usize_or(&mut self, key: &'a str, default: usize) -> Result<usize> {
        Ok(self.opt_usize(key)?.unwrap_or(default))
    }

    /// An optional token id.
    pub(crate) fn opt_id(&mut self, key: &'a str) -> Result<Option<u32>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => id(v)
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a token id", v)),
        }
    }

    /// One token id or a list of them (`eos_token_id`); absent gives none.
    pub(crate) fn ids(&mut self, key: &'a str) -> Result<Vec<u32>> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| id(v).ok_or_else(|| self.wrong(key, "a list of token ids", v)))
                .collect(),
            Some(v) => Ok(vec![id(v).ok_or_else(|| self.wrong(key, "a token id", v))?]),
        }
    }

    /// An optional finite number.
    pub(crate) fn opt_f64(&mut self, key: &'a str) -> Result<Option<f64>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Some)
                .ok_or_else(|| self.wrong(key, "a finite number", v)),
        }
    }

    /// A finite number with a default when absent.
    pub(crate) fn f64_or(&mut self, key: &'a str, default: f64) -> Result<f64> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
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

    /// Marks keys as known without reading them (they do not change the architecture).
    pub(crate) fn ignore(&mut self, keys: &[&'a str]) {
        self.seen.extend(keys.iter().copied());
    }

    /// Records the unknown keys of a nested object read on the side (`rope_scaling.x`).
    pub(crate) fn adopt_unknown(&mut self, nested: &Fields<'_>) {
        self.nested_unknown.extend(nested.unknown());
    }

    /// The keys that were neither read nor ignored, with their prefix, in sorted order (nested
    /// objects' among them).
    pub(crate) fn unknown(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .map
            .keys()
            .filter(|k| !self.seen.contains(k.as_str()))
            .map(|k| self.name(k))
            .chain(self.nested_unknown.iter().cloned())
            .collect();
        keys.sort();
        keys
    }
}

fn id(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|u| u32::try_from(u).ok())
}
