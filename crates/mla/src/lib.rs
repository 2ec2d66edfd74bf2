//! # deepblocks-mla
//!
//! Multi-head Latent Attention (DeepSeek-V2, arXiv 2405.04434 §2.1). Keys and values pass through a
//! low-rank latent, so the KV cache holds per token and layer only the normalised latent `c_KV`
//! (`c = kv_lora_rank`) and one shared rotated key `k_pe` (`r = qk_rope_head_dim`): `c + r` values
//! (576 for DeepSeek-V2) against `2·n·d_h` for multi-head attention.
//!
//! For a token with hidden state `x` (report eqs. 9–11 and 12–19; names as in the checkpoint):
//!
//! ```text
//! q        = q_proj(x)  or  q_b_proj(RMSNorm(q_a_proj(x)))        [n, d + r]
//! q_nope, q_pe = split(q, [d, r]);  q_pe ← RoPE(q_pe, pos)
//! [c_KV | k_pe] = kv_a_proj_with_mqa(x)                           [c + r]
//! c_KV ← RMSNorm(c_KV);  k_pe ← RoPE(k_pe, pos)                   cached
//! [k_nope_h | v_h] = W_UK_h c_KV, W_UV_h c_KV  (rows of kv_b_proj) [d], [v]
//! o_h  = Σ_j softmax_j(scale · (q_nope_h·k_nope_h,j + q_pe_h·k_pe_j)) v_h,j
//! out  = o_proj([o_1 … o_n])
//! ```
//!
//! The **naive** path ([`AttentionPath::Naive`]) computes exactly that, expanding every cached
//! latent through `kv_b_proj`. The **absorbed** path ([`AttentionPath::Absorbed`]) uses
//! `q_nope_h · (W_UK_h c) = (W_UK_hᵀ q_nope_h) · c` and `W_UV_h Σ_j p_j c_j` to score and mix the
//! cached latents directly: no per-head key or value is ever formed, and the work per cached token
//! is `2·n·(c + r)` instead of `n·(d + v)·c`.
//!
//! Both paths are public slice kernels over a latent cache the caller owns,
//! [`attention_naive`] and [`attention_absorbed`] — the pair of einsums DeepSeek's `model.py`
//! writes for each `attn_impl` — and [`Mla`] is the layer around them. Everything one layer
//! needs is re-exported here (the weight type, the norm, the rope table and the softmax scale),
//! so using MLA alone takes this one dependency.
//!
//! ```
//! use deepblocks_mla::{
//!     AttentionPath, CacheDType, DType, Layout, Mla, MlaCache, MlaCacheConfig, MlaConfig, MlaWeights, QProj,
//!     QProjConfig, RmsNorm, RmsNormConfig, RopeConfig, RopeTable, Weight,
//! };
//!
//! let (h, n, c, d, r, v) = (8, 2, 4, 2, 2, 3);
//! let cfg = MlaConfig {
//!     hidden_size: h, num_heads: n, q_proj: QProjConfig::Full, kv_lora_rank: c,
//!     qk_nope_head_dim: d, qk_rope_head_dim: r, v_head_dim: v,
//!     softmax_scale: ((d + r) as f32).powf(-0.5),
//! };
//! let w = |rows: usize, cols: usize| {
//!     let vals = (0..rows * cols).map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0).collect();
//!     Weight::from_f32(vals, rows, cols).unwrap()
//! };
//! let weights = MlaWeights {
//!     q: QProj::Full { q_proj: w(n * (d + r), h) },
//!     kv_a_proj_with_mqa: w(c + r, h),
//!     kv_a_layernorm: RmsNorm::ones(RmsNormConfig { hidden: c, eps: 1e-6 })?,
//!     kv_b: w(n * (d + v), c).into(), // KvB::Stacked { kv_b_proj }
//!     o_proj: w(h, n * v),
//! };
//! let mla = Mla::new(cfg, weights)?;
//! let rope = RopeTable::with_len(RopeConfig::new(r, 10_000.0, 64, Layout::Interleaved), 64)?;
//! let x: Vec<f32> = (0..3 * h).map(|i| (i as f32 * 0.37).sin()).collect();
//!
//! // Two caches, one per path: three tokens of prefill each.
//! let sizes = MlaCacheConfig {
//!     num_layers: 1, kv_lora_rank: c, qk_rope_head_dim: r, max_positions: 64, dtype: CacheDType::F32,
//! };
//! let (mut naive_cache, mut absorbed_cache) = (MlaCache::new(sizes)?, MlaCache::new(sizes)?);
//! let (mut a, mut b) = (vec![0.0; 3 * h], vec![0.0; 3 * h]);
//! mla.forward(&mut a, &x, 3, naive_cache.layer_mut(0)?, &rope, AttentionPath::Naive)?;
//! mla.forward(&mut b, &x, 3, absorbed_cache.layer_mut(0)?, &rope, AttentionPath::Absorbed)?;
//! assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5));
//! assert_eq!(absorbed_cache.len(), 3);
//! assert_eq!(absorbed_cache.bytes(), 3 * (c + r) * 4); // the latent and the rope key, nothing else
//! # Ok::<(), deepblocks_mla::Error>(())
//! ```
//!
//! See [`docs/mla.md`] for the equations mapped to the code, the absorption algebra, and KV-cache
//! sizes for MHA / GQA / MQA / MLA.
//!
//! [`docs/mla.md`]: https://github.com/deepblocks/deepblocks/blob/main/docs/mla.md

#![deny(missing_docs)]

mod attention;
mod cache;
mod error;
mod flash;

pub use attention::{
    AttentionPath, AttentionShape, BF16_DOT_SPEEDUP, IN_PLACE_SPEEDUP, INTEGER_SPEEDUP, KvB,
    KvUpProjection, Mla, MlaConfig, MlaWeights, QProj, QProjConfig, TILE_SPEEDUP,
    attention_absorbed, attention_naive,
};
pub use cache::{
    CacheDType, DEFAULT_CACHE_DTYPE, LatentCache, LatentRows, MlaCache, MlaCacheConfig, cache_dtype,
};
pub use error::{Error, Result};

/// What one layer needs from the other blocks: the weight type, the latent norms, the rotary
/// table and the softmax scale (with YaRN's factor).
pub use deepblocks_core::{DType, Weight};
pub use deepblocks_norm::{RmsNorm, RmsNormConfig};
pub use deepblocks_rope::{
    CosSin, Layout, RopeConfig, RopeScaling, RopeTable, YarnScaling, softmax_scale,
};

// The README's example is a doctest too, so what crates.io shows is what runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
