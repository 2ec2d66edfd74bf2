//! Reading an MLA-family `config.json` into an [`Architecture`]: both forms the ecosystem writes
//! (the hub's `rope_theta` + `rope_scaling`, transformers 5's `rope_parameters`), every key
//! typed, the family's rules applied, unknown keys collected.

use std::path::Path;

use deepblocks_rope::{
    DynamicNtkScaling, Layout, LinearScaling, Llama3Scaling, RopeConfig, RopeScaling, YarnScaling,
};
use serde_json::Value;

use crate::json::{Fields, GENERIC_KEYS, short};
use crate::{
    Architecture, DeepSeekMoe, Error, Family, Ffn, Fp8Quantization, MlaAttention, QueryProjection,
    Result, Rope, RoutingRule, ScoringFunc, TopkSelection,
};

/// What reading a config gives: the description and the keys it did not know.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T> {
    /// The description.
    pub architecture: T,
    /// Keys (`rope_scaling.x` for nested ones) that are neither read nor known to be inert: not
    /// fatal, but worth a note, since a key we skipped could change what the model computes.
    pub unknown_keys: Vec<String>,
}

/// The default RoPE base of transformers' configs.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// Reads `path` as JSON, wrapping any error with the file.
pub(crate) fn read_json_file(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Json(e).in_file(path))
}

/// The `model_type` string of a parsed config.
pub(crate) fn model_type(value: &Value) -> Result<&str> {
    match value {
        Value::Object(map) => match map.get("model_type") {
            None | Some(Value::Null) => Err(Error::MissingKey {
                key: "model_type".into(),
            }),
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(Error::WrongType {
                key: "model_type".into(),
                expected: "a string",
                found: short(other),
            }),
        },
        other => Err(Error::NotAnObject {
            key: "(top level)".into(),
            found: short(other),
        }),
    }
}

impl Architecture {
    /// Reads and checks a `config.json` file.
    ///
    /// # Errors
    /// [`Error::Io`], or any error of [`Architecture::from_json`] inside [`Error::InFile`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Parsed<Architecture>> {
        let path = path.as_ref();
        Architecture::from_json(&read_json_file(path)?).map_err(|e| e.in_file(path))
    }

    /// Reads and checks a `config.json` text.
    ///
    /// # Errors
    /// [`Error::Json`], or as [`Architecture::from_json`].
    pub fn from_json_str(text: &str) -> Result<Parsed<Architecture>> {
        Architecture::from_json(&serde_json::from_str(text)?)
    }

    /// Reads and checks a parsed `config.json`: `model_type` decides the [`Family`], then every
    /// key the family defines is read and typed, and the result is [`validated`](Self::validate).
    ///
    /// Defaults are transformers' where a key is absent (`rope_theta` 10⁴, `rms_norm_eps` 10⁻⁶,
    /// `topk_method` greedy, `scoring_func` softmax, `norm_topk_prob` false,
    /// `routed_scaling_factor` 1, `first_k_dense_replace` 0, `moe_layer_freq` 1, no shared
    /// experts); `q_lora_rank` must be written (as `null` for a full query projection), since
    /// transformers' default for it (1536) is one model's size.
    ///
    /// # Errors
    /// [`Error::MissingKey`], [`Error::WrongType`], [`Error::Invalid`] naming the key;
    /// [`Error::UnknownModelType`]; [`Error::Unsupported`] for a key we know whose value is not
    /// implemented (`hidden_act` other than `silu`, `attention_bias` or `mlp_bias` true, a
    /// scoring function or top-k method of another family, an unknown RoPE type).
    pub fn from_json(value: &Value) -> Result<Parsed<Architecture>> {
        let family = Family::from_model_type(model_type(value)?)?;
        let mut f = Fields::new(value, "")?;
        f.ignore(&["model_type"]);
        match family {
            Family::DeepseekV2 | Family::DeepseekV3 | Family::KimiK2 | Family::Glm4MoeLite => {
                read_mla(&mut f, family)
            }
        }
    }
}

/// DeepSeek-V2's keys, and for V3 and Kimi K2 their own: `rope_interleave`,
/// `num_nextn_predict_layers`, no `moe_layer_freq`.
fn read_mla(f: &mut Fields<'_>, family: Family) -> Result<Parsed<Architecture>> {
    let quantization = read_quantization(f)?;
    if let Some(act) = f.opt_str("hidden_act")?
        && act != "silu"
    {
        return Err(Error::unsupported(
            "hidden_act",
            format!("{act:?}"),
            "the MLA family uses SiLU (SwiGLU); no other activation is implemented",
        ));
    }
    for key in ["attention_bias", "mlp_bias"] {
        if f.bool_or(key, false)? {
            return Err(Error::unsupported(
                key,
                true,
                "DeepSeek-V2's projections have no biases; biased ones are not implemented",
            ));
        }
    }

    // transformers rotates `qk_rope_head_dim · partial_rotary_factor` dimensions (GLM-4.7-Flash
    // writes 1.0): the whole RoPE part is the only form MLA's decoupled key has here.
    if let Some(p) = f.opt_f64("partial_rotary_factor")?
        && p != 1.0
    {
        return Err(Error::unsupported(
            "partial_rotary_factor",
            p,
            "only 1.0 (the whole qk_rope_head_dim rotated) is implemented",
        ));
    }

    let vocab_size = f.size("vocab_size")?;
    let hidden_size = f.size("hidden_size")?;
    let num_hidden_layers = f.size("num_hidden_layers")?;
    let max_position_embeddings = f.size("max_position_embeddings")?;
    let num_attention_heads = f.size("num_attention_heads")?;
    // Absent would be ambiguous (transformers defaults it to DeepSeek-V2's 1536): null or a size.
    if !f.has("q_lora_rank") {
        return Err(Error::MissingKey {
            key: "q_lora_rank".into(),
        });
    }
    let q_proj = match f.opt_size("q_lora_rank")? {
        None => QueryProjection::Full,
        Some(q_lora_rank) => QueryProjection::LowRank { q_lora_rank },
    };
    let attention = MlaAttention {
        num_attention_heads,
        q_proj,
        kv_lora_rank: f.size("kv_lora_rank")?,
        qk_nope_head_dim: f.size("qk_nope_head_dim")?,
        qk_rope_head_dim: f.size("qk_rope_head_dim")?,
        v_head_dim: f.size("v_head_dim")?,
    };
    // Keys transformers reads or derives that MLA does not use; checked for consistency so that a
    // config that passes here also loads in transformers.
    if family == Family::DeepseekV2 && !hidden_size.is_multiple_of(num_attention_heads) {
        // transformers' DeepseekV2Config.validate_architecture refuses it (V3's and GLM's configs
        // do not: GLM-4.7-Flash has 20 heads and a hidden size of 2048).
        return Err(Error::invalid(
            "num_attention_heads",
            num_attention_heads,
            format!("must divide hidden_size = {hidden_size} (transformers' DeepseekV2Config)"),
        ));
    }
    let kv_heads = f.size_or("num_key_value_heads", num_attention_heads)?;
    if !num_attention_heads.is_multiple_of(kv_heads) {
        return Err(Error::invalid(
            "num_key_value_heads",
            kv_heads,
            format!("must divide num_attention_heads = {num_attention_heads}"),
        ));
    }
    let qk_head_dim = attention
        .qk_nope_head_dim
        .checked_add(attention.qk_rope_head_dim)
        .ok_or_else(|| Error::Overflow {
            what: "qk_nope_head_dim + qk_rope_head_dim".into(),
        })?;
    if let Some(qk) = f.opt_usize("qk_head_dim")?
        && qk != qk_head_dim
    {
        return Err(Error::invalid(
            "qk_head_dim",
            qk,
            format!("must equal qk_nope_head_dim + qk_rope_head_dim = {qk_head_dim}"),
        ));
    }
    if let Some(hd) = f.opt_usize("head_dim")?
        && hd != attention.qk_rope_head_dim
    {
        return Err(Error::invalid(
            "head_dim",
            hd,
            format!(
                "transformers sets it to qk_rope_head_dim = {}",
                attention.qk_rope_head_dim
            ),
        ));
    }

    let ffn = match f.opt_size("n_routed_experts")? {
        None => {
            f.ignore(&[
                "num_experts_per_tok",
                "moe_intermediate_size",
                "n_shared_experts",
                "n_group",
                "topk_group",
                "topk_method",
                "scoring_func",
                "norm_topk_prob",
                "routed_scaling_factor",
                "first_k_dense_replace",
                "moe_layer_freq",
            ]);
            Ffn::Dense
        }
        Some(n_routed_experts) => {
            Ffn::Moe(read_moe(f, family, n_routed_experts, num_hidden_layers)?)
        }
    };
    let intermediate_size = f.usize_or("intermediate_size", 0)?;
    let rms_norm_eps = f.f64_or("rms_norm_eps", family.default_rms_norm_eps())? as f32;
    let (rope, rope_key) = read_rope(f, max_position_embeddings)?;
    let arch = Architecture {
        family,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        max_position_embeddings,
        rms_norm_eps,
        attention,
        rope,
        intermediate_size,
        ffn,
        tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
        bos_token_id: f.opt_id("bos_token_id")?,
        eos_token_ids: f.ids("eos_token_id")?,
        rope_interleave: if family.reads_v3_keys() {
            f.bool_or("rope_interleave", true)?
        } else {
            true
        },
        num_nextn_predict_layers: if family.reads_v3_keys() {
            f.usize_or("num_nextn_predict_layers", 0)?
        } else {
            0
        },
        quantization,
    };
    if arch.dense_layers() > 0 && !f.has("intermediate_size") {
        // Needed only when some layer is dense; absent then is a missing key, not a zero.
        return Err(f.missing("intermediate_size"));
    }
    f.ignore(&["hidden_act"]);
    f.ignore(GENERIC_KEYS);
    f.ignore(family.inert_keys());
    validate_rope(
        ("qk_rope_head_dim", arch.attention.qk_rope_head_dim),
        &arch.rope,
        arch.max_position_embeddings,
        rope_key,
    )?;
    arch.validate()?;
    Ok(Parsed {
        architecture: arch,
        unknown_keys: f.unknown(),
    })
}

/// `quantization_config`: DeepSeek-V3's block FP8 (`quant_method: "fp8"`, `fmt: "e4m3"`,
/// `activation_scheme: "dynamic"`, `weight_block_size: [bo, bi]`), or absent.
fn read_quantization(f: &mut Fields<'_>) -> Result<Option<Fp8Quantization>> {
    let Some(v) = f.raw("quantization_config") else {
        return Ok(None);
    };
    let mut q = Fields::new(v, "quantization_config.")?;
    let method = q.opt_str("quant_method")?;
    if method != Some("fp8") {
        return Err(Error::unsupported(
            "quantization_config.quant_method",
            method.map_or_else(|| "absent".to_string(), |m| format!("{m:?}")),
            "only block FP8 checkpoints (quant_method \"fp8\", DeepSeek-V3's) load",
        ));
    }
    if let Some(fmt) = q.opt_str("fmt")?
        && fmt != "e4m3"
    {
        return Err(Error::unsupported(
            "quantization_config.fmt",
            format!("{fmt:?}"),
            "FP8 weights load as E4M3 (fmt \"e4m3\")",
        ));
    }
    if let Some(scheme) = q.opt_str("activation_scheme")?
        && scheme != "dynamic"
    {
        return Err(Error::unsupported(
            "quantization_config.activation_scheme",
            format!("{scheme:?}"),
            "activations stay f32 here, which only the dynamic scheme (scales computed from the \
             activations themselves) leaves unchanged",
        ));
    }
    let key = "weight_block_size";
    let block = match q.raw(key) {
        None => return Err(q.missing(key)),
        Some(b) => b
            .as_array()
            .filter(|a| a.len() == 2)
            .and_then(|a| {
                let dim = |v: &Value| v.as_u64().and_then(|u| usize::try_from(u).ok());
                Some([dim(&a[0])?, dim(&a[1])?])
            })
            .ok_or_else(|| Error::WrongType {
                key: q.name(key),
                expected: "a list of two non-negative integers",
                found: short(b),
            })?,
    };
    if block.contains(&0) {
        return Err(Error::invalid(
            &q.name(key),
            format!("{block:?}"),
            "both block dimensions must be at least 1",
        ));
    }
    // Which modules stay unquantized is read off the checkpoint (the scale tensors).
    q.ignore(&["modules_to_not_convert"]);
    f.adopt_unknown(&q);
    Ok(Some(Fp8Quantization {
        weight_block_size: block,
    }))
}

fn read_moe(
    f: &mut Fields<'_>,
    family: Family,
    n_routed_experts: usize,
    num_hidden_layers: usize,
) -> Result<DeepSeekMoe> {
    let num_experts_per_tok = f.size("num_experts_per_tok")?;
    let moe_intermediate_size = f.size("moe_intermediate_size")?;
    // Absent or null: no shared experts (DeepSeek's code); 0 likewise.
    let n_shared_experts = f.usize_or("n_shared_experts", 0)?;
    // Values of another family are read here and refused by `Family::check_routing`, where
    // each family's rules live.
    // transformers' deepseek_v3 config has no scoring_func or topk_method (its router is
    // sigmoid and noaux_tc whatever a file says), and defaults norm_topk_prob to true; its
    // model-sized defaults (routed_scaling_factor 2.5, first_k_dense_replace 3) are not
    // guessed: absent, they are missing keys, as q_lora_rank is.
    let v3 = family.reads_v3_keys();
    let (default_scoring, default_method) = if v3 {
        ("sigmoid", "noaux_tc")
    } else {
        ("softmax", "greedy")
    };
    let scoring_func = match f.opt_str("scoring_func")?.unwrap_or(default_scoring) {
        "softmax" => ScoringFunc::Softmax,
        "sigmoid" => ScoringFunc::Sigmoid,
        other => {
            return Err(Error::unsupported(
                "scoring_func",
                format!("{other:?}"),
                "known scoring functions: softmax, sigmoid",
            ));
        }
    };
    // GLM-4.7-Flash's transformers default is one group (no grouping), not a model's size.
    let glm = family == Family::Glm4MoeLite;
    let n_group = f.opt_size("n_group")?.or(glm.then_some(1));
    let topk_group = f.opt_size("topk_group")?.or(glm.then_some(1));
    let method = f
        .opt_str("topk_method")?
        .unwrap_or(default_method)
        .to_string();
    let groups = || -> Result<(usize, usize)> {
        Ok((
            n_group.ok_or_else(|| f.missing("n_group"))?,
            topk_group.ok_or_else(|| f.missing("topk_group"))?,
        ))
    };
    let topk_method = match method.as_str() {
        "greedy" => TopkSelection::Greedy,
        "group_limited_greedy" => {
            let (n_group, topk_group) = groups()?;
            TopkSelection::GroupLimitedGreedy {
                n_group,
                topk_group,
            }
        }
        "noaux_tc" => {
            let (n_group, topk_group) = groups()?;
            TopkSelection::NoauxTc {
                n_group,
                topk_group,
            }
        }
        other => {
            return Err(Error::unsupported(
                "topk_method",
                format!("{other:?}"),
                "known methods: greedy, group_limited_greedy, noaux_tc",
            ));
        }
    };
    Ok(DeepSeekMoe {
        n_routed_experts,
        num_experts_per_tok,
        moe_intermediate_size,
        n_shared_experts,
        first_k_dense_replace: if glm {
            read_mlp_layer_types(f, num_hidden_layers)?
        } else if v3 {
            f.opt_usize("first_k_dense_replace")?
                .ok_or_else(|| f.missing("first_k_dense_replace"))?
        } else {
            f.usize_or("first_k_dense_replace", 0)?
        },
        moe_layer_freq: match family {
            Family::DeepseekV2 => f.size_or("moe_layer_freq", 1)?,
            // transformers' deepseek_v3 makes every layer after the dense ones MoE.
            Family::DeepseekV3 | Family::KimiK2 | Family::Glm4MoeLite => {
                match f.size_or("moe_layer_freq", 1)? {
                    1 => 1,
                    other => {
                        return Err(Error::unsupported(
                            "moe_layer_freq",
                            other,
                            format!(
                                "{family} makes every layer after first_k_dense_replace MoE (transformers ignores the key)"
                            ),
                        ));
                    }
                }
            }
        },
        routing: RoutingRule {
            scoring_func,
            topk_method,
            norm_topk_prob: f.bool_or("norm_topk_prob", v3)?,
            routed_scaling_factor: if v3 {
                f.opt_f64("routed_scaling_factor")?
                    .ok_or_else(|| f.missing("routed_scaling_factor"))? as f32
            } else {
                f.f64_or("routed_scaling_factor", 1.0)? as f32
            },
            weighting: family.weighting(),
        },
    })
}

/// GLM-4.7-Flash's layer schedule: `mlp_layer_types` (`"dense"` or `"sparse"` per layer;
/// transformers' default one dense layer then sparse ones), as the number of dense layers
/// before the MoE ones — the only pattern the description holds. A `first_k_dense_replace`
/// beside it, which transformers ignores for this family, must agree.
fn read_mlp_layer_types(f: &mut Fields<'_>, num_hidden_layers: usize) -> Result<usize> {
    let key = "mlp_layer_types";
    let dense = match f.raw(key) {
        None => 1.min(num_hidden_layers),
        Some(v) => {
            let kinds: Vec<&str> = v
                .as_array()
                .and_then(|a| a.iter().map(|k| k.as_str()).collect())
                .ok_or_else(|| Error::WrongType {
                    key: key.into(),
                    expected: "a list of \"dense\" and \"sparse\"",
                    found: short(v),
                })?;
            if kinds.len() != num_hidden_layers {
                return Err(Error::invalid(
                    key,
                    format!("{} entries", kinds.len()),
                    format!("must list num_hidden_layers = {num_hidden_layers} layers"),
                ));
            }
            if let Some(other) = kinds.iter().find(|k| !matches!(**k, "dense" | "sparse")) {
                return Err(Error::invalid(
                    key,
                    format!("{other:?}"),
                    "entries are \"dense\" or \"sparse\"",
                ));
            }
            let dense = kinds.iter().take_while(|k| **k == "dense").count();
            if kinds[dense..].contains(&"dense") {
                return Err(Error::unsupported(
                    key,
                    format!("{kinds:?}"),
                    "dense layers after MoE ones: only dense layers first, then MoE, is implemented",
                ));
            }
            dense
        }
    };
    if let Some(k) = f.opt_usize("first_k_dense_replace")?
        && k != dense
    {
        return Err(Error::invalid(
            "first_k_dense_replace",
            k,
            format!(
                "disagrees with mlp_layer_types, which transformers follows ({dense} dense layers)"
            ),
        ));
    }
    Ok(dense)
}

/// The rope settings and the key they were read from (`rope_scaling` or `rope_parameters`, for
/// naming the culprit). Both forms may be present; then they must agree.
pub(crate) fn read_rope(
    f: &mut Fields<'_>,
    max_position_embeddings: usize,
) -> Result<(Rope, &'static str)> {
    let top_theta = f.opt_f64("rope_theta")?;
    let hub_given = f.raw("rope_scaling").is_some();
    let hub = match f.raw("rope_scaling") {
        None => Rope {
            rope_theta: top_theta.unwrap_or(DEFAULT_ROPE_THETA),
            scaling: RopeScaling::None,
        },
        Some(v) => {
            let (theta, scaling) = read_scaling(f, v, "rope_scaling", max_position_embeddings)?;
            if let Some(t) = theta {
                return Err(Error::invalid(
                    "rope_scaling.rope_theta",
                    t,
                    "the hub form keeps rope_theta at the top level",
                ));
            }
            Rope {
                rope_theta: top_theta.unwrap_or(DEFAULT_ROPE_THETA),
                scaling,
            }
        }
    };
    let Some(params) = f.raw("rope_parameters") else {
        return Ok((hub, "rope_scaling"));
    };
    let (theta, scaling) = read_scaling(f, params, "rope_parameters", max_position_embeddings)?;
    let rope_theta = match (theta, top_theta) {
        (Some(inner), Some(top)) if inner != top => {
            return Err(Error::invalid(
                "rope_theta",
                top,
                format!("differs from rope_parameters.rope_theta = {inner}"),
            ));
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => DEFAULT_ROPE_THETA,
    };
    let t5 = Rope {
        rope_theta,
        scaling,
    };
    // `rope_scaling: null` beside `rope_parameters` says nothing; a written one must agree.
    if hub_given && hub != t5 {
        return Err(Error::invalid(
            "rope_scaling",
            "(present)",
            "disagrees with rope_parameters; give one form (rope_parameters is transformers 5's)",
        ));
    }
    Ok((t5, "rope_parameters"))
}

/// One rope object: `(rope_theta if inside, scaling)`; its unknown keys go to `parent`.
fn read_scaling(
    parent: &mut Fields<'_>,
    v: &Value,
    key: &'static str,
    max_position_embeddings: usize,
) -> Result<(Option<f64>, RopeScaling)> {
    let prefix = format!("{key}.");
    let mut p = Fields::new(v, &prefix)?;
    let theta = p.opt_f64("rope_theta")?;
    let rope_type = p.opt_str("rope_type")?;
    let legacy = p.opt_str("type")?;
    let kind = match (rope_type, legacy) {
        (Some(a), Some(b)) if a != b => {
            return Err(Error::invalid(
                &format!("{key}.type"),
                format!("{b:?}"),
                format!("differs from {key}.rope_type = {a:?}"),
            ));
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => "default",
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear(LinearScaling {
            factor: factor(&mut p)?,
        }),
        "dynamic" => {
            let factor = factor(&mut p)?;
            p.ignore(&["original_max_position_embeddings"]);
            RopeScaling::DynamicNtk(DynamicNtkScaling {
                factor,
                original_max_position_embeddings: max_position_embeddings,
            })
        }
        "yarn" => {
            let factor = factor(&mut p)?;
            RopeScaling::Yarn(YarnScaling {
                factor,
                original_max_position_embeddings: p
                    .size_or("original_max_position_embeddings", max_position_embeddings)?,
                beta_fast: p.f64_or("beta_fast", 32.0)?,
                beta_slow: p.f64_or("beta_slow", 1.0)?,
                mscale: p.opt_f64("mscale")?,
                mscale_all_dim: p.opt_f64("mscale_all_dim")?,
                attention_factor: p.opt_f64("attention_factor")?,
                truncate: p.bool_or("truncate", true)?,
            })
        }
        "llama3" => {
            let factor = factor(&mut p)?;
            RopeScaling::Llama3(Llama3Scaling {
                factor,
                low_freq_factor: p.f64_or("low_freq_factor", 1.0)?,
                high_freq_factor: p.f64_or("high_freq_factor", 4.0)?,
                original_max_position_embeddings: p
                    .size_or("original_max_position_embeddings", max_position_embeddings)?,
            })
        }
        other => {
            let which = if rope_type.is_some() {
                "rope_type"
            } else {
                "type"
            };
            return Err(Error::unsupported(
                &format!("{key}.{which}"),
                format!("{other:?}"),
                "known RoPE types: default, linear, dynamic, yarn, llama3",
            ));
        }
    };
    parent.adopt_unknown(&p);
    Ok((theta, scaling))
}

/// The `factor` a scaling needs.
fn factor(p: &mut Fields<'_>) -> Result<f64> {
    p.opt_f64("factor")?.ok_or_else(|| p.missing("factor"))
}

/// Checks the rope settings with the rope block's own validation, naming the config key
/// (`{rope_key}.beta_fast`, `rope_theta`, `dim_key`) instead of the block's field.
pub(crate) fn validate_rope(
    (dim_key, dim): (&str, usize),
    rope: &Rope,
    max_position_embeddings: usize,
    rope_key: &str,
) -> Result<()> {
    use deepblocks_rope::Error as E;
    // The layout does not change what is valid.
    let config = RopeConfig::new(
        dim,
        rope.rope_theta,
        max_position_embeddings,
        Layout::Interleaved,
    )
    .with_scaling(rope.scaling);
    let Err(err) = config.validate() else {
        return Ok(());
    };
    // The rope crate names `dim`, `rope_theta`, `max_position_embeddings` or `<scaling>.<field>`.
    let key = |field: &str| match field {
        "dim" => dim_key.to_string(),
        "rope_theta" if rope_key == "rope_parameters" => "rope_parameters.rope_theta".to_string(),
        "rope_theta" | "max_position_embeddings" => field.to_string(),
        scaled => match scaled.split_once('.') {
            Some((_, name)) => format!("{rope_key}.{name}"),
            None => scaled.to_string(),
        },
    };
    Err(match err {
        E::OddDim { field, value } => Error::invalid(
            &key(field),
            value,
            "the rotary dimension must be even and ≥ 2",
        ),
        E::OutOfRange {
            field,
            value,
            expected,
        } => Error::invalid(&key(field), value, format!("must be {expected}")),
        E::BetaOrder {
            beta_fast,
            beta_slow,
        } => Error::invalid(
            &format!("{rope_key}.beta_fast"),
            beta_fast,
            format!("must be at least {rope_key}.beta_slow = {beta_slow}"),
        ),
        E::FreqFactorOrder {
            low_freq_factor,
            high_freq_factor,
        } => Error::invalid(
            &format!("{rope_key}.high_freq_factor"),
            high_freq_factor,
            format!("must be greater than {rope_key}.low_freq_factor = {low_freq_factor}"),
        ),
        other => Error::invalid(rope_key, "(rope settings)", other.to_string()),
    })
}
