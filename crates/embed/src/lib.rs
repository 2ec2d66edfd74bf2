//! # deepblocks-embed
//!
//! Embedding lookup `E[V, h]`: ids `[t]` → hidden `[t, h]` (bf16/f16/f32 storage), the unembedding
//! (`lm_head`, tied to the embedding or separate) giving logits `[t, V]`, and the vector tools of the
//! GPT-3 walk-through: cosine similarity, nearest neighbours, analogy.
//!
//! *Status: placeholder.* This crate holds only its plan until its issue lands; see the
//! workspace `README.md` for the crate map.

#![deny(missing_docs)]
