//! Forward FLOPs per token.
//!
//! Convention: a multiply-add is 2 FLOPs; a token at a position that attends to `L` keys (itself
//! and the `L − 1` before it, all cached) costs
//!
//! ```text
//! C(L) = 2·N_act  +  2·l·n_h·(d_qk + d_v)·L
//! ```
//!
//! where `N_act` is the token's activated matmul parameters (every linear layer, the router,
//! the k routed experts, the `lm_head`; not the embedding lookup, norms or biases) and the second
//! term is the attention scores `q·k` (`d_qk` per head per key) and the weighted sum of values
//! (`d_v` per head per key) in each of the `l` layers. Softmax, norms, activations, RoPE and the
//! router's softmax/top-k are left out (they are `O(h)` or `O(n_h·L)` per token, not
//! `O(h²)` or `O(n_h·d·L)`). This is Kaplan et al. 2020 (§2.1, Table 1) `C = 2N + 2·l·n_ctx·d_attn`
//! with both attention matmuls counted, as Hoffmann et al. 2022 (App. F) do: Kaplan's context term
//! is one matmul's worth (`2·d_attn` per key per layer), ours twice that when `d_qk = d_v`.
//!
//! For MLA there are two ways to run attention, with the same `2·N_act` but different `L` terms:
//!
//! - [`MlaPath::Expanded`]: `kv_b_proj` turns each token's latent into per-head keys
//!   (`d_qk = d + d^R = 192`) and values (`d_v = 128`), computed once and kept;
//! - [`MlaPath::Absorbed`]: `W_UK` is folded into the query and `W_UV` into the output (the
//!   report's §2.1.2), so each head attends over the cached latent directly: scores over
//!   `d_c + d^R` (576) and values of width `d_c` (512) per key. The absorption matmuls cost the
//!   same `2·d_c·n_h·(d + d_v)` per token as applying `kv_b_proj` once, so `N_act` is unchanged.
//!
//! A whole causal sequence of `T` tokens costs `Σ_{L=1..T} C(L)` ([`sequence_flops`]).

use serde::Serialize;

use crate::error::{Error, Result};
use crate::kv::KvLayout;

/// The attention sizes the `L`-dependent FLOP term needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AttentionDims {
    /// `l`, layers with attention.
    pub layers: u64,
    /// `n_h`, query heads.
    pub heads: u64,
    /// Query/key dimension per head (`d + d^R` for MLA).
    pub qk_head_dim: u64,
    /// Value dimension per head.
    pub v_head_dim: u64,
}

/// How MLA attention is evaluated (no effect on other attention layouts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MlaPath {
    /// Per-head keys and values expanded from the latent (transformers' formulation).
    #[default]
    Expanded,
    /// `W_UK` and `W_UV` absorbed; attention runs over the cached latent.
    Absorbed,
}

/// Forward FLOPs of one token attending to `context` keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Flops {
    /// `L`, keys attended (the token's position + 1).
    pub context: u64,
    /// `2·N_act`.
    pub matmul: u64,
    /// `2·l·n_h·(d_qk + d_v)·L`.
    pub attention: u64,
    /// `matmul + attention`.
    pub total: u64,
}

fn overflow(what: &str) -> Error {
    Error::Overflow {
        what: what.to_string(),
    }
}

/// Attention FLOPs per key attended, summed over layers and heads: `2·l·n_h·(d_qk + d_v)`.
pub fn attention_flops_per_key(dims: &AttentionDims, kv: &KvLayout, path: MlaPath) -> Option<u64> {
    let (qk, v) = match (kv, path) {
        (
            KvLayout::Mla {
                kv_lora_rank,
                qk_rope_head_dim,
            },
            MlaPath::Absorbed,
        ) => (kv_lora_rank.checked_add(*qk_rope_head_dim)?, *kv_lora_rank),
        _ => (dims.qk_head_dim, dims.v_head_dim),
    };
    2u64.checked_mul(dims.layers)?
        .checked_mul(dims.heads)?
        .checked_mul(qk.checked_add(v)?)
}

/// FLOPs of one token with `activated_matmul` activated matmul parameters, attending to
/// `context` keys.
pub fn token_flops(
    activated_matmul: u64,
    dims: &AttentionDims,
    kv: &KvLayout,
    context: u64,
    path: MlaPath,
) -> Result<Flops> {
    let matmul = activated_matmul
        .checked_mul(2)
        .ok_or_else(|| overflow("matmul FLOPs"))?;
    let attention = attention_flops_per_key(dims, kv, path)
        .and_then(|per_key| per_key.checked_mul(context))
        .ok_or_else(|| overflow("attention FLOPs"))?;
    let total = matmul
        .checked_add(attention)
        .ok_or_else(|| overflow("FLOPs per token"))?;
    Ok(Flops {
        context,
        matmul,
        attention,
        total,
    })
}

/// FLOPs of a forward pass over a causal sequence of `tokens` tokens (a prefill):
/// `T·2·N_act + 2·l·n_h·(d_qk + d_v)·T(T+1)/2`.
pub fn sequence_flops(
    activated_matmul: u64,
    dims: &AttentionDims,
    kv: &KvLayout,
    tokens: u64,
    path: MlaPath,
) -> Result<u128> {
    let per_key = attention_flops_per_key(dims, kv, path).ok_or_else(|| overflow("attention"))?;
    let t = u128::from(tokens);
    let matmul = t * 2 * u128::from(activated_matmul);
    let pairs = t * (t + 1) / 2;
    pairs
        .checked_mul(u128::from(per_key))
        .and_then(|a| a.checked_add(matmul))
        .ok_or_else(|| overflow("sequence FLOPs"))
}
