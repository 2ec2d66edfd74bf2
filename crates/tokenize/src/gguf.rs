//! A tokenizer from the vocabulary llama.cpp's converter writes into a GGUF file
//! (`tokenizer.ggml.*`): the BPE model of `tokens` and `merges`, the special tokens of
//! `token_type`, and the pre-tokenizer chain the `pre` name stands for. The caller reads the
//! values out of the file (this crate does not parse GGUF).

use serde_json::{Value, json};

use crate::{Error, Result, Tokenizer, TokenizerConfig};

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// The `tokenizer.ggml.*` values of a GGUF file.
#[derive(Debug, Clone, Default)]
pub struct GgufVocab<'a> {
    /// `tokenizer.ggml.model` (`gpt2` for byte-level BPE).
    pub model: &'a str,
    /// `tokenizer.ggml.pre`: the pre-tokenizer's name.
    pub pre: &'a str,
    /// `tokenizer.ggml.tokens`, by id.
    pub tokens: &'a [String],
    /// `tokenizer.ggml.token_type`, by id (1 normal, 3 control, 4 user-defined, ...).
    pub token_types: &'a [i32],
    /// `tokenizer.ggml.merges` (`"a b"`), by rank.
    pub merges: &'a [String],
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<&'a str>,
}

/// The `tokenizer.ggml.pre` names mapped to a pre-tokenizer chain so far: `gpt-2` (GPT-2's
/// byte-level split) and `deepseek-llm` (DeepSeek LLM's and DeepSeek-V2's chain, llama.cpp's
/// `LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM`: five `Split` regexes, `Digits`, `ByteLevel` without its
/// regex — `pre_deepseek_llm.json`, as their `tokenizer.json` writes it) and `deepseek-v3`
/// (DeepSeek-V3's and R1's, `LLAMA_VOCAB_PRE_TYPE_DEEPSEEK3_LLM`: digits in threes, CJK runs,
/// one combined word/punctuation/space regex, `ByteLevel` without its regex —
/// `pre_deepseek_v3.json`, from DeepSeek-V3's `tokenizer.json`).
pub const GGUF_PRE_TOKENIZERS: &[&str] = &["gpt-2", "deepseek-llm", "deepseek-v3"];

/// A tokenizer's vocabulary as a GGUF file holds it, owned: what [`Tokenizer::to_gguf_vocab`]
/// gives and [`GgufVocabData::as_vocab`] lends to [`Tokenizer::from_gguf_vocab`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufVocabData {
    /// `tokenizer.ggml.model`.
    pub model: String,
    /// `tokenizer.ggml.pre`.
    pub pre: String,
    /// `tokenizer.ggml.tokens`, by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`, by id.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`, by rank.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

impl GgufVocabData {
    /// The borrowed form.
    pub fn as_vocab(&self) -> GgufVocab<'_> {
        GgufVocab {
            model: &self.model,
            pre: &self.pre,
            tokens: &self.tokens,
            token_types: &self.token_types,
            merges: &self.merges,
            bos_id: self.bos_id,
            eos_id: self.eos_id,
            chat_template: self.chat_template.as_deref(),
        }
    }
}

/// The `tokenizer.ggml.pre` name of a pre-tokenizer chain (as `tokenizer.json` writes it), for
/// the chains [`GGUF_PRE_TOKENIZERS`] maps.
fn pre_name(chain: &Value) -> Option<&'static str> {
    let parse = |s: &str| serde_json::from_str::<Value>(s).ok();
    let gpt2 = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    if *chain == gpt2 {
        Some("gpt-2")
    } else if parse(PRE_DEEPSEEK_LLM).as_ref() == Some(chain) {
        Some("deepseek-llm")
    } else if parse(PRE_DEEPSEEK_V3).as_ref() == Some(chain) {
        Some("deepseek-v3")
    } else {
        None
    }
}

/// DeepSeek-V3's pre-tokenizer chain, as `tokenizer.json` writes it.
const PRE_DEEPSEEK_V3: &str = include_str!("pre_deepseek_v3.json");

/// DeepSeek LLM's pre-tokenizer chain, as `tokenizer.json` writes it.
const PRE_DEEPSEEK_LLM: &str = include_str!("pre_deepseek_llm.json");

impl Tokenizer {
    /// The vocabulary as a GGUF file holds it (what llama.cpp's converter writes for a byte-level
    /// BPE tokenizer): tokens by id, added special tokens as control (3), other added tokens as
    /// user-defined (4), the rest normal (1); merges as `"a b"`; the pre-tokenizer by its
    /// llama.cpp name; bos, eos and the chat template from the tokenizer's config.
    /// [`Tokenizer::from_gguf_vocab`] of it encodes as this tokenizer does.
    ///
    /// # Errors
    /// [`Error::Config`] naming what GGUF cannot hold: a model other than BPE, a normalizer, a
    /// pre-tokenizer chain not in [`GGUF_PRE_TOKENIZERS`], ids with gaps.
    pub fn to_gguf_vocab(&self) -> Result<GgufVocabData> {
        let bad = |what: &str, reason: String| Error::Config {
            what: format!("tokenizer.json {what}"),
            reason: format!("{reason}: a GGUF vocabulary cannot hold it"),
        };
        let spec: Value = serde_json::from_str(
            &self
                .inner()
                .to_string(false)
                .map_err(|e| bad("", e.to_string()))?,
        )
        .map_err(|e| bad("", e.to_string()))?;
        let model = &spec["model"];
        if model["type"] != "BPE" {
            return Err(bad("model.type", format!("{}", model["type"])));
        }
        if !spec["normalizer"].is_null() {
            return Err(bad("normalizer", format!("{}", spec["normalizer"])));
        }
        let pre = pre_name(&spec["pre_tokenizer"])
            .ok_or_else(|| bad("pre_tokenizer", format!("{}", spec["pre_tokenizer"])))?;
        let vocab = model["vocab"].as_object();
        let added_tokens = spec["added_tokens"].as_array();
        // Ids without gaps are below the number of entries: a larger id is refused before it
        // sizes anything.
        let entries = vocab.map_or(0, |v| v.len()) + added_tokens.map_or(0, |a| a.len());
        let mut by_id: Vec<Option<(String, i32)>> = vec![None; entries];
        let mut put = |what: &str, id: u64, token: &str, kind: i32| -> Result<()> {
            let slot = usize::try_from(id)
                .ok()
                .and_then(|i| by_id.get_mut(i))
                .ok_or_else(|| {
                    bad(
                        what,
                        format!("{token:?} has id {id}, past the {entries} entries: ids with gaps"),
                    )
                })?;
            *slot = Some((token.to_string(), kind));
            Ok(())
        };
        for (token, id) in vocab.into_iter().flatten() {
            let id = id
                .as_u64()
                .ok_or_else(|| bad("model.vocab", format!("{token:?}: {id}")))?;
            put("model.vocab", id, token, NORMAL)?;
        }
        for added in added_tokens.into_iter().flatten() {
            let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str())
            else {
                return Err(bad("added_tokens", format!("{added}")));
            };
            let kind = if added["special"] == true {
                CONTROL
            } else {
                USER_DEFINED
            };
            put("added_tokens", id, content, kind)?;
        }
        // Added tokens that are also in the vocabulary count once: trailing slots stay empty.
        while by_id.last().is_some_and(Option::is_none) {
            by_id.pop();
        }
        let mut tokens = Vec::with_capacity(by_id.len());
        let mut token_types = Vec::with_capacity(by_id.len());
        for (id, entry) in by_id.into_iter().enumerate() {
            let (token, kind) =
                entry.ok_or_else(|| bad("model.vocab", format!("no token has id {id}")))?;
            tokens.push(token);
            token_types.push(kind);
        }
        let merges = model["merges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| match m {
                Value::String(s) => Ok(s.clone()),
                Value::Array(pair) => match (
                    pair.first().and_then(Value::as_str),
                    pair.get(1).and_then(Value::as_str),
                ) {
                    (Some(a), Some(b)) if pair.len() == 2 => Ok(format!("{a} {b}")),
                    _ => Err(bad("model.merges", format!("{m}"))),
                },
                _ => Err(bad("model.merges", format!("{m}"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let id = |token: &Option<String>| token.as_deref().and_then(|t| self.token_to_id(t));
        Ok(GgufVocabData {
            model: "gpt2".into(),
            pre: pre.into(),
            tokens,
            token_types,
            merges,
            bos_id: id(&self.config().bos_token),
            eos_id: id(&self.config().eos_token),
            chat_template: self.chat_template().map(str::to_string),
        })
    }

    /// The tokenizer a GGUF file's vocabulary describes.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key: a model other than byte-level BPE (`gpt2`), a `pre`
    /// name not mapped yet ([`GGUF_PRE_TOKENIZERS`]), token types that do not match the tokens,
    /// a bos/eos id outside the vocabulary; [`Error::Malformed`] when `tokenizers` refuses it.
    pub fn from_gguf_vocab(v: &GgufVocab<'_>) -> Result<Self> {
        let bad = |key: &str, reason: String| Error::Config {
            what: format!("GGUF tokenizer.ggml.{key}"),
            reason,
        };
        if v.model != "gpt2" {
            return Err(bad(
                "model",
                format!("{:?}: only byte-level BPE (\"gpt2\") is read", v.model),
            ));
        }
        let pre_tokenizer = match v.pre {
            "gpt-2" => {
                json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
            }
            "deepseek-llm" => serde_json::from_str(PRE_DEEPSEEK_LLM)
                .map_err(|e| bad("pre", format!("the deepseek-llm chain: {e}")))?,
            "deepseek-v3" => serde_json::from_str(PRE_DEEPSEEK_V3)
                .map_err(|e| bad("pre", format!("the deepseek-v3 chain: {e}")))?,
            other => {
                return Err(bad(
                    "pre",
                    format!(
                        "{other:?}: the pre-tokenizers mapped so far are {}",
                        GGUF_PRE_TOKENIZERS.join(", ")
                    ),
                ));
            }
        };
        if !v.token_types.is_empty() && v.token_types.len() != v.tokens.len() {
            return Err(bad(
                "token_type",
                format!(
                    "{} types for {} tokens",
                    v.token_types.len(),
                    v.tokens.len()
                ),
            ));
        }
        let vocab: serde_json::Map<String, Value> = v
            .tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.clone(), json!(id)))
            .collect();
        let added: Vec<Value> = v
            .token_types
            .iter()
            .enumerate()
            .filter(|&(_, &t)| t == CONTROL || t == USER_DEFINED)
            .map(|(id, &t)| {
                json!({
                    "id": id, "content": v.tokens[id], "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": t == USER_DEFINED, "special": t == CONTROL,
                })
            })
            .collect();
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": false, "vocab": vocab, "merges": v.merges,
            },
        });
        let token = |key: &str, id: Option<u32>| -> Result<Option<String>> {
            id.map(|id| {
                v.tokens.get(id as usize).cloned().ok_or_else(|| {
                    bad(
                        key,
                        format!("{id} is outside the {} tokens", v.tokens.len()),
                    )
                })
            })
            .transpose()
        };
        let config = TokenizerConfig {
            bos_token: token("bos_token_id", v.bos_id)?,
            eos_token: token("eos_token_id", v.eos_id)?,
            chat_template: v.chat_template.map(str::to_string),
            ..TokenizerConfig::default()
        };
        Ok(Tokenizer::from_json_bytes(spec.to_string().as_bytes())?.with_config(config))
    }
}
