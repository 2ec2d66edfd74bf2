//! The architecture description of an MLA-family model: every field a `config.json` sets that
//! changes what the model computes, named as there, typed and checked.

use deepblocks_rope::RopeScaling;

use crate::{Error, Family, Result};

/// The architecture of one MLA-family checkpoint (DeepSeek-V2 report, arXiv 2405.04434): a
/// pre-norm decoder of `num_hidden_layers` layers, each Multi-head Latent Attention (§2.1) followed
/// by a dense SwiGLU MLP or a DeepSeekMoE layer (§2.2), with rotary positions (§2.1.3).
///
/// Built by [`Architecture::from_json`] / [`Architecture::from_file`] (which check it), or by hand
/// and then [`Architecture::validate`]d. A validated description guarantees that every tensor the
/// model holds has an element count (and a byte count in f32) that fits in a `usize`, so code
/// consuming it may multiply its sizes without overflow checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Architecture {
    /// The family (`model_type`), which fixes the rules the fields do not spell out: the routing
    /// weights' rule, the RoPE pair layout.
    pub family: Family,
    /// `vocab_size`: the number of token ids `V`, rows of the embedding and of `lm_head`.
    pub vocab_size: usize,
    /// `hidden_size`: the width `h` of the residual stream.
    pub hidden_size: usize,
    /// `num_hidden_layers`: decoder layers `l` (multi-token-prediction layers excluded).
    pub num_hidden_layers: usize,
    /// `max_position_embeddings`: positions run `0..max_position_embeddings`.
    pub max_position_embeddings: usize,
    /// `rms_norm_eps`: the `ε` of every RMSNorm, `w ⊙ x / √(mean(x²) + ε)`.
    pub rms_norm_eps: f32,
    /// The attention of every layer.
    pub attention: MlaAttention,
    /// The rotary position embedding of the decoupled RoPE parts (`q^R`, `k^R`, report eq. 14–15).
    pub rope: Rope,
    /// `intermediate_size`: the width of the dense SwiGLU MLP of the layers that are not MoE (0
    /// only when no layer is dense).
    pub intermediate_size: usize,
    /// The feed-forward layers: all dense, or DeepSeekMoE after some dense ones.
    pub ffn: Ffn,
    /// `tie_word_embeddings`: `lm_head` is the embedding matrix (the checkpoint has no
    /// `lm_head.weight`).
    pub tie_word_embeddings: bool,
    /// `bos_token_id`, when set.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` (one id or a list in the file): generation stops at any of them.
    pub eos_token_ids: Vec<u32>,
    /// `rope_interleave`: the RoPE features of `q^R` and `k^R` come in interleaved pairs
    /// `(x₀, x₁), (x₂, x₃), …` (true: DeepSeek's layout, every DeepSeek-V2 checkpoint) rather
    /// than halves (`rotate_half`).
    pub rope_interleave: bool,
    /// `num_nextn_predict_layers`: multi-token-prediction layers stored after the decoder
    /// layers (`model.layers.{num_hidden_layers}…`), which inference does not run: a loader
    /// skips their tensors.
    pub num_nextn_predict_layers: usize,
    /// `quantization_config`: the checkpoint's FP8 block scaling, when it has one.
    pub quantization: Option<Fp8Quantization>,
}

/// `quantization_config` of a block-FP8 checkpoint, as DeepSeek-V3 ships it: `quant_method`
/// `fp8`, `fmt` `e4m3`, `activation_scheme` `dynamic`. Which tensors are FP8 is the
/// checkpoint's to say (each has a `weight_scale_inv` beside it), not this description's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Quantization {
    /// `weight_block_size`: `[rows, cols]` of the weights sharing one scale (128 × 128 in V3);
    /// edge blocks are partial.
    pub weight_block_size: [usize; 2],
}

/// Multi-head Latent Attention's sizes (report §2.1.2, Table 1's symbols in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MlaAttention {
    /// `num_attention_heads`: the heads `n` (`n_h`).
    pub num_attention_heads: usize,
    /// How the queries are made (`q_lora_rank`).
    pub q_proj: QueryProjection,
    /// `kv_lora_rank`: the width `c` of the cached key-value latent (`d_c`; 512 in DeepSeek-V2).
    pub kv_lora_rank: usize,
    /// `qk_nope_head_dim`: the per-head query/key features without RoPE, `d` (`d_h`; 128).
    pub qk_nope_head_dim: usize,
    /// `qk_rope_head_dim`: the per-head query features with RoPE and the width of the one shared
    /// RoPE key, `r` (`d_h^R`; 64).
    pub qk_rope_head_dim: usize,
    /// `v_head_dim`: the per-head value features `v` (128; GLM-4.7-Flash differs from `d`).
    pub v_head_dim: usize,
}

impl MlaAttention {
    /// `d + r`: the width of one head's query and key.
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// `c + r`: values one token leaves in the cache of one layer (576 for DeepSeek-V2).
    pub fn cache_values_per_token(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }
}

/// How the queries are made: the checkpoint's `q_lora_rank`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryProjection {
    /// `q_lora_rank: null`: one matrix `q_proj [n·(d+r), h]` (DeepSeek-V2-Lite).
    Full,
    /// Through a normalised latent (report eq. 12–14): `q_a_proj [q, h]`, `q_a_layernorm [q]`,
    /// `q_b_proj [n·(d+r), q]`.
    LowRank {
        /// `q_lora_rank`: the query latent's width `q` (`d_c'`; 1536 in DeepSeek-V2).
        q_lora_rank: usize,
    },
}

/// The rotary embedding: `rope_theta` and the scaling, in the rope block's own types (read from
/// the hub form `rope_theta` + `rope_scaling` or transformers 5's `rope_parameters`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// `rope_theta`: the base of the frequencies `θ^(−2i/r)`.
    pub rope_theta: f64,
    /// How the frequencies are stretched past the pre-training context (YaRN for DeepSeek-V2).
    pub scaling: RopeScaling,
}

impl Rope {
    /// The context a scaling was fitted for, when it records one
    /// (`factor × original_max_position_embeddings` for YaRN and Llama 3).
    pub fn extended_context(&self) -> Option<usize> {
        let (factor, original) = match self.scaling {
            RopeScaling::Yarn(y) => (y.factor, y.original_max_position_embeddings),
            RopeScaling::Llama3(l) => (l.factor, l.original_max_position_embeddings),
            _ => return None,
        };
        Some((factor * original as f64).round() as usize)
    }
}

/// The feed-forward part of the decoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ffn {
    /// `n_routed_experts: null`: every layer is a dense SwiGLU MLP of width `intermediate_size`.
    Dense,
    /// DeepSeekMoE in the layers its schedule names, the dense MLP in the others.
    Moe(DeepSeekMoe),
}

/// DeepSeekMoE (report §2.2): shared experts every token uses plus fine-grained routed experts of
/// which the router picks `k` per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeepSeekMoe {
    /// `n_routed_experts`: routed experts `e` per MoE layer (`N_r`; 160 in DeepSeek-V2).
    pub n_routed_experts: usize,
    /// `num_experts_per_tok`: routed experts `k` each token uses (`K_r`; 6).
    pub num_experts_per_tok: usize,
    /// `moe_intermediate_size`: the width `i` of one expert's SwiGLU MLP (1536).
    pub moe_intermediate_size: usize,
    /// `n_shared_experts`: shared experts (`N_s`; 2), stored fused as one MLP of width
    /// `n_shared_experts · i`; 0 for none.
    pub n_shared_experts: usize,
    /// `first_k_dense_replace`: the first this many layers keep the dense MLP.
    pub first_k_dense_replace: usize,
    /// `moe_layer_freq`: of the layers after them, every `moe_layer_freq`-th is MoE (DeepSeek's
    /// rule; transformers ignores it — the two agree at 1, as in every released config).
    pub moe_layer_freq: usize,
    /// How the router scores, selects and weights experts.
    pub routing: RoutingRule,
}

/// The router's rule, as the family's reference code computes it (report §2.2.2; DeepSeek-V3
/// §2.1.2 for `noaux_tc`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingRule {
    /// `scoring_func`: gate logits to affinities `s_{i,t}`.
    pub scoring_func: ScoringFunc,
    /// `topk_method` with its `n_group` / `topk_group`: which `k` experts a token gets.
    pub topk_method: TopkSelection,
    /// `norm_topk_prob`: whether the `k` weights are normalised to sum to 1.
    pub norm_topk_prob: bool,
    /// `routed_scaling_factor`: `ρ`, multiplying the routed experts' weights (16 in DeepSeek-V2).
    pub routed_scaling_factor: f32,
    /// How `norm_topk_prob` and `ρ` combine: fixed by the family, not written in the file.
    pub weighting: WeightingRule,
}

/// `scoring_func`: how gate logits become affinities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoringFunc {
    /// `softmax` over the experts (DeepSeek-V2).
    Softmax,
    /// `sigmoid` of each logit (DeepSeek-V3).
    Sigmoid,
}

/// `topk_method`: how a token's `k` experts are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopkSelection {
    /// `greedy`: the `k` best of all experts (DeepSeek-V2-Lite).
    Greedy,
    /// `group_limited_greedy` (device-limited routing, report §2.2.2): keep the `topk_group` best
    /// of `n_group` contiguous groups, a group scored by its best expert, then the `k` best inside.
    GroupLimitedGreedy {
        /// `n_group`: groups (devices, `D`; 8 in DeepSeek-V2).
        n_group: usize,
        /// `topk_group`: groups kept per token (`M`; 3).
        topk_group: usize,
    },
    /// `noaux_tc` (DeepSeek-V3): selection on scores plus `e_score_correction_bias`, a group
    /// scored by the sum of its two best.
    NoauxTc {
        /// `n_group`.
        n_group: usize,
        /// `topk_group`.
        topk_group: usize,
    },
}

impl TopkSelection {
    /// The `topk_method` string of the config.
    pub const fn method_name(self) -> &'static str {
        match self {
            TopkSelection::Greedy => "greedy",
            TopkSelection::GroupLimitedGreedy { .. } => "group_limited_greedy",
            TopkSelection::NoauxTc { .. } => "noaux_tc",
        }
    }

    /// `(n_group, topk_group)` of the grouped methods.
    pub fn groups(self) -> Option<(usize, usize)> {
        match self {
            TopkSelection::Greedy => None,
            TopkSelection::GroupLimitedGreedy {
                n_group,
                topk_group,
            }
            | TopkSelection::NoauxTc {
                n_group,
                topk_group,
            } => Some((n_group, topk_group)),
        }
    }
}

/// How the unbiased scores `s` of the `k` chosen experts become their weights; with
/// `S = Σ s_j` and `ρ = routed_scaling_factor`:
///
/// | rule | `norm_topk_prob` and `k > 1` | otherwise | whose |
/// |---|---|---|---|
/// | [`NormalizeOrScale`](WeightingRule::NormalizeOrScale) | `s / (S + 1e-20)` | `ρ · s` | DeepSeek-V2's code |
/// | [`NormalizeThenScale`](WeightingRule::NormalizeThenScale) | `ρ · s / (S + 1e-20)` | `ρ · s` | DeepSeek-V3's code |
/// | [`ScaleOnly`](WeightingRule::ScaleOnly) | `ρ · s` | `ρ · s` | transformers 5's `deepseek_v2` |
/// | [`AlwaysNormalizeThenScale`](WeightingRule::AlwaysNormalizeThenScale) | `ρ · s / (S + 1e-20)` | `ρ · s / (S + 1e-20)` if `norm_topk_prob`, else `ρ · s` | transformers 5's `deepseek_v3` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightingRule {
    /// Normalise or scale, never both (DeepSeek-V2).
    NormalizeOrScale,
    /// Normalise, then always scale (DeepSeek-V3).
    NormalizeThenScale,
    /// Always scale, never normalise (transformers 5's `deepseek_v2`, which ignores
    /// `norm_topk_prob`).
    ScaleOnly,
    /// Normalise whenever `norm_topk_prob` (k = 1 too), then always scale (transformers 5's
    /// `deepseek_v3`).
    AlwaysNormalizeThenScale,
}

/// What the feed-forward block of one decoder layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// The dense SwiGLU MLP (`mlp.gate_proj`, `mlp.up_proj`, `mlp.down_proj`).
    Dense,
    /// DeepSeekMoE (`mlp.gate`, `mlp.experts.*`, `mlp.shared_experts`).
    Moe,
}

impl Architecture {
    /// What the feed-forward block of layer `layer` (0-based) is: MoE when the model has routed
    /// experts, `layer ≥ first_k_dense_replace` and `layer % moe_layer_freq == 0` (DeepSeek's rule).
    ///
    /// ```
    /// use deepblocks_config::{Architecture, LayerKind};
    /// let v2 = Architecture::deepseek_v2();
    /// assert_eq!(v2.layer_kind(0), LayerKind::Dense);
    /// assert_eq!(v2.layer_kind(1), LayerKind::Moe);
    /// assert_eq!((v2.dense_layers(), v2.moe_layers()), (1, 59));
    /// ```
    pub fn layer_kind(&self, layer: usize) -> LayerKind {
        match &self.ffn {
            Ffn::Moe(m)
                if layer >= m.first_k_dense_replace
                    && layer.is_multiple_of(m.moe_layer_freq.max(1)) =>
            {
                LayerKind::Moe
            }
            _ => LayerKind::Dense,
        }
    }

    /// Whether layer `layer` is a MoE layer ([`Self::layer_kind`]).
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.layer_kind(layer) == LayerKind::Moe
    }

    /// The number of MoE layers (counted without visiting each layer).
    pub fn moe_layers(&self) -> usize {
        match &self.ffn {
            Ffn::Dense => 0,
            Ffn::Moe(m) => {
                let l = self.num_hidden_layers;
                let freq = m.moe_layer_freq.max(1);
                let start = m.first_k_dense_replace.min(l);
                // Multiples of `freq` in [start, l).
                l.div_ceil(freq) - start.div_ceil(freq)
            }
        }
    }

    /// The number of layers with the dense MLP.
    pub fn dense_layers(&self) -> usize {
        self.num_hidden_layers - self.moe_layers()
    }

    /// The DeepSeekMoE settings, when the model has routed experts.
    pub fn moe(&self) -> Option<&DeepSeekMoe> {
        match &self.ffn {
            Ffn::Dense => None,
            Ffn::Moe(m) => Some(m),
        }
    }

    /// Checks every invariant the readers establish, for a description built or edited by hand:
    /// sizes of at least 1, routing that can pick `k` distinct experts, a RoPE config the rope
    /// block accepts, and tensor sizes that fit in a `usize`.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the first key at fault, [`Error::Overflow`] naming the tensor
    /// whose size does not fit.
    pub fn validate(&self) -> Result<()> {
        let a = &self.attention;
        let mut sizes = vec![
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("max_position_embeddings", self.max_position_embeddings),
            ("num_attention_heads", a.num_attention_heads),
            ("kv_lora_rank", a.kv_lora_rank),
            ("qk_nope_head_dim", a.qk_nope_head_dim),
            ("qk_rope_head_dim", a.qk_rope_head_dim),
            ("v_head_dim", a.v_head_dim),
        ];
        if let QueryProjection::LowRank { q_lora_rank } = a.q_proj {
            sizes.push(("q_lora_rank", q_lora_rank));
        }
        if self.dense_layers() > 0 {
            sizes.push(("intermediate_size", self.intermediate_size));
        }
        if let Ffn::Moe(m) = &self.ffn {
            sizes.push(("n_routed_experts", m.n_routed_experts));
            sizes.push(("num_experts_per_tok", m.num_experts_per_tok));
            sizes.push(("moe_intermediate_size", m.moe_intermediate_size));
            sizes.push(("moe_layer_freq", m.moe_layer_freq));
        }
        if let Some((key, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(Error::invalid(key, 0, "must be at least 1"));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(Error::invalid(
                "rms_norm_eps",
                self.rms_norm_eps,
                "must be a finite number > 0",
            ));
        }
        if let Ffn::Moe(m) = &self.ffn {
            self.family.check_routing(&m.routing)?;
            validate_routing(m)?;
        }
        if let Some((i, &id)) = self
            .eos_token_ids
            .iter()
            .chain(&self.bos_token_id)
            .enumerate()
            .find(|&(_, &id)| id as usize >= self.vocab_size)
        {
            let key = if i < self.eos_token_ids.len() {
                "eos_token_id"
            } else {
                "bos_token_id"
            };
            return Err(Error::invalid(
                key,
                id,
                format!("is not below vocab_size = {}", self.vocab_size),
            ));
        }
        crate::read::validate_rope(
            ("qk_rope_head_dim", a.qk_rope_head_dim),
            &self.rope,
            self.max_position_embeddings,
            "rope_scaling",
        )?;
        self.check_sizes()
    }

    /// Every tensor's element count, and its bytes in f32, fit in a `usize`.
    fn check_sizes(&self) -> Result<()> {
        let a = &self.attention;
        let (h, n) = (self.hidden_size, a.num_attention_heads);
        let (c, d, r, v) = (
            a.kv_lora_rank,
            a.qk_nope_head_dim,
            a.qk_rope_head_dim,
            a.v_head_dim,
        );
        let product = |what: &str, factors: &[usize]| -> Result<usize> {
            factors
                .iter()
                .try_fold(4usize, |acc, &f| acc.checked_mul(f))
                .map(|bytes| bytes / 4)
                .ok_or_else(|| Error::Overflow {
                    what: what.to_string(),
                })
        };
        let sum = |what: &str, x: usize, y: usize| {
            x.checked_add(y).ok_or_else(|| Error::Overflow {
                what: what.to_string(),
            })
        };
        let qk = sum("qk_nope_head_dim + qk_rope_head_dim", d, r)?;
        let dv = sum("qk_nope_head_dim + v_head_dim", d, v)?;
        let cr = sum("kv_lora_rank + qk_rope_head_dim", c, r)?;
        product("embed_tokens [V, h]", &[self.vocab_size, h])?;
        match a.q_proj {
            QueryProjection::Full => {
                product("q_proj [n·(d+r), h]", &[n, qk, h])?;
            }
            QueryProjection::LowRank { q_lora_rank: q } => {
                product("q_a_proj [q, h]", &[q, h])?;
                product("q_b_proj [n·(d+r), q]", &[n, qk, q])?;
            }
        }
        product("kv_a_proj_with_mqa [c+r, h]", &[cr, h])?;
        product("kv_b_proj [n·(d+v), c]", &[n, dv, c])?;
        product("o_proj [h, n·v]", &[h, n, v])?;
        product(
            "the latent cache [positions, c+r]",
            &[self.max_position_embeddings, cr],
        )?;
        product("mlp.gate_up_proj [2·I, h]", &[2, self.intermediate_size, h])?;
        if let Ffn::Moe(m) = &self.ffn {
            let i = m.moe_intermediate_size;
            product("mlp.experts [e, 2·i, h]", &[m.n_routed_experts, 2, i, h])?;
            product(
                "mlp.shared_experts [2·n_shared·i, h]",
                &[2, m.n_shared_experts, i, h],
            )?;
        }
        Ok(())
    }
}

fn validate_routing(m: &DeepSeekMoe) -> Result<()> {
    let (e, k) = (m.n_routed_experts, m.num_experts_per_tok);
    if k > e {
        return Err(Error::invalid(
            "num_experts_per_tok",
            k,
            format!("cannot exceed n_routed_experts = {e}"),
        ));
    }
    let rho = m.routing.routed_scaling_factor;
    if !(rho.is_finite() && rho > 0.0) {
        return Err(Error::invalid(
            "routed_scaling_factor",
            rho,
            "must be a finite number > 0",
        ));
    }
    if let Some((n_group, topk_group)) = m.routing.topk_method.groups() {
        if n_group == 0 || !e.is_multiple_of(n_group) {
            return Err(Error::invalid(
                "n_group",
                n_group,
                format!("must divide n_routed_experts = {e}"),
            ));
        }
        if topk_group == 0 || topk_group > n_group {
            return Err(Error::invalid(
                "topk_group",
                topk_group,
                format!("must be in 1..=n_group = {n_group}"),
            ));
        }
        let group = e / n_group;
        if k > topk_group * group {
            return Err(Error::invalid(
                "num_experts_per_tok",
                k,
                format!(
                    "more than the {} experts in topk_group = {topk_group} groups of {group}",
                    topk_group * group
                ),
            ));
        }
        if matches!(m.routing.topk_method, TopkSelection::NoauxTc { .. }) && group < 2 {
            return Err(Error::invalid(
                "n_group",
                n_group,
                "noaux_tc scores a group by its two best experts, so groups need at least two",
            ));
        }
    }
    Ok(())
}
