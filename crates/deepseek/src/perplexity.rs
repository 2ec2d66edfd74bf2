//! Perplexity: the next-token negative log-likelihood of a text, scored in consecutive windows
//! through the latent cache (one prefill per window), as [`scripts/train_tiny.py`] scores its
//! held-out text.
//!
//! [`scripts/train_tiny.py`]: https://github.com/deepblocks/deepblocks/blob/main/scripts/train_tiny.py

use deepblocks_embed::Positions;

use crate::{Error, Model, Result};

/// A sum of next-token negative log-likelihoods (natural log) and how many tokens it covers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Nll {
    /// Tokens scored.
    pub tokens: usize,
    /// `Σ −ln p(token | its prefix)`, in f64.
    pub sum: f64,
}

impl Nll {
    /// The mean NLL per token (0 for none).
    pub fn mean(&self) -> f64 {
        if self.tokens == 0 {
            0.0
        } else {
            self.sum / self.tokens as f64
        }
    }

    /// `exp(mean)`.
    pub fn perplexity(&self) -> f64 {
        self.mean().exp()
    }
}

impl std::ops::AddAssign for Nll {
    fn add_assign(&mut self, other: Nll) {
        self.tokens += other.tokens;
        self.sum += other.sum;
    }
}

/// `−ln softmax(row)[target]` in f64 (the log-sum-exp shifted by the row's maximum).
fn nll_of(row: &[f32], target: usize) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let lse = max
        + row
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    lse - row[target] as f64
}

impl Model {
    /// The NLL of `window[1..]`, each token given the ones before it: one forward pass of
    /// `window[..len − 1]` from an empty cache.
    ///
    /// # Errors
    /// [`Error::TooFewTokens`] for fewer than 2 tokens; as [`Model::forward`] (a token outside
    /// the vocabulary, a window longer than the context).
    pub fn window_nll(&self, window: &[u32]) -> Result<Nll> {
        if window.len() < 2 {
            return Err(Error::TooFewTokens {
                tokens: window.len(),
                window: 2,
            });
        }
        let v = self.config().vocab_size;
        let inputs = &window[..window.len() - 1];
        let mut cache = self.new_cache(inputs.len())?;
        let logits = self.forward(inputs, &mut cache, Positions::All)?;
        let mut nll = Nll::default();
        for (row, &target) in logits.chunks_exact(v).zip(&window[1..]) {
            nll += Nll {
                tokens: 1,
                sum: nll_of(row, target as usize),
            };
        }
        Ok(nll)
    }

    /// The NLL of `tokens` scored in consecutive, non-overlapping windows of `window` tokens
    /// (`window − 1` predictions each: the first token of a window is context only); a last
    /// window shorter than that is not scored, as [`scripts/train_tiny.py`] does.
    /// `progress(done, total)` is called after each window.
    ///
    /// # Errors
    /// [`Error::Window`] when `window` is below 2 or past `max_position_embeddings`;
    /// [`Error::TooFewTokens`] when `tokens` holds no whole window; as [`Model::window_nll`].
    ///
    /// [`scripts/train_tiny.py`]: https://github.com/deepblocks/deepblocks/blob/main/scripts/train_tiny.py
    pub fn perplexity(
        &self,
        tokens: &[u32],
        window: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Nll> {
        let max = self.config().max_position_embeddings;
        if window < 2 || window > max {
            return Err(Error::Window {
                window,
                max_position_embeddings: max,
            });
        }
        let windows = tokens.len() / window;
        if windows == 0 {
            return Err(Error::TooFewTokens {
                tokens: tokens.len(),
                window,
            });
        }
        let mut nll = Nll::default();
        for (i, w) in tokens.chunks_exact(window).enumerate() {
            nll += self.window_nll(w)?;
            progress(i + 1, windows);
        }
        Ok(nll)
    }
}
