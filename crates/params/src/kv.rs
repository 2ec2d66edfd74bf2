//! KV cache per token: what each attention variant keeps for every past token, after the
//! DeepSeek-V2 report (arXiv 2405.04434), §2.1 and Table 1.
//!
//! | attention | elements per token per layer |
//! |---|---|
//! | MHA | `2·n_h·d_h` (a key and a value per head) |
//! | GQA | `2·n_g·d_h` (a key and a value per KV group) |
//! | MQA | `2·d_h` (one key and one value shared by every head) |
//! | MLA | `d_c + d_h^R` (the KV latent and the shared RoPE key) |
//!
//! Multiply by the number of layers `l` for a token, and by the bits per element for bytes.

use serde::Serialize;

use crate::error::{Error, Result};

/// What one layer caches per token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KvLayout {
    /// Multi-head attention: every head has its own key and value.
    Mha {
        /// `n_h`, attention heads.
        heads: u64,
        /// `d_h`, key and value dimension per head.
        head_dim: u64,
    },
    /// Grouped-query attention: `kv_heads` key/value heads, each shared by `heads / kv_heads`
    /// query heads.
    Gqa {
        /// `n_h`, query heads.
        heads: u64,
        /// `n_g`, key/value heads (groups).
        kv_heads: u64,
        /// `d_h`, key and value dimension per head.
        head_dim: u64,
    },
    /// Multi-query attention: one key/value head for all query heads.
    Mqa {
        /// `n_h`, query heads.
        heads: u64,
        /// `d_h`, key and value dimension.
        head_dim: u64,
    },
    /// Multi-head latent attention: the compressed KV latent `c^KV` (normalised, before the
    /// up-projection `kv_b_proj`) and the decoupled RoPE key `k^R` shared by all heads.
    Mla {
        /// `d_c`, the KV latent (`kv_lora_rank`).
        kv_lora_rank: u64,
        /// `d_h^R`, the RoPE key (`qk_rope_head_dim`).
        qk_rope_head_dim: u64,
    },
}

impl KvLayout {
    /// Multi-head, grouped-query or multi-query attention, by how many key/value heads there are
    /// (`kv_heads == heads` → MHA, `1` → MQA, otherwise GQA). `kv_heads` must divide `heads`.
    pub fn from_heads(heads: u64, kv_heads: u64, head_dim: u64) -> Result<KvLayout> {
        if heads == 0 || head_dim == 0 || kv_heads == 0 {
            let (field, value) = if heads == 0 {
                ("num_attention_heads", heads)
            } else if kv_heads == 0 {
                ("num_key_value_heads", kv_heads)
            } else {
                ("head_dim", head_dim)
            };
            return Err(Error::invalid(field, value, "must be at least 1"));
        }
        if !heads.is_multiple_of(kv_heads) {
            return Err(Error::invalid(
                "num_key_value_heads",
                kv_heads,
                format!("must divide num_attention_heads = {heads}"),
            ));
        }
        Ok(match kv_heads {
            k if k == heads => KvLayout::Mha { heads, head_dim },
            1 => KvLayout::Mqa { heads, head_dim },
            _ => KvLayout::Gqa {
                heads,
                kv_heads,
                head_dim,
            },
        })
    }

    /// Elements cached per token in one layer (see the table in the [module docs](self)).
    /// Saturates at `u64::MAX` for sizes no config reaches.
    pub fn elements_per_layer(&self) -> u64 {
        match *self {
            KvLayout::Mha { heads, head_dim } => {
                2u64.saturating_mul(heads).saturating_mul(head_dim)
            }
            KvLayout::Gqa {
                kv_heads, head_dim, ..
            } => 2u64.saturating_mul(kv_heads).saturating_mul(head_dim),
            KvLayout::Mqa { head_dim, .. } => 2u64.saturating_mul(head_dim),
            KvLayout::Mla {
                kv_lora_rank,
                qk_rope_head_dim,
            } => kv_lora_rank.saturating_add(qk_rope_head_dim),
        }
    }

    /// Elements cached per token in one layer on one of `tp` tensor-parallel ranks. Heads are
    /// split across ranks, so MHA divides by `tp`; GQA keeps `⌈n_g / tp⌉` groups per rank (a
    /// group is replicated when there are fewer groups than ranks); MQA's single head and
    /// MLA's latent are needed by every head and are replicated on every rank.
    pub fn elements_per_layer_per_rank(&self, tp: u64) -> u64 {
        let tp = tp.max(1);
        match *self {
            KvLayout::Mha { heads, head_dim } => 2u64
                .saturating_mul(heads.div_ceil(tp))
                .saturating_mul(head_dim),
            KvLayout::Gqa {
                kv_heads, head_dim, ..
            } => 2u64
                .saturating_mul(kv_heads.div_ceil(tp))
                .saturating_mul(head_dim),
            KvLayout::Mqa { .. } | KvLayout::Mla { .. } => self.elements_per_layer(),
        }
    }

    /// The report's short name: `MHA`, `GQA`, `MQA` or `MLA`.
    pub fn label(&self) -> &'static str {
        match self {
            KvLayout::Mha { .. } => "MHA",
            KvLayout::Gqa { .. } => "GQA",
            KvLayout::Mqa { .. } => "MQA",
            KvLayout::Mla { .. } => "MLA",
        }
    }
}

/// Bits per stored element (weights or cache): 32 for f32, 16 for bf16/f16, 8 for FP8, or any
/// width a quantisation scheme averages to (DeepSeek-V2 reports 6 bits per KV element).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Bits(u32);

impl Bits {
    /// 32-bit floats.
    pub const F32: Bits = Bits(32);
    /// bfloat16.
    pub const BF16: Bits = Bits(16);
    /// IEEE half.
    pub const F16: Bits = Bits(16);
    /// 8-bit floats (E4M3 / E5M2) or int8.
    pub const FP8: Bits = Bits(8);

    /// A width of 1 to 64 bits per element.
    pub fn new(bits: u32) -> Result<Bits> {
        if (1..=64).contains(&bits) {
            Ok(Bits(bits))
        } else {
            Err(Error::invalid("bits", bits, "must be 1 to 64"))
        }
    }

    /// The width in bits.
    pub fn get(self) -> u32 {
        self.0
    }

    /// Bits taken by `elements` elements (`None` on overflow).
    pub fn bits_for(self, elements: u64) -> Option<u64> {
        elements.checked_mul(u64::from(self.0))
    }

    /// Bytes taken by `elements` elements, rounded up to whole bytes (`None` on overflow).
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        Some(self.bits_for(elements)?.div_ceil(8))
    }
}

/// A model's KV cache: a [`KvLayout`] repeated over `layers`.
///
/// ```
/// use deepblocks_params::{Bits, KvCache, KvLayout};
///
/// // DeepSeek 67B: 95 layers, GQA with 8 KV heads of 128, bf16.
/// let gqa = KvCache::new(95, KvLayout::from_heads(64, 8, 128)?);
/// // DeepSeek-V2: 60 layers of MLA, latent 512 + RoPE key 64, 6 bits per element.
/// let mla = KvCache::new(60, KvLayout::Mla { kv_lora_rank: 512, qk_rope_head_dim: 64 });
/// assert_eq!(gqa.elements_per_token(), 194_560);
/// assert_eq!(mla.elements_per_token(), 34_560);
/// let bits = |c: &KvCache, b: Bits| c.bits_per_token(b).unwrap() as f64;
/// let reduction = 1.0 - bits(&mla, Bits::new(6)?) / bits(&gqa, Bits::BF16);
/// assert_eq!(format!("{:.1}%", 100.0 * reduction), "93.3%");
/// # Ok::<(), deepblocks_params::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KvCache {
    /// `l`, layers with attention.
    pub layers: u64,
    /// What each layer caches.
    pub layout: KvLayout,
}

impl KvCache {
    /// A cache of `layers` layers of `layout`.
    pub fn new(layers: u64, layout: KvLayout) -> KvCache {
        KvCache { layers, layout }
    }

    /// Elements cached per token over all layers (saturating).
    pub fn elements_per_token(&self) -> u64 {
        self.layers.saturating_mul(self.layout.elements_per_layer())
    }

    /// Bits cached per token at `bits` per element (`None` on overflow).
    pub fn bits_per_token(&self, bits: Bits) -> Option<u64> {
        bits.bits_for(self.elements_per_token())
    }

    /// Bytes cached per token at `bits` per element, as a real number (6-bit caches need not
    /// fill whole bytes per token).
    pub fn bytes_per_token(&self, bits: Bits) -> f64 {
        self.elements_per_token() as f64 * f64::from(bits.get()) / 8.0
    }

    /// Bytes for `tokens` tokens at `bits` per element, rounded up (`None` on overflow).
    pub fn bytes_for_tokens(&self, tokens: u64, bits: Bits) -> Option<u64> {
        bits.bytes_for(self.elements_per_token().checked_mul(tokens)?)
    }
}
