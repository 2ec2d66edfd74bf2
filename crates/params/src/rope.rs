//! The RoPE settings of a config, read from either form `transformers` uses:
//!
//! - hub form (transformers 4 and the original DeepSeek code): top-level `rope_theta` and an
//!   optional `rope_scaling` object with `type` (or `rope_type`);
//! - transformers-5 form: one `rope_parameters` object holding `rope_type` (and often a
//!   duplicate `type`), `rope_theta` and the scaling fields.
//!
//! RoPE adds no parameters; the accounting reads it to report the context a model is built for
//! (YaRN stretches `original_max_position_embeddings` by `factor`).

use serde_json::Value;

use crate::error::{Error, Result};
use crate::fields::Fields;

/// RoPE base and scaling.
#[derive(Clone, Debug, PartialEq)]
pub struct Rope {
    /// The base θ of the rotation frequencies `θ^(-2j/d)`.
    pub theta: f64,
    /// How the frequencies are rescaled for a longer context.
    pub scaling: RopeScaling,
}

/// The RoPE scaling methods `transformers` names in `rope_type`.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type` `default`, or no `rope_scaling`).
    None,
    /// Position interpolation: positions divided by `factor`.
    Linear {
        /// The interpolation factor.
        factor: f64,
    },
    /// Dynamic NTK scaling.
    Dynamic {
        /// The scaling factor.
        factor: f64,
    },
    /// YaRN (Peng et al. 2023), as DeepSeek-V2 uses it: NTK-by-parts interpolation between
    /// `beta_fast` and `beta_slow` rotations, with attention temperature `mscale`.
    Yarn {
        /// Context extension factor `s` (40 for DeepSeek-V2).
        factor: f64,
        /// The pre-training context (4096 for DeepSeek-V2).
        original_max_position_embeddings: u64,
        /// Rotations above which a dimension is not interpolated (32).
        beta_fast: f64,
        /// Rotations below which a dimension is fully interpolated (1).
        beta_slow: f64,
        /// `m` in `mscale(s, m) = 0.1·m·ln s + 1` for cos/sin (DeepSeek: 0.707).
        mscale: f64,
        /// `m` of the divisor `mscale(s, mscale_all_dim)` (DeepSeek: 0.707).
        mscale_all_dim: f64,
    },
    /// Llama 3.1's frequency-band scaling.
    Llama3 {
        /// The scaling factor.
        factor: f64,
        /// Wavelength band below which frequencies are scaled fully.
        low_freq_factor: f64,
        /// Wavelength band above which frequencies are kept.
        high_freq_factor: f64,
        /// The pre-training context.
        original_max_position_embeddings: u64,
    },
}

impl RopeScaling {
    /// The context the scaling was fitted for, when the scaling records it
    /// (`factor × original_max_position_embeddings` for YaRN and Llama 3).
    pub fn extended_context(&self) -> Option<u64> {
        match self {
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: o,
                ..
            }
            | RopeScaling::Llama3 {
                factor,
                original_max_position_embeddings: o,
                ..
            } => Some((factor * *o as f64).round() as u64),
            _ => None,
        }
    }
}

/// Reads the RoPE settings from a config's top-level fields (either form). `default_theta` is
/// used when no θ is given (transformers' default for the model type).
pub(crate) fn read_rope<'a>(
    f: &mut Fields<'a>,
    default_theta: f64,
    model_type: &str,
) -> Result<Rope> {
    let top_theta = f.opt_f64("rope_theta")?;
    let has_scaling = f.raw("rope_scaling").is_some();
    match f.raw("rope_parameters") {
        Some(params) => {
            if has_scaling {
                return Err(Error::invalid(
                    "rope_scaling",
                    "(present)",
                    "give either rope_scaling (hub form) or rope_parameters (transformers 5), not both",
                ));
            }
            let rope = read_scaling(params, "rope_parameters", true, model_type)?;
            let theta = match (rope.theta, top_theta) {
                (Some(inner), Some(top)) if inner != top => {
                    return Err(Error::invalid(
                        "rope_theta",
                        top,
                        format!("differs from rope_parameters.rope_theta = {inner}"),
                    ));
                }
                (Some(t), _) | (None, Some(t)) => t,
                (None, None) => default_theta,
            };
            Ok(Rope {
                theta: check_theta("rope_parameters.rope_theta", theta)?,
                scaling: rope.scaling,
            })
        }
        None => {
            let scaling = match f.raw("rope_scaling") {
                None => RopeScaling::None,
                Some(v) => read_scaling(v, "rope_scaling", false, model_type)?.scaling,
            };
            Ok(Rope {
                theta: check_theta("rope_theta", top_theta.unwrap_or(default_theta))?,
                scaling,
            })
        }
    }
}

fn check_theta(field: &str, theta: f64) -> Result<f64> {
    if theta > 0.0 && theta.is_finite() {
        Ok(theta)
    } else {
        Err(Error::invalid(field, theta, "must be positive"))
    }
}

struct Parsed {
    theta: Option<f64>,
    scaling: RopeScaling,
}

fn read_scaling(v: &Value, key: &str, with_theta: bool, model_type: &str) -> Result<Parsed> {
    let mut f = Fields::new(v, &format!("{key}."), model_type)?;
    let theta = if with_theta {
        f.opt_f64("rope_theta")?
    } else {
        None
    };
    let rope_type = f.opt_str("rope_type")?;
    let legacy_type = f.opt_str("type")?;
    let kind = match (rope_type, legacy_type) {
        (Some(a), Some(b)) if a != b => {
            return Err(Error::invalid(
                &format!("{key}.type"),
                b,
                format!("differs from {key}.rope_type = {a}"),
            ));
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) if with_theta => "default",
        (None, None) => {
            return Err(Error::MissingField {
                field: format!("{key}.type"),
            });
        }
    };
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: f.positive_f64("factor")?,
        },
        "dynamic" => {
            f.ignore(&["original_max_position_embeddings"]);
            RopeScaling::Dynamic {
                factor: f.positive_f64("factor")?,
            }
        }
        "yarn" => {
            // transformers' defaults for the optional YaRN fields.
            let factor = f.positive_f64("factor")?;
            let original = f.size("original_max_position_embeddings")?;
            let beta_fast = f.opt_f64("beta_fast")?.unwrap_or(32.0);
            let beta_slow = f.opt_f64("beta_slow")?.unwrap_or(1.0);
            let mscale = f.opt_f64("mscale")?.unwrap_or(1.0);
            let mscale_all_dim = f.opt_f64("mscale_all_dim")?.unwrap_or(0.0);
            f.ignore(&["attention_factor", "truncate"]);
            RopeScaling::Yarn {
                factor,
                original_max_position_embeddings: original,
                beta_fast,
                beta_slow,
                mscale,
                mscale_all_dim,
            }
        }
        "llama3" => RopeScaling::Llama3 {
            factor: f.positive_f64("factor")?,
            low_freq_factor: f.positive_f64("low_freq_factor")?,
            high_freq_factor: f.positive_f64("high_freq_factor")?,
            original_max_position_embeddings: f.size("original_max_position_embeddings")?,
        },
        other => {
            let field = if rope_type.is_some() {
                format!("{key}.rope_type")
            } else {
                format!("{key}.type")
            };
            return Err(Error::invalid(
                &field,
                other,
                "unknown RoPE type (known: default, linear, dynamic, yarn, llama3)",
            ));
        }
    };
    f.finish()?;
    Ok(Parsed { theta, scaling })
}
