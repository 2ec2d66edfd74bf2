//! Dense Llama-style decoders (`model_type` `llama`), described for the accounting only: the
//! baseline DeepSeek-V2 is compared against (DeepSeek LLM 67B is a Llama-architecture model with
//! grouped-query attention). No deepblocks model runs them.

use std::path::Path;

use deepblocks_rope::RopeScaling;
use serde_json::Value;

use crate::json::{Fields, GENERIC_KEYS};
use crate::read::{Parsed, model_type, read_json_file, read_rope, validate_rope};
use crate::{Error, Result, Rope};

/// A Llama-style dense decoder: per layer `q_proj [n·d_h, h]`, `k_proj`/`v_proj [n_kv·d_h, h]`,
/// `o_proj [h, n·d_h]`, a gated MLP and two RMSNorms. Field names follow `config.json`.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseArchitecture {
    /// `vocab_size`: token ids `V`.
    pub vocab_size: usize,
    /// `hidden_size`: the width `h` of the residual stream.
    pub hidden_size: usize,
    /// `intermediate_size`: the MLP's width.
    pub intermediate_size: usize,
    /// `num_hidden_layers`: decoder layers `l`.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`: query heads `n_h`.
    pub num_attention_heads: usize,
    /// `num_key_value_heads`: key/value heads `n_kv` (`n_h` for MHA, 1 for MQA, else GQA).
    pub num_key_value_heads: usize,
    /// `head_dim`: `d_h` (`hidden_size / num_attention_heads` unless given).
    pub head_dim: usize,
    /// `attention_bias`: biases on `q_proj`, `k_proj`, `v_proj`, `o_proj`.
    pub attention_bias: bool,
    /// `mlp_bias`: biases on the MLP projections.
    pub mlp_bias: bool,
    /// `tie_word_embeddings`: `lm_head` is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// `max_position_embeddings`: the longest context.
    pub max_position_embeddings: usize,
    /// RoPE base and scaling.
    pub rope: Rope,
}

/// Keys of a Llama config that do not change the parameter count.
const LLAMA_INERT_KEYS: &[&str] = &[
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
    "hidden_act",
    "pretraining_tp",
    "rms_norm_eps",
];

impl DenseArchitecture {
    /// DeepSeek LLM 67B, the dense baseline of the DeepSeek-V2 report (95 layers, `h` 8192, 64
    /// heads of 128 with GQA over 8 KV heads, MLP 22016, vocabulary 102400, 4K context; DeepSeek
    /// LLM report arXiv 2401.02954 Table 2 and the hub config of
    /// `deepseek-ai/deepseek-llm-67b-base`).
    pub fn deepseek_llm_67b() -> DenseArchitecture {
        DenseArchitecture {
            vocab_size: 102_400,
            hidden_size: 8192,
            intermediate_size: 22_016,
            num_hidden_layers: 95,
            num_attention_heads: 64,
            num_key_value_heads: 8,
            head_dim: 128,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
            max_position_embeddings: 4096,
            rope: Rope {
                rope_theta: 10_000.0,
                scaling: RopeScaling::None,
            },
        }
    }

    /// Reads a Llama `config.json` file.
    ///
    /// # Errors
    /// [`Error::Io`], or as [`DenseArchitecture::from_json`] inside [`Error::InFile`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Parsed<DenseArchitecture>> {
        let path = path.as_ref();
        DenseArchitecture::from_json(&read_json_file(path)?).map_err(|e| e.in_file(path))
    }

    /// Reads a Llama `config.json` text.
    ///
    /// # Errors
    /// [`Error::Json`], or as [`DenseArchitecture::from_json`].
    pub fn from_json_str(text: &str) -> Result<Parsed<DenseArchitecture>> {
        DenseArchitecture::from_json(&serde_json::from_str(text)?)
    }

    /// Reads a parsed Llama `config.json` (`model_type` must be `llama`).
    ///
    /// # Errors
    /// The key at fault, as for [`crate::Architecture::from_json`].
    pub fn from_json(value: &Value) -> Result<Parsed<DenseArchitecture>> {
        let t = model_type(value)?;
        if t != "llama" {
            return Err(Error::invalid(
                "model_type",
                format!("{t:?}"),
                "a dense description reads model_type llama",
            ));
        }
        let mut f = Fields::new(value, "")?;
        f.ignore(&["model_type"]);
        let vocab_size = f.size("vocab_size")?;
        let hidden_size = f.size("hidden_size")?;
        let intermediate_size = f.size("intermediate_size")?;
        let num_hidden_layers = f.size("num_hidden_layers")?;
        let num_attention_heads = f.size("num_attention_heads")?;
        let num_key_value_heads = f.size_or("num_key_value_heads", num_attention_heads)?;
        if !num_attention_heads.is_multiple_of(num_key_value_heads) {
            return Err(Error::invalid(
                "num_key_value_heads",
                num_key_value_heads,
                format!("must divide num_attention_heads = {num_attention_heads}"),
            ));
        }
        let head_dim = match f.opt_size("head_dim")? {
            Some(d) => d,
            None if hidden_size.is_multiple_of(num_attention_heads) => {
                hidden_size / num_attention_heads
            }
            None => {
                return Err(Error::invalid(
                    "num_attention_heads",
                    num_attention_heads,
                    format!("must divide hidden_size = {hidden_size} when head_dim is not given"),
                ));
            }
        };
        let max_position_embeddings = f.size("max_position_embeddings")?;
        let (rope, rope_key) = read_rope(&mut f, max_position_embeddings)?;
        validate_rope(
            ("head_dim", head_dim),
            &rope,
            max_position_embeddings,
            rope_key,
        )?;
        let arch = DenseArchitecture {
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            attention_bias: f.bool_or("attention_bias", false)?,
            mlp_bias: f.bool_or("mlp_bias", false)?,
            tie_word_embeddings: f.bool_or("tie_word_embeddings", false)?,
            max_position_embeddings,
            rope,
        };
        f.ignore(GENERIC_KEYS);
        f.ignore(LLAMA_INERT_KEYS);
        Ok(Parsed {
            architecture: arch,
            unknown_keys: f.unknown(),
        })
    }
}
