//! The latent KV cache: per layer and per token only the normalised latent `c_KV` (`c` values) and
//! the rotated shared key `k_pe` (`r` values) — never per-head keys or values.

use crate::{Error, Result};

/// One layer's latent cache.
#[derive(Debug, Clone)]
pub struct LatentCache {
    c: usize,
    r: usize,
    max_positions: usize,
    c_kv: Vec<f32>, // [len, c], normalised latents (kv_a_layernorm applied)
    k_pe: Vec<f32>, // [len, r], shared rope keys, already rotated at their positions
}

impl LatentCache {
    /// An empty layer cache for `c`-wide latents and `r`-wide rope keys, with room for
    /// `capacity` tokens before it reallocates, refusing to grow past `max_positions` tokens.
    pub fn new(c: usize, r: usize, capacity: usize, max_positions: usize) -> Self {
        let capacity = capacity.min(max_positions);
        LatentCache {
            c,
            r,
            max_positions,
            c_kv: Vec::with_capacity(capacity * c),
            k_pe: Vec::with_capacity(capacity * r),
        }
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.k_pe.len().checked_div(self.r).unwrap_or(0)
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.k_pe.is_empty()
    }

    /// `(c, r)`: the widths of a cached latent and rope key.
    pub fn dims(&self) -> (usize, usize) {
        (self.c, self.r)
    }

    /// The cached latents `c_kv[len, c]`.
    pub fn c_kv(&self) -> &[f32] {
        &self.c_kv
    }

    /// The cached rotated rope keys `k_pe[len, r]`.
    pub fn k_pe(&self) -> &[f32] {
        &self.k_pe
    }

    /// Checks that `adding` more tokens fit under `max_positions`.
    ///
    /// # Errors
    /// [`Error::ContextFull`].
    pub fn check_room(&self, adding: usize) -> Result<()> {
        if self.len() + adding > self.max_positions {
            return Err(Error::ContextFull {
                cached: self.len(),
                adding,
                max_position_embeddings: self.max_positions,
            });
        }
        Ok(())
    }

    /// Appends `t` tokens: `c_kv[t, c]` and `k_pe[t, r]`.
    ///
    /// # Errors
    /// [`Error::ContextFull`] past `max_positions` (nothing is appended).
    ///
    /// # Panics
    /// If the slices are not `t·c` and `t·r` long.
    pub fn append(&mut self, c_kv: &[f32], k_pe: &[f32], t: usize) -> Result<()> {
        assert_eq!(
            c_kv.len(),
            t * self.c,
            "LatentCache::append: c_kv is not [t, c]"
        );
        assert_eq!(
            k_pe.len(),
            t * self.r,
            "LatentCache::append: k_pe is not [t, r]"
        );
        self.check_room(t)?;
        self.c_kv.extend_from_slice(c_kv);
        self.k_pe.extend_from_slice(k_pe);
        Ok(())
    }

    /// Keeps the first `len` tokens (rollback).
    ///
    /// # Errors
    /// [`Error::TruncateBeyond`] if `len` exceeds the current length.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len() {
            return Err(Error::TruncateBeyond {
                len: self.len(),
                to: len,
            });
        }
        self.c_kv.truncate(len * self.c);
        self.k_pe.truncate(len * self.r);
        Ok(())
    }

    /// Bytes held by the cached tokens: `len · (c + r) · 4`.
    pub fn bytes(&self) -> usize {
        (self.c_kv.len() + self.k_pe.len()) * std::mem::size_of::<f32>()
    }

    /// Bytes reserved (capacity, not length).
    pub fn capacity_bytes(&self) -> usize {
        (self.c_kv.capacity() + self.k_pe.capacity()) * std::mem::size_of::<f32>()
    }
}

/// The latent KV cache of a whole model: one [`LatentCache`] per layer.
///
/// Per token it holds `(kv_lora_rank + qk_rope_head_dim) · layers` f32 values — 576 · 60 for
/// DeepSeek-V2 — against `2 · heads · head_dim · layers` for multi-head attention.
///
/// ```
/// use deepblocks_mla::MlaCache;
/// let mut cache = MlaCache::new(2, 512, 64, 16, 4096)?; // 2 layers, c 512, r 64
/// for l in 0..2 {
///     cache.layer_mut(l)?.append(&vec![0.0; 3 * 512], &vec![0.0; 3 * 64], 3)?;
/// }
/// assert_eq!(cache.len(), 3);
/// assert_eq!(cache.bytes(), 3 * (512 + 64) * 2 * 4);
/// cache.truncate(1)?;
/// assert_eq!(cache.len(), 1);
/// # Ok::<(), deepblocks_mla::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MlaCache {
    layers: Vec<LatentCache>,
    max_positions: usize,
}

impl MlaCache {
    /// An empty cache of `layers` layers of `c`-wide latents and `r`-wide rope keys,
    /// preallocated for `capacity` tokens, holding at most `max_position_embeddings`.
    ///
    /// # Errors
    /// [`Error::ZeroDim`] naming `kv_lora_rank` or `qk_rope_head_dim` if `c` or `r` is 0.
    pub fn new(
        layers: usize,
        c: usize,
        r: usize,
        capacity: usize,
        max_position_embeddings: usize,
    ) -> Result<Self> {
        if c == 0 {
            return Err(Error::ZeroDim {
                field: "kv_lora_rank",
            });
        }
        if r == 0 {
            return Err(Error::ZeroDim {
                field: "qk_rope_head_dim",
            });
        }
        Ok(MlaCache {
            layers: (0..layers)
                .map(|_| LatentCache::new(c, r, capacity, max_position_embeddings))
                .collect(),
            max_positions: max_position_embeddings,
        })
    }

    /// Tokens cached: the length of layer 0 (every layer has the same length between forward
    /// passes; a pass appends to each layer in turn).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LatentCache::len)
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The maximum number of tokens.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Layer `l`.
    ///
    /// # Errors
    /// [`Error::NoSuchLayer`].
    pub fn layer(&self, l: usize) -> Result<&LatentCache> {
        let layers = self.layers.len();
        self.layers
            .get(l)
            .ok_or(Error::NoSuchLayer { layer: l, layers })
    }

    /// Layer `l`, mutably.
    ///
    /// # Errors
    /// [`Error::NoSuchLayer`].
    pub fn layer_mut(&mut self, l: usize) -> Result<&mut LatentCache> {
        let layers = self.layers.len();
        self.layers
            .get_mut(l)
            .ok_or(Error::NoSuchLayer { layer: l, layers })
    }

    /// Keeps the first `len` tokens of every layer (rollback, e.g. after speculative decoding).
    ///
    /// # Errors
    /// [`Error::TruncateBeyond`] if `len` exceeds a layer's length (nothing is changed).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if let Some(l) = self.layers.iter().find(|l| len > l.len()) {
            return Err(Error::TruncateBeyond {
                len: l.len(),
                to: len,
            });
        }
        for l in &mut self.layers {
            l.truncate(len)?;
        }
        Ok(())
    }

    /// Empties every layer, keeping the allocation.
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            l.c_kv.clear();
            l.k_pe.clear();
        }
    }

    /// Bytes held by the cached tokens over all layers: `len · (c + r) · layers · 4`.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LatentCache::bytes).sum()
    }

    /// Bytes reserved over all layers.
    pub fn capacity_bytes(&self) -> usize {
        self.layers.iter().map(LatentCache::capacity_bytes).sum()
    }
}
