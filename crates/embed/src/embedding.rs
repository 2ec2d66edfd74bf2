//! [`Embedding`]: the token embedding matrix `E[V, h]` and its lookup.

use std::sync::OnceLock;

use deepblocks_core::{Weight, WeightFormat, sum_squares};
#[cfg(feature = "ndarray")]
use ndarray::Array2;

use crate::{Error, Result};

/// The token embedding `E[V, h]`: row `v` is the vector of token `v`. Lookup maps ids `[t]` to
/// hidden states `[t, h]`, `x[i] = E[ids[i]]`, widened to f32; the matrix itself stays in the
/// dtype it was stored in (bf16 stays bf16).
///
/// ```
/// use deepblocks_core::{DType, Weight};
/// use deepblocks_embed::Embedding;
/// let e = Embedding::new(Weight::from_f32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 3, 2)?.to_dtype(DType::BF16));
/// assert_eq!((e.vocab_size(), e.hidden_size(), e.format()), (3, 2, DType::BF16.into()));
/// let mut x = [0.0; 4]; // [t 2, h 2]
/// e.lookup(&mut x, &[2, 0])?;
/// assert_eq!(x, [4.0, 5.0, 0.0, 1.0]);
/// assert!(e.lookup(&mut x[..2], &[3]).is_err()); // id 3 is out of a vocabulary of 3
/// # Ok::<(), deepblocks_embed::Error>(())
/// ```
#[derive(Debug)]
pub struct Embedding {
    weight: Weight, // [V, h]
    /// `‖E[v]‖` for every row, computed on the first similarity search.
    row_norms: OnceLock<Vec<f32>>, // [V]
}

impl Clone for Embedding {
    fn clone(&self) -> Self {
        Embedding {
            weight: self.weight.clone(),
            row_norms: self.row_norms.clone(),
        }
    }
}

impl Embedding {
    /// An embedding over `weight` (`[V, h]`, any stored dtype; shared, not copied).
    pub fn new(weight: Weight) -> Self {
        Embedding {
            weight,
            row_norms: OnceLock::new(),
        }
    }

    /// The matrix `E[V, h]`.
    pub fn weight(&self) -> &Weight {
        &self.weight
    }

    /// `V`.
    pub fn vocab_size(&self) -> usize {
        self.weight.rows()
    }

    /// `h`.
    pub fn hidden_size(&self) -> usize {
        self.weight.cols()
    }

    /// How the matrix is stored.
    pub fn format(&self) -> WeightFormat {
        self.weight.format()
    }

    /// Checks that every id is `< V`.
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`] naming the first id that is not, and its position.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let vocab = self.vocab_size();
        match ids.iter().position(|&id| id as usize >= vocab) {
            Some(position) => Err(Error::TokenOutOfRange {
                id: ids[position],
                position,
                vocab,
            }),
            None => Ok(()),
        }
    }

    /// `out[i, :] = E[ids[i], :]` widened to f32, for `out[t, h]` with `t = ids.len()`.
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`] for an id `≥ V` and a core
    /// [`Length`](deepblocks_core::Error::Length) error when `out` is not `t · h` long; `out` is
    /// untouched on error.
    pub fn lookup(&self, out: &mut [f32], ids: &[u32]) -> Result<()> {
        let h = self.hidden_size();
        if Some(out.len()) != ids.len().checked_mul(h) {
            return Err(deepblocks_core::Error::length("out", &[ids.len(), h], out.len()).into());
        }
        self.check_ids(ids)?;
        if h == 0 {
            return Ok(());
        }
        for (row, &id) in out.chunks_exact_mut(h).zip(ids) {
            self.weight.read_row_f32(row, id as usize);
        }
        Ok(())
    }

    /// ndarray wrapper of [`Self::lookup`]: the hidden states `x[t, h]` of `ids`.
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`] for an id `≥ V`.
    #[cfg(feature = "ndarray")]
    pub fn lookup_nd(&self, ids: &[u32]) -> Result<Array2<f32>> {
        let mut x = Array2::zeros((ids.len(), self.hidden_size()));
        self.lookup(x.as_slice_mut().expect("fresh array is contiguous"), ids)?;
        Ok(x)
    }

    /// Row `id` widened to f32.
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`] for an id `≥ V` (at position 0).
    pub fn row(&self, id: u32) -> Result<Vec<f32>> {
        self.check_ids(&[id])?;
        Ok(self.weight.row_f32(id as usize))
    }

    /// `‖E[v]‖₂` for every row (computed once, then cached).
    pub fn row_norms(&self) -> &[f32] {
        self.row_norms.get_or_init(|| {
            let mut row = vec![0.0; self.hidden_size()];
            (0..self.vocab_size())
                .map(|v| {
                    self.weight.read_row_f32(&mut row, v);
                    sum_squares(&row).sqrt()
                })
                .collect()
        })
    }
}
