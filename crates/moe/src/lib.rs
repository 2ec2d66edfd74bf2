//! # deepblocks-moe
//!
//! DeepSeekMoE (DeepSeek-V2 §2.2): gate scoring (softmax, sigmoid), top-k methods (`greedy`,
//! `group_limited_greedy`, `noaux_tc`), weighting policies, SwiGLU experts, shared experts, grouped
//! dispatch, and routing statistics with the balance losses of §2.2.3.
//!
//! *Status: placeholder.* This crate holds only its plan until its issue lands; see the
//! workspace `README.md` for the crate map.

#![deny(missing_docs)]
