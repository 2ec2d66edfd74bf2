//! # deepblocks-params
//!
//! Parameter accounting from architecture descriptions alone (no tensors): a tree of named
//! components with their parameter and matrix counts, the parameters one token activates in an
//! MoE model, the KV cache per token (MHA, GQA, MQA, MLA), forward FLOPs per token, and a sketch
//! of a multi-device deployment. Presets for GPT-3 (the walk-through's count and the paper's
//! Table 2.1); MLA-family and Llama models are counted from the description `deepblocks-config`
//! reads from their `config.json` — the same description the model runs from, so the count and
//! the running model agree by construction.
//!
//! The formulas (derivations and printed tables in [`docs/params.md`]):
//!
//! - a tensor of shape `[o, i]` repeated `c` times holds `c·o·i` parameters and `c` matrices; a
//!   model is the sum of its tensors ([`Component`]).
//! - activated per token (DeepSeek-V2 report, arXiv 2405.04434, §2.2): routed experts count `k` of
//!   `E`, `N_act = N − m·(E − k)·3·h·i` for `m` MoE layers of experts `[i, h]`; the input
//!   embedding counts or not ([`InputEmbedding`]). DeepSeek-V2: 236B total, 21B activated.
//! - KV cache per token (report §2.1, Table 1): `2·n_h·d_h·l` (MHA), `2·n_g·d_h·l` (GQA),
//!   `2·d_h·l` (MQA), `(d_c + d_h^R)·l` (MLA) elements ([`KvCache`]).
//! - forward FLOPs per token at context `L` (Kaplan et al. 2020, §2.1):
//!   `2·N_act,matmul + 2·l·n_h·(d_qk + d_v)·L` ([`flops`]).
//!
//! ```
//! use deepblocks_config::Architecture;
//! use deepblocks_params::{GPT3_175B, InputEmbedding, mla_tree};
//!
//! // The GPT-3 walk-through: 175,181,291,520 parameters in 27,938 matrices.
//! let gpt3 = GPT3_175B.walkthrough()?;
//! assert_eq!((gpt3.params(), gpt3.matrices()), (175_181_291_520, 27_938));
//!
//! // DeepSeek-V2 (the description deepblocks-config reads from its config.json): 236B total,
//! // 21B activated per token.
//! let tree = mla_tree(&Architecture::deepseek_v2())?;
//! assert_eq!(tree.params(), 235_741_434_880);
//! assert_eq!(tree.activated(InputEmbedding::Include), 21_375_800_320);
//! assert_eq!(tree.activated(InputEmbedding::Exclude), 20_851_512_320);
//! # Ok::<(), deepblocks_params::Error>(())
//! ```
//!
//! [`docs/params.md`]: https://github.com/deepblocks/deepblocks/blob/main/docs/params.md

#![deny(missing_docs)]

mod dense;
pub mod deploy;
mod error;
pub mod flops;
pub mod gpt3;
pub mod kv;
mod mla;
mod model;
mod tree;

pub use dense::{dense_accounting, dense_attention_dims, dense_kv_cache, dense_tree};
pub use deploy::{Deployment, DeploymentPlan, DeploymentReport, Limit};
pub use error::{Error, Result};
pub use flops::{AttentionDims, Flops, MlaPath};
pub use gpt3::{GPT3_175B, GPT3_FAMILY, Gpt3Config};
pub use kv::{Bits, KvCache, KvLayout};
pub use mla::{mla_accounting, mla_attention_dims, mla_kv_cache, mla_tree, mtp_tree};
pub use model::{Accounting, Summary};
pub use tree::{BAR_WIDTH, Component, InputEmbedding, Kind, Tensor, thousands};

// The README's example is a doctest too, so what crates.io shows is what runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
