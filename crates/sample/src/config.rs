//! [`SamplingConfig`]: the knobs of the logits pipeline, each with a neutral value that turns it off.

use crate::{Error, Result};

/// The parameters of the logits pipeline. Every field has a neutral value (the [`Default`]) that
/// turns its step off, as in Hugging Face's `GenerationConfig` and the OpenAI API:
///
/// | field | neutral | allowed |
/// |---|---|---|
/// | `repetition_penalty` | 1 | finite, > 0 |
/// | `frequency_penalty` | 0 | finite |
/// | `presence_penalty` | 0 | finite |
/// | `temperature` | 1 | finite, ≥ 0 (0 = greedy) |
/// | `top_k` | 0 (off) | any |
/// | `top_p` | 1 | (0, 1] |
/// | `min_p` | 0 | [0, 1] |
///
/// ```
/// use deepblocks_sample::SamplingConfig;
/// let c = SamplingConfig { temperature: 0.7, top_p: 0.9, ..SamplingConfig::default() };
/// assert!(c.validate().is_ok());
/// let bad = SamplingConfig { top_p: 1.5, ..c };
/// assert!(bad.validate().unwrap_err().to_string().contains("top_p = 1.5"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingConfig {
    /// CTRL's repetition penalty θ (Keskar et al. 2019, §4.1): a logit `z` of a token seen in the
    /// history becomes `z / θ` if `z > 0`, else `z · θ`. θ > 1 discourages repeats.
    pub repetition_penalty: f32,
    /// OpenAI's frequency penalty α_f: `z −= α_f · count(token in history)`.
    pub frequency_penalty: f32,
    /// OpenAI's presence penalty α_p: `z −= α_p` once for every token seen in the history.
    pub presence_penalty: f32,
    /// The temperature T: `z ← z / T`. `0` means greedy decoding (the argmax, ties to the lowest
    /// id); the truncation steps are then skipped.
    pub temperature: f32,
    /// Keep only the `top_k` highest-scoring tokens (Fan et al. 2018). `0` keeps all.
    pub top_k: usize,
    /// Nucleus sampling (Holtzman et al. 2020, §3.1): keep the smallest set of highest-probability
    /// tokens whose probability mass reaches `top_p`. `1` keeps all.
    pub top_p: f32,
    /// Min-p sampling (Nguyen et al. 2024): keep the tokens whose probability is at least
    /// `min_p` times the highest probability. `0` keeps all.
    pub min_p: f32,
}

impl Default for SamplingConfig {
    /// Every step neutral: plain sampling from `softmax(logits)`.
    fn default() -> Self {
        SamplingConfig {
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding: temperature 0, no penalties.
    pub fn greedy() -> Self {
        SamplingConfig {
            temperature: 0.0,
            ..SamplingConfig::default()
        }
    }

    /// Whether this configuration decodes greedily (`temperature == 0`).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks every field against the table above.
    ///
    /// # Errors
    /// [`Error::Parameter`] naming the first field out of range and its value.
    pub fn validate(&self) -> Result<()> {
        check(
            "repetition_penalty",
            self.repetition_penalty,
            self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0,
            "a finite number > 0 (1 turns it off)",
        )?;
        check(
            "frequency_penalty",
            self.frequency_penalty,
            self.frequency_penalty.is_finite(),
            "a finite number (0 turns it off)",
        )?;
        check(
            "presence_penalty",
            self.presence_penalty,
            self.presence_penalty.is_finite(),
            "a finite number (0 turns it off)",
        )?;
        check(
            "temperature",
            self.temperature,
            self.temperature.is_finite() && self.temperature >= 0.0,
            "a finite number >= 0 (0 means greedy)",
        )?;
        check(
            "top_p",
            self.top_p,
            self.top_p > 0.0 && self.top_p <= 1.0,
            "a number in (0, 1] (1 turns it off)",
        )?;
        check(
            "min_p",
            self.min_p,
            (0.0..=1.0).contains(&self.min_p),
            "a number in [0, 1] (0 turns it off)",
        )?;
        Ok(())
    }

    pub(crate) fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.frequency_penalty != 0.0
            || self.presence_penalty != 0.0
    }
}

fn check(name: &'static str, value: f32, ok: bool, expected: &'static str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Parameter {
            name,
            value: value as f64,
            expected,
        })
    }
}
