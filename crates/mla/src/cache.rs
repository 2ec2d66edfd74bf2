//! The latent KV cache: per layer and per token only the normalised latent `c_KV` (`c` values) and
//! the rotated shared key `k_pe` (`r` values) — never per-head keys or values.

use crate::{Error, Result};

/// The sizes of a model's latent KV cache.
///
/// ```
/// use deepblocks_mla::MlaCacheConfig;
/// // DeepSeek-V2: 60 layers of c 512 + r 64 per token, 163,840 positions.
/// let v2 = MlaCacheConfig { num_layers: 60, kv_lora_rank: 512, qk_rope_head_dim: 64, max_positions: 163_840 };
/// assert_eq!(v2.values_per_token(), 34_560);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaCacheConfig {
    /// Layers `l` (one [`LatentCache`] each).
    pub num_layers: usize,
    /// `c`: the cached latent's width (`kv_lora_rank`).
    pub kv_lora_rank: usize,
    /// `r`: the cached RoPE key's width (`qk_rope_head_dim`).
    pub qk_rope_head_dim: usize,
    /// The most tokens the cache may hold (`max_position_embeddings`).
    pub max_positions: usize,
}

impl MlaCacheConfig {
    /// `(c + r) · l`: values one token leaves in the whole cache (saturating at `usize::MAX`
    /// for sizes [`MlaCacheConfig::validate`] refuses).
    pub fn values_per_token(&self) -> usize {
        self.kv_lora_rank
            .saturating_add(self.qk_rope_head_dim)
            .saturating_mul(self.num_layers)
    }

    /// Checks the sizes.
    ///
    /// # Errors
    /// [`Error::ZeroDim`] naming `kv_lora_rank` or `qk_rope_head_dim` when 0;
    /// [`Error::TooLarge`] when a full layer (`max_positions · (c + r)` f32) does not fit in
    /// memory addresses.
    pub fn validate(&self) -> Result<()> {
        if self.kv_lora_rank == 0 {
            return Err(Error::ZeroDim {
                field: "kv_lora_rank",
            });
        }
        if self.qk_rope_head_dim == 0 {
            return Err(Error::ZeroDim {
                field: "qk_rope_head_dim",
            });
        }
        self.kv_lora_rank
            .checked_add(self.qk_rope_head_dim)
            .and_then(|w| w.checked_mul(self.max_positions))
            .and_then(|v| v.checked_mul(std::mem::size_of::<f32>()))
            .map(|_| ())
            .ok_or(Error::TooLarge {
                weight: "the latent cache [max_positions, c + r]",
            })
    }
}

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
    /// `capacity` tokens (a hint, capped at `max_positions`) before it reallocates, refusing to
    /// grow past `max_positions` tokens. The sizes were validated by [`MlaCacheConfig`].
    pub(crate) fn new(c: usize, r: usize, capacity: usize, max_positions: usize) -> Result<Self> {
        let mut cache = LatentCache {
            c,
            r,
            max_positions,
            c_kv: Vec::new(),
            k_pe: Vec::new(),
        };
        cache.reserve_tokens(capacity.min(max_positions))?;
        Ok(cache)
    }

    /// Reserves room for `tokens` tokens in all (`tokens ≤ max_positions`, so the sizes fit:
    /// [`MlaCacheConfig::validate`]).
    fn reserve_tokens(&mut self, tokens: usize) -> Result<()> {
        let alloc = |_| Error::CacheAlloc {
            tokens,
            bytes: tokens * (self.c + self.r) * std::mem::size_of::<f32>(),
        };
        self.c_kv
            .try_reserve_exact(tokens * self.c - self.c_kv.len())
            .map_err(alloc)?;
        self.k_pe
            .try_reserve_exact(tokens * self.r - self.k_pe.len())
            .map_err(alloc)
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
        if self.len().saturating_add(adding) > self.max_positions {
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
    /// [`Error::Core`] ([`deepblocks_core::Error::Length`]) naming `c_kv` or `k_pe` when the
    /// slices are not `t·c` and `t·r` long; [`Error::ContextFull`] past `max_positions`;
    /// [`Error::CacheAlloc`] when memory runs out. Nothing is appended on error.
    pub fn append(&mut self, c_kv: &[f32], k_pe: &[f32], t: usize) -> Result<()> {
        if t.checked_mul(self.c) != Some(c_kv.len()) {
            return Err(deepblocks_core::Error::length("c_kv", &[t, self.c], c_kv.len()).into());
        }
        if t.checked_mul(self.r) != Some(k_pe.len()) {
            return Err(deepblocks_core::Error::length("k_pe", &[t, self.r], k_pe.len()).into());
        }
        self.check_room(t)?;
        self.grow_for(t)?;
        self.c_kv.extend_from_slice(c_kv);
        self.k_pe.extend_from_slice(k_pe);
        Ok(())
    }

    /// Makes room for `t` more tokens: at least doubling the capacity, never past
    /// `max_positions` (the caller checked that `len + t` fits).
    fn grow_for(&mut self, t: usize) -> Result<()> {
        let (len, cap) = (self.len(), self.k_pe.capacity() / self.r.max(1));
        if len + t <= cap {
            return Ok(());
        }
        self.reserve_tokens((len + t).max(2 * cap).min(self.max_positions))
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
/// DeepSeek-V2 — against `2 · heads · head_dim · layers` for multi-head attention. It grows as
/// it is used (no reservation beyond what [`MlaCache::with_capacity`] asks for).
///
/// ```
/// use deepblocks_mla::{MlaCache, MlaCacheConfig};
/// let config = MlaCacheConfig { num_layers: 2, kv_lora_rank: 512, qk_rope_head_dim: 64, max_positions: 4096 };
/// let mut cache = MlaCache::new(config)?;
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
    config: MlaCacheConfig,
    layers: Vec<LatentCache>,
}

impl MlaCache {
    /// An empty cache of `config`'s sizes, allocating nothing until tokens are appended.
    ///
    /// # Errors
    /// As [`MlaCacheConfig::validate`].
    pub fn new(config: MlaCacheConfig) -> Result<Self> {
        MlaCache::with_capacity(config, 0)
    }

    /// An empty cache with room for `capacity` tokens (capped at `max_positions`) before it
    /// reallocates; past that it grows geometrically, up to `max_positions`.
    ///
    /// # Errors
    /// As [`MlaCacheConfig::validate`]; [`Error::CacheAlloc`] when the memory cannot be
    /// reserved.
    pub fn with_capacity(config: MlaCacheConfig, capacity: usize) -> Result<Self> {
        config.validate()?;
        let (c, r) = (config.kv_lora_rank, config.qk_rope_head_dim);
        Ok(MlaCache {
            config,
            layers: (0..config.num_layers)
                .map(|_| LatentCache::new(c, r, capacity, config.max_positions))
                .collect::<Result<_>>()?,
        })
    }

    /// The sizes it was made for.
    pub fn config(&self) -> &MlaCacheConfig {
        &self.config
    }

    /// Checks that the cache was made for `expected`'s sizes.
    ///
    /// # Errors
    /// [`Error::CacheMismatch`] naming the first size that differs.
    pub fn check_config(&self, expected: &MlaCacheConfig) -> Result<()> {
        let c = &self.config;
        for (what, cache, expected) in [
            ("layers", c.num_layers, expected.num_layers),
            ("kv_lora_rank", c.kv_lora_rank, expected.kv_lora_rank),
            (
                "qk_rope_head_dim",
                c.qk_rope_head_dim,
                expected.qk_rope_head_dim,
            ),
            ("max_positions", c.max_positions, expected.max_positions),
        ] {
            if cache != expected {
                return Err(Error::CacheMismatch {
                    what,
                    cache,
                    expected,
                });
            }
        }
        Ok(())
    }

    /// Checks that every layer holds as many tokens as layer 0, as forward passes leave them.
    ///
    /// # Errors
    /// [`Error::UnevenCache`] naming the first layer that differs.
    pub fn check_even(&self) -> Result<()> {
        let first = self.len();
        match self.layers.iter().position(|l| l.len() != first) {
            Some(layer) => Err(Error::UnevenCache {
                layer,
                len: self.layers[layer].len(),
                first,
            }),
            None => Ok(()),
        }
    }

    /// Checks that `adding` more tokens fit.
    ///
    /// # Errors
    /// [`Error::ContextFull`].
    pub fn check_room(&self, adding: usize) -> Result<()> {
        match self.layers.first() {
            Some(l) => l.check_room(adding),
            None => Ok(()),
        }
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
        self.config.max_positions
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

    /// Drops every token past `len` in every layer, leaving layers already no longer as they
    /// are: undoes a forward pass that failed after some of its layers appended.
    pub fn rollback(&mut self, len: usize) {
        for l in &mut self.layers {
            if l.len() > len {
                l.c_kv.truncate(len * l.c);
                l.k_pe.truncate(len * l.r);
            }
        }
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
