//! # deepblocks-mla
//!
//! Multi-head Latent Attention (DeepSeek-V2, arXiv 2405.04434 §2.1): keys and values pass through a
//! low-rank latent `c_KV` so that the cache holds only `(kv_lora_rank + qk_rope_head_dim)` values per
//! token and layer; a naive path (expand per-head keys/values) and an absorbed path (fold `W_UK` into
//! the query and `W_UV` into the output) over the same latent KV cache.
//!
//! *Status: placeholder.* This crate holds only its plan until its issue lands; see the
//! workspace `README.md` for the crate map.

#![deny(missing_docs)]
