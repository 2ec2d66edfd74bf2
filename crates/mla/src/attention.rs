//! The MLA block: config, weights, the attention cores over a latent cache, and the layer.

use std::sync::OnceLock;

use deepblocks_core::{Weight, WeightFormat, linear, on_pool};
use deepblocks_norm::RmsNorm;
use deepblocks_rope::{CosSin, RopeTable};
use rayon::prelude::*;

use crate::flash::{Blocking, FlashShape, Kv, Products, Strided, flash_attention};
use crate::{CacheDType, Error, LatentCache, LatentRows, Result};

/// How the query is produced (`q_lora_rank` in the checkpoint config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QProjConfig {
    /// `q = q_proj(x)` (`q_lora_rank: null`, DeepSeek-V2-Lite).
    Full,
    /// `q = q_b_proj(RMSNorm(q_a_proj(x)))` through a rank-`q_lora_rank` latent (DeepSeek-V2: 1536).
    LowRank {
        /// The query latent width `q`.
        q_lora_rank: usize,
    },
}

/// The configuration of one MLA layer, in the checkpoint's names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlaConfig {
    /// `h`: the model width.
    pub hidden_size: usize,
    /// `n`: attention heads.
    pub num_heads: usize,
    /// Full or low-rank query projection.
    pub q_proj: QProjConfig,
    /// `c`: the KV latent width (512 in DeepSeek-V2).
    pub kv_lora_rank: usize,
    /// `d`: per-head query/key features without RoPE (128).
    pub qk_nope_head_dim: usize,
    /// `r`: per-head query features with RoPE, and the shared RoPE key's width (64).
    pub qk_rope_head_dim: usize,
    /// `v`: per-head value features (128).
    pub v_head_dim: usize,
    /// The factor on `q·k` before the softmax: `(d + r)^−½`, times YaRN's `mscale²` when the
    /// checkpoint sets `mscale_all_dim` — take it from [`crate::softmax_scale`].
    pub softmax_scale: f32,
}

impl MlaConfig {
    /// `d + r`: the width of one head's query and key.
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// `c + r`: values cached per token and layer.
    pub fn cache_values_per_token(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    /// Checks every field, and that every weight's element count fits in a `usize` (so the
    /// layer's own size arithmetic cannot overflow).
    ///
    /// # Errors
    /// [`Error::ZeroDim`] naming the first zero dimension, [`Error::SoftmaxScale`],
    /// [`Error::TooLarge`] naming the weight whose size overflows.
    pub fn validate(&self) -> Result<()> {
        let q_rank = match self.q_proj {
            QProjConfig::Full => 1,
            QProjConfig::LowRank { q_lora_rank } => q_lora_rank,
        };
        for (field, v) in [
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
            ("q_lora_rank", q_rank),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
        ] {
            if v == 0 {
                return Err(Error::ZeroDim { field });
            }
        }
        if !(self.softmax_scale.is_finite() && self.softmax_scale > 0.0) {
            return Err(Error::SoftmaxScale(self.softmax_scale));
        }
        let (h, n, c) = (self.hidden_size, self.num_heads, self.kv_lora_rank);
        let (d, r, v) = (
            self.qk_nope_head_dim,
            self.qk_rope_head_dim,
            self.v_head_dim,
        );
        let fits = |weight: &'static str, factors: &[usize]| {
            factors
                .iter()
                .try_fold(std::mem::size_of::<f32>(), |a, &f| a.checked_mul(f))
                .map(|_| ())
                .ok_or(Error::TooLarge { weight })
        };
        let dr = d
            .checked_add(r)
            .ok_or(Error::TooLarge { weight: "q_b_proj" })?;
        let dv = d.checked_add(v).ok_or(Error::TooLarge {
            weight: "kv_b_proj",
        })?;
        let cr = c.checked_add(r).ok_or(Error::TooLarge {
            weight: "kv_a_proj_with_mqa",
        })?;
        fits("q_proj", &[n, dr, h.max(q_rank)])?;
        fits("q_a_proj", &[q_rank, h])?;
        fits("kv_a_proj_with_mqa", &[cr, h])?;
        fits("kv_b_proj", &[n, dv, c])?;
        fits("o_proj", &[h, n, v])
    }
}

/// The query projection's weights.
#[derive(Debug, Clone)]
pub enum QProj {
    /// A plain projection.
    Full {
        /// `q_proj.weight`.
        q_proj: Weight, // [n*(d+r), h]
    },
    /// Down-projection, norm, up-projection.
    LowRank {
        /// `q_a_proj.weight`.
        q_a_proj: Weight, // [q, h]
        /// `q_a_layernorm.weight`.
        q_a_layernorm: RmsNorm, // [q]
        /// `q_b_proj.weight`.
        q_b_proj: Weight, // [n*(d+r), q]
    },
}

/// The weights of one MLA layer, named as in the checkpoint.
#[derive(Debug, Clone)]
pub struct MlaWeights {
    /// The query projection.
    pub q: QProj,
    /// `kv_a_proj_with_mqa.weight`: the KV latent and the shared RoPE key in one projection.
    pub kv_a_proj_with_mqa: Weight, // [c + r, h]
    /// `kv_a_layernorm.weight`.
    pub kv_a_layernorm: RmsNorm, // [c]
    /// The latent's up-projection to the per-head keys and values, as the checkpoint stores it.
    pub kv_b: KvB,
    /// `o_proj.weight`.
    pub o_proj: Weight, // [h, n*v]
}

/// The up-projection from the KV latent to each head's key (no-RoPE part) and value: report
/// eq. 10–11's `W^UK` and `W^UV`, in one of the two layouts checkpoints use.
#[derive(Debug, Clone)]
pub enum KvB {
    /// `kv_b_proj.weight` (Hugging Face checkpoints): per head, `d` rows of `W_UK` then `v` rows
    /// of `W_UV`.
    Stacked {
        /// `kv_b_proj.weight`.
        kv_b_proj: Weight, // [n*(d+v), c]
    },
    /// llama.cpp's split (`attn_k_b`, `attn_v_b`): the two pieces the absorbed path reads,
    /// head after head, `W_UK_hᵀ` and `W_UV_h`.
    Split {
        /// `attn_k_b`: each head's `W_UK_hᵀ`.
        k_b: Weight, // [n*c, d]
        /// `attn_v_b`: each head's `W_UV_h`.
        v_b: Weight, // [n*v, c]
    },
}

impl KvB {
    /// llama.cpp's split of a stacked `kv_b_proj [n·(d+v), c]`, in f32 (the form a recipe then
    /// quantizes half by half): `[k_b, v_b]` for [`KvB::Split`], `k_b [n·c, d]` each head's
    /// `W_UKᵀ`, `v_b [n·v, c]` each head's `W_UV`.
    ///
    /// # Errors
    /// A core [`Shape`](deepblocks_core::Error::Shape) error naming `kv_b_proj` when it does not
    /// have `n·(d+v)` rows.
    pub fn split_stacked(kv_b_proj: &Weight, n: usize, d: usize, v: usize) -> Result<[Weight; 2]> {
        let c = kv_b_proj.cols();
        let rows = n.checked_mul(d + v).ok_or(Error::TooLarge {
            weight: "kv_b_proj",
        })?;
        if kv_b_proj.rows() != rows {
            return Err(
                deepblocks_core::Error::shape("kv_b_proj", &[rows, c], &kv_b_proj.shape()).into(),
            );
        }
        let w = kv_b_proj.to_f32_vec(); // [n·(d+v), c]
        let (mut k_b, mut v_b) = (Vec::with_capacity(n * c * d), Vec::with_capacity(n * v * c));
        for head in w.chunks_exact((d + v) * c) {
            for j in 0..c {
                k_b.extend((0..d).map(|i| head[i * c + j]));
            }
            v_b.extend_from_slice(&head[d * c..]);
        }
        Ok([
            Weight::from_f32(k_b, n * c, d)?,
            Weight::from_f32(v_b, n * v, c)?,
        ])
    }
}

impl From<Weight> for KvB {
    /// The stacked `kv_b_proj`.
    fn from(kv_b_proj: Weight) -> Self {
        KvB::Stacked { kv_b_proj }
    }
}

/// Which attention core [`Mla::forward`] runs; all give the same result (to rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionPath {
    /// [`attention_naive`]: expand every cached latent into per-head keys and values through
    /// `kv_b_proj`, then plain causal attention — transformers' computation, the reference. Cost
    /// per (query, key) pair and head: `d + r + v` multiply-adds, after `n·(d+v)·c` per cached
    /// token to expand it.
    Naive,
    /// [`attention_absorbed`]: fold `W_UK` into the query and `W_UV` into the output, so scores
    /// are taken against the cached latent directly and no per-head key or value is ever formed.
    /// Cost per (query, key) pair and head: `2c + r`, independent of `d` and `v`.
    Absorbed,
    /// Whichever core is cheaper for the call ([`AttentionShape::costs`], the absorbed core's
    /// attention counted [`AttentionShape::attention_speedup`] times cheaper where it runs on
    /// faster kernels: [`AttentionPath::resolve_for`]): the absorbed one for decode steps and short additions to a
    /// long cache, the naive one for prompts whose own length repays expanding the cache.
    #[default]
    Auto,
}

/// How many times faster per multiply-add the absorbed core's attention (scores and mix) runs on
/// the AMX tile unit than the f32 products: 2, measured on a Sapphire Rapids host with
/// `cargo bench --bench mla` (decode steps over 4,096–32,768 cached tokens and prompts of 16–256
/// tokens over 4,096; docs/mla.md). The tiles' own rate is far higher; reading the cache and
/// the softmax between the products bound it.
pub const TILE_SPEEDUP: f64 = 2.0;

/// How many times faster per multiply-add the absorbed core's attention runs where a bf16 cache
/// is read in place on AVX-512 without the tile unit (`deepblocks_core::bf16_rows`) than the
/// naive core's f32 products: 1.6, from the prefill crossover measured on an Ice Lake-SP host
/// with `cargo bench --bench mla` (three runs; docs/mla.md): 256 new tokens over 4,096 ran
/// 1.28–1.43× faster absorbed although the absorbed core counts 1.32× the multiply-adds, 512 over
/// 4,096 1.11–1.15× faster naive, which counts 1.89× fewer. Any factor from 1.34 to 1.94 orders
/// every prompt of that table as measured.
pub const IN_PLACE_SPEEDUP: f64 = 1.6;

/// How many times faster per multiply-add the absorbed core's attention runs over a bf16 cache
/// where its scores and mix are AVX512-BF16 dot products ([`deepblocks_core::bf16_dot`]: the
/// queries and probabilities rounded to bf16) than the naive core's f32 products: 2.2, from the
/// prefill crossover measured on an AMD Zen 4 host with `cargo bench --bench mla` (docs/mla.md):
/// 256 and 512 new tokens over 4,096 ran 1.63× and 1.25× faster absorbed, where the absorbed
/// core counts 1.33× and 1.95× the naive core's multiply-adds, and 1,024 over 4,096 1.20× faster
/// naive, which counts 2.53× fewer. Any factor from 1.95 to 2.53 orders those prompts as
/// measured.
pub const BF16_DOT_SPEEDUP: f64 = 2.2;

/// How many times faster per multiply-add the absorbed core's attention runs over a `Q8_0` cache
/// where both its products are integer sums (`vpdpbusd` on AVX-512 VNNI:
/// [`deepblocks_core::quant::q8_rows::integer_mix`]) than the naive core's f32 products: 2.6,
/// from the prefill crossover measured on an Ice Lake-SP host with `cargo bench --bench mla`
/// (two runs; docs/mla.md): 256, 512 and 1,024 new tokens over 4,096 ran faster absorbed,
/// where the absorbed core counts 1.33×, 1.95× and 2.53× the naive core's multiply-adds.
pub const INTEGER_SPEEDUP: f64 = 2.6;

impl AttentionPath {
    /// The core this path runs for a call of `shape`: itself, or for [`AttentionPath::Auto`] the
    /// cheaper one.
    ///
    /// ```
    /// use deepblocks_mla::{AttentionPath, AttentionShape};
    /// let lite = |t, s| AttentionShape { t, s, n: 16, d: 128, r: 64, v: 128, c: 512, softmax_scale: 0.07 };
    /// assert_eq!(AttentionPath::Auto.resolve(&lite(1, 4096)), AttentionPath::Absorbed);
    /// assert_eq!(AttentionPath::Auto.resolve(&lite(4096, 4096)), AttentionPath::Naive);
    /// assert_eq!(AttentionPath::Absorbed.resolve(&lite(4096, 4096)), AttentionPath::Absorbed);
    /// ```
    pub fn resolve(self, shape: &AttentionShape) -> AttentionPath {
        match self {
            AttentionPath::Auto => {
                // Both cores run at about the same rate per multiply-add (docs/mla.md, "Which
                // core, when"), so the counts decide as they are.
                let (naive, absorbed) = shape.costs();
                if naive < absorbed {
                    AttentionPath::Naive
                } else {
                    AttentionPath::Absorbed
                }
            }
            path => path,
        }
    }

    /// [`AttentionPath::resolve`] for a latent cache of `cache_dtype`: where the absorbed core's
    /// scores and mix run on faster kernels than the naive core's f32 products, their
    /// multiply-adds count [`AttentionShape::attention_speedup`] times less ([`TILE_SPEEDUP`] on
    /// the AMX tile unit, [`BF16_DOT_SPEEDUP`] for a bf16 cache on AVX512-BF16's dot products,
    /// [`IN_PLACE_SPEEDUP`] for a bf16 cache read in place on AVX-512,
    /// [`INTEGER_SPEEDUP`] for a `Q8_0` cache in integers on AVX-512 VNNI). What a forward pass
    /// runs.
    ///
    /// ```
    /// use deepblocks_mla::{AttentionPath, AttentionShape, DType};
    /// let lite = |t, s| AttentionShape { t, s, n: 16, d: 128, r: 64, v: 128, c: 512, softmax_scale: 0.07 };
    /// let step = lite(1, 4096);
    /// assert_eq!(AttentionPath::Auto.resolve_for(&step, DType::BF16), AttentionPath::Absorbed);
    /// assert_eq!(AttentionPath::Auto.resolve_for(&lite(4096, 4096), DType::F32), AttentionPath::Naive);
    /// ```
    pub fn resolve_for(
        self,
        shape: &AttentionShape,
        cache_dtype: impl Into<CacheDType>,
    ) -> AttentionPath {
        let cache_dtype = cache_dtype.into();
        match self {
            AttentionPath::Auto => {
                let (naive, absorbed) = shape.costs();
                let folds = shape.costs_folds();
                let absorbed = folds + (absorbed - folds) / shape.attention_speedup(cache_dtype);
                if naive < absorbed {
                    AttentionPath::Naive
                } else {
                    AttentionPath::Absorbed
                }
            }
            path => path,
        }
    }
}

/// The latent's up-projection in both forms the attention cores read: `kv_b_proj` (report
/// eq. 10–11: `W^UK` and `W^UV` stacked per head; the naive core) and the per-head pieces of the
/// absorbed core, `W_UK_hᵀ` and `W_UV_h`.
///
/// From a stacked `kv_b_proj`, `W_UV_h` are views of it and `W_UK_hᵀ` a transposed copy in the
/// stored dtype (f32 for a block format). From llama.cpp's split, the pieces are views of
/// `attn_k_b` / `attn_v_b` in their stored formats, and `kv_b_proj` is built in f32 the first
/// time the naive core asks for it.
#[derive(Debug, Clone)]
pub struct KvUpProjection {
    kv_b_proj: OnceLock<Weight>, // [n*(d+v), c]
    split: Option<[Weight; 2]>,  // attn_k_b [n*c, d], attn_v_b [n*v, c], when loaded split
    w_uk_t: Vec<Weight>,         // n × [c, d]
    w_uv: Vec<Weight>,           // n × [v, c]
    n: usize,
    c: usize,
    d: usize,
    v: usize,
}

impl KvUpProjection {
    /// Splits `kv_b_proj [n·(d+v), c]` for `n` heads of `d` key and `v` value rows.
    ///
    /// # Errors
    /// A core [`Shape`](deepblocks_core::Error::Shape) error naming `kv_b_proj` when it does not
    /// have `n·(d+v)` rows.
    pub fn new(kv_b_proj: Weight, n: usize, d: usize, v: usize) -> Result<Self> {
        let rows = n.checked_mul(d + v).ok_or(Error::TooLarge {
            weight: "kv_b_proj",
        })?;
        if kv_b_proj.rows() != rows {
            return Err(deepblocks_core::Error::shape(
                "kv_b_proj",
                &[rows, kv_b_proj.cols()],
                &kv_b_proj.shape(),
            )
            .into());
        }
        let w_uk_t = (0..n)
            .map(|head| transpose(&kv_b_proj.slice_rows(head * (d + v)..head * (d + v) + d)))
            .collect();
        let w_uv = (0..n)
            .map(|head| kv_b_proj.slice_rows(head * (d + v) + d..(head + 1) * (d + v)))
            .collect();
        let c = kv_b_proj.cols();
        Ok(KvUpProjection {
            kv_b_proj: OnceLock::from(kv_b_proj),
            split: None,
            w_uk_t,
            w_uv,
            n,
            c,
            d,
            v,
        })
    }

    /// From llama.cpp's split: `k_b [n·c, d]` (each head's `W_UKᵀ`) and `v_b [n·v, c]` (each
    /// head's `W_UV`), used as stored.
    ///
    /// # Errors
    /// A core [`Shape`](deepblocks_core::Error::Shape) error naming `attn_k_b` or `attn_v_b`.
    pub fn from_split(
        k_b: Weight,
        v_b: Weight,
        n: usize,
        c: usize,
        d: usize,
        v: usize,
    ) -> Result<Self> {
        let too_large = || Error::TooLarge { weight: "attn_k_b" };
        let want_k = [n.checked_mul(c).ok_or_else(too_large)?, d];
        let want_v = [n.checked_mul(v).ok_or_else(too_large)?, c];
        if k_b.shape() != want_k {
            return Err(deepblocks_core::Error::shape("attn_k_b", &want_k, &k_b.shape()).into());
        }
        if v_b.shape() != want_v {
            return Err(deepblocks_core::Error::shape("attn_v_b", &want_v, &v_b.shape()).into());
        }
        let w_uk_t = (0..n).map(|h| k_b.slice_rows(h * c..(h + 1) * c)).collect();
        let w_uv = (0..n).map(|h| v_b.slice_rows(h * v..(h + 1) * v)).collect();
        Ok(KvUpProjection {
            kv_b_proj: OnceLock::new(),
            split: Some([k_b, v_b]),
            w_uk_t,
            w_uv,
            n,
            c,
            d,
            v,
        })
    }

    /// Builds the layer's form of `kv_b`.
    ///
    /// # Errors
    /// As [`KvUpProjection::new`] / [`KvUpProjection::from_split`].
    pub fn from_kv_b(kv_b: KvB, n: usize, c: usize, d: usize, v: usize) -> Result<Self> {
        match kv_b {
            KvB::Stacked { kv_b_proj } => {
                let want = [
                    n.checked_mul(d + v).ok_or(Error::TooLarge {
                        weight: "kv_b_proj",
                    })?,
                    c,
                ];
                if kv_b_proj.shape() != want {
                    return Err(deepblocks_core::Error::shape(
                        "kv_b_proj",
                        &want,
                        &kv_b_proj.shape(),
                    )
                    .into());
                }
                KvUpProjection::new(kv_b_proj, n, d, v)
            }
            KvB::Split { k_b, v_b } => KvUpProjection::from_split(k_b, v_b, n, c, d, v),
        }
    }

    /// `kv_b_proj [n·(d+v), c]`: the stacked weight as loaded, or (loaded split) built from the
    /// pieces on first use: in their dtype when they are f32, bf16 or f16 (exactly: the values
    /// come from it), in f32 otherwise; multiplying as they do ([`Weight::bf16_products`]).
    pub fn kv_b_proj(&self) -> &Weight {
        self.kv_b_proj.get_or_init(|| {
            let (c, d, v) = (self.c, self.d, self.v);
            let mut out = Vec::with_capacity(self.n * (d + v) * c);
            for (uk_t, uv) in self.w_uk_t.iter().zip(&self.w_uv) {
                let uk_t = uk_t.to_f32_vec(); // [c, d]
                for i in 0..d {
                    out.extend((0..c).map(|j| uk_t[j * d + i]));
                }
                out.extend(uv.to_f32_vec());
            }
            let w = Weight::from_f32(out, self.n * (d + v), c).expect("n·(d+v)·c values");
            match self.w_uv.first() {
                Some(uv) => {
                    let w = w.with_bf16_products(uv.bf16_products());
                    match uv.format() {
                        WeightFormat::Float(dtype) => w.to_dtype(dtype),
                        WeightFormat::Blocks(_) | WeightFormat::Fp8(_) => w,
                    }
                }
                None => w,
            }
        })
    }

    /// llama.cpp's split, `[attn_k_b [n·c, d], attn_v_b [n·v, c]]`, when the layer was built
    /// from it.
    pub fn split(&self) -> Option<&[Weight; 2]> {
        self.split.as_ref()
    }

    /// Each head's `W_UK_hᵀ [c, d]`, as the absorbed core reads it.
    pub fn w_uk_t(&self) -> &[Weight] {
        &self.w_uk_t
    }

    /// Each head's `W_UV_h [v, c]`, as the absorbed core reads it.
    pub fn w_uv(&self) -> &[Weight] {
        &self.w_uv
    }

    /// Bytes held: the stacked `kv_b_proj` (when held) plus the transposed `W_UK` copy, or the
    /// split's two weights (their views are not copies).
    pub fn weight_bytes(&self) -> usize {
        let stacked = self.kv_b_proj.get().map_or(0, Weight::bytes);
        match &self.split {
            Some([k_b, v_b]) => stacked + k_b.bytes() + v_b.bytes(),
            None => stacked + self.w_uk_t.iter().map(Weight::bytes).sum::<usize>(),
        }
    }
}

/// The sizes of one attention call: `t` new queries at positions `s − t .. s` attending causally
/// to `s` cached tokens (the new ones included), `n` heads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    /// New queries `t`.
    pub t: usize,
    /// Cached tokens `s ≥ t`.
    pub s: usize,
    /// Heads `n`.
    pub n: usize,
    /// `d`: per-head no-RoPE query/key features.
    pub d: usize,
    /// `r`: RoPE features.
    pub r: usize,
    /// `v`: per-head value features.
    pub v: usize,
    /// `c`: the latent width.
    pub c: usize,
    /// The factor on `q·k` before the softmax.
    pub softmax_scale: f32,
}

impl AttentionShape {
    /// Checks the slices of a call against the sizes.
    fn check(&self, out: &[f32], q: &[f32], kv: LatentRows<'_>) -> Result<()> {
        let AttentionShape {
            t,
            s,
            n,
            d,
            r,
            v,
            c,
            ..
        } = *self;
        if t > s {
            return Err(Error::QueriesPastCache { t, s });
        }
        let qk = d.checked_add(r).ok_or(Error::TooLarge {
            weight: "a query head [d + r]",
        })?;
        for (what, len, shape) in [("out", out.len(), [t, n, v]), ("q", q.len(), [t, n, qk])] {
            let want = shape.iter().try_fold(1usize, |a, &x| a.checked_mul(x));
            if want != Some(len) {
                return Err(deepblocks_core::Error::length(what, &shape, len).into());
            }
        }
        let width = c.checked_add(r).ok_or(Error::TooLarge {
            weight: "a latent row [c + r]",
        })?;
        if s.checked_mul(width) != Some(kv.len()) {
            return Err(Error::LatentRows {
                len: kv.len(),
                s,
                width,
            });
        }
        if let LatentRows::Q8_0 {
            codes,
            scales,
            width: rows_width,
        } = kv
            && (rows_width != width || !kv.is_consistent())
        {
            return Err(Error::LatentScales {
                codes: codes.len(),
                scales: scales.len(),
                width,
            });
        }
        Ok(())
    }

    /// `(naive, absorbed)`: the multiply-adds of each core for this call. Both score every
    /// visible (query, key) pair of every head — `pairs = t·(s − t) + t·(t + 1)/2` — the naive
    /// core over `d + r` features and `v` values after expanding all `s` latents through
    /// `kv_b_proj` (`s·n·(d + v)·c`), the absorbed core over `c + r` features and `c` values
    /// after folding `W_UK` into the queries and before `W_UV` (`t·n·(d + v)·c`).
    ///
    /// ```
    /// use deepblocks_mla::AttentionShape;
    /// // DeepSeek-V2-Lite, one decode step after 4,095 tokens: absorbing is over 100× cheaper.
    /// let step = AttentionShape { t: 1, s: 4096, n: 16, d: 128, r: 64, v: 128, c: 512, softmax_scale: 0.07 };
    /// let (naive, absorbed) = step.costs();
    /// assert_eq!(naive, (4096u64 * 16 * 256 * 512 + 4096 * 16 * 320) as f64);
    /// assert!(naive > 100.0 * absorbed);
    /// ```
    pub fn costs(&self) -> (f64, f64) {
        let AttentionShape {
            t,
            s,
            n,
            d,
            r,
            v,
            c,
            ..
        } = *self;
        let [t, s, n, d, r, v, c] = [t, s, n, d, r, v, c].map(|x| x as f64);
        let pairs = t * (s - t) + t * (t + 1.0) / 2.0;
        let naive = s * n * (d + v) * c + pairs * n * (d + r + v);
        let absorbed = t * n * (d + v) * c + pairs * n * (2.0 * c + r);
        (naive, absorbed)
    }

    /// The absorbed core's multiply-adds outside its attention: folding `W_UK` into the queries
    /// and `W_UV` into the outputs, `t·n·(d + v)·c` (f32 products whatever the cache).
    fn costs_folds(&self) -> f64 {
        (self.t * self.n * (self.d + self.v) * self.c) as f64
    }

    /// How many times faster per multiply-add than the naive core's f32 products the absorbed
    /// core's scores and mix run over a latent cache of `cache_dtype` on this CPU:
    /// [`TILE_SPEEDUP`] on the AMX tile unit ([`AttentionShape::tiles`]), [`BF16_DOT_SPEEDUP`]
    /// for a bf16 cache on AVX512-BF16's dot products ([`deepblocks_core::bf16_dot`]),
    /// [`IN_PLACE_SPEEDUP`] for a bf16 cache read in place elsewhere on AVX-512
    /// ([`deepblocks_core::avx512`]),
    /// [`INTEGER_SPEEDUP`] for a `Q8_0` cache whose scores and mix are both integer sums
    /// ([`deepblocks_core::quant::q8_rows::integer_mix`]), 1 otherwise.
    pub fn attention_speedup(&self, cache_dtype: impl Into<CacheDType>) -> f64 {
        let cache_dtype = cache_dtype.into();
        if self.tiles(cache_dtype) {
            TILE_SPEEDUP
        } else if cache_dtype == CacheDType::BF16 && deepblocks_core::bf16_dot() {
            BF16_DOT_SPEEDUP
        } else if cache_dtype == CacheDType::BF16 && deepblocks_core::avx512() {
            IN_PLACE_SPEEDUP
        } else if cache_dtype == CacheDType::Q8_0
            && deepblocks_core::vnni()
            && deepblocks_core::quant::q8_rows::integer_mix()
        {
            INTEGER_SPEEDUP
        } else {
            1.0
        }
    }

    /// Whether the absorbed core's scores and mix run on the AMX tile unit for a latent cache of
    /// `cache_dtype`: the CPU has it ([`deepblocks_core::amx`]), the cache is bf16, and the
    /// latent row (`c + r`) is a whole number of 32-element tiles and `c` of 16 (DeepSeek-V2/V3's
    /// 512 + 64 is).
    pub fn tiles(&self, cache_dtype: impl Into<CacheDType>) -> bool {
        deepblocks_core::amx()
            && cache_dtype.into() == CacheDType::BF16
            && (self.c + self.r).is_multiple_of(deepblocks_core::TILE_K)
            && self.c.is_multiple_of(deepblocks_core::TILE)
    }
}

/// The naive attention core (report eq. 10, 11, 16–18; DeepSeek's `model.py` with
/// `attn_impl = "naive"`): every cached latent is expanded, `[k^C_h | v^C_h]_j = W_h c_j` (head
/// `h`'s rows of `kv_b_proj`, one head at a time), then per head
///
/// ```text
/// scores[i, j] = scale · ([q^C_i; q^R_i] · [k^C_j; k^R_j])        j ≤ s − t + i
/// out[i]       = Σ_j softmax_j(scores[i, ·]) v^C_j
/// ```
///
/// computed blocked with an online softmax (never more than a block of scores at once).
/// `out[t, n, v]`, `q[t, n, d + r]` (RoPE part rotated), the caller's latent cache `kv[s, c + r]`
/// (per token `c_KV` then the rotated `k_pe`, in any element type).
///
/// # Errors
/// A core length error naming `out` or `q` when it does not match `shape`;
/// [`Error::LatentRows`] when `kv` is not `s·(c + r)` long; [`Error::LatentScales`] when `Q8_0`
/// rows are not whole rows of `c + r` codes with a scale per 32; [`Error::QueriesPastCache`] when
/// `t > s`; a shape error naming `kv_b_proj` when `kv_up` is for other sizes.
pub fn attention_naive(
    out: &mut [f32],
    q: &[f32],
    kv: LatentRows<'_>,
    kv_up: &KvUpProjection,
    shape: &AttentionShape,
) -> Result<()> {
    run_core(out, q, kv, kv_up, shape, naive_steps)
}

/// [`attention_naive`]'s steps, after its checks.
fn naive_steps(
    out: &mut [f32],
    q: &[f32],
    kv: LatentRows<'_>,
    kv_up: &KvUpProjection,
    shape: &AttentionShape,
) {
    let AttentionShape {
        t,
        s,
        n,
        c,
        d,
        r,
        v,
        ..
    } = *shape;
    let c_kv = kv.columns_f32(c + r, 0, c); // [s, c]
    let k_pe = kv.columns_f32(c + r, c, r); // [s, r]
    let flash = FlashShape {
        t,
        g: 1,
        s,
        dk: d + r,
        dv: v,
        scale: shape.softmax_scale,
    };
    let mut kv_h = vec![0.0f32; s * (d + v)]; // [s, d + v]: head h's keys (no RoPE) and values
    let mut q_h = vec![0.0f32; t * (d + r)]; // [t, d + r]
    let mut o_h = vec![0.0f32; t * v]; // [t, v]
    for head in 0..n {
        let w_h = kv_up
            .kv_b_proj()
            .slice_rows(head * (d + v)..(head + 1) * (d + v));
        linear(&mut kv_h, &c_kv, &w_h, s);
        for i in 0..t {
            let src = (i * n + head) * (d + r);
            q_h[i * (d + r)..(i + 1) * (d + r)].copy_from_slice(&q[src..src + d + r]);
        }
        let keys = Kv::Split {
            k1: Strided {
                data: &kv_h,
                stride: d + v,
                width: d,
            },
            k2: Strided {
                data: &k_pe,
                stride: r,
                width: r,
            },
            v: Strided {
                data: &kv_h[d..],
                stride: d + v,
                width: v,
            },
        };
        flash_attention(
            &mut o_h,
            &q_h,
            keys,
            &flash,
            Blocking::default_for_threads(),
            Products::best(),
        );
        for i in 0..t {
            out[(i * n + head) * v..(i * n + head + 1) * v]
                .copy_from_slice(&o_h[i * v..(i + 1) * v]);
        }
    }
}

/// The absorbed attention core (report §2.1.2, DeepSeek's `model.py` with `attn_impl =
/// "absorb"`, its two einsums): `W^UK` is folded into the query and `W^UV` into the output,
///
/// ```text
/// q_lat[i, h]  = W_UK_hᵀ q^C_{i,h}                                      [c]
/// scores[h, i, j] = scale · (q_lat[i, h] · c_kv[j] + q^R_{i,h} · k_pe[j])  j ≤ s − t + i
/// o_lat[i, h]  = Σ_j softmax_j(scores[h, i, ·]) c_kv[j]                    [c]
/// out[i, h]    = W_UV_h o_lat[i, h]                                        [v]
/// ```
///
/// so the cache is read as it is, once for all heads: the scores are `[q_lat | q^R]` against the
/// cached rows `[c_KV | k_pe]`, and the mix sums their first `c` columns. Blocked with an online
/// softmax; in a decode step the cached positions are split in chunks across threads
/// (flash-decoding). Arguments and errors as [`attention_naive`].
///
/// # Errors
/// As [`attention_naive`].
pub fn attention_absorbed(
    out: &mut [f32],
    q: &[f32],
    kv: LatentRows<'_>,
    kv_up: &KvUpProjection,
    shape: &AttentionShape,
) -> Result<()> {
    run_core(out, q, kv, kv_up, shape, absorbed_steps)
}

/// [`attention_absorbed`]'s steps, after its checks.
fn absorbed_steps(
    out: &mut [f32],
    q: &[f32],
    kv: LatentRows<'_>,
    kv_up: &KvUpProjection,
    shape: &AttentionShape,
) {
    let AttentionShape {
        t,
        s,
        n,
        c,
        d,
        r,
        v,
        ..
    } = *shape;
    // Per head: q_lat[t, c] = q_nope[t, d] · W_UK_h (W_UKᵀ stored as [c, d]).
    let q_lat: Vec<Vec<f32>> = (0..n)
        .into_par_iter()
        .map(|head| {
            let mut q_nope = vec![0.0f32; t * d];
            for i in 0..t {
                let src = (i * n + head) * (d + r);
                q_nope[i * d..(i + 1) * d].copy_from_slice(&q[src..src + d]);
            }
            let mut ql = vec![0.0f32; t * c];
            linear(&mut ql, &q_nope, &kv_up.w_uk_t[head], t);
            ql
        })
        .collect();
    // The queries against the cached rows: x[t, n, c + r] = [q_lat | q^R].
    let mut x = vec![0.0f32; t * n * (c + r)];
    for i in 0..t {
        for (head, ql) in q_lat.iter().enumerate() {
            let row = &mut x[(i * n + head) * (c + r)..(i * n + head + 1) * (c + r)];
            row[..c].copy_from_slice(&ql[i * c..(i + 1) * c]);
            let src = (i * n + head) * (d + r) + d;
            row[c..].copy_from_slice(&q[src..src + r]);
        }
    }
    // o_lat[t, n, c] = softmax(scale · x · kvᵀ) · c_KV, the n heads of a position as n rows.
    let mut o_lat = vec![0.0f32; t * n * c];
    let flash = FlashShape {
        t,
        g: n,
        s,
        dk: c + r,
        dv: c,
        scale: shape.softmax_scale,
    };
    flash_attention(
        &mut o_lat,
        &x,
        Kv::Latent(kv),
        &flash,
        Blocking::default_for_threads(),
        Products::best(),
    );
    // Per head: o[t, v] = o_lat_h[t, c] · W_UV_hᵀ.
    let heads: Vec<Vec<f32>> = (0..n)
        .into_par_iter()
        .map(|head| {
            let mut lat = vec![0.0f32; t * c];
            for i in 0..t {
                let src = (i * n + head) * c;
                lat[i * c..(i + 1) * c].copy_from_slice(&o_lat[src..src + c]);
            }
            let mut o = vec![0.0f32; t * v];
            linear(&mut o, &lat, &kv_up.w_uv[head], t);
            o
        })
        .collect();
    for (head, o) in heads.iter().enumerate() {
        for i in 0..t {
            out[(i * n + head) * v..(i * n + head + 1) * v].copy_from_slice(&o[i * v..(i + 1) * v]);
        }
    }
}

/// A core's call: its checks, nothing to do for an empty output, else `steps` on rayon's pool
/// (one crossing: the steps' parallel loops start there).
fn run_core(
    out: &mut [f32],
    q: &[f32],
    kv: LatentRows<'_>,
    kv_up: &KvUpProjection,
    shape: &AttentionShape,
    steps: fn(&mut [f32], &[f32], LatentRows<'_>, &KvUpProjection, &AttentionShape),
) -> Result<()> {
    check_kernel(out, q, kv, kv_up, shape)?;
    if out.is_empty() {
        return Ok(()); // no queries, heads or value features
    }
    on_pool(|| steps(out, q, kv, kv_up, shape));
    Ok(())
}

fn check_kernel(
    out: &[f32],
    q: &[f32],
    kv: LatentRows<'_>,
    kv_up: &KvUpProjection,
    shape: &AttentionShape,
) -> Result<()> {
    shape.check(out, q, kv)?;
    let want = [shape.n, shape.c, shape.d, shape.v];
    let have = [kv_up.n, kv_up.c, kv_up.d, kv_up.v];
    if have != want {
        return Err(deepblocks_core::Error::shape("kv_b_proj [n, c, d, v]", &want, &have).into());
    }
    Ok(())
}

/// `wᵀ` in `w`'s dtype (a copy, made once at load time). Narrowing values that were widened from
/// that dtype is exact, so the copy holds the same numbers; a block-format `w` is transposed to
/// f32, the one dtype that holds its dequantized values exactly. It multiplies as `w` does
/// ([`Weight::bf16_products`]).
fn transpose(w: &Weight) -> Weight {
    let (rows, cols) = (w.rows(), w.cols());
    let f = w.to_f32_vec();
    let mut tr = vec![0.0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            tr[j * rows + i] = f[i * cols + j];
        }
    }
    let tr = Weight::from_f32(tr, cols, rows)
        .expect("transpose keeps the element count")
        .with_bf16_products(w.bf16_products());
    match w.format() {
        WeightFormat::Float(dtype) => tr.to_dtype(dtype),
        WeightFormat::Blocks(_) | WeightFormat::Fp8(_) => tr,
    }
}

/// One Multi-head Latent Attention layer (DeepSeek-V2 §2.1).
#[derive(Debug, Clone)]
pub struct Mla {
    config: MlaConfig,
    q: QProj,
    kv_a_proj_with_mqa: Weight, // [c + r, h]
    kv_a_layernorm: RmsNorm,    // [c]
    kv_up: KvUpProjection,      // kv_b_proj [n*(d+v), c] and its absorbed split
    o_proj: Weight,             // [h, n*v]
}

impl Mla {
    /// Builds the layer, checking every weight's shape against `config` and splitting
    /// `kv_b_proj` for the absorbed path.
    ///
    /// # Errors
    /// An invalid config; a core [`Shape`](deepblocks_core::Error::Shape) error naming the weight
    /// (`q_proj`, `kv_b_proj`, `kv_a_layernorm`, ...) whose shape differs;
    /// [`Error::QProjKind`] when the config and the weights disagree on the query projection.
    pub fn new(config: MlaConfig, weights: MlaWeights) -> Result<Self> {
        config.validate()?;
        let (h, n, c) = (config.hidden_size, config.num_heads, config.kv_lora_rank);
        let (d, r, v) = (
            config.qk_nope_head_dim,
            config.qk_rope_head_dim,
            config.v_head_dim,
        );
        let check = |name: &str, w: &Weight, expected: [usize; 2]| -> Result<()> {
            if w.shape() == expected {
                Ok(())
            } else {
                Err(deepblocks_core::Error::shape(name, &expected, &w.shape()).into())
            }
        };
        let check_norm = |name: &str, norm: &RmsNorm, expected: usize| -> Result<()> {
            if norm.config().hidden == expected {
                Ok(())
            } else {
                Err(
                    deepblocks_core::Error::shape(name, &[expected], &[norm.config().hidden])
                        .into(),
                )
            }
        };
        match &weights.q {
            QProj::Full { q_proj } => {
                if let QProjConfig::LowRank { .. } = config.q_proj {
                    return Err(Error::QProjKind {
                        config: "low-rank (q_lora_rank set)",
                        weights: "a full q_proj",
                    });
                }
                check("q_proj", q_proj, [n * (d + r), h])?;
            }
            QProj::LowRank {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => {
                let QProjConfig::LowRank { q_lora_rank } = config.q_proj else {
                    return Err(Error::QProjKind {
                        config: "full (q_lora_rank null)",
                        weights: "low-rank q_a_proj/q_b_proj",
                    });
                };
                check("q_a_proj", q_a_proj, [q_lora_rank, h])?;
                check_norm("q_a_layernorm", q_a_layernorm, q_lora_rank)?;
                check("q_b_proj", q_b_proj, [n * (d + r), q_lora_rank])?;
            }
        }
        check(
            "kv_a_proj_with_mqa",
            &weights.kv_a_proj_with_mqa,
            [c + r, h],
        )?;
        check_norm("kv_a_layernorm", &weights.kv_a_layernorm, c)?;
        check("o_proj", &weights.o_proj, [h, n * v])?;
        Ok(Mla {
            config,
            q: weights.q,
            kv_a_proj_with_mqa: weights.kv_a_proj_with_mqa,
            kv_a_layernorm: weights.kv_a_layernorm,
            kv_up: KvUpProjection::from_kv_b(weights.kv_b, n, c, d, v)?,
            o_proj: weights.o_proj,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MlaConfig {
        &self.config
    }

    /// The query projection.
    pub fn q(&self) -> &QProj {
        &self.q
    }

    /// `kv_a_proj_with_mqa [c + r, h]`.
    pub fn kv_a_proj_with_mqa(&self) -> &Weight {
        &self.kv_a_proj_with_mqa
    }

    /// `kv_a_layernorm [c]`.
    pub fn kv_a_layernorm(&self) -> &RmsNorm {
        &self.kv_a_layernorm
    }

    /// `o_proj [h, n·v]`.
    pub fn o_proj(&self) -> &Weight {
        &self.o_proj
    }

    /// `kv_b_proj` and its absorbed split (what [`attention_naive`] / [`attention_absorbed`]
    /// take).
    pub fn kv_up(&self) -> &KvUpProjection {
        &self.kv_up
    }

    /// Bytes of weights this layer holds, in their stored dtypes, including the transposed copy
    /// of `W_UK` the absorbed path keeps from a stacked `kv_b_proj` ([`KvUpProjection::weight_bytes`]).
    pub fn weight_bytes(&self) -> usize {
        let q = match &self.q {
            QProj::Full { q_proj } => q_proj.bytes(),
            QProj::LowRank {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => q_a_proj.bytes() + 4 * q_a_layernorm.weight().len() + q_b_proj.bytes(),
        };
        q + self.kv_a_proj_with_mqa.bytes()
            + 4 * self.kv_a_layernorm.weight().len()
            + self.kv_up.weight_bytes()
            + self.o_proj.bytes()
    }

    /// `out[t, h] = MLA(x[t, h])` for `t` tokens at positions `p..p+t`, where `p = cache.len()`:
    /// appends their latents to `cache`, then attends causally over all `p + t` cached tokens.
    /// Looks up the rotary rows in `rope`; see [`Mla::forward_with`] to share them across layers.
    ///
    /// # Errors
    /// As [`Mla::forward_with`]; a rope error past the table's maximum. On error the cache is
    /// unchanged.
    pub fn forward(
        &self,
        out: &mut [f32],
        x: &[f32],
        t: usize,
        cache: &mut LatentCache,
        rope: &RopeTable,
        path: AttentionPath,
    ) -> Result<()> {
        if t == 0 {
            return Err(Error::EmptyInput);
        }
        cache.check_room(t)?; // bounds p + t before the positions are listed
        let p = cache.len();
        let positions: Vec<usize> = (p..p + t).collect();
        let cs = rope.cos_sin(&positions)?;
        self.forward_with(out, x, t, cache, &cs, path)
    }

    /// [`Mla::forward`] with the rotary rows of positions `cache.len()..cache.len() + t`
    /// gathered by the caller (once per forward pass for every layer). The steps are the
    /// report's equations (9)–(19), in the order the data needs them:
    ///
    /// ```text
    /// (12)–(14)  c^Q = RMSNorm(W^DQ h); [q^C; q^R] = W^UQ c^Q, W^QR c^Q   q_a_proj, q_b_proj (or q_proj)
    /// (14)       q^R ← RoPE(q^R)
    /// (9), (15)  [c^KV; k^R] = W^DKV h, W^KR h; c^KV ← RMSNorm; k^R ← RoPE  kv_a_proj_with_mqa
    ///            append (c^KV, k^R) to the cache
    /// (10)–(18)  o = attention over the cache (naive or absorbed core)      kv_b_proj
    /// (19)       u = W^O [o_1; …; o_n]                                       o_proj
    /// ```
    ///
    /// # Errors
    /// [`Error::EmptyInput`] for `t = 0`; a core length error naming `x` or `out` when it is not
    /// `t · hidden_size` long; [`Error::RopeRows`] when `rope` does not hold `t` rows,
    /// [`Error::RopeWidth`] when they are not `qk_rope_head_dim` wide; [`Error::CacheMismatch`] for a cache of other widths;
    /// [`Error::ContextFull`] past the cache's maximum. On error the cache is unchanged.
    pub fn forward_with(
        &self,
        out: &mut [f32],
        x: &[f32],
        t: usize,
        cache: &mut LatentCache,
        rope: &CosSin<'_>,
        path: AttentionPath,
    ) -> Result<()> {
        self.check_call(out, x, t, cache, rope)?;
        // One crossing into the pool for the layer: its parallel loops start there.
        on_pool(|| self.steps(out, x, t, cache, rope, path))
    }

    /// [`Mla::forward_with`]'s steps, after its checks.
    fn steps(
        &self,
        out: &mut [f32],
        x: &[f32],
        t: usize,
        cache: &mut LatentCache,
        rope: &CosSin<'_>,
        path: AttentionPath,
    ) -> Result<()> {
        let cfg = &self.config;
        let n = cfg.num_heads;
        let (d, r, v) = (cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim);

        // (12)–(14): the queries of all heads, q[t, n, d + r]; then RoPE on each q^R.
        let mut q = self.queries(x, t);
        rope.apply_inplace_strided(&mut q, n, d + r, d)?;

        // (9), (15): the latent c^KV[t, c] and the shared key k^R[t, r], all the cache keeps.
        let (c_kv, k_pe) = self.latents(x, t, rope)?;
        cache.append(&c_kv, &k_pe, t)?;

        // (10)–(18): attention of the t queries over the s = p + t cached tokens.
        let shape = AttentionShape {
            t,
            s: cache.len(),
            n,
            d,
            r,
            v,
            c: cfg.kv_lora_rank,
            softmax_scale: cfg.softmax_scale,
        };
        let mut o = vec![0.0f32; t * n * v]; // [t, n, v]
        let core = match path.resolve_for(&shape, cache.rows().dtype()) {
            AttentionPath::Naive => attention_naive,
            _ => attention_absorbed,
        };
        core(&mut o, &q, cache.rows(), &self.kv_up, &shape)?;

        // (19): u[t, h] = o_proj(o[t, n·v]).
        linear(out, &o, &self.o_proj, t);
        Ok(())
    }

    fn check_call(
        &self,
        out: &[f32],
        x: &[f32],
        t: usize,
        cache: &LatentCache,
        rope: &CosSin<'_>,
    ) -> Result<()> {
        let cfg = &self.config;
        let h = cfg.hidden_size;
        if t == 0 {
            return Err(Error::EmptyInput);
        }
        for (what, len) in [("x", x.len()), ("out", out.len())] {
            if Some(len) != t.checked_mul(h) {
                return Err(deepblocks_core::Error::length(what, &[t, h], len).into());
            }
        }
        let (c, r) = (cfg.kv_lora_rank, cfg.qk_rope_head_dim);
        for (what, cache_size, expected) in [
            ("kv_lora_rank", cache.dims().0, c),
            ("qk_rope_head_dim", cache.dims().1, r),
        ] {
            if cache_size != expected {
                return Err(Error::CacheMismatch {
                    what,
                    cache: cache_size,
                    expected,
                });
            }
        }
        if rope.r() != r {
            return Err(Error::RopeWidth {
                r: rope.r(),
                expected_r: r,
            });
        }
        if rope.t() != t {
            return Err(Error::RopeRows {
                t: rope.t(),
                expected_t: t,
            });
        }
        cache.check_room(t)
    }

    /// (12)–(14): `q[t, n, d + r] = q_proj(x)` or `q_b_proj(RMSNorm(q_a_proj(x)))`.
    fn queries(&self, x: &[f32], t: usize) -> Vec<f32> {
        let cfg = &self.config;
        let mut q = vec![0.0f32; t * cfg.num_heads * cfg.qk_head_dim()];
        match &self.q {
            QProj::Full { q_proj } => linear(&mut q, x, q_proj, t),
            QProj::LowRank {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => {
                let mut c_q = vec![0.0f32; t * q_a_proj.rows()]; // [t, q]
                linear(&mut c_q, x, q_a_proj, t);
                q_a_layernorm.forward_inplace(&mut c_q, t);
                linear(&mut q, &c_q, q_b_proj, t);
            }
        }
        q
    }

    /// (9), (15): `[c^KV | k^R][t, c + r] = kv_a_proj_with_mqa(x)`, `c^KV ← RMSNorm(c^KV)`,
    /// `k^R ← RoPE(k^R)`; returns `(c_kv[t, c], k_pe[t, r])`.
    fn latents(&self, x: &[f32], t: usize, rope: &CosSin<'_>) -> Result<(Vec<f32>, Vec<f32>)> {
        let (c, r) = (self.config.kv_lora_rank, self.config.qk_rope_head_dim);
        let mut kv_a = vec![0.0f32; t * (c + r)];
        linear(&mut kv_a, x, &self.kv_a_proj_with_mqa, t);
        rope.apply_inplace_strided(&mut kv_a, 1, c + r, c)?;
        let mut c_kv = vec![0.0f32; t * c];
        let mut k_pe = vec![0.0f32; t * r];
        for ((row, ck), kp) in kv_a
            .chunks_exact(c + r)
            .zip(c_kv.chunks_exact_mut(c))
            .zip(k_pe.chunks_exact_mut(r))
        {
            ck.copy_from_slice(&row[..c]);
            kp.copy_from_slice(&row[c..]);
        }
        self.kv_a_layernorm.forward_inplace(&mut c_kv, t);
        Ok((c_kv, k_pe))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_past_the_cache_are_an_error() {
        let shape = AttentionShape {
            t: 3,
            s: 2,
            n: 1,
            d: 1,
            r: 2,
            v: 1,
            c: 1,
            softmax_scale: 1.0,
        };
        let err = shape
            .check(&[0.0; 3], &[0.0; 9], LatentRows::F32(&[0.0; 6]))
            .unwrap_err();
        assert!(
            matches!(err, Error::QueriesPastCache { t: 3, s: 2 }),
            "{err}"
        );
    }
}
