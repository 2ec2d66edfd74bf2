//! Vector tools on embedding rows: cosine similarity, nearest neighbours, analogy.

use std::cmp::Ordering;

use deepblocks_core::{Bf16Products, dot, linear, sum_squares};

use crate::{Embedding, Result};

/// `cos(a, b) = a·b / (‖a‖ ‖b‖)`, in `[-1, 1]`; 0 when either vector is zero (as torch's
/// `cosine_similarity` with its epsilon gives).
///
/// ```
/// use deepblocks_embed::cosine_similarity;
/// assert_eq!(cosine_similarity(&[1.0, 0.0], &[0.0, 2.0])?, 0.0);
/// assert!((cosine_similarity(&[1.0, 1.0], &[2.0, 2.0])? - 1.0).abs() < 1e-6);
/// # Ok::<(), deepblocks_embed::Error>(())
/// ```
///
/// # Errors
/// a core [`Length`](deepblocks_core::Error::Length) error when the lengths differ.
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> Result<f32> {
    if a.len() != b.len() {
        return Err(deepblocks_core::Error::length("b", &[a.len()], b.len()).into());
    }
    Ok(cosine_from_parts(
        dot(a, b),
        sum_squares(a).sqrt(),
        sum_squares(b).sqrt(),
    ))
}

fn cosine_from_parts(dot: f32, na: f32, nb: f32) -> f32 {
    let d = na * nb;
    if d > 0.0 {
        (dot / d).clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// A row of the embedding and its cosine similarity to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// The token id (row).
    pub id: u32,
    /// `cos(query, E[id])`.
    pub similarity: f32,
}

/// Best first: higher similarity, ties to the lower id; NaN (from a non-finite weight) last.
fn best_first(a: &Neighbour, b: &Neighbour) -> Ordering {
    let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
    key(b.similarity)
        .total_cmp(&key(a.similarity))
        .then(a.id.cmp(&b.id))
}

/// The `k` best of `all`, best first.
fn top_k(mut all: Vec<Neighbour>, k: usize) -> Vec<Neighbour> {
    if k == 0 {
        return Vec::new();
    }
    if all.len() > k {
        all.select_nth_unstable_by(k - 1, best_first);
        all.truncate(k);
    }
    all.sort_by(best_first);
    all
}

impl Embedding {
    fn check_query(&self, query: &[f32]) -> Result<()> {
        if query.len() != self.hidden_size() {
            return Err(deepblocks_core::Error::length(
                "query",
                &[self.hidden_size()],
                query.len(),
            )
            .into());
        }
        Ok(())
    }

    /// The `k` rows most cosine-similar to `query[h]`, best first (ties to the lower id), skipping
    /// the ids in `exclude`. The dot products with all rows are one GEMV over `E` in its stored
    /// dtype (core's [`linear`]); the row norms are cached after the first call.
    ///
    /// # Errors
    /// a core [`Length`](deepblocks_core::Error::Length) error when `query` is not `h` long, [`TokenOutOfRange`](crate::Error::TokenOutOfRange) for an
    /// excluded id `≥ V`.
    pub fn nearest(&self, query: &[f32], k: usize, exclude: &[u32]) -> Result<Vec<Neighbour>> {
        self.check_query(query)?;
        self.check_ids(exclude)?;
        let mut dots = vec![0.0; self.vocab_size()];
        // The query as given, whatever products the loader chose for the weight's other use as
        // an output matrix (a view: the values are shared).
        let rows = self.weight().clone().with_bf16_products(Bf16Products::F32);
        linear(&mut dots, query, &rows, 1);
        let qn = sum_squares(query).sqrt();
        let all = dots
            .iter()
            .zip(self.row_norms())
            .enumerate()
            .filter(|(v, _)| !exclude.contains(&(*v as u32)))
            .map(|(v, (&d, &n))| Neighbour {
                id: v as u32,
                similarity: cosine_from_parts(d, qn, n),
            })
            .collect();
        Ok(top_k(all, k))
    }

    /// The naive twin of [`Self::nearest`]: [`cosine_similarity`] with every widened row, then a
    /// full sort.
    ///
    /// # Errors
    /// As [`Self::nearest`].
    pub fn nearest_naive(
        &self,
        query: &[f32],
        k: usize,
        exclude: &[u32],
    ) -> Result<Vec<Neighbour>> {
        self.check_query(query)?;
        self.check_ids(exclude)?;
        let mut all = Vec::with_capacity(self.vocab_size());
        for v in 0..self.vocab_size() as u32 {
            if !exclude.contains(&v) {
                let row = self.weight().row_f32(v as usize);
                all.push(Neighbour {
                    id: v,
                    similarity: cosine_similarity(query, &row)?,
                });
            }
        }
        all.sort_by(best_first);
        all.truncate(k);
        Ok(all)
    }

    /// The `k` nearest rows to token `id`, excluding `id` itself.
    ///
    /// # Errors
    /// [`TokenOutOfRange`](crate::Error::TokenOutOfRange) for an id `≥ V`.
    pub fn neighbours(&self, id: u32, k: usize) -> Result<Vec<Neighbour>> {
        let q = self.row(id)?;
        self.nearest(&q, k, &[id])
    }

    /// `a − b + c`: "`a` is to `b` as `?` is to `c`" (Mikolov et al. 2013, *Linguistic
    /// Regularities in Continuous Space Word Representations*, 3CosAdd): the `k` rows nearest to
    /// `E[a] − E[b] + E[c]`, excluding `a`, `b` and `c` themselves.
    ///
    /// # Errors
    /// [`TokenOutOfRange`](crate::Error::TokenOutOfRange) naming the first of `a`, `b`, `c` that is `≥ V`.
    pub fn analogy(&self, a: u32, b: u32, c: u32, k: usize) -> Result<Vec<Neighbour>> {
        self.check_ids(&[a, b, c])?;
        let (ea, eb, ec) = (self.row(a)?, self.row(b)?, self.row(c)?);
        let q: Vec<f32> = ea
            .iter()
            .zip(&eb)
            .zip(&ec)
            .map(|((&x, &y), &z)| x - y + z)
            .collect();
        self.nearest(&q, k, &[a, b, c])
    }
}
