//! The rotary table: cos/sin per position and frequency, built once and extended on demand.

use std::borrow::Cow;

#[cfg(feature = "ndarray")]
use ndarray::{Array3, ArrayView3};
use rayon::prelude::*;

use crate::config::{Layout, RopeConfig, RopeScaling};
use crate::error::{Error, Result, check_len};
use crate::freq;
use crate::kernel::{rope_apply, rope_apply_inplace_strided};

/// Rows computed per rayon task when a table grows.
const ROWS_PER_TASK: usize = 1024;

/// cos/sin of `position · inv_freq_i` for every position and frequency, in f32, with the cos/sin
/// factor folded in, for one [`RopeConfig`].
///
/// Rows are computed lazily: [`RopeTable::new`] only derives the frequencies, and
/// [`RopeTable::extend_to`] fills rows `0..len` (never past `max_position_embeddings`). The
/// `apply*` methods take `&self` so that one table can serve every layer; a position the table
/// has not reached yet is computed on the fly (bit-identical to its row), so extending is an
/// optimisation, not a precondition — except for dynamic NTK, whose frequencies depend on the
/// sequence length (see [`RopeTable::extend_to`]).
///
/// # Precision
/// As in transformers, the angle is the f32 product `f32(position) · inv_freq_i` (positions are
/// exact in f32 up to 2²⁴). Its cos and sin are then evaluated in f64 and rounded, i.e.
/// correctly rounded for that f32 angle. The f32 angle itself is off the exact
/// `position · θ_i` by up to half an ulp of the angle plus `position` times the rounding of
/// `inv_freq_i`: about 4·10⁻³ rad at position 10⁵ for the fastest pairs. That is the model's
/// own convention (DeepSeek's and transformers' code compute the same f32 products), so the
/// table reproduces it rather than "fixing" it; see [`docs/rope.md`].
///
/// [`docs/rope.md`]: https://github.com/deepblocks/deepblocks/blob/main/docs/rope.md
#[derive(Debug, Clone)]
pub struct RopeTable {
    config: RopeConfig,
    inv_freq: Vec<f32>, // [r/2]
    cos_sin_factor: f32,
    cos: Vec<f32>, // [len, r/2], cos(p·inv_freq_i)·cos_sin_factor
    sin: Vec<f32>, // [len, r/2], sin(p·inv_freq_i)·cos_sin_factor
    /// Dynamic NTK: the sequence length `inv_freq` belongs to (starts at the original length).
    seq_len: usize,
}

impl RopeTable {
    /// Validates `config` and derives its frequencies; no rows yet.
    ///
    /// ```
    /// use deepblocks_rope::{Layout, RopeConfig, RopeTable};
    /// let table = RopeTable::new(RopeConfig::new(4, 10_000.0, 1024, Layout::HalfSplit))?;
    /// assert_eq!(table.inv_freq(), &[1.0, 0.01]);
    /// assert!(table.is_empty());
    /// # Ok::<(), deepblocks_rope::Error>(())
    /// ```
    pub fn new(config: RopeConfig) -> Result<Self> {
        config.validate()?;
        let seq_len = match &config.scaling {
            RopeScaling::DynamicNtk(d) => d.original_max_position_embeddings,
            _ => config.max_position_embeddings,
        };
        Ok(RopeTable {
            inv_freq: freq::inv_freq(&config),
            cos_sin_factor: config.scaling.cos_sin_factor() as f32,
            cos: Vec::new(),
            sin: Vec::new(),
            seq_len,
            config,
        })
    }

    /// [`RopeTable::new`] followed by [`RopeTable::extend_to`]`(len)`.
    pub fn with_len(config: RopeConfig, len: usize) -> Result<Self> {
        let mut table = RopeTable::new(config)?;
        table.extend_to(len)?;
        Ok(table)
    }

    /// Makes rows `0..len` available, computing the missing ones.
    ///
    /// `Err(PositionPastMax)` if `len > max_position_embeddings`.
    ///
    /// For [`RopeScaling::DynamicNtk`], `len` is also the current sequence length (transformers'
    /// `max(position_ids) + 1`), and the frequencies follow transformers' `dynamic_rope_update`:
    /// when `len` exceeds the length they were computed for, they are recomputed for `len`;
    /// when `len` is below the original length after having grown past it, they return to the
    /// original ones. Either way every row is recomputed. Call it with `start + t` before each
    /// forward pass, as transformers does.
    pub fn extend_to(&mut self, len: usize) -> Result<()> {
        let max = self.config.max_position_embeddings;
        if len > max {
            return Err(Error::PositionPastMax {
                position: len - 1,
                max_position_embeddings: max,
            });
        }
        if let RopeScaling::DynamicNtk(d) = self.config.scaling {
            let l0 = d.original_max_position_embeddings;
            let cached = self.seq_len;
            if len > cached {
                self.inv_freq =
                    freq::dynamic_inv_freq(self.config.dim, self.config.rope_theta, &d, len);
                self.seq_len = len;
                self.clear_rows();
            }
            if len < l0 && cached > l0 {
                self.inv_freq = freq::inv_freq(&self.config);
                self.seq_len = l0;
                self.clear_rows();
            }
        }
        let h = self.half();
        let have = self.len();
        if len <= have {
            return Ok(());
        }
        self.cos.resize(len * h, 0.0);
        self.sin.resize(len * h, 0.0);
        let (inv, f) = (&self.inv_freq, self.cos_sin_factor);
        let chunk = ROWS_PER_TASK * h;
        self.cos[have * h..]
            .par_chunks_mut(chunk)
            .zip(self.sin[have * h..].par_chunks_mut(chunk))
            .enumerate()
            .for_each(|(k, (c, s))| {
                fill_rows(c, s, have + k * ROWS_PER_TASK, inv, f);
            });
        Ok(())
    }

    fn clear_rows(&mut self) {
        self.cos.clear();
        self.sin.clear();
    }

    fn half(&self) -> usize {
        self.config.dim / 2
    }

    /// Number of rows computed so far.
    pub fn len(&self) -> usize {
        self.cos.len() / self.half()
    }

    /// Whether no row has been computed yet.
    pub fn is_empty(&self) -> bool {
        self.cos.is_empty()
    }

    /// The config the table was built from.
    pub fn config(&self) -> &RopeConfig {
        &self.config
    }

    /// `r`, the rotary dimension.
    pub fn dim(&self) -> usize {
        self.config.dim
    }

    /// The pair layout `apply` uses.
    pub fn layout(&self) -> Layout {
        self.config.layout
    }

    /// The inverse frequencies `inv_freq[r/2]` after scaling (current ones, for dynamic NTK).
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// The factor folded into every cos and sin entry ([`RopeScaling::cos_sin_factor`], rounded
    /// to f32). It is *not* the softmax factor.
    #[doc(alias = "attention_factor")]
    #[doc(alias = "attention_scaling")]
    pub fn cos_sin_factor(&self) -> f32 {
        self.cos_sin_factor
    }

    /// The factor for the softmax scale ([`RopeScaling::softmax_factor`]). It is *not* folded
    /// into the table; attention applies it through [`RopeTable::softmax_scale`].
    pub fn softmax_factor(&self) -> f64 {
        self.config.scaling.softmax_factor()
    }

    /// The attention softmax scale for query/key heads of `qk_head_dim` features (DeepSeek-V2:
    /// `qk_nope_head_dim + qk_rope_head_dim` = 192): `qk_head_dim^(−1/2) · softmax_factor`,
    /// computed in f64 in transformers' order and rounded to f32. See [`softmax_scale`].
    ///
    /// `Err` if `qk_head_dim` is 0.
    pub fn softmax_scale(&self, qk_head_dim: usize) -> Result<f32> {
        softmax_scale(qk_head_dim, &self.config.scaling)
    }

    /// The full table so far: `cos[len, r/2]` (cos/sin factor included).
    pub fn cos(&self) -> &[f32] {
        &self.cos
    }

    /// The full table so far: `sin[len, r/2]` (cos/sin factor included).
    pub fn sin(&self) -> &[f32] {
        &self.sin
    }

    /// The rows of `positions`: `cos[t, r/2]`, `sin[t, r/2]` with `t = positions.len()`.
    /// Borrowed from the table when the positions are consecutive and already computed,
    /// gathered (and computed where missing) otherwise. Compute them once per forward pass and
    /// rotate every layer's queries and keys with them.
    ///
    /// `Err(PositionPastMax)` for a position `≥ max_position_embeddings`;
    /// `Err(DynamicNotExtended)` if a dynamic-NTK table was not extended to these positions.
    pub fn cos_sin(&self, positions: &[usize]) -> Result<CosSin<'_>> {
        let max = self.config.max_position_embeddings;
        let Some(&top) = positions.iter().max() else {
            return Ok(self.cos_sin_owned(Vec::new(), Vec::new(), 0));
        };
        if top >= max {
            let position = positions.iter().copied().find(|&p| p >= max).unwrap_or(top);
            return Err(Error::PositionPastMax {
                position,
                max_position_embeddings: max,
            });
        }
        if let RopeScaling::DynamicNtk(d) = self.config.scaling {
            let l0 = d.original_max_position_embeddings;
            let needed = top + 1;
            if needed > self.seq_len || (needed < l0 && self.seq_len > l0) {
                return Err(Error::DynamicNotExtended {
                    position: top,
                    seq_len: self.seq_len,
                });
            }
        }
        let (h, t, start) = (self.half(), positions.len(), positions[0]);
        let consecutive = positions.iter().enumerate().all(|(k, &p)| p == start + k);
        if consecutive && start + t <= self.len() {
            let range = start * h..(start + t) * h;
            return Ok(CosSin {
                cos: Cow::Borrowed(&self.cos[range.clone()]),
                sin: Cow::Borrowed(&self.sin[range]),
                t,
                r: self.config.dim,
                layout: self.config.layout,
            });
        }
        let (mut cos, mut sin) = (vec![0.0; t * h], vec![0.0; t * h]);
        for ((c, s), &p) in cos
            .chunks_exact_mut(h)
            .zip(sin.chunks_exact_mut(h))
            .zip(positions)
        {
            if p < self.len() {
                c.copy_from_slice(&self.cos[p * h..(p + 1) * h]);
                s.copy_from_slice(&self.sin[p * h..(p + 1) * h]);
            } else {
                fill_rows(c, s, p, &self.inv_freq, self.cos_sin_factor);
            }
        }
        Ok(self.cos_sin_owned(cos, sin, t))
    }

    fn cos_sin_owned(&self, cos: Vec<f32>, sin: Vec<f32>, t: usize) -> CosSin<'_> {
        CosSin {
            cos: Cow::Owned(cos),
            sin: Cow::Owned(sin),
            t,
            r: self.config.dim,
            layout: self.config.layout,
        }
    }

    /// Rotates `x[t, n, r]` at `positions[t]` into `out[t, n, r]`.
    ///
    /// ```
    /// use deepblocks_rope::{Layout, RopeConfig, RopeTable};
    /// let table = RopeTable::with_len(RopeConfig::new(2, 10_000.0, 64, Layout::Interleaved), 8)?;
    /// let mut out = [0.0f32; 2];
    /// table.apply(&mut out, &[1.0, 0.0], &[3], 1)?; // one pair, θ = 1 rad per position
    /// assert_eq!(out, [3f32.cos(), 3f32.sin()]);
    /// # Ok::<(), deepblocks_rope::Error>(())
    /// ```
    pub fn apply(&self, out: &mut [f32], x: &[f32], positions: &[usize], n: usize) -> Result<()> {
        self.cos_sin(positions)?.apply(out, x, n)
    }

    /// Rotates a contiguous `x[t, n, r]` at `positions[t]` in place.
    pub fn apply_inplace(&self, x: &mut [f32], positions: &[usize], n: usize) -> Result<()> {
        self.cos_sin(positions)?.apply_inplace(x, n)
    }

    /// Rotates the features `offset..offset + r` of each of the `t·n` rows of `stride` elements
    /// in `x`, in place (see [`rope_apply_inplace_strided`]: MLA's `q[t, n, d + r]` and
    /// `[t, c + r]` key rows).
    pub fn apply_inplace_strided(
        &self,
        x: &mut [f32],
        positions: &[usize],
        n: usize,
        stride: usize,
        offset: usize,
    ) -> Result<()> {
        self.cos_sin(positions)?
            .apply_inplace_strided(x, n, stride, offset)
    }

    /// ndarray wrapper of [`RopeTable::apply`]: rotates `x` of shape `[t, n, r]` at `positions[t]`.
    #[cfg(feature = "ndarray")]
    pub fn apply_nd(&self, x: ArrayView3<'_, f32>, positions: &[usize]) -> Result<Array3<f32>> {
        let (t, n, r) = x.dim();
        if t != positions.len() || r != self.config.dim {
            return Err(Error::Shape {
                what: "x",
                expected: vec![positions.len(), n, self.config.dim],
                found: vec![t, n, r],
            });
        }
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout is contiguous");
        let mut out = Array3::zeros((t, n, r));
        let os = out.as_slice_mut().expect("a new array is contiguous");
        self.apply(os, xs, positions, n)?;
        Ok(out)
    }
}

/// The table rows of `t` positions: `cos[t, r/2]`, `sin[t, r/2]` (cos/sin factor included),
/// with the layout to rotate by. Made by [`RopeTable::cos_sin`].
#[derive(Debug, Clone)]
pub struct CosSin<'a> {
    cos: Cow<'a, [f32]>, // [t, r/2]
    sin: Cow<'a, [f32]>, // [t, r/2]
    t: usize,
    r: usize,
    layout: Layout,
}

impl CosSin<'_> {
    /// `cos[t, r/2]`.
    pub fn cos(&self) -> &[f32] {
        &self.cos
    }

    /// `sin[t, r/2]`.
    pub fn sin(&self) -> &[f32] {
        &self.sin
    }

    /// Number of positions `t`.
    pub fn t(&self) -> usize {
        self.t
    }

    /// The rotary dimension `r`.
    pub fn r(&self) -> usize {
        self.r
    }

    /// The pair layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Rotates `x[t, n, r]` into `out[t, n, r]` ([`rope_apply`]); `Err(Length)` names the
    /// buffer whose length is wrong.
    pub fn apply(&self, out: &mut [f32], x: &[f32], n: usize) -> Result<()> {
        let shape = [self.t, n, self.r];
        check_len("x", &shape, x.len())?;
        check_len("out", &shape, out.len())?;
        rope_apply(out, x, &self.cos, &self.sin, self.t, n, self.r, self.layout);
        Ok(())
    }

    /// Rotates a contiguous `x[t, n, r]` in place.
    pub fn apply_inplace(&self, x: &mut [f32], n: usize) -> Result<()> {
        self.apply_inplace_strided(x, n, self.r, 0)
    }

    /// Rotates the features `offset..offset + r` of each of the `t·n` rows of `stride`
    /// elements of `x`, in place ([`rope_apply_inplace_strided`]).
    pub fn apply_inplace_strided(
        &self,
        x: &mut [f32],
        n: usize,
        stride: usize,
        offset: usize,
    ) -> Result<()> {
        if offset.checked_add(self.r).is_none_or(|end| end > stride) {
            return Err(Error::Stride {
                stride,
                offset,
                r: self.r,
            });
        }
        check_len("x", &[self.t, n, stride], x.len())?;
        rope_apply_inplace_strided(
            x,
            &self.cos,
            &self.sin,
            self.t,
            n,
            self.r,
            stride,
            offset,
            self.layout,
        );
        Ok(())
    }
}

/// The attention softmax scale `qk_head_dim^(−1/2) · scaling.softmax_factor()`, as DeepSeek's
/// `yarn_apply_mscale` computes it (f64, then rounded to f32). DeepSeek-V2 (192, YaRN ×40 with
/// `mscale_all_dim` 0.707): `0.0721688 · 1.5896 ≈ 0.114721`.
///
/// ```
/// use deepblocks_rope::{softmax_scale, RopeScaling, YarnScaling};
/// let yarn = YarnScaling { mscale: Some(0.707), mscale_all_dim: Some(0.707), ..YarnScaling::new(40.0, 4096) };
/// let s = softmax_scale(192, &RopeScaling::Yarn(yarn))?;
/// assert!((s - 0.114_721).abs() < 1e-6);
/// assert_eq!(softmax_scale(64, &RopeScaling::None)?, 0.125);
/// # Ok::<(), deepblocks_rope::Error>(())
/// ```
///
/// `Err(OutOfRange)` naming `qk_head_dim` if it is 0.
pub fn softmax_scale(qk_head_dim: usize, scaling: &RopeScaling) -> Result<f32> {
    if qk_head_dim == 0 {
        return Err(Error::OutOfRange {
            field: "qk_head_dim",
            value: 0.0,
            expected: "at least 1",
        });
    }
    let m = scaling.softmax_mscale();
    // transformers: `scaling = qk_head_dim ** -0.5; scaling = scaling * mscale * mscale`.
    Ok(((qk_head_dim as f64).powf(-0.5) * m * m) as f32)
}

/// Fills consecutive rows from position `start`: `cos[k, i] = f32(cos(f32(start + k) · inv_i)) ·
/// factor`, likewise sin; the angle is the f32 product, its cos/sin are evaluated in f64.
fn fill_rows(cos: &mut [f32], sin: &mut [f32], start: usize, inv_freq: &[f32], factor: f32) {
    let h = inv_freq.len();
    for (k, (c, s)) in cos
        .chunks_exact_mut(h)
        .zip(sin.chunks_exact_mut(h))
        .enumerate()
    {
        let p = (start + k) as f32;
        for ((c, s), &inv) in c.iter_mut().zip(s.iter_mut()).zip(inv_freq) {
            let (sv, cv) = ((p * inv) as f64).sin_cos();
            *c = cv as f32 * factor;
            *s = sv as f32 * factor;
        }
    }
}
