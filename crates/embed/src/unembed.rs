//! The unembedding (`lm_head`): hidden states `[t, h]` → logits `[t, V]`.

use deepblocks_core::{SafeTensorsStore, Weight, linear, linear_naive};
use ndarray::{Array2, ArrayView2};

use crate::{EMBED_TOKENS, Embedding, Error, Result};

/// The checkpoint name of a separate unembedding matrix.
pub const LM_HEAD: &str = "lm_head.weight";

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
/// [`Error::Length`] when `x` is not `t · h` or `out` not `rows · V` long, [`Error::NoPositions`]
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
    if x.len() != t * h {
        return Err(Error::Length {
            what: "hidden",
            expected: t * h,
            found: x.len(),
        });
    }
    if positions == Positions::Last && t == 0 {
        return Err(Error::NoPositions);
    }
    let rows = positions.rows(t);
    if out.len() != rows * v {
        return Err(Error::Length {
            what: "logits",
            expected: rows * v,
            found: out.len(),
        });
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
/// let x = m.embed(&[0, 2])?;                   // [[1, 0], [1, 1]]
/// let logits = m.logits(x.view(), Positions::Last)?; // [1, 1] · Eᵀ
/// assert_eq!(logits.as_slice().unwrap(), &[1.0, 1.0, 2.0]);
/// # Ok::<(), deepblocks_embed::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Embeddings {
    /// `model.embed_tokens`.
    pub embed_tokens: Embedding, // [V, h]
    /// `lm_head`.
    pub lm_head: LmHead, // [V, h] when separate
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

    /// Reads [`EMBED_TOKENS`] and, unless `tie_word_embeddings`, [`LM_HEAD`] from a checkpoint.
    ///
    /// # Errors
    /// As [`Embedding::from_store`] and [`Self::new`]; [`Error::Core`] when `lm_head.weight` is
    /// missing from an untied checkpoint.
    pub fn from_store(store: &SafeTensorsStore, tie_word_embeddings: bool) -> Result<Self> {
        let embed_tokens = Embedding::from_store(store, EMBED_TOKENS)?;
        let lm_head = if tie_word_embeddings {
            LmHead::Tied
        } else {
            LmHead::Separate(store.weight(LM_HEAD, embed_tokens.weight().shape())?)
        };
        Embeddings::new(embed_tokens, lm_head)
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

    /// Hidden states `[t, h]` of `ids` (see [`Embedding::forward`]).
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`] for an id `≥ V`.
    pub fn embed(&self, ids: &[u32]) -> Result<Array2<f32>> {
        self.embed_tokens.forward(ids)
    }

    /// Logits `[rows, V]` of hidden states `x[t, h]` (see [`unembed`]).
    ///
    /// # Errors
    /// [`Error::Core`] (shape) when `x` is not `h` wide, [`Error::NoPositions`] for
    /// [`Positions::Last`] of an empty sequence.
    pub fn logits(&self, x: ArrayView2<'_, f32>, positions: Positions) -> Result<Array2<f32>> {
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

    /// [`Self::logits`] over slices: `out[rows, V]` from `x[t, h]`.
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
