//! Quantization recipes: which block format each kind of matrix of a checkpoint gets when a model
//! is quantized while it loads ([`crate::LoadOptions::quant`]).
//!
//! | recipe | matrices | `lm_head` | kept as stored |
//! |---|---|---|---|
//! | `q8_0` | `Q8_0` | `Q8_0` | norms, router gates (f32) |
//! | `q4_0` | `Q4_0` | `Q6_K` | as above |
//! | `q4_k_m` | `Q4_K`; the down projections (dense, experts, shared) of the layers llama.cpp gives more bits (`l < L/8`, `l ≥ 7L/8`, or `(l − L/8) mod 3 = 2`) `Q6_K` | `Q6_K` | as above |
//! | `fp8` | FP8 E4M3, one f32 scale per 128 × 128 block (edge blocks partial) | as stored | as above, and `embed_tokens` |
//!
//! as llama.cpp's `llama-quantize` assigns them for a DeepSeek-V2 GGUF, with its fallback for a
//! matrix whose rows are not whole 256-blocks (V2-Lite's experts are 1,408 wide): `Q4_K` → `Q5_0`,
//! `Q6_K` → `Q8_0`, and rows that are not whole 32-blocks either are stored in F16 (`fp8`
//! takes any shape; it keeps the embeddings and `lm_head` as DeepSeek-V3's FP8 checkpoint does).
//! `kv_b_proj` is split first, as llama.cpp's converter splits it, into `attn_k_b` (each head's
//! `W_UKᵀ`, rows `qk_nope_head_dim` wide: `Q4_K` falls back to `Q5_0` at 128) and `attn_v_b`
//! (`Q4_K`), the two matrices the absorbed attention reads; `fp8` keeps it whole.

use std::fmt;

use deepblocks_core::quant::BlockFormat;
use deepblocks_core::quant::fp8::Fp8Block;
use deepblocks_core::{DType, WeightFormat};

use crate::{Error, Result};

/// A quantization recipe (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // llama.cpp's names
pub enum Recipe {
    /// Every matrix `Q8_0`.
    Q8_0,
    /// Every matrix `Q4_0`, `lm_head` `Q6_K`.
    Q4_0,
    /// llama.cpp's `Q4_K_M` mix.
    Q4_K_M,
    /// FP8 E4M3 in DeepSeek-V3's 128 × 128 blocks for every matrix but the embeddings and
    /// `lm_head`.
    Fp8,
}

/// The part a matrix plays, as far as a recipe cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `model.embed_tokens.weight`.
    TokenEmbedding,
    /// `lm_head.weight`.
    Output,
    /// A down projection (`mlp.down_proj`, an expert's or the shared experts') in layer `l`.
    FfnDown(usize),
    /// A MoE router's gate: never quantized.
    Router,
    /// Any other matrix.
    Other,
}

impl Role {
    /// The role of checkpoint tensor `name` (a 2-D weight).
    pub fn of(name: &str) -> Role {
        if name == "lm_head.weight" {
            return Role::Output;
        }
        if name == "model.embed_tokens.weight" {
            return Role::TokenEmbedding;
        }
        if name.ends_with(".mlp.gate.weight") {
            return Role::Router;
        }
        let layer = name
            .strip_prefix("model.layers.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|l| l.parse().ok());
        match layer {
            Some(l) if name.contains("down_proj") => Role::FfnDown(l),
            _ => Role::Other,
        }
    }
}

/// What a recipe does with one matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Keep the stored dtype (norm-like matrices, routers).
    Keep,
    /// Quantize to this format; `fallback_from` is the format the recipe wanted when the rows
    /// are not whole blocks of it.
    Quantize {
        /// The format.
        format: WeightFormat,
        /// The format the recipe asked for, when this is its fallback.
        fallback_from: Option<BlockFormat>,
    },
}

impl Recipe {
    /// Every recipe.
    pub const ALL: [Recipe; 4] = [Recipe::Q8_0, Recipe::Q4_0, Recipe::Q4_K_M, Recipe::Fp8];

    /// Its name, as `--quant` takes it.
    pub const fn name(self) -> &'static str {
        match self {
            Recipe::Q8_0 => "q8_0",
            Recipe::Q4_0 => "q4_0",
            Recipe::Q4_K_M => "q4_k_m",
            Recipe::Fp8 => "fp8",
        }
    }

    /// The recipe called `name` (case-insensitive).
    ///
    /// ```
    /// use deepblocks_deepseek::Recipe;
    /// assert_eq!(Recipe::from_name("Q4_K_M")?, Recipe::Q4_K_M);
    /// let err = Recipe::from_name("q3_k").unwrap_err();
    /// assert!(err.to_string().contains("q3_k") && err.to_string().contains("q8_0, q4_0, q4_k_m, fp8"));
    /// # Ok::<(), deepblocks_deepseek::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownRecipe`] naming it and the known ones.
    pub fn from_name(name: &str) -> Result<Recipe> {
        Recipe::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| Error::UnknownRecipe {
                name: name.to_string(),
                known: Recipe::ALL.map(Recipe::name).join(", "),
            })
    }

    /// The format the recipe wants for a matrix of `role` in a model of `num_layers` layers,
    /// before any fallback.
    fn wanted(self, role: Role, num_layers: usize) -> Option<WeightFormat> {
        let more_bits = |l: usize| {
            let n = num_layers;
            l < n / 8 || l >= 7 * n / 8 || (l - n / 8) % 3 == 2
        };
        let format = match (self, role) {
            (_, Role::Router) => return None,
            (Recipe::Fp8, Role::TokenEmbedding | Role::Output) => return None,
            (Recipe::Fp8, _) => return Some(WeightFormat::Fp8(Fp8Block::DEEPSEEK_V3)),
            (Recipe::Q8_0, _) => BlockFormat::Q8_0,
            (Recipe::Q4_0, Role::Output) => BlockFormat::Q6_K,
            (Recipe::Q4_0, _) => BlockFormat::Q4_0,
            (Recipe::Q4_K_M, Role::Output) => BlockFormat::Q6_K,
            (Recipe::Q4_K_M, Role::FfnDown(l)) if more_bits(l) => BlockFormat::Q6_K,
            (Recipe::Q4_K_M, _) => BlockFormat::Q4_K,
        };
        Some(WeightFormat::Blocks(format))
    }

    /// What the recipe does with a matrix of `role` whose rows are `cols` long.
    ///
    /// ```
    /// use deepblocks_core::quant::BlockFormat;
    /// use deepblocks_deepseek::{Choice, Recipe, Role};
    /// // V2-Lite's expert down projections are 1,408 wide: not whole 256-blocks.
    /// assert_eq!(
    ///     Recipe::Q4_K_M.choose(Role::FfnDown(3), 27, 1408),
    ///     Choice::Quantize { format: BlockFormat::Q5_0.into(), fallback_from: Some(BlockFormat::Q4_K) }
    /// );
    /// assert_eq!(Recipe::Q4_K_M.choose(Role::Router, 27, 2048), Choice::Keep);
    /// ```
    pub fn choose(self, role: Role, num_layers: usize, cols: usize) -> Choice {
        let format = match self.wanted(role, num_layers) {
            None => return Choice::Keep,
            Some(WeightFormat::Blocks(f)) => f,
            // Any shape (edge blocks are partial).
            Some(format) => {
                return Choice::Quantize {
                    format,
                    fallback_from: None,
                };
            }
        };
        if format.row_bytes(cols).is_some() {
            let format = WeightFormat::Blocks(format);
            return Choice::Quantize {
                format,
                fallback_from: None,
            };
        }
        let fallback = match format {
            BlockFormat::Q4_K => BlockFormat::Q5_0,
            BlockFormat::Q6_K => BlockFormat::Q8_0,
            other => other,
        };
        // As llama-quantize: the 32-block fallback, else F16.
        let format_used = if fallback.row_bytes(cols).is_some() {
            WeightFormat::Blocks(fallback)
        } else {
            WeightFormat::Float(DType::F16)
        };
        Choice::Quantize {
            format: format_used,
            fallback_from: Some(format),
        }
    }
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_follow_the_checkpoint_names() {
        for (name, role) in [
            ("lm_head.weight", Role::Output),
            ("model.embed_tokens.weight", Role::TokenEmbedding),
            ("model.layers.3.mlp.gate.weight", Role::Router),
            (
                "model.layers.3.mlp.experts.7.down_proj.weight",
                Role::FfnDown(3),
            ),
            ("model.layers.0.mlp.down_proj.weight", Role::FfnDown(0)),
            (
                "model.layers.5.mlp.shared_experts.down_proj.weight",
                Role::FfnDown(5),
            ),
            ("model.layers.5.mlp.experts.down_proj", Role::FfnDown(5)),
            ("model.layers.5.self_attn.kv_b_proj.weight", Role::Other),
            ("model.layers.5.mlp.gate_proj.weight", Role::Other),
        ] {
            assert_eq!(Role::of(name), role, "{name}");
        }
    }

    #[test]
    fn q4_k_m_gives_llama_cpps_layers_more_bits() {
        // llama.cpp's use_more_bits for 27 layers: l < 3, l ≥ 23, and (l − 3) mod 3 = 2.
        let six: Vec<usize> = (0..27)
            .filter(|&l| {
                Recipe::Q4_K_M.choose(Role::FfnDown(l), 27, 2048)
                    == Choice::Quantize {
                        format: BlockFormat::Q6_K.into(),
                        fallback_from: None,
                    }
            })
            .collect();
        assert_eq!(six, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26]);
        // Rows of 100: not whole 32-blocks, F16 (llama-quantize's last fallback).
        assert_eq!(
            Recipe::Q8_0.choose(Role::Other, 27, 100),
            Choice::Quantize {
                format: DType::F16.into(),
                fallback_from: Some(BlockFormat::Q8_0),
            }
        );
        assert_eq!(
            Recipe::Q4_K_M.choose(Role::Output, 27, 1408),
            Choice::Quantize {
                format: BlockFormat::Q8_0.into(),
                fallback_from: Some(BlockFormat::Q6_K)
            }
        );
        // fp8: any row length; embeddings, lm_head and routers kept.
        assert_eq!(
            Recipe::Fp8.choose(Role::FfnDown(3), 27, 1408),
            Choice::Quantize {
                format: WeightFormat::Fp8(Fp8Block::DEEPSEEK_V3),
                fallback_from: None
            }
        );
        for role in [Role::Output, Role::TokenEmbedding, Role::Router] {
            assert_eq!(Recipe::Fp8.choose(role, 27, 2048), Choice::Keep, "{role:?}");
        }
    }
}
