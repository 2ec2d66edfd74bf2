//! # deepblocks-deepseek
//!
//! The DeepSeek-V2 model: `config.json` (hub and transformers-5 forms), weight loading from a
//! Hugging Face folder (memory-mapped, single or sharded), the pre-norm forward pass
//! (embedding → [RMSNorm → MLA → RMSNorm → MLP/MoE] × L → RMSNorm → lm_head) with a latent KV cache,
//! and generation.
//!
//! *Status: placeholder.* This crate holds only its plan until its issue lands; see the
//! workspace `README.md` for the crate map.

#![deny(missing_docs)]
