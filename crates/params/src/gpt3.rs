//! GPT-3 (Brown et al. 2020, "Language Models are Few-Shot Learners", Table 2.1), counted two ways.
//!
//! - **Walk-through convention** ([`Gpt3Config::walkthrough`]): every weight matrix, nothing
//!   else. Per layer one query, key and value matrix per head (`[d_head, d_model]` each), one
//!   output matrix and the MLP's up- and down-projections; plus the token embedding and a
//!   separate unembedding. No biases, no layer norms, no position embeddings. For 175B this is
//!   175,181,291,520 parameters in 27,938 matrices. The per-head split needs
//!   `n_heads·d_head = d_model`.
//! - **Paper convention** ([`Gpt3Config::full`]): the GPT-2 architecture GPT-3 is built on, every
//!   parameter of the checkpoint — token and learned position embeddings, fused QKV and output
//!   projections with biases, MLP with biases, two LayerNorms (gain and bias) per layer and a
//!   final one — with the unembedding tied to the token embedding (counted once). For 175B this
//!   is 174,604,259,328, which the paper rounds to 175.0B.
//!
//! Attention is `d_model` wide in the paper's count (GPT-2's architecture), whatever the head
//! columns say. Two rows of Table 2.1 are inconsistent there: XL prints 24 heads of 128 for
//! `d_model` 2048 (24·128 = 3072), and 13B prints `d_model` 5140 for 40 heads of 128 (= 5120).
//! Counting `d_model`-wide attention gives 1.32B and 12.95B, matching the nominal 1.3B and 13.0B
//! (the heads as printed would give 1.52B and 12.94B); the walk-through's per-head split, the KV
//! cache and the FLOP count refuse those two rows with an error naming `n_heads`.
//!
//! The difference, for 175B: `+V·d` (the walk-through's separate unembedding) against
//! `n_ctx·d + l·(13·d) + 2·d` (positions, biases and norms the walk-through leaves out) — with
//! `d_attn = n_heads·d_head = d_model` and `d_ff = 4·d_model`, a layer's biases and norms are
//! `3d + d + 4d + d + 4d = 13d`.

use crate::error::{Error, Result};
use crate::flops::AttentionDims;
use crate::kv::{KvCache, KvLayout};
use crate::model::Accounting;
use crate::tree::{Component, Kind};

/// One row of the GPT-3 paper's Table 2.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gpt3Config {
    /// The paper's name for the model.
    pub name: &'static str,
    /// The size the paper gives it ("125M", "175.0B").
    pub nominal: &'static str,
    /// `l`, layers.
    pub n_layers: u64,
    /// `d`, the residual width.
    pub d_model: u64,
    /// Attention heads.
    pub n_heads: u64,
    /// Dimension of one head, as printed. `n_heads·d_head = d_model` in every row but XL and 13B
    /// (see the [module docs](self)).
    pub d_head: u64,
    /// The MLP's inner width (4·`d_model`).
    pub d_ff: u64,
    /// Vocabulary (GPT-2's BPE, 50,257).
    pub vocab: u64,
    /// Context length (2048), the number of learned positions.
    pub n_ctx: u64,
}

fn mul(a: u64, b: u64, what: &str) -> Result<u64> {
    a.checked_mul(b).ok_or_else(|| Error::Overflow {
        what: what.to_string(),
    })
}

const fn row(
    name: &'static str,
    nominal: &'static str,
    n_layers: u64,
    d_model: u64,
    n_heads: u64,
    d_head: u64,
) -> Gpt3Config {
    Gpt3Config {
        name,
        nominal,
        n_layers,
        d_model,
        n_heads,
        d_head,
        d_ff: 4 * d_model,
        vocab: 50_257,
        n_ctx: 2048,
    }
}

/// The paper's Table 2.1, from GPT-3 Small to GPT-3 175B.
pub const GPT3_FAMILY: [Gpt3Config; 8] = [
    row("GPT-3 Small", "125M", 12, 768, 12, 64),
    row("GPT-3 Medium", "350M", 24, 1024, 16, 64),
    row("GPT-3 Large", "760M", 24, 1536, 16, 96),
    row("GPT-3 XL", "1.3B", 24, 2048, 24, 128),
    row("GPT-3 2.7B", "2.7B", 32, 2560, 32, 80),
    row("GPT-3 6.7B", "6.7B", 32, 4096, 32, 128),
    row("GPT-3 13B", "13.0B", 40, 5140, 40, 128),
    row("GPT-3 175B", "175.0B", 96, 12288, 96, 128),
];

/// GPT-3 175B (the last row of [`GPT3_FAMILY`]).
pub const GPT3_175B: Gpt3Config = GPT3_FAMILY[7];

impl Gpt3Config {
    /// Checks that the heads split `d_model` (`n_heads·d_head = d_model`), which the per-head
    /// matrices, the KV cache and the attention FLOPs need.
    pub fn check_heads(&self) -> Result<()> {
        let width = self.n_heads.checked_mul(self.d_head);
        if width == Some(self.d_model) {
            Ok(())
        } else {
            Err(Error::invalid(
                "n_heads",
                self.n_heads,
                format!(
                    "{} heads of {} do not make d_model = {}",
                    self.n_heads, self.d_head, self.d_model
                ),
            ))
        }
    }

    /// The walk-through's count: embedding, key, query, value, output, up-projection,
    /// down-projection, unembedding — weight matrices only (see the [module docs](self)). Fails
    /// when the heads do not split `d_model` ([`check_heads`](Self::check_heads)).
    pub fn walkthrough(&self) -> Result<Component> {
        self.check_heads()?;
        let heads = mul(self.n_layers, self.n_heads, "key")?;
        let (d, l, dh, ff, v) = (
            self.d_model,
            self.n_layers,
            self.d_head,
            self.d_ff,
            self.vocab,
        );
        Component::group(
            &format!("{} (walk-through)", self.name),
            vec![
                Component::tensor("embedding", Kind::Embedding, &[v, d], 1)?,
                Component::tensor("key", Kind::Linear, &[dh, d], heads)?,
                Component::tensor("query", Kind::Linear, &[dh, d], heads)?,
                Component::tensor("value", Kind::Linear, &[dh, d], heads)?,
                Component::tensor("output", Kind::Linear, &[d, d], l)?,
                Component::tensor("up-projection", Kind::Linear, &[ff, d], l)?,
                Component::tensor("down-projection", Kind::Linear, &[d, ff], l)?,
                Component::tensor("unembedding", Kind::Linear, &[v, d], 1)?,
            ],
        )
    }

    /// The paper's count: every parameter of the GPT-2-style checkpoint, unembedding tied,
    /// attention `d_model` wide. Names follow GPT-2's checkpoint (`wte`, `wpe`,
    /// `h.*.attn.c_attn`, ...); shapes are written `[out, in]` (GPT-2's `Conv1D` stores the
    /// transpose).
    pub fn full(&self) -> Result<Component> {
        let (d, l, ff) = (self.d_model, self.n_layers, self.d_ff);
        let a = d;
        let qkv = mul(3, a, "c_attn")?;
        let t = |name: &str, kind: Kind, shape: &[u64], copies: u64, ckpt: &str| {
            Component::tensor(name, kind, shape, copies).map(|c| c.with_checkpoint(ckpt))
        };
        Component::group(
            &format!("{} (paper)", self.name),
            vec![
                t("wte", Kind::Embedding, &[self.vocab, d], 1, "wte.weight")?,
                t("wpe", Kind::Position, &[self.n_ctx, d], 1, "wpe.weight")?,
                Component::group(
                    "attn",
                    vec![
                        t(
                            "c_attn",
                            Kind::Linear,
                            &[qkv, d],
                            l,
                            "h.*.attn.c_attn.weight",
                        )?,
                        t("c_attn.bias", Kind::Bias, &[qkv], l, "h.*.attn.c_attn.bias")?,
                        t("c_proj", Kind::Linear, &[d, a], l, "h.*.attn.c_proj.weight")?,
                        t("c_proj.bias", Kind::Bias, &[d], l, "h.*.attn.c_proj.bias")?,
                    ],
                )?,
                Component::group(
                    "mlp",
                    vec![
                        t("c_fc", Kind::Linear, &[ff, d], l, "h.*.mlp.c_fc.weight")?,
                        t("c_fc.bias", Kind::Bias, &[ff], l, "h.*.mlp.c_fc.bias")?,
                        t("c_proj", Kind::Linear, &[d, ff], l, "h.*.mlp.c_proj.weight")?,
                        t("c_proj.bias", Kind::Bias, &[d], l, "h.*.mlp.c_proj.bias")?,
                    ],
                )?,
                Component::group(
                    "norms",
                    vec![
                        t("ln_1.weight", Kind::Norm, &[d], l, "h.*.ln_1.weight")?,
                        t("ln_1.bias", Kind::Norm, &[d], l, "h.*.ln_1.bias")?,
                        t("ln_2.weight", Kind::Norm, &[d], l, "h.*.ln_2.weight")?,
                        t("ln_2.bias", Kind::Norm, &[d], l, "h.*.ln_2.bias")?,
                        t("ln_f.weight", Kind::Norm, &[d], 1, "ln_f.weight")?,
                        t("ln_f.bias", Kind::Norm, &[d], 1, "ln_f.bias")?,
                    ],
                )?,
            ],
        )
    }

    /// Kaplan et al.'s non-embedding parameters `N`: the paper count less the token and position
    /// embeddings.
    pub fn non_embedding(&self) -> Result<u64> {
        let full = self.full()?;
        Ok(full.params() - full.params_where(Kind::is_input_embedding))
    }

    /// The KV cache: MHA over `n_heads` heads of `d_head` in every layer. Fails when the heads do
    /// not split `d_model`.
    pub fn kv_cache(&self) -> Result<KvCache> {
        self.check_heads()?;
        Ok(KvCache::new(
            self.n_layers,
            KvLayout::Mha {
                heads: self.n_heads,
                head_dim: self.d_head,
            },
        ))
    }

    /// Everything the accounting reports, on the paper's count (the unembedding is tied to
    /// `wte`: not a tensor of its own, but a matmul every token pays for).
    pub fn accounting(&self) -> Result<Accounting> {
        Ok(Accounting {
            name: self.name.to_string(),
            tree: self.full()?,
            attention: AttentionDims {
                layers: self.n_layers,
                heads: self.n_heads,
                qk_head_dim: self.d_head,
                v_head_dim: self.d_head,
            },
            kv: self.kv_cache()?,
            max_position_embeddings: self.n_ctx,
            routed_experts: 0,
            tied_unembedding: mul(self.vocab, self.d_model, "unembedding")?,
        })
    }
}
