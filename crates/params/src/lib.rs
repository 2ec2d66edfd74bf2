//! # deepblocks-params
//!
//! Parameter accounting from configs alone (no tensors): a tree of named components with their
//! parameter and matrix counts, activated parameters per token for MoE models, KV-cache size per
//! token (MHA/GQA/MQA/MLA), forward FLOPs per token, and GPT-3 / DeepSeek-V2 presets.
//!
//! *Status: placeholder.* This crate holds only its plan until its issue lands; see the
//! workspace `README.md` for the crate map.

#![deny(missing_docs)]
