//! # deepblocks-tokenize
//!
//! Glue over the `tokenizers` crate (no BPE of our own): loading `tokenizer.json` and
//! `tokenizer_config.json`, special tokens by name, the DeepSeek-V2-Chat prompt
//! (`<｜begin▁of▁sentence｜>User: {msg}\n\nAssistant:`), a streaming decoder that only ever emits complete
//! UTF-8, and a byte-level tokenizer (256 ids + specials) for toy models and tests.
//!
//! *Status: placeholder.* This crate holds only its plan until its issue lands; see the
//! workspace `README.md` for the crate map.

#![deny(missing_docs)]
