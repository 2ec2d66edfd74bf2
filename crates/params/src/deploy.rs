//! A deployment sketch for going past one machine: how many bytes of weights and of KV cache each
//! device holds under tensor and expert parallelism, and the longest context that fits.
//!
//! Layout (the usual one for DeepSeek-V2-style models):
//!
//! - **tensor parallel** (`tp`): attention projections, dense and shared-expert MLPs, the token
//!   embedding and `lm_head` ([`Kind::Linear`], [`Kind::Embedding`]) are split `tp` ways (by heads,
//!   by intermediate columns, by vocabulary rows); the `devices / tp` groups are data-parallel
//!   replicas.
//! - **expert parallel** (`ep`): routed experts are spread over `ep` devices, `E / ep` whole
//!   experts each, and replicated `devices / ep` times.
//! - Norms, biases, routers and position tables are small and replicated on every device.
//! - KV cache: heads are split across tensor-parallel ranks, so MHA keeps `n_h / tp` heads per
//!   rank and GQA `⌈n_g / tp⌉` groups; MQA's one head and **MLA's latent are replicated on every
//!   tensor-parallel rank**, since every head reads all of it. (This is why MLA deployments put
//!   attention data-parallel: `tp = 1` for attention spreads sequences, not heads.)
//!
//! Per device: `weights = (Σ_TP P/tp + Σ_EP P/ep + Σ_rep P)·bits_w/8`, `kv/token =
//! l·elements_per_layer_per_rank·bits_kv/8`; the longest context is
//! `⌊(memory − reserve − weights) / (batch · kv/token)⌋`, capped at `max_position_embeddings`.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::kv::Bits;
use crate::model::Accounting;
use crate::tree::Kind;

/// The hardware and parallel layout to plan for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DeploymentPlan {
    /// Devices in total.
    pub devices: u64,
    /// Memory of one device in bytes.
    pub memory_per_device: u64,
    /// Bytes per device held back for activations, workspace and fragmentation.
    pub reserve_per_device: u64,
    /// Tensor-parallel degree (must divide `devices` and the number of attention heads).
    pub tensor_parallel: u64,
    /// Expert-parallel degree (must divide `devices` and the number of routed experts; 1 for a
    /// dense model).
    pub expert_parallel: u64,
    /// Bits per weight.
    pub weight_bits: Bits,
    /// Bits per KV-cache element.
    pub kv_bits: Bits,
    /// Sequences decoded at once by one tensor-parallel group (their caches share its memory).
    pub batch: u64,
}

/// What stops the context from growing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// The weights (plus the reserve) do not fit: no context at all.
    Weights,
    /// Device memory runs out first.
    Memory,
    /// The model's `max_position_embeddings` is reached first.
    ModelContext,
}

/// The sketch's result, per device.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Deployment {
    /// Parameters of the tensor-parallel part held by one device.
    pub tensor_parallel_params: u64,
    /// Parameters of routed experts held by one device.
    pub expert_params: u64,
    /// Replicated parameters (norms, biases, routers, positions).
    pub replicated_params: u64,
    /// Weight bytes on one device.
    pub weight_bytes: u64,
    /// KV-cache bits per token of one sequence on one device.
    pub kv_bits_per_token: u64,
    /// The same in bytes.
    pub kv_bytes_per_token: f64,
    /// Memory left for the cache on one device (0 when the weights do not fit).
    pub free_bytes: u64,
    /// Tokens per sequence the free memory holds for `batch` sequences.
    pub max_context_memory: u64,
    /// `min(max_context_memory, max_position_embeddings)`.
    pub max_context: u64,
    /// What limits `max_context`.
    pub limited_by: Limit,
}

/// A plan and its result, as the `params` example reports them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DeploymentReport {
    /// The hardware and layout.
    pub plan: DeploymentPlan,
    /// What each device holds and the context that fits.
    pub per_device: Deployment,
}

impl DeploymentPlan {
    fn check(&self, acc: &Accounting) -> Result<()> {
        let bad =
            |field: &str, value: u64, reason: String| Err(Error::invalid(field, value, reason));
        for (field, value) in [
            ("devices", self.devices),
            ("tensor_parallel", self.tensor_parallel),
            ("expert_parallel", self.expert_parallel),
            ("batch", self.batch),
            ("memory_per_device", self.memory_per_device),
        ] {
            if value == 0 {
                return bad(field, 0, "must be at least 1".into());
            }
        }
        if !self.devices.is_multiple_of(self.tensor_parallel) {
            return bad(
                "tensor_parallel",
                self.tensor_parallel,
                format!("must divide devices = {}", self.devices),
            );
        }
        if !acc.attention.heads.is_multiple_of(self.tensor_parallel) {
            return bad(
                "tensor_parallel",
                self.tensor_parallel,
                format!("must divide the {} attention heads", acc.attention.heads),
            );
        }
        if !self.devices.is_multiple_of(self.expert_parallel) {
            return bad(
                "expert_parallel",
                self.expert_parallel,
                format!("must divide devices = {}", self.devices),
            );
        }
        if acc.routed_experts == 0 {
            if self.expert_parallel != 1 {
                return bad(
                    "expert_parallel",
                    self.expert_parallel,
                    "the model has no routed experts; use 1".into(),
                );
            }
        } else if !acc.routed_experts.is_multiple_of(self.expert_parallel) {
            return bad(
                "expert_parallel",
                self.expert_parallel,
                format!("must divide the {} routed experts", acc.routed_experts),
            );
        }
        Ok(())
    }

    /// Plans `acc` on this hardware.
    ///
    /// ```
    /// use deepblocks_config::Architecture;
    /// use deepblocks_params::{Bits, DeploymentPlan, Limit, mla_accounting};
    ///
    /// let v2 = mla_accounting(&Architecture::deepseek_v2(), "DeepSeek-V2")?;
    /// // 8 devices of 80 GB, bf16 weights and cache, attention split 8 ways, 20 experts each.
    /// let plan = DeploymentPlan {
    ///     devices: 8,
    ///     memory_per_device: 80_000_000_000,
    ///     reserve_per_device: 0,
    ///     tensor_parallel: 8,
    ///     expert_parallel: 8,
    ///     weight_bits: Bits::BF16,
    ///     kv_bits: Bits::BF16,
    ///     batch: 1,
    /// };
    /// let d = plan.plan(&v2)?;
    /// assert!(d.weight_bytes > 58_000_000_000 && d.weight_bytes < 60_000_000_000);
    /// assert_eq!(d.kv_bits_per_token, 60 * 576 * 16); // the latent is on every rank
    /// assert_eq!(d.limited_by, Limit::ModelContext);
    /// # Ok::<(), deepblocks_params::Error>(())
    /// ```
    pub fn plan(&self, acc: &Accounting) -> Result<Deployment> {
        self.check(acc)?;
        let (tp, ep) = (self.tensor_parallel, self.expert_parallel);
        let mut tensor_parallel_params = 0u64;
        let mut expert_params = 0u64;
        let mut replicated_params = 0u64;
        for leaf in acc.tree.leaves() {
            let Some(t) = leaf.as_tensor() else { continue };
            match t.kind {
                Kind::Linear | Kind::Embedding => {
                    tensor_parallel_params += leaf.params().div_ceil(tp)
                }
                Kind::RoutedExpert => expert_params += leaf.params() / ep,
                Kind::Router | Kind::Norm | Kind::Bias | Kind::Position => {
                    replicated_params += leaf.params()
                }
            }
        }
        // Each part is at most the model's total, which fits in u64; their sum may not for
        // absurd models, so work in u128 from here.
        let params = u128::from(tensor_parallel_params)
            + u128::from(expert_params)
            + u128::from(replicated_params);
        let weight_bytes = (params * u128::from(self.weight_bits.get())).div_ceil(8);
        let kv_elements =
            u128::from(acc.kv.layers) * u128::from(acc.kv.layout.elements_per_layer_per_rank(tp));
        let kv_bits_per_token = kv_elements
            .checked_mul(u128::from(self.kv_bits.get()))
            .ok_or_else(|| Error::Overflow {
                what: "KV bits per token".into(),
            })?;
        let to_u64 = |x: u128, what: &str| {
            u64::try_from(x).map_err(|_| Error::Overflow {
                what: what.to_string(),
            })
        };
        let available = u128::from(self.memory_per_device)
            .checked_sub(u128::from(self.reserve_per_device))
            .and_then(|m| m.checked_sub(weight_bytes));
        let (free_bytes, max_context_memory) = match available {
            None => (0, 0),
            Some(free) => {
                let per_token = kv_bits_per_token.saturating_mul(u128::from(self.batch));
                // A zero-size cache (not reachable from a config) leaves the context unbounded.
                let tokens = (free * 8)
                    .checked_div(per_token)
                    .unwrap_or(u128::from(u64::MAX));
                (free, tokens.min(u128::from(u64::MAX)))
            }
        };
        let max_context_memory = to_u64(max_context_memory, "max context")?;
        let (max_context, limited_by) = if available.is_none() {
            (0, Limit::Weights)
        } else if max_context_memory < acc.max_position_embeddings {
            (max_context_memory, Limit::Memory)
        } else {
            (acc.max_position_embeddings, Limit::ModelContext)
        };
        Ok(Deployment {
            tensor_parallel_params,
            expert_params,
            replicated_params,
            weight_bytes: to_u64(weight_bytes, "weight bytes per device")?,
            kv_bits_per_token: to_u64(kv_bits_per_token, "KV bits per token")?,
            kv_bytes_per_token: kv_bits_per_token as f64 / 8.0,
            free_bytes: to_u64(free_bytes, "free bytes")?,
            max_context_memory,
            max_context,
            limited_by,
        })
    }
}
