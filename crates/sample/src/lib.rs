//! # deepblocks-sample
//!
//! Logits processors in the order users expect (repetition/frequency/presence penalties,
//! temperature, top-k, top-p, min-p) and a draw from a seeded RNG that is reproducible across platforms.
//!
//! *Status: placeholder.* This crate holds only its plan until its issue lands; see the
//! workspace `README.md` for the crate map.

#![deny(missing_docs)]
