//! The one place where the architecture description becomes each block's own config: the
//! blocks know nothing of `config.json`, the description nothing of the blocks.
//!
//! | description ([`Architecture`]) | block config |
//! |---|---|
//! | `attention`, `rope` | [`MlaConfig`] (softmax scale with YaRN's mscale) |
//! | `rope`, `max_position_embeddings`, the family's pair layout | [`RopeConfig`] |
//! | `rms_norm_eps` and a width | [`RmsNormConfig`] |
//! | `ffn` (DeepSeekMoE) and its [`RoutingRule`] | [`MoeConfig`] / [`RouterConfig`] |
//! | `num_hidden_layers`, `kv_lora_rank`, `qk_rope_head_dim` | [`MlaCacheConfig`] |

use deepblocks_config::{
    Architecture, DeepSeekMoe, QueryProjection, RoutingRule, ScoringFunc, TopkSelection,
    WeightingRule,
};
use deepblocks_mla::{CacheDType, MlaCacheConfig, MlaConfig, QProjConfig};
use deepblocks_moe::{MoeConfig, RouterConfig, Scoring, TopkMethod, Weighting};
use deepblocks_norm::RmsNormConfig;
use deepblocks_rope::{Layout, RopeConfig, softmax_scale};

use crate::Result;

/// The RoPE pair layout of the checkpoint: interleaved pairs (`rope_interleave`, DeepSeek's
/// layout and every DeepSeek-V2 checkpoint's, [`docs/rope.md`]) or halves.
///
/// [`docs/rope.md`]: https://github.com/deepblocks/deepblocks/blob/main/docs/rope.md
pub fn rope_layout(arch: &Architecture) -> Layout {
    if arch.rope_interleave {
        Layout::Interleaved
    } else {
        Layout::HalfSplit
    }
}

/// The rotary table of the decoupled RoPE parts, shared by every layer.
pub fn rope_config(arch: &Architecture) -> RopeConfig {
    RopeConfig::new(
        arch.attention.qk_rope_head_dim,
        arch.rope.rope_theta,
        arch.max_position_embeddings,
        rope_layout(arch),
    )
    .with_scaling(arch.rope.scaling)
}

/// Every attention layer's config, with the softmax scale `(d + r)^−½ · mscale²` from the rope
/// crate.
///
/// # Errors
/// A rope error for a scaling the rope crate refuses (never for a validated description).
pub fn mla_config(arch: &Architecture) -> Result<MlaConfig> {
    let a = &arch.attention;
    Ok(MlaConfig {
        hidden_size: arch.hidden_size,
        num_heads: a.num_attention_heads,
        q_proj: match a.q_proj {
            QueryProjection::Full => QProjConfig::Full,
            QueryProjection::LowRank { q_lora_rank } => QProjConfig::LowRank { q_lora_rank },
        },
        kv_lora_rank: a.kv_lora_rank,
        qk_nope_head_dim: a.qk_nope_head_dim,
        qk_rope_head_dim: a.qk_rope_head_dim,
        v_head_dim: a.v_head_dim,
        softmax_scale: softmax_scale(a.qk_head_dim(), &arch.rope.scaling)?,
    })
}

/// An RMSNorm of width `hidden` with the model's ε.
pub fn norm_config(arch: &Architecture, hidden: usize) -> RmsNormConfig {
    RmsNormConfig {
        hidden,
        eps: arch.rms_norm_eps,
    }
}

/// The ε of the latents' RMSNorms (`q_a_layernorm`, `kv_a_layernorm`): every family's
/// reference code builds them with RMSNorm's default, 10⁻⁶, not the config's `rms_norm_eps`
/// (DeepSeek's `inference/model.py` and transformers' `DeepseekV2Attention`,
/// `DeepseekV3Attention` and `Glm4MoeLiteAttention` alike; GLM-4.7-Flash's layers use 10⁻⁵).
pub const LATENT_RMS_NORM_EPS: f32 = 1e-6;

/// A latent's RMSNorm of width `hidden` ([`LATENT_RMS_NORM_EPS`]).
pub fn latent_norm_config(hidden: usize) -> RmsNormConfig {
    RmsNormConfig {
        hidden,
        eps: LATENT_RMS_NORM_EPS,
    }
}

/// The latent cache's sizes, for latents kept in `dtype`.
pub fn cache_config(arch: &Architecture, dtype: impl Into<CacheDType>) -> MlaCacheConfig {
    let dtype = dtype.into();
    MlaCacheConfig {
        num_layers: arch.num_hidden_layers,
        kv_lora_rank: arch.attention.kv_lora_rank,
        qk_rope_head_dim: arch.attention.qk_rope_head_dim,
        max_positions: arch.max_position_embeddings,
        dtype,
    }
}

/// The router of a MoE layer. `weighting` overrides the family's rule when `Some` (e.g.
/// [`Weighting::ScaleOnly`] to reproduce transformers 5's `deepseek_v2`).
pub fn router_config(moe: &DeepSeekMoe, weighting: Option<Weighting>) -> RouterConfig {
    let RoutingRule {
        scoring_func,
        topk_method,
        norm_topk_prob,
        routed_scaling_factor,
        weighting: rule,
    } = moe.routing;
    RouterConfig {
        scoring_func: match scoring_func {
            ScoringFunc::Softmax => Scoring::Softmax,
            ScoringFunc::Sigmoid => Scoring::Sigmoid,
        },
        topk_method: match topk_method {
            TopkSelection::Greedy => TopkMethod::Greedy,
            TopkSelection::GroupLimitedGreedy {
                n_group,
                topk_group,
            } => TopkMethod::GroupLimitedGreedy {
                n_group,
                topk_group,
            },
            TopkSelection::NoauxTc {
                n_group,
                topk_group,
            } => TopkMethod::NoauxTc {
                n_group,
                topk_group,
            },
        },
        norm_topk_prob,
        routed_scaling_factor,
        weighting: weighting.unwrap_or(match rule {
            WeightingRule::NormalizeOrScale => Weighting::NormalizeOrScale,
            WeightingRule::NormalizeThenScale => Weighting::NormalizeThenScale,
            WeightingRule::ScaleOnly => Weighting::ScaleOnly,
            WeightingRule::AlwaysNormalizeThenScale => Weighting::AlwaysNormalizeThenScale,
        }),
        ..RouterConfig::new(moe.n_routed_experts, moe.num_experts_per_tok)
    }
}

/// A MoE layer's config (see [`router_config`] for `weighting`).
pub fn moe_config(
    arch: &Architecture,
    moe: &DeepSeekMoe,
    weighting: Option<Weighting>,
) -> MoeConfig {
    MoeConfig {
        hidden_size: arch.hidden_size,
        moe_intermediate_size: moe.moe_intermediate_size,
        n_shared_experts: moe.n_shared_experts,
        router: router_config(moe, weighting),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_accepts_what_a_valid_description_maps_to() {
        for arch in [
            Architecture::deepseek_v2(),
            Architecture::deepseek_v2_lite(),
        ] {
            mla_config(&arch).unwrap().validate().unwrap();
            rope_config(&arch).validate().unwrap();
            norm_config(&arch, arch.hidden_size).validate().unwrap();
            cache_config(&arch, CacheDType::BF16).validate().unwrap();
            let moe = arch.moe().unwrap();
            router_config(moe, None).validate().unwrap();
            assert_eq!(
                router_config(moe, None).weighting,
                Weighting::NormalizeOrScale
            );
            assert_eq!(
                router_config(moe, Some(Weighting::ScaleOnly)).weighting,
                Weighting::ScaleOnly
            );
        }
        let v2 = mla_config(&Architecture::deepseek_v2()).unwrap();
        assert!((v2.softmax_scale - 0.114_721).abs() < 1e-6); // 192^-½ · mscale(40, 0.707)²
    }
}
