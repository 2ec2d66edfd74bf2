//! What the accounting reports for one model.

use deepblocks_config::AnyArchitecture;
use serde::Serialize;

use crate::deploy::DeploymentReport;
use crate::error::{Error, Result};
use crate::flops::{AttentionDims, Flops, MlaPath, sequence_flops, token_flops};
use crate::kv::{Bits, KvCache};
use crate::tree::{Component, InputEmbedding};

/// A model as the accounting sees it: its parameter tree, attention sizes and KV cache.
#[derive(Clone, Debug, PartialEq)]
pub struct Accounting {
    /// A display name.
    pub name: String,
    /// The parameter tree.
    pub tree: Component,
    /// Attention sizes for the FLOP count.
    pub attention: AttentionDims,
    /// What the KV cache holds per token.
    pub kv: KvCache,
    /// The longest context the model is configured for.
    pub max_position_embeddings: u64,
    /// `E`, routed experts per MoE layer (0 for a dense model).
    pub routed_experts: u64,
    /// Parameters of a tied unembedding (`V·h`, 0 when untied): no tensor of its own in the tree,
    /// but a matmul every token pays for.
    pub tied_unembedding: u64,
}

impl Accounting {
    /// The accounting of a described model (MLA family or dense), named `name`.
    ///
    /// ```
    /// use deepblocks_config::{AnyArchitecture, Architecture};
    /// use deepblocks_params::{Accounting, InputEmbedding};
    /// let lite = Accounting::of(&AnyArchitecture::Mla(Architecture::deepseek_v2_lite()), "V2-Lite")?;
    /// assert_eq!(lite.total(), 15_706_484_224);
    /// assert_eq!(lite.activated(InputEmbedding::Include), 2_661_150_208);
    /// # Ok::<(), deepblocks_params::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`crate::mla_tree`] / [`crate::dense_tree`].
    pub fn of(arch: &AnyArchitecture, name: &str) -> Result<Accounting> {
        match arch {
            AnyArchitecture::Mla(a) => crate::mla_accounting(a, name),
            AnyArchitecture::Dense(d) => crate::dense_accounting(d, name),
        }
    }

    /// Total parameters.
    pub fn total(&self) -> u64 {
        self.tree.params()
    }

    /// Parameters one token activates.
    pub fn activated(&self, embeddings: InputEmbedding) -> u64 {
        self.tree.activated(embeddings)
    }

    /// Activated parameters one token multiplies by (a tied unembedding included).
    pub fn activated_matmul(&self) -> u64 {
        self.tree
            .activated_matmul()
            .saturating_add(self.tied_unembedding)
    }

    /// Forward FLOPs of one token attending to `context` keys (see [`crate::flops`]).
    pub fn flops_per_token(&self, context: u64, path: MlaPath) -> Result<Flops> {
        token_flops(
            self.activated_matmul(),
            &self.attention,
            &self.kv.layout,
            context,
            path,
        )
    }

    /// Forward FLOPs of a causal prefill of `tokens` tokens.
    pub fn prefill_flops(&self, tokens: u64, path: MlaPath) -> Result<u128> {
        sequence_flops(
            self.activated_matmul(),
            &self.attention,
            &self.kv.layout,
            tokens,
            path,
        )
    }

    /// The summary the `params` example prints as JSON, with FLOPs at `context` keys.
    pub fn summary(&self, context: u64) -> Result<Summary<'_>> {
        Ok(Summary {
            model: &self.name,
            total: self.total(),
            activated: self.activated(InputEmbedding::Include),
            activated_excl_embedding: self.activated(InputEmbedding::Exclude),
            activated_matmul: self.activated_matmul(),
            matrices: self.tree.matrices(),
            kv_cache_elements_per_token: self.kv.elements_per_token(),
            kv_cache_bytes_per_token_bf16: self.kv.bits_per_token(Bits::BF16).ok_or_else(|| {
                Error::Overflow {
                    what: "KV cache bytes per token".into(),
                }
            })? / 8,
            kv_cache: self.kv,
            max_position_embeddings: self.max_position_embeddings,
            flops_per_token: self.flops_per_token(context, MlaPath::Expanded)?,
            flops_per_token_absorbed: self.flops_per_token(context, MlaPath::Absorbed)?,
            components: self.tree.children(),
            deployment: None,
        })
    }
}

/// The accounting of one model in one serialisable record. JSON keys are the field names.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    /// Display name.
    pub model: &'a str,
    /// Total parameters.
    pub total: u64,
    /// Activated per token, input embedding included.
    pub activated: u64,
    /// Activated per token, input embedding excluded (DeepSeek's published convention).
    pub activated_excl_embedding: u64,
    /// Activated matmul parameters (the `N` of `2·N` FLOPs).
    pub activated_matmul: u64,
    /// Number of matrices.
    pub matrices: u64,
    /// KV cache elements per token over all layers.
    pub kv_cache_elements_per_token: u64,
    /// KV cache bytes per token in bf16.
    pub kv_cache_bytes_per_token_bf16: u64,
    /// The KV cache layout and layer count.
    pub kv_cache: KvCache,
    /// The configured context.
    pub max_position_embeddings: u64,
    /// Forward FLOPs per token at the chosen context, expanded attention.
    pub flops_per_token: Flops,
    /// The same with MLA's absorbed attention (equal to `flops_per_token` for other layouts).
    pub flops_per_token_absorbed: Flops,
    /// The per-component breakdown (the tree's top-level components).
    pub components: &'a [Component],
    /// A deployment sketch, when one was planned (left out of the JSON otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentReport>,
}
