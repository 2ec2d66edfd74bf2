//! # deepblocks-params
//!
//! Parameter accounting from configs alone (no tensors): a tree of named components with their
//! parameter and matrix counts, the parameters one token activates in an MoE model, the KV cache
//! per token (MHA, GQA, MQA, MLA), forward FLOPs per token, and a sketch of a multi-device
//! deployment. Presets for GPT-3 (the walk-through's count and the paper's Table 2.1) and DeepSeek
//! LLM 67B; DeepSeek-V2 and Llama read from any `config.json`.
//!
//! The formulas (derivations and printed tables in `docs/params.md`):
//!
//! - a tensor of shape `[o, i]` repeated `c` times holds `c·o·i` parameters and `c` matrices; a
//!   model is the sum of its tensors ([`Component`]).
//! - activated per token (DeepSeek-V2 report, arXiv 2405.04434, §2.2): routed experts count `k` of
//!   `E`, `N_act = N − m·(E − k)·3·h·i` for `m` MoE layers of experts `[i, h]`; the input
//!   embedding counts or not ([`Embeddings`]). DeepSeek-V2: 236B total, 21B activated.
//! - KV cache per token (report §2.1, Table 1): `2·n_h·d_h·l` (MHA), `2·n_g·d_h·l` (GQA),
//!   `2·d_h·l` (MQA), `(d_c + d_h^R)·l` (MLA) elements ([`KvCache`]).
//! - forward FLOPs per token at context `L` (Kaplan et al. 2020, §2.1):
//!   `2·N_act,matmul + 2·l·n_h·(d_qk + d_v)·L` ([`flops`]).
//!
//! ```
//! use deepblocks_params::{DeepSeekV2Config, Embeddings, GPT3_175B};
//!
//! // The GPT-3 walk-through: 175,181,291,520 parameters in 27,938 matrices.
//! let gpt3 = GPT3_175B.walkthrough()?;
//! assert_eq!((gpt3.params(), gpt3.matrices()), (175_181_291_520, 27_938));
//!
//! // DeepSeek-V2 from its config.json: 236B total, 21B activated per token.
//! let v2 = DeepSeekV2Config::from_json_str(include_str!(
//!     "../../../testdata/params/deepseek-v2.json"
//! ))?
//! .tree()?;
//! assert_eq!(v2.params(), 235_741_434_880);
//! assert_eq!(v2.activated(Embeddings::Include), 21_375_800_320);
//! assert_eq!(v2.activated(Embeddings::Exclude), 20_851_512_320);
//! # Ok::<(), deepblocks_params::Error>(())
//! ```

#![deny(missing_docs)]

pub mod deepseek;
pub mod dense;
pub mod deploy;
mod error;
mod fields;
pub mod flops;
pub mod gpt3;
pub mod kv;
mod model;
pub mod rope;
mod tree;

pub use deepseek::{DeepSeekV2Config, Ffn, MoeConfig, QProj, TopkMethod};
pub use dense::DenseConfig;
pub use deploy::{Deployment, DeploymentPlan, DeploymentReport, Limit};
pub use error::{Error, Result};
pub use flops::{AttentionDims, Flops, MlaPath};
pub use gpt3::{GPT3_175B, GPT3_FAMILY, Gpt3Config};
pub use kv::{Bits, KvCache, KvLayout};
pub use model::{Accounting, ModelConfig, Summary};
pub use rope::{Rope, RopeScaling};
pub use tree::{Component, Embeddings, Kind, Tensor, thousands};
