//! The unembedding (`lm_head`): hidden states `[t, h]` → logits `[t, V]`.

use deepblocks_core::{Weight, linear, linear_naive};
#[cfg(feature = "ndarray")]
use ndarray::{Array2, ArrayView2};

use crate::{Embedding, Error, Result};

/// Where the unembedding matrix `U[V, h]` comes from (`logits = x · Uᵀ`).
#[derive(Debug, Clone)]
pub enum LmHead {
    /// Tied to the input embedding: `U = E` (`tie_word_embeddings = true`, as in GPT-2 and
    /// GPT-3's walk-through). Shares the embedding's memory.
    Tied,
    /// A separate matrix `lm_head.weight` (DeepSeek-V2 unties them).
    Separate(Weight), // [V, h]
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// Only the last position, `[1, V]`: what generation needs (a GEMV over `U`).
    Last,
    /// Every position, `[t, V]`: what scoring and training-style evaluation need.
    All,
}

impl Positions {
    /// The number of logit rows for a sequence of `t` tokens.
    pub fn rows(self, t: usize) -> usize {
        match self {
            Positions::Last => t.min(1),
            Positions::All => t,
        }
    }
}

/// `out = x · Uᵀ` for the positions asked: `x[t, h]`, `U[V, h]`, `out[rows, V]` with
/// `rows = positions.rows(t)`. Uses core's [`linear`]: the GEMV kernel for the last position (and
/// for short sequences), the GEMM path for long ones.
///
/// # Errors
/// A core [`Length`](deepblocks_core::Error::Length) error when `x` is not `t · h` or `out` not
/// `rows · V` long, [`Error::NoPositions`]
/// for [`Positions::Last`] with `t = 0`.
pub fn unembed(
    out: &mut [f32],
    x: &[f32],
    u: &Weight,
    t: usize,
    positions: Positions,
) -> Result<()> {
    unembed_with(out, x, u, t, positions, linear)
}

/// The naive twin of [`unembed`] (core's [`linear_naive`]).
///
/// # Errors
/// As [`unembed`].
pub fn unembed_naive(
    out: &mut [f32],
    x: &[f32],
    u: &Weight,
    t: usize,
    positions: Positions,
) -> Result<()> {
    unembed_with(out, x, u, t, positions, linear_naive)
}

fn unembed_with(
    out: &mut [f32],
    x: &[f32],
    u: &Weight,
    t: usize,
    positions: Positions,
    kernel: fn(&mut [f32], &[f32], &Weight, usize),
) -> Result<()> {
    let (v, h) = (u.rows(), u.cols());
    if Some(x.len()) != t.checked_mul(h) {
        return Err(deepblocks_core::Error::length("hidden", &[t, h], x.len()).into());
    }
    if positions == Positions::Last && t == 0 {
        return Err(Error::NoPositions);
    }
    let rows = positions.rows(t);
    if Some(out.len()) != rows.checked_mul(v) {
        return Err(deepblocks_core::Error::length("logits", &[rows, v], out.len()).into());
    }
    let x = &x[(t - rows) * h..];
    kernel(out, x, u, rows);
    Ok(())
}

/// The two ends of a language model: the token embedding `E[V, h]` and the unembedding
/// (`lm_head`), tied to `E` or separate.
///
/// ```
/// use deepblocks_core::Weight;
/// use deepblocks_embed::{Embedding, Embeddings, LmHead, Positions};
/// let e = Embedding::new(Weight::from_f32(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 3, 2)?);
/// let m = Embeddings::new(e, LmHead::Tied)?;
/// let mut x = [0.0; 4];
/// m.embed_tokens().lookup(&mut x, &[0, 2])?;       // [[1, 0], [1, 1]]
/// let mut logits = [0.0; 3];
/// m.logits_into(&mut logits, &x, 2, Positions::Last)?; // [1, 1] · Eᵀ
/// assert_eq!(logits, [1.0, 1.0, 2.0]);
/// # Ok::<(), deepblocks_embed::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Embeddings {
    embed_tokens: Embedding, // [V, h]
    lm_head: LmHead,         // [V, h] when separate
}

impl Embeddings {
    /// Pairs an embedding with its unembedding.
    ///
    /// # Errors
    /// [`Error::LmHeadShape`] when a separate `lm_head` is not `[V, h]` like the embedding.
    pub fn new(embed_tokens: Embedding, lm_head: LmHead) -> Result<Self> {
        if let LmHead::Separate(w) = &lm_head {
            let expected = embed_tokens.weight().shape();
            if w.shape() != expected {
                return Err(Error::LmHeadShape {
                    expected,
                    found: w.shape(),
                });
            }
        }
        Ok(Embeddings {
            embed_tokens,
            lm_head,
        })
    }

    /// The token embedding `E[V, h]`.
    pub fn embed_tokens(&self) -> &Embedding {
        &self.embed_tokens
    }

    /// Where the unembedding comes from.
    pub fn lm_head(&self) -> &LmHead {
        &self.lm_head
    }

    /// The unembedding matrix `U[V, h]` (the embedding's own when tied).
    pub fn lm_head_weight(&self) -> &Weight {
        match &self.lm_head {
            LmHead::Tied => self.embed_tokens.weight(),
            LmHead::Separate(w) => w,
        }
    }

    /// `V`.
    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.vocab_size()
    }

    /// `h`.
    pub fn hidden_size(&self) -> usize {
        self.embed_tokens.hidden_size()
    }

    /// ndarray wrapper of [`Self::logits_into`]: logits `[rows, V]` of hidden states `x[t, h]`.
    ///
    /// # Errors
    /// [`Error::Core`] (shape) when `x` is not `h` wide, [`Error::NoPositions`] for
    /// [`Positions::Last`] of an empty sequence.
    #[cfg(feature = "ndarray")]
    pub fn logits_nd(&self, x: ArrayView2<'_, f32>, positions: Positions) -> Result<Array2<f32>> {
        let (t, h) = x.dim();
        if h != self.hidden_size() {
            return Err(
                deepblocks_core::Error::shape("hidden", &[t, self.hidden_size()], &[t, h]).into(),
            );
        }
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout is contiguous");
        let mut out = Array2::zeros((positions.rows(t), self.vocab_size()));
        self.logits_into(
            out.as_slice_mut().expect("fresh array is contiguous"),
            xs,
            t,
            positions,
        )?;
        Ok(out)
    }

    /// The logits `out[rows, V]` of hidden states `x[t, h]` for the positions asked (see
    /// [`unembed`]).
    ///
    /// # Errors
    /// As [`unembed`].
    pub fn logits_into(
        &self,
        out: &mut [f32],
        x: &[f32],
        t: usize,
        positions: Positions,
    ) -> Result<()> {
        unembed(out, x, self.lm_head_weight(), t, positions)
    }
}
