//! The pipeline and the seeded [`Sampler`].

use rand_chacha::ChaCha12Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

use crate::process::{
    apply_penalties, apply_temperature, argmax, draw, log_softmax_at, min_p_mask, softmax_portable,
    top_k_mask, top_p_mask,
};
use crate::{Error, Result, SamplingConfig};

/// One drawn token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The token id.
    pub token: u32,
    /// `ln p(token)` under the distribution it was drawn from: after the penalties, the
    /// temperature and the truncations (top-k, top-p, min-p), renormalised over the kept tokens.
    /// `0` for greedy decoding (the argmax has probability 1).
    pub logprob: f32,
    /// `ln softmax(logits)[token]`: the model's own log-probability of the token, before any
    /// processing (what perplexity and scoring use).
    pub model_logprob: f32,
}

/// What the pipeline left in the scores buffer.
enum Processed {
    /// Greedy decoding picked this id.
    Greedy(usize),
    /// `z` holds the final scores; sample from `softmax(z)`.
    Scores,
}

/// Checks the logits: non-empty, addressable by `u32`, no NaN or +∞, not all −∞.
fn validate_logits(logits: &[f32]) -> Result<()> {
    if logits.is_empty() {
        return Err(Error::EmptyLogits);
    }
    if u32::try_from(logits.len() - 1).is_err() {
        return Err(Error::VocabTooLarge { len: logits.len() });
    }
    if let Some((index, &value)) = logits
        .iter()
        .enumerate()
        .find(|&(_, v)| v.is_nan() || *v == f32::INFINITY)
    {
        return Err(Error::NonFiniteLogit { index, value });
    }
    if logits.iter().all(|&v| v == f32::NEG_INFINITY) {
        return Err(Error::AllMasked { len: logits.len() });
    }
    Ok(())
}

/// Runs the pipeline up to (not including) the draw: penalties → temperature (0 = greedy) →
/// top-k → top-p → min-p, leaving the final scores in `z`.
fn process(
    config: &SamplingConfig,
    logits: &[f32],
    history: &[u32],
    z: &mut Vec<f64>,
) -> Result<Processed> {
    config.validate()?;
    validate_logits(logits)?;
    z.clear();
    z.extend(logits.iter().map(|&v| v as f64));
    if config.has_penalties() {
        apply_penalties(
            z,
            history,
            config.repetition_penalty,
            config.frequency_penalty,
            config.presence_penalty,
        )?;
    } else if let Some(&id) = history.iter().find(|&&id| id as usize >= logits.len()) {
        // The history is checked even when no penalty reads it, so a bad id never goes unnoticed.
        return Err(Error::TokenOutOfRange {
            id,
            vocab: logits.len(),
        });
    }
    if config.is_greedy() {
        return Ok(Processed::Greedy(argmax(z)));
    }
    apply_temperature(z, config.temperature);
    top_k_mask(z, config.top_k);
    top_p_mask(z, config.top_p);
    min_p_mask(z, config.min_p);
    Ok(Processed::Scores)
}

/// The distribution the pipeline samples from, `p[V]` (f64, sums to 1; truncated tokens are
/// exactly 0). For greedy decoding it is one-hot on the argmax.
///
/// # Errors
/// [`Error::Parameter`] for a bad config, [`Error::EmptyLogits`], [`Error::NonFiniteLogit`],
/// [`Error::AllMasked`], [`Error::TokenOutOfRange`] for a bad history id.
pub fn distribution(config: &SamplingConfig, logits: &[f32], history: &[u32]) -> Result<Vec<f64>> {
    let mut z = Vec::with_capacity(logits.len());
    let mut p = vec![0.0; logits.len()];
    match process(config, logits, history, &mut z)? {
        Processed::Greedy(i) => p[i] = 1.0,
        Processed::Scores => softmax_portable(&mut p, &z),
    }
    Ok(p)
}

/// Runs the pipeline and draws with a given uniform number `u ∈ [0, 1)` instead of a generator:
/// the token is the first id at which the cumulative distribution exceeds `u`.
///
/// # Errors
/// As [`distribution`], and [`Error::Parameter`] naming `u` when it is outside `[0, 1)`.
pub fn sample_with_uniform(
    config: &SamplingConfig,
    logits: &[f32],
    history: &[u32],
    u: f64,
) -> Result<Sample> {
    if !(0.0..1.0).contains(&u) {
        return Err(Error::Parameter {
            name: "u",
            value: u,
            expected: "a number in [0, 1)",
        });
    }
    let mut z = Vec::with_capacity(logits.len());
    pick(config, logits, history, &mut z, u)
}

fn pick(
    config: &SamplingConfig,
    logits: &[f32],
    history: &[u32],
    z: &mut Vec<f64>,
    u: f64,
) -> Result<Sample> {
    let (token, logprob) = match process(config, logits, history, z)? {
        Processed::Greedy(i) => (i, 0.0),
        Processed::Scores => draw(z, u),
    };
    Ok(Sample {
        token: token as u32,
        logprob: logprob as f32,
        model_logprob: log_softmax_at(logits, token) as f32,
    })
}

/// A seeded sampler: the pipeline of a [`SamplingConfig`] and a ChaCha12 generator.
///
/// Reproducible: the same seed, config, logits and history give the same tokens on every
/// platform. ChaCha12's output stream is fixed by its specification, each draw consumes exactly
/// one `u64` (turned into `u = (x >> 11) · 2⁻⁵³`, exact), and the choice of token uses only IEEE
/// basic operations (see [`crate::exp_portable`]).
///
/// ```
/// use deepblocks_sample::{Sampler, SamplingConfig};
/// let logits = [0.5f32, 2.0, 1.0, -1.0];
/// let config = SamplingConfig { temperature: 0.8, top_k: 3, ..SamplingConfig::default() };
/// let mut a = Sampler::new(config, 42)?;
/// let mut b = Sampler::new(config, 42)?;
/// for _ in 0..10 {
///     let (x, y) = (a.sample(&logits, &[])?, b.sample(&logits, &[])?);
///     assert_eq!(x.token, y.token);
///     assert_ne!(x.token, 3); // top-k 3 never picks the worst of four
/// }
/// # Ok::<(), deepblocks_sample::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplingConfig,
    rng: ChaCha12Rng,
    /// Scratch scores, reused across calls.
    z: Vec<f64>,
}

impl Sampler {
    /// A sampler for `config`, its generator seeded with `seed`.
    ///
    /// # Errors
    /// [`Error::Parameter`] when `config` does not [validate](SamplingConfig::validate).
    pub fn new(config: SamplingConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(Sampler {
            config,
            rng: ChaCha12Rng::seed_from_u64(seed),
            z: Vec::new(),
        })
    }

    /// A greedy sampler (temperature 0, no penalties); it never consumes randomness.
    pub fn greedy() -> Self {
        Sampler {
            config: SamplingConfig::greedy(),
            rng: ChaCha12Rng::seed_from_u64(0),
            z: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// Replaces the configuration, keeping the generator's position.
    ///
    /// # Errors
    /// [`Error::Parameter`] when `config` does not validate; the old one is then kept.
    pub fn set_config(&mut self, config: SamplingConfig) -> Result<()> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Restarts the generator from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha12Rng::seed_from_u64(seed);
    }

    /// The next uniform number in `[0, 1)`: the top 53 bits of one `u64`, scaled exactly.
    fn next_uniform(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Draws the next token from `logits[V]`, the penalties reading `history` (the ids generated so
    /// far, and the prompt's too if you want it penalised: Hugging Face includes it, the OpenAI
    /// API does not). Consumes one `u64` of randomness unless the config is greedy.
    ///
    /// # Errors
    /// As [`distribution`]. An error consumes no randomness.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<Sample> {
        let mut z = std::mem::take(&mut self.z);
        let result = match process(&self.config, logits, history, &mut z) {
            Err(e) => Err(e),
            Ok(Processed::Greedy(i)) => Ok((i, 0.0)),
            Ok(Processed::Scores) => Ok(draw(&z, self.next_uniform())),
        };
        self.z = z;
        let (token, logprob) = result?;
        Ok(Sample {
            token: token as u32,
            logprob: logprob as f32,
            model_logprob: log_softmax_at(logits, token) as f32,
        })
    }
}
