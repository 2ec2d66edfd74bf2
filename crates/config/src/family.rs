//! The families of the MLA architecture, one per `model_type`.

use std::fmt;

use crate::{Error, Result, RoutingRule, ScoringFunc, TopkSelection, WeightingRule};

/// An MLA-family architecture, decided by `config.json`'s `model_type`. Everything that differs
/// between families and is not written in the file (how routing weights combine, which keys
/// exist) is a match on this enum, in this crate.
///
/// ```
/// use deepblocks_config::Family;
/// assert_eq!(Family::from_model_type("deepseek_v2")?, Family::DeepseekV2);
/// assert_eq!(Family::from_model_type("kimi_k2")?, Family::KimiK2);
/// assert_eq!(Family::from_model_type("glm4_moe_lite")?, Family::Glm4MoeLite);
/// let err = Family::from_model_type("qwen3_moe").unwrap_err();
/// assert!(err.to_string().contains("qwen3_moe") && err.to_string().contains("deepseek_v3"));
/// # Ok::<(), deepblocks_config::Error>(())
/// ```
///
/// Not `#[non_exhaustive]` on purpose: a new family must be handled (or refused) at every
/// `match` in the workspace, which the compiler then points out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `deepseek_v2`: DeepSeek-V2, V2-Lite, V2.5 and Coder-V2 (arXiv 2405.04434).
    DeepseekV2,
    /// `deepseek_v3`: DeepSeek-V3, R1 and V3.1 (arXiv 2412.19437), Moonlight-16B-A3B — as
    /// transformers 5's `modeling_deepseek_v3.py` computes them: sigmoid scores, `noaux_tc`
    /// selection, weights normalised (when `norm_topk_prob`) then scaled.
    DeepseekV3,
    /// `kimi_k2`: Kimi K2, DeepSeek-V3's architecture under its own `model_type` (its checkpoints
    /// run on DeepSeek-V3's modeling code), read exactly as [`Family::DeepseekV3`].
    KimiK2,
    /// `glm4_moe_lite`: GLM-4.7-Flash, as transformers 5's `modeling_glm4_moe_lite.py` computes
    /// it: DeepSeek-V3's attention and router, the layer schedule from `mlp_layer_types`,
    /// `v_head_dim` apart from `qk_nope_head_dim`, ε 10⁻⁵ by default.
    Glm4MoeLite,
}

impl Family {
    /// Every supported family.
    pub const ALL: &'static [Family] = &[
        Family::DeepseekV2,
        Family::DeepseekV3,
        Family::KimiK2,
        Family::Glm4MoeLite,
    ];

    /// The `model_type` string of the family.
    pub const fn model_type(self) -> &'static str {
        match self {
            Family::DeepseekV2 => "deepseek_v2",
            Family::DeepseekV3 => "deepseek_v3",
            Family::KimiK2 => "kimi_k2",
            Family::Glm4MoeLite => "glm4_moe_lite",
        }
    }

    /// The family of a `model_type`.
    ///
    /// # Errors
    /// [`Error::UnknownModelType`] naming it and listing the supported ones.
    pub fn from_model_type(model_type: &str) -> Result<Family> {
        Family::ALL
            .iter()
            .copied()
            .find(|f| f.model_type() == model_type)
            .ok_or_else(|| Error::UnknownModelType {
                model_type: model_type.to_string(),
                supported: Family::supported(),
            })
    }

    /// The supported `model_type`s, comma-separated.
    pub fn supported() -> String {
        Family::ALL
            .iter()
            .map(|f| f.model_type())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// How the family's reference code turns the chosen experts' scores into weights: DeepSeek's
    /// `modeling_deepseek.py` for V2 (normalise when `norm_topk_prob`, otherwise scale by
    /// `routed_scaling_factor`, never both). transformers 5's `deepseek_v2` departs from it (it
    /// never normalises); DeepSeek's rule is the one followed ([`docs/moe.md`]). For V3 and Kimi
    /// K2, transformers 5's `DeepseekV3TopkRouter`: normalise whenever `norm_topk_prob`, then
    /// scale.
    ///
    /// [`docs/moe.md`]: https://github.com/deepblocks/deepblocks/blob/main/docs/moe.md
    pub const fn weighting(self) -> WeightingRule {
        match self {
            Family::DeepseekV2 => WeightingRule::NormalizeOrScale,
            Family::DeepseekV3 | Family::KimiK2 | Family::Glm4MoeLite => {
                WeightingRule::AlwaysNormalizeThenScale
            }
        }
    }

    /// `rms_norm_eps` when the file does not say: transformers' default for the family (10⁻⁶,
    /// GLM-4.7-Flash's 10⁻⁵).
    pub const fn default_rms_norm_eps(self) -> f64 {
        match self {
            Family::DeepseekV2 | Family::DeepseekV3 | Family::KimiK2 => 1e-6,
            Family::Glm4MoeLite => 1e-5,
        }
    }

    /// Whether the family reads DeepSeek-V3's own keys: `rope_interleave` (default true; every
    /// DeepSeek-V2 checkpoint is interleaved) and `num_nextn_predict_layers` (default 0).
    pub const fn reads_v3_keys(self) -> bool {
        matches!(
            self,
            Family::DeepseekV3 | Family::KimiK2 | Family::Glm4MoeLite
        )
    }

    /// Checks that a routing rule is one this family's reference code computes: DeepSeek-V2
    /// scores with softmax, selects greedily (optionally group-limited) and weights by
    /// [`WeightingRule::NormalizeOrScale`] (or [`WeightingRule::ScaleOnly`], transformers 5's
    /// reading of the same config).
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming `scoring_func`, `topk_method` or `weighting`.
    pub fn check_routing(self, routing: &RoutingRule) -> Result<()> {
        match self {
            Family::DeepseekV2 => {
                if routing.scoring_func == ScoringFunc::Sigmoid {
                    return Err(Error::unsupported(
                        "scoring_func",
                        "\"sigmoid\"",
                        format!(
                            "{self} scores experts with softmax; sigmoid scoring is \
                             DeepSeek-V3's (model_type deepseek_v3, not supported yet)"
                        ),
                    ));
                }
                if let TopkSelection::NoauxTc { .. } = routing.topk_method {
                    return Err(Error::unsupported(
                        "topk_method",
                        "\"noaux_tc\"",
                        format!(
                            "{self} knows greedy and group_limited_greedy; noaux_tc is \
                             DeepSeek-V3's (model_type deepseek_v3, not supported yet)"
                        ),
                    ));
                }
                if routing.weighting == WeightingRule::NormalizeThenScale {
                    return Err(Error::unsupported(
                        "weighting",
                        "NormalizeThenScale",
                        format!(
                            "{self} normalises or scales, never both (NormalizeOrScale, or \
                             ScaleOnly as transformers 5 reads it); NormalizeThenScale is \
                             DeepSeek-V3's"
                        ),
                    ));
                }
                Ok(())
            }
            Family::DeepseekV3 | Family::KimiK2 | Family::Glm4MoeLite => {
                // transformers' router computes sigmoid and noaux_tc whatever the keys say; a
                // config saying otherwise would run as something it does not describe.
                if routing.scoring_func != ScoringFunc::Sigmoid {
                    return Err(Error::unsupported(
                        "scoring_func",
                        "\"softmax\"",
                        format!(
                            "{self} scores experts with sigmoid (transformers' DeepseekV3TopkRouter)"
                        ),
                    ));
                }
                if !matches!(routing.topk_method, TopkSelection::NoauxTc { .. }) {
                    return Err(Error::unsupported(
                        "topk_method",
                        format!("{:?}", routing.topk_method.method_name()),
                        format!(
                            "{self} selects experts by noaux_tc (transformers' DeepseekV3TopkRouter)"
                        ),
                    ));
                }
                if routing.weighting != WeightingRule::AlwaysNormalizeThenScale {
                    return Err(Error::unsupported(
                        "weighting",
                        format!("{:?}", routing.weighting),
                        format!(
                            "{self} normalises whenever norm_topk_prob, then scales (AlwaysNormalizeThenScale)"
                        ),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Keys of this family that do not change the architecture (training losses, parallelism
    /// hints, derived values checked elsewhere).
    pub(crate) const fn inert_keys(self) -> &'static [&'static str] {
        match self {
            Family::DeepseekV2 | Family::DeepseekV3 | Family::KimiK2 | Family::Glm4MoeLite => &[
                "attention_dropout",
                "aux_loss_alpha",
                "ep_size",
                "output_router_logits",
                "pretraining_tp",
                "router_aux_loss_coef",
                "seq_aux",
            ],
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.model_type())
    }
}
