//! The released DeepSeek-V2 configs as descriptions (tests check them against the files).

use deepblocks_rope::{RopeScaling, YarnScaling};

use crate::{
    Architecture, DeepSeekMoe, Family, Ffn, MlaAttention, QueryProjection, Rope, RoutingRule,
    ScoringFunc, TopkSelection,
};

impl Architecture {
    /// DeepSeek-V2 (236B), equal to deepseek-ai/DeepSeek-V2's `config.json`.
    pub fn deepseek_v2() -> Architecture {
        let lite = Architecture::deepseek_v2_lite();
        let Ffn::Moe(moe) = lite.ffn else {
            unreachable!("V2-Lite is a MoE model")
        };
        Architecture {
            hidden_size: 5120,
            intermediate_size: 12_288,
            num_hidden_layers: 60,
            attention: MlaAttention {
                num_attention_heads: 128,
                q_proj: QueryProjection::LowRank { q_lora_rank: 1536 },
                ..lite.attention
            },
            ffn: Ffn::Moe(DeepSeekMoe {
                n_routed_experts: 160,
                moe_intermediate_size: 1536,
                routing: RoutingRule {
                    topk_method: TopkSelection::GroupLimitedGreedy {
                        n_group: 8,
                        topk_group: 3,
                    },
                    routed_scaling_factor: 16.0,
                    ..moe.routing
                },
                ..moe
            }),
            ..lite
        }
    }

    /// DeepSeek-V2-Lite (16B), equal to deepseek-ai/DeepSeek-V2-Lite's `config.json`.
    pub fn deepseek_v2_lite() -> Architecture {
        Architecture {
            family: Family::DeepseekV2,
            vocab_size: 102_400,
            hidden_size: 2048,
            num_hidden_layers: 27,
            max_position_embeddings: 163_840,
            rms_norm_eps: 1e-6,
            attention: MlaAttention {
                num_attention_heads: 16,
                q_proj: QueryProjection::Full,
                kv_lora_rank: 512,
                qk_nope_head_dim: 128,
                qk_rope_head_dim: 64,
                v_head_dim: 128,
            },
            rope: Rope {
                rope_theta: 10_000.0,
                scaling: RopeScaling::Yarn(YarnScaling {
                    beta_fast: 32.0,
                    beta_slow: 1.0,
                    mscale: Some(0.707),
                    mscale_all_dim: Some(0.707),
                    ..YarnScaling::new(40.0, 4096)
                }),
            },
            intermediate_size: 10_944,
            ffn: Ffn::Moe(DeepSeekMoe {
                n_routed_experts: 64,
                num_experts_per_tok: 6,
                moe_intermediate_size: 1408,
                n_shared_experts: 2,
                first_k_dense_replace: 1,
                moe_layer_freq: 1,
                routing: RoutingRule {
                    scoring_func: ScoringFunc::Softmax,
                    topk_method: TopkSelection::Greedy,
                    norm_topk_prob: false,
                    routed_scaling_factor: 1.0,
                    weighting: Family::DeepseekV2.weighting(),
                },
            }),
            tie_word_embeddings: false,
            bos_token_id: Some(100_000),
            eos_token_ids: vec![100_001],
            rope_interleave: true,
            num_nextn_predict_layers: 0,
            quantization: None,
        }
    }
}
