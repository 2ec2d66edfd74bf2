//! # deepblocks-rope
//!
//! Rotary position embeddings (RoFormer, arXiv 2104.09864): cos/sin tables per position and
//! frequency, interleaved and half-split layouts, and scalings — linear, dynamic NTK, YaRN
//! (arXiv 2309.00071, as DeepSeek-V2 §2.1.3 uses it) and Llama-3 — with the cos/sin factor and the
//! softmax-scale factor kept separate.
//!
//! *Status: placeholder.* This crate holds only its plan until its issue lands; see the
//! workspace `README.md` for the crate map.

#![deny(missing_docs)]
