//! Generation: prompt → tokens → prefill → a decode loop through the sampler, streaming text.

use std::time::Instant;

use deepblocks_embed::Positions;
use deepblocks_sample::{Sampler, SamplingConfig};
use deepblocks_tokenize::{Message, Tokenizer};

use crate::{MlaCache, Model, Result};

/// How to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateOptions {
    /// Stop after this many new tokens.
    pub max_tokens: usize,
    /// Penalties, temperature (0 = greedy), top-k, top-p, min-p.
    pub sampling: SamplingConfig,
    /// The sampler's seed: the same seed, model and prompt give the same tokens.
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            sampling: SamplingConfig::default(),
            seed: 0,
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-sequence token (not included in the output).
    Eos,
    /// `max_tokens` new tokens were produced.
    MaxTokens,
    /// The context reached `max_position_embeddings`.
    ContextFull,
}

/// What a generation produced, with its timings.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The prompt's ids.
    pub prompt: Vec<u32>,
    /// The new ids (without a final end-of-sequence token).
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Seconds spent in the prompt's forward pass (and its first sample).
    pub prefill_seconds: f64,
    /// Seconds spent in the decode steps after it.
    pub decode_seconds: f64,
}

impl Generation {
    /// Prompt tokens per second of prefill.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt.len() as f64 / self.prefill_seconds.max(f64::MIN_POSITIVE)
    }

    /// Decode steps per second (each step: one forward pass of one token and one sample).
    pub fn decode_tokens_per_second(&self) -> f64 {
        let steps = self.tokens.len().saturating_sub(1) + usize::from(self.stop == StopReason::Eos);
        steps as f64 / self.decode_seconds.max(f64::MIN_POSITIVE)
    }
}

impl Model {
    /// Generates from `prompt` ids: one prefill, then one decode step per new token, sampling
    /// each from the last position's logits with penalties over prompt + output. `on_token` sees
    /// every new id as it is chosen (an `Err` from it stops generation and is returned).
    ///
    /// Stops at an end-of-sequence id (`eos_token_id` of the config, or any of `extra_eos`),
    /// after `max_tokens` new tokens, or when the context is full.
    ///
    /// # Errors
    /// The model's errors (an empty prompt, a prompt longer than the context, an id out of
    /// range), the sampler's (invalid options, NaN logits), or `on_token`'s.
    pub fn generate(
        &self,
        prompt: &[u32],
        options: &GenerateOptions,
        extra_eos: &[u32],
        mut on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<Generation> {
        let mut sampler = Sampler::new(options.sampling, options.seed)?;
        let max_context = self.config().max_position_embeddings;
        // Room for the prompt and a first stretch of tokens; the cache grows as generation goes
        // (never reserving a context `max_tokens` may not reach).
        let wanted = prompt.len().saturating_add(options.max_tokens.min(256));
        let mut cache = self.new_cache(wanted.min(max_context))?;
        let started = Instant::now();
        let logits = self.forward(prompt, &mut cache, Positions::Last)?;
        let (tokens, stop, prefill_seconds) = self.decode(
            &mut cache,
            logits,
            prompt.to_vec(),
            options,
            &mut sampler,
            extra_eos,
            started,
            &mut on_token,
        )?;
        let total = started.elapsed().as_secs_f64();
        Ok(Generation {
            prompt: prompt.to_vec(),
            tokens,
            stop,
            prefill_seconds,
            decode_seconds: total - prefill_seconds,
        })
    }

    /// The decode loop after a prefill whose last logits are `logits`: samples (penalties over
    /// `history`), stops at an eos id, `max_tokens` or a full context, and forwards each kept
    /// token through `cache`. Returns the new tokens, why it stopped and the seconds from
    /// `started` to the first sample.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decode(
        &self,
        cache: &mut MlaCache,
        mut logits: Vec<f32>,
        mut history: Vec<u32>,
        options: &GenerateOptions,
        sampler: &mut Sampler,
        extra_eos: &[u32],
        started: Instant,
        on_token: &mut impl FnMut(u32) -> Result<()>,
    ) -> Result<(Vec<u32>, StopReason, f64)> {
        let max_context = self.config().max_position_embeddings;
        let is_eos = |id: u32| self.config().eos_token_ids.contains(&id) || extra_eos.contains(&id);
        let mut tokens = Vec::new();
        let mut prefill_seconds = None;
        let stop = loop {
            if tokens.len() >= options.max_tokens {
                break StopReason::MaxTokens;
            }
            let id = sampler.sample(&logits, &history)?.token;
            if prefill_seconds.is_none() {
                prefill_seconds = Some(started.elapsed().as_secs_f64());
            }
            if is_eos(id) {
                break StopReason::Eos;
            }
            tokens.push(id);
            history.push(id);
            on_token(id)?;
            if tokens.len() >= options.max_tokens {
                break StopReason::MaxTokens;
            }
            if cache.len() >= max_context {
                break StopReason::ContextFull;
            }
            logits = self.forward(&[id], cache, Positions::Last)?;
        };
        let prefill_seconds = prefill_seconds.unwrap_or_else(|| started.elapsed().as_secs_f64());
        Ok((tokens, stop, prefill_seconds))
    }

    /// Generates from text: encodes `prompt` (as a user turn of the tokenizer's own chat
    /// template when `chat` — [`Tokenizer::chat_prompt`] — otherwise as plain text with the
    /// tokenizer's special tokens), generates, and streams the
    /// new text to `on_text` in pieces that are always complete UTF-8.
    ///
    /// # Errors
    /// As [`Model::generate`]; the tokenizer's errors.
    pub fn generate_text(
        &self,
        tokenizer: &Tokenizer,
        prompt: &str,
        chat: bool,
        options: &GenerateOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<Generation> {
        let ids = if chat {
            tokenizer.encode_chat(&[Message::user(prompt)], true)?
        } else {
            tokenizer.encode(prompt, true)?
        };
        let extra_eos: Vec<u32> = tokenizer.eos_id().into_iter().collect();
        let mut stream = tokenizer.stream(true);
        let generation = self.generate(&ids, options, &extra_eos, |id| {
            if let Some(text) = stream.push(id)? {
                on_text(&text);
            }
            Ok(())
        })?;
        let rest = stream.finish()?;
        if !rest.is_empty() {
            on_text(&rest);
        }
        Ok(generation)
    }
}
