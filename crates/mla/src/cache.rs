//! The latent KV cache: per layer and per token only the normalised latent `c_KV` (`c` values) and
//! the rotated shared key `k_pe` (`r` values) — never per-head keys or values — kept side by side
//! as one row `[c_KV | k_pe]` of `c + r` elements, in f32, bf16, f16 or 8-bit `Q8_0` blocks.

use std::fmt;

use deepblocks_core::aligned::AlignedVec;
use deepblocks_core::half::{bf16, f16};
use deepblocks_core::quant::q8_rows::{
    Q8_BLOCK, q8_dequantize_into, q8_quantize_rows, q8_row_codes,
};
use deepblocks_core::{DType, Element, widen_into};

use crate::{Error, Result};

/// What a latent cache keeps its rows in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // Q8_0 is the format's own name
pub enum CacheDType {
    /// f32: the latents exactly, for reference runs.
    F32,
    /// bf16 (the default): half the bytes of f32.
    BF16,
    /// f16.
    F16,
    /// 8-bit codes with an f32 scale per 32 values: the values of GGUF's `Q8_0` (and of
    /// llama.cpp's `q8_0` KV cache), 1.125 bytes a value — 56% of bf16's bytes. Where the CPU has
    /// VNNI the scores are integer products with the queries quantized the same way
    /// ([`deepblocks_core::quant::q8_rows`]), and where it has AVX-512 VNNI the mix too, with
    /// each block's probabilities (times the codes' scales) quantized to 8 bits per row and
    /// 32 values; elsewhere the rows are widened to f32. A row whose
    /// width `c + r` is not a multiple of 32 ends in a short block (DeepSeek's 512 + 64 has none).
    Q8_0,
}

impl CacheDType {
    /// Every cache type.
    pub const ALL: [CacheDType; 4] = [
        CacheDType::F32,
        CacheDType::BF16,
        CacheDType::F16,
        CacheDType::Q8_0,
    ];

    /// Its name: `F32`, `BF16`, `F16`, `Q8_0`.
    pub const fn name(self) -> &'static str {
        match self {
            CacheDType::F32 => "F32",
            CacheDType::BF16 => "BF16",
            CacheDType::F16 => "F16",
            CacheDType::Q8_0 => "Q8_0",
        }
    }

    /// The float type of the rows, `None` for [`CacheDType::Q8_0`].
    pub const fn float(self) -> Option<DType> {
        match self {
            CacheDType::F32 => Some(DType::F32),
            CacheDType::BF16 => Some(DType::BF16),
            CacheDType::F16 => Some(DType::F16),
            CacheDType::Q8_0 => None,
        }
    }

    /// Bytes of one cached row of `width` values (saturating): `width · size` for the floats;
    /// for [`CacheDType::Q8_0`] a code per value and an f32 scale per block, in whole blocks of
    /// 32 (576 values: 648 bytes).
    pub fn row_bytes(self, width: usize) -> usize {
        match self.float() {
            Some(d) => width.saturating_mul(d.size_bytes()),
            None => width.div_ceil(Q8_BLOCK).saturating_mul(Q8_BLOCK + 4),
        }
    }
}

impl From<DType> for CacheDType {
    fn from(d: DType) -> CacheDType {
        match d {
            DType::F32 => CacheDType::F32,
            DType::BF16 => CacheDType::BF16,
            DType::F16 => CacheDType::F16,
        }
    }
}

impl fmt::Display for CacheDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The element type a cache keeps by default: bf16, half the bytes of f32 for every step to read
/// (the latent is rounded once, when it is appended; `docs/mla.md` states what that does to the
/// logits). [`CacheDType::F32`] keeps the latents exactly, for reference runs;
/// [`CacheDType::Q8_0`] takes 56% of bf16's bytes.
pub const DEFAULT_CACHE_DTYPE: CacheDType = CacheDType::BF16;

/// The cache element type named `name` (`f32`, `bf16`, `f16` or `q8_0`, any case), as a command
/// line gives it.
///
/// ```
/// use deepblocks_mla::{CacheDType, cache_dtype};
/// assert_eq!(cache_dtype("bf16")?, CacheDType::BF16);
/// assert_eq!(cache_dtype("q8_0")?, CacheDType::Q8_0);
/// assert!(cache_dtype("q4_0").unwrap_err().to_string().contains("q4_0"));
/// # Ok::<(), deepblocks_mla::Error>(())
/// ```
///
/// # Errors
/// [`Error::CacheDType`] naming a type the cache cannot hold.
pub fn cache_dtype(name: &str) -> Result<CacheDType> {
    CacheDType::ALL
        .into_iter()
        .find(|d| d.name().eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| Error::CacheDType {
            name: name.to_string(),
        })
}

/// The sizes of a model's latent KV cache, and the element type it keeps.
///
/// ```
/// use deepblocks_mla::{CacheDType, MlaCacheConfig};
/// // DeepSeek-V2: 60 layers of c 512 + r 64 per token, 163,840 positions, bf16.
/// let v2 = MlaCacheConfig {
///     num_layers: 60, kv_lora_rank: 512, qk_rope_head_dim: 64, max_positions: 163_840,
///     dtype: CacheDType::BF16,
/// };
/// assert_eq!(v2.values_per_token(), 34_560);
/// assert_eq!(v2.bytes_per_token(), 69_120);
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
    /// The element type of the cached rows ([`DEFAULT_CACHE_DTYPE`] for models). Any of them
    /// serves any model ([`CacheDType::Q8_0`] when `c + r` is a multiple of 32).
    pub dtype: CacheDType,
}

impl MlaCacheConfig {
    /// `(c + r) · l`: values one token leaves in the whole cache (saturating at `usize::MAX`
    /// for sizes [`MlaCacheConfig::validate`] refuses).
    pub fn values_per_token(&self) -> usize {
        self.kv_lora_rank
            .saturating_add(self.qk_rope_head_dim)
            .saturating_mul(self.num_layers)
    }

    /// Bytes one token leaves in the whole cache (saturating): `l` rows of `c + r` values
    /// ([`CacheDType::row_bytes`]).
    pub fn bytes_per_token(&self) -> usize {
        self.dtype
            .row_bytes(self.kv_lora_rank.saturating_add(self.qk_rope_head_dim))
            .saturating_mul(self.num_layers)
    }

    /// Checks the sizes.
    ///
    /// # Errors
    /// [`Error::ZeroDim`] naming `kv_lora_rank` or `qk_rope_head_dim` when 0;
    /// [`Error::TooLarge`] when a full layer (`max_positions · (c + r)` elements) does not fit
    /// in memory addresses.
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
        // A full layer in f32 (what the widened views may hold) and in the cache's own rows (a
        // Q8_0 row is padded to whole blocks) must fit in memory addresses.
        self.kv_lora_rank
            .checked_add(self.qk_rope_head_dim)
            .and_then(|w| {
                let f32_row = w.checked_mul(std::mem::size_of::<f32>())?;
                let row = match self.dtype {
                    CacheDType::Q8_0 => {
                        f32_row.max(w.div_ceil(Q8_BLOCK).checked_mul(Q8_BLOCK + 4)?)
                    }
                    _ => f32_row,
                };
                row.checked_mul(self.max_positions)
            })
            .map(|_| ())
            .ok_or(Error::TooLarge {
                weight: "the latent cache [max_positions, c + r]",
            })
    }
}

/// Cached rows `[len, c + r]` (`c_KV` then `k_pe` per token) in one of the element types, as the
/// attention cores read them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatentRows<'a> {
    /// f32 rows.
    F32(&'a [f32]),
    /// bf16 rows.
    BF16(&'a [bf16]),
    /// f16 rows.
    F16(&'a [f16]),
    /// `Q8_0` rows ([`deepblocks_core::quant::q8_rows`]): each row's `width` codes padded to
    /// whole blocks of 32 (`stride` = `width` rounded up), code `i` of the run worth
    /// `scales[i / 32] · (codes[i] − 128)`.
    Q8_0 {
        /// `[len, stride]`: the codes offset by 128.
        codes: &'a [u8],
        /// `[len, stride / 32]`: the blocks' scales.
        scales: &'a [f32],
        /// Values per row, `c + r`.
        width: usize,
    },
}

impl<'a> LatentRows<'a> {
    /// Elements (rows × `c + r`).
    pub fn len(&self) -> usize {
        match self {
            LatentRows::F32(x) => x.len(),
            LatentRows::BF16(x) => x.len(),
            LatentRows::F16(x) => x.len(),
            LatentRows::Q8_0 { codes, width, .. } => {
                codes.len() / q8_row_codes(*width).max(1) * width
            }
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn dtype(&self) -> CacheDType {
        match self {
            LatentRows::F32(_) => CacheDType::F32,
            LatentRows::BF16(_) => CacheDType::BF16,
            LatentRows::F16(_) => CacheDType::F16,
            LatentRows::Q8_0 { .. } => CacheDType::Q8_0,
        }
    }

    /// Whether the parts agree: a `Q8_0` view holds whole rows of codes and one scale per 32
    /// codes (the other types have one part).
    pub(crate) fn is_consistent(&self) -> bool {
        match self {
            LatentRows::Q8_0 {
                codes,
                scales,
                width,
            } => {
                let stride = q8_row_codes(*width);
                stride > 0
                    && codes.len().is_multiple_of(stride)
                    && scales.len() == codes.len() / Q8_BLOCK
            }
            _ => true,
        }
    }

    /// `out[i] = self[start + i]` widened (or dequantized) to f32, for `out.len()` elements.
    ///
    /// # Panics
    /// If `start + out.len()` passes the end (an internal invariant of the callers).
    pub fn widen_into(&self, out: &mut [f32], start: usize) {
        let end = start + out.len();
        match self {
            LatentRows::F32(x) => out.copy_from_slice(&x[start..end]),
            LatentRows::BF16(x) => widen_into(out, &x[start..end]),
            LatentRows::F16(x) => widen_into(out, &x[start..end]),
            LatentRows::Q8_0 {
                codes,
                scales,
                width,
            } => {
                // Row by row: the codes of value v are at (v / width)·stride + v % width.
                let stride = q8_row_codes(*width);
                let (mut v, mut done) = (start, 0);
                while done < out.len() {
                    let (row, col) = (v / width, v % width);
                    let n = (width - col).min(out.len() - done);
                    q8_dequantize_into(&mut out[done..done + n], codes, scales, row * stride + col);
                    v += n;
                    done += n;
                }
            }
        }
    }

    /// The columns `col..col + width` of every `row_width`-wide row, widened to f32:
    /// `[rows, width]` (e.g. `c_KV` alone, for the naive core).
    pub fn columns_f32(&self, row_width: usize, col: usize, width: usize) -> Vec<f32> {
        let rows = self.len().checked_div(row_width).unwrap_or(0);
        let mut out = vec![0.0f32; rows * width];
        for (j, o) in out.chunks_exact_mut(width.max(1)).enumerate().take(rows) {
            self.widen_into(o, j * row_width + col);
        }
        out
    }
}

/// A layer's rows in their element type.
#[derive(Debug, Clone)]
enum Rows {
    F32(AlignedVec<f32>),
    BF16(AlignedVec<bf16>),
    F16(AlignedVec<f16>),
    Q8_0 {
        codes: AlignedVec<u8>,   // [len, stride]: stride = c + r in whole blocks
        scales: AlignedVec<f32>, // [len, stride / 32]
        width: usize,            // c + r
    },
}

/// Runs `$body` with `$v` bound to the vector of whichever float type `$rows` holds, or
/// `$q8` with `$codes`, `$scales` and `$width` bound for `Q8_0` rows.
macro_rules! with_rows {
    ($rows:expr, $v:ident => $body:expr, $codes:ident, $scales:ident, $width:ident => $q8:expr) => {
        match $rows {
            Rows::F32($v) => $body,
            Rows::BF16($v) => $body,
            Rows::F16($v) => $body,
            Rows::Q8_0 {
                codes: $codes,
                scales: $scales,
                width: $width,
            } => $q8,
        }
    };
}

impl Rows {
    /// Empty rows of `width` values.
    fn new(dtype: CacheDType, width: usize) -> Rows {
        match dtype {
            CacheDType::F32 => Rows::F32(AlignedVec::new()),
            CacheDType::BF16 => Rows::BF16(AlignedVec::new()),
            CacheDType::F16 => Rows::F16(AlignedVec::new()),
            CacheDType::Q8_0 => Rows::Q8_0 {
                codes: AlignedVec::new(),
                scales: AlignedVec::new(),
                width,
            },
        }
    }

    /// Values held (rows · width).
    fn len(&self) -> usize {
        with_rows!(self, v => v.len(), codes, _s, width => codes.len() / q8_row_codes(*width) * width)
    }

    /// Values there is room for (rows · width).
    fn capacity(&self) -> usize {
        with_rows!(self, v => v.capacity(), codes, scales, width => {
            let stride = q8_row_codes(*width);
            let rows = (codes.capacity() / stride).min(scales.capacity() / (stride / Q8_BLOCK));
            rows * width
        })
    }

    /// Room for `more` more values (a whole number of rows).
    fn try_reserve_exact(&mut self, more: usize) -> std::result::Result<(), ()> {
        with_rows!(self, v => v.try_reserve_exact(more).map_err(|_| ()), codes, scales, width => {
            let (rows, stride) = (more / *width, q8_row_codes(*width));
            codes.try_reserve_exact(rows.checked_mul(stride).ok_or(())?).map_err(|_| ())?;
            scales.try_reserve_exact(rows * (stride / Q8_BLOCK)).map_err(|_| ())
        })
    }

    /// Keeps the first `len` values (a whole number of rows).
    fn truncate(&mut self, len: usize) {
        with_rows!(self, v => v.truncate(len), codes, scales, width => {
            let (rows, stride) = (len / *width, q8_row_codes(*width));
            codes.truncate(rows * stride);
            scales.truncate(rows * (stride / Q8_BLOCK));
        })
    }

    /// Appends the rows `[c_kv_i | k_pe_i]` of `c_kv[t, c]` and `k_pe[t, r]`, narrowing to the
    /// element type (round to nearest even) or quantizing (`Q8_0`: ggml's quantizer).
    /// `c, r ≥ 1` ([`MlaCacheConfig::validate`]).
    fn push(&mut self, c_kv: &[f32], k_pe: &[f32], c: usize, r: usize) {
        fn push<T: Element>(v: &mut AlignedVec<T>, c_kv: &[f32], k_pe: &[f32], c: usize, r: usize) {
            for (ck, kp) in c_kv.chunks_exact(c).zip(k_pe.chunks_exact(r)) {
                v.extend(ck.iter().chain(kp).map(|&x| T::from_f32(x)));
            }
        }
        with_rows!(self, v => push(v, c_kv, k_pe, c, r), codes, scales, width => {
            // The rows [c_kv_i | k_pe_i] side by side, then quantized as one matrix.
            let mut rows = Vec::with_capacity(c_kv.len() + k_pe.len());
            for (ck, kp) in c_kv.chunks_exact(c).zip(k_pe.chunks_exact(r)) {
                rows.extend_from_slice(ck);
                rows.extend_from_slice(kp);
            }
            let t = rows.len() / *width;
            let stride = q8_row_codes(*width);
            let (n, m) = (codes.len(), scales.len());
            codes.resize_zeroed(n + t * stride);
            scales.resize_zeroed(m + t * (stride / Q8_BLOCK));
            q8_quantize_rows(&mut codes[n..], &mut scales[m..], &rows, *width);
        })
    }

    fn view(&self) -> LatentRows<'_> {
        match self {
            Rows::F32(v) => LatentRows::F32(v),
            Rows::BF16(v) => LatentRows::BF16(v),
            Rows::F16(v) => LatentRows::F16(v),
            Rows::Q8_0 {
                codes,
                scales,
                width,
            } => LatentRows::Q8_0 {
                codes,
                scales,
                width: *width,
            },
        }
    }
}

/// One layer's latent cache: rows `[len, c + r]`, each the normalised latent `c_KV` (`c` values,
/// `kv_a_layernorm` applied) then the shared RoPE key `k_pe` (`r` values, rotated at its
/// position), in the cache's element type.
#[derive(Debug, Clone)]
pub struct LatentCache {
    c: usize,
    r: usize,
    max_positions: usize,
    rows: Rows, // [len, c + r]
}

impl LatentCache {
    /// An empty layer cache for `c`-wide latents and `r`-wide rope keys in `dtype`, with room
    /// for `capacity` tokens (a hint, capped at `max_positions`) before it reallocates, refusing
    /// to grow past `max_positions` tokens. The sizes were validated by [`MlaCacheConfig`].
    pub(crate) fn new(
        c: usize,
        r: usize,
        dtype: CacheDType,
        capacity: usize,
        max_positions: usize,
    ) -> Result<Self> {
        let mut cache = LatentCache {
            c,
            r,
            max_positions,
            rows: Rows::new(dtype, c + r),
        };
        cache.reserve_tokens(capacity.min(max_positions))?;
        Ok(cache)
    }

    /// Reserves room for `tokens` tokens in all (`tokens ≤ max_positions`, so the sizes fit:
    /// [`MlaCacheConfig::validate`]).
    fn reserve_tokens(&mut self, tokens: usize) -> Result<()> {
        let width = self.c + self.r;
        let more = (tokens * width).saturating_sub(self.rows.len());
        self.rows
            .try_reserve_exact(more)
            .map_err(|()| Error::CacheAlloc {
                tokens,
                bytes: tokens.saturating_mul(self.dtype().row_bytes(width)),
            })
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.rows.len() / (self.c + self.r)
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.rows.len() == 0
    }

    /// `(c, r)`: the widths of a cached latent and rope key.
    pub fn dims(&self) -> (usize, usize) {
        (self.c, self.r)
    }

    /// The element type of the cached rows.
    pub fn dtype(&self) -> CacheDType {
        self.rows.view().dtype()
    }

    /// The cached rows `[len, c + r]` (`c_KV` then `k_pe` per token), as the attention cores
    /// take them.
    pub fn rows(&self) -> LatentRows<'_> {
        self.rows.view()
    }

    /// The cached latents `c_kv[len, c]`, widened to f32 (a copy).
    pub fn c_kv_f32(&self) -> Vec<f32> {
        self.rows().columns_f32(self.c + self.r, 0, self.c)
    }

    /// The cached rotated rope keys `k_pe[len, r]`, widened to f32 (a copy).
    pub fn k_pe_f32(&self) -> Vec<f32> {
        self.rows().columns_f32(self.c + self.r, self.c, self.r)
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

    /// Appends `t` tokens: `c_kv[t, c]` and `k_pe[t, r]`, narrowed to the cache's element type
    /// (rounding to nearest even).
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
        self.rows.push(c_kv, k_pe, self.c, self.r);
        Ok(())
    }

    /// Makes room for `t` more tokens: at least doubling the capacity, never past
    /// `max_positions` (the caller checked that `len + t` fits).
    fn grow_for(&mut self, t: usize) -> Result<()> {
        let (len, cap) = (self.len(), self.rows.capacity() / (self.c + self.r));
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
        self.rows.truncate(len * (self.c + self.r));
        Ok(())
    }

    /// Bytes held by the cached tokens: `len` rows of [`CacheDType::row_bytes`]`(c + r)`.
    pub fn bytes(&self) -> usize {
        self.len() * self.dtype().row_bytes(self.c + self.r)
    }

    /// Bytes reserved (capacity, not length).
    pub fn capacity_bytes(&self) -> usize {
        self.rows.capacity() / (self.c + self.r) * self.dtype().row_bytes(self.c + self.r)
    }
}

/// The latent KV cache of a whole model: one [`LatentCache`] per layer.
///
/// Per token it holds `(kv_lora_rank + qk_rope_head_dim) · layers` values — 576 · 60 for
/// DeepSeek-V2 — against `2 · heads · head_dim · layers` for multi-head attention, in the
/// config's element type (bf16 by default: 2 bytes each). It grows as it is used (no
/// reservation beyond what [`MlaCache::with_capacity`] asks for).
///
/// ```
/// use deepblocks_mla::{CacheDType, MlaCache, MlaCacheConfig};
/// let config = MlaCacheConfig {
///     num_layers: 2, kv_lora_rank: 512, qk_rope_head_dim: 64, max_positions: 4096,
///     dtype: CacheDType::BF16,
/// };
/// let mut cache = MlaCache::new(config)?;
/// for l in 0..2 {
///     cache.layer_mut(l)?.append(&vec![0.5; 3 * 512], &vec![0.25; 3 * 64], 3)?;
/// }
/// assert_eq!(cache.len(), 3);
/// assert_eq!(cache.bytes(), 3 * (512 + 64) * 2 * 2);
/// assert_eq!(cache.layer(1)?.k_pe_f32()[..2], [0.25, 0.25]);
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
                .map(|_| LatentCache::new(c, r, config.dtype, capacity, config.max_positions))
                .collect::<Result<_>>()?,
        })
    }

    /// The sizes it was made for.
    pub fn config(&self) -> &MlaCacheConfig {
        &self.config
    }

    /// The element type of its rows.
    pub fn dtype(&self) -> CacheDType {
        self.config.dtype
    }

    /// Checks that the cache was made for `expected`'s sizes (its element type may differ:
    /// every type serves every model).
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
                l.rows.truncate(len * (l.c + l.r));
            }
        }
    }

    /// Empties every layer, keeping the allocation.
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            l.rows.truncate(0);
        }
    }

    /// Bytes held by the cached tokens over all layers: `len · layers` rows of
    /// [`CacheDType::row_bytes`]`(c + r)`.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(LatentCache::bytes).sum()
    }

    /// Bytes reserved over all layers.
    pub fn capacity_bytes(&self) -> usize {
        self.layers.iter().map(LatentCache::capacity_bytes).sum()
    }
}
