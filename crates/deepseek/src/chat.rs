//! A conversation with a model: the tokenizer's own chat template renders every turn, and the
//! latent cache is kept across turns, so a new turn prefills only the tokens the cache does not
//! already hold — the longest common prefix of the new prompt and the cached tokens is reused
//! (a template may rewrite earlier turns, as R1's strips `<think>`; a reply re-tokenized may
//! split differently from the tokens generated; either way only the tail past the common
//! prefix is recomputed). Plus `generation_config.json`'s sampling defaults and eos ids.

use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

use deepblocks_embed::Positions;
use deepblocks_sample::{Sampler, SamplingConfig};
use deepblocks_tokenize::{Message, Tokenizer};
use serde_json::Value;

use crate::generate::{GenerateOptions, StopReason};
use crate::{Error, MlaCache, Model, Result};

/// The file a Hugging Face folder keeps its generation defaults in.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// What `generation_config.json` says about sampling and stopping.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerationDefaults {
    /// `temperature` (absent: `None`); `do_sample: false` reads as 0 (greedy).
    pub temperature: Option<f32>,
    /// `top_p`.
    pub top_p: Option<f32>,
    /// `top_k`.
    pub top_k: Option<usize>,
    /// `eos_token_id`: one id or a list.
    pub eos_token_ids: Vec<u32>,
}

impl GenerationDefaults {
    /// Reads `generation_config.json` from a model folder; a folder without one has no defaults.
    ///
    /// # Errors
    /// [`Error::GenerationConfig`] naming the file and the key when it is not valid.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(GENERATION_CONFIG_FILE);
        if !path.is_file() {
            return Ok(GenerationDefaults::default());
        }
        let bad = |reason: String| Error::GenerationConfig {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let number = |key: &str| -> Result<Option<f64>> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| bad(format!("{key} is {x}, not a number"))),
            }
        };
        let id = |x: &Value| {
            x.as_u64()
                .and_then(|u| u32::try_from(u).ok())
                .ok_or_else(|| bad(format!("eos_token_id holds {x}, not a token id")))
        };
        let eos_token_ids = match v.get("eos_token_id") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list.iter().map(id).collect::<Result<_>>()?,
            Some(x) => vec![id(x)?],
        };
        let greedy = v.get("do_sample") == Some(&Value::Bool(false));
        Ok(GenerationDefaults {
            temperature: if greedy {
                Some(0.0)
            } else {
                number("temperature")?.map(|t| t as f32)
            },
            top_p: number("top_p")?.map(|p| p as f32),
            top_k: match number("top_k")? {
                Some(k) if k >= 0.0 && k.fract() == 0.0 => Some(k as usize),
                Some(k) => return Err(bad(format!("top_k is {k}, not a count"))),
                None => None,
            },
            eos_token_ids,
        })
    }

    /// `sampling` with these defaults where they are set.
    pub fn apply(&self, mut sampling: SamplingConfig) -> SamplingConfig {
        if let Some(t) = self.temperature {
            sampling.temperature = t;
        }
        if let Some(p) = self.top_p {
            sampling.top_p = p;
        }
        if let Some(k) = self.top_k {
            sampling.top_k = k;
        }
        sampling
    }
}

/// One turn's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// The reply's text.
    pub reply: String,
    /// Tokens of the whole rendered prompt this turn.
    pub prompt_tokens: usize,
    /// Of them, the ones the cache already held (not recomputed).
    pub reused_tokens: usize,
    /// The reply's tokens.
    pub reply_tokens: usize,
    /// Why the reply ended.
    pub stop: StopReason,
}

/// A conversation that keeps the latent cache across turns (see the module documentation).
pub struct ChatSession<'a> {
    model: &'a Model,
    tokenizer: &'a Tokenizer,
    options: GenerateOptions,
    extra_eos: Vec<u32>,
    messages: Vec<Message>,
    cache: MlaCache,
    cached: Vec<u32>, // the ids the cache holds, in order
    turns: u64,
}

impl<'a> ChatSession<'a> {
    /// A new conversation, with an optional system message first. Replies stop at the model's
    /// eos ids and `extra_eos` (e.g. [`GenerationDefaults::eos_token_ids`]); each turn samples
    /// with `options.seed` plus the turn's index.
    ///
    /// # Errors
    /// The cache's allocation errors.
    pub fn new(
        model: &'a Model,
        tokenizer: &'a Tokenizer,
        system: Option<&str>,
        options: GenerateOptions,
        extra_eos: &[u32],
    ) -> Result<Self> {
        Ok(ChatSession {
            model,
            tokenizer,
            options,
            extra_eos: extra_eos.to_vec(),
            messages: system.map(Message::system).into_iter().collect(),
            cache: model.new_cache(256.min(model.config().max_position_embeddings))?,
            cached: Vec::new(),
            turns: 0,
        })
    }

    /// The conversation so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Tokens the cache holds.
    pub fn cached_tokens(&self) -> usize {
        self.cached.len()
    }

    /// Sends a user message and generates the reply, streaming its text to `on_text`; the
    /// reply joins the conversation.
    ///
    /// # Errors
    /// The tokenizer's (the template) and the model's errors (a conversation past the
    /// context, ...); on an error the conversation is left as it was.
    pub fn send(&mut self, user: &str, mut on_text: impl FnMut(&str)) -> Result<Turn> {
        let mut messages = self.messages.clone();
        messages.push(Message::user(user));
        let ids = self.tokenizer.encode_chat(&messages, true)?;
        // Reuse the longest common prefix; at least one token is forwarded for the logits.
        let common = self
            .cached
            .iter()
            .zip(&ids)
            .take_while(|(a, b)| a == b)
            .count()
            .min(ids.len().saturating_sub(1));
        self.cache.truncate(common)?;
        self.cached.truncate(common);
        let started = Instant::now();
        let logits = self
            .model
            .forward(&ids[common..], &mut self.cache, Positions::Last);
        let logits = match logits {
            Ok(l) => l,
            Err(e) => {
                // What the failed forward may have appended is not a prefix of anything.
                self.cache.truncate(common)?;
                return Err(e);
            }
        };
        self.cached.extend_from_slice(&ids[common..]);
        let mut sampler = Sampler::new(
            self.options.sampling,
            self.options.seed.wrapping_add(self.turns),
        )?;
        let mut stream = self.tokenizer.stream(true);
        let (tokens, stop, _) = self.model.decode(
            &mut self.cache,
            logits,
            ids.clone(),
            &self.options,
            &mut sampler,
            &self.extra_eos,
            started,
            &mut |id| {
                if let Some(text) = stream.push(id)? {
                    on_text(&text);
                }
                Ok(())
            },
        )?;
        let rest = stream.finish()?;
        if !rest.is_empty() {
            on_text(&rest);
        }
        // The cache holds every reply token but the last (sampled, not yet forwarded).
        let forwarded = self.cache.len() - self.cached.len();
        self.cached.extend_from_slice(&tokens[..forwarded]);
        let reply = self.tokenizer.decode(&tokens, true)?;
        messages.push(Message::assistant(reply.clone()));
        self.messages = messages;
        self.turns += 1;
        Ok(Turn {
            reply,
            prompt_tokens: ids.len(),
            reused_tokens: common,
            reply_tokens: tokens.len(),
            stop,
        })
    }
}

/// Runs a conversation over the lines of `input`: each non-empty line is a user turn, whose
/// reply is streamed to `output` and ended with a newline; the end of `input` ends it. What a
/// chat program does, written against any reader and writer so that it runs headless (piped
/// stdin, tests).
///
/// # Errors
/// [`Error::ChatIo`] when reading or writing fails; as [`ChatSession::send`].
pub fn chat_lines(
    session: &mut ChatSession<'_>,
    input: impl BufRead,
    output: &mut impl Write,
) -> Result<Vec<Turn>> {
    let io = |what| move |source| Error::ChatIo { what, source };
    let mut turns = Vec::new();
    for line in input.lines() {
        let line = line.map_err(io("input"))?;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let mut failed = None;
        let turn = session.send(line, |text| {
            if failed.is_none()
                && let Err(e) = output
                    .write_all(text.as_bytes())
                    .and_then(|()| output.flush())
            {
                failed = Some(e);
            }
        })?;
        if let Some(e) = failed {
            return Err(io("output")(e));
        }
        writeln!(output).map_err(io("output"))?;
        turns.push(turn);
    }
    Ok(turns)
}
