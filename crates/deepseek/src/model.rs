//! The decoder: layers of pre-norm attention and feed-forward blocks, and the forward pass.

use deepblocks_config::Architecture;
use deepblocks_core::on_pool;
use deepblocks_embed::{Embeddings, LmHead, Positions};
use deepblocks_mla::{AttentionPath, CacheDType, Mla, MlaCache, MlaCacheConfig};
use deepblocks_moe::{Mlp, Moe};
use deepblocks_norm::RmsNorm;
use deepblocks_rope::{RopeScaling, RopeTable};

use crate::{Error, LoadOptions, LoadReport, Result, blocks};

/// The feed-forward block of a decoder layer, by [`Architecture::layer_kind`]: the dense MLP
/// (of the first `first_k_dense_replace` layers in DeepSeek-V2) or DeepSeekMoE.
#[derive(Clone, Debug)]
pub enum FeedForward {
    /// A dense SwiGLU MLP of width `intermediate_size` (`mlp.{gate,up,down}_proj`).
    Dense(Mlp),
    /// A DeepSeekMoE layer (boxed: it is much larger than an MLP).
    Moe(Box<Moe>),
}

impl FeedForward {
    /// Bytes of its weights, in their stored dtypes.
    pub fn weight_bytes(&self) -> usize {
        match self {
            FeedForward::Dense(mlp) => mlp.weight_bytes(),
            FeedForward::Moe(moe) => moe.weight_bytes(),
        }
    }

    /// `out[t, h]` for `x[t, h]`.
    ///
    /// # Errors
    /// As [`Mlp::forward`] or [`Moe::forward`].
    pub fn forward(&self, out: &mut [f32], x: &[f32], t: usize) -> Result<()> {
        match self {
            FeedForward::Dense(mlp) => mlp.forward(out, x, t)?,
            FeedForward::Moe(moe) => {
                moe.forward(out, x, t)?;
            }
        }
        Ok(())
    }
}

/// One decoder layer: pre-norm attention and pre-norm feed-forward, each with a residual.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    pub(crate) input_layernorm: RmsNorm, // [h]
    pub(crate) self_attn: Mla,
    pub(crate) post_attention_layernorm: RmsNorm, // [h]
    pub(crate) mlp: FeedForward,                  // dense SwiGLU MLP or DeepSeekMoE
}

impl DecoderLayer {
    /// The attention block.
    pub fn self_attn(&self) -> &Mla {
        &self.self_attn
    }

    /// The feed-forward block.
    pub fn mlp(&self) -> &FeedForward {
        &self.mlp
    }

    /// Bytes of its weights (norms as the f32 they are kept in).
    pub fn weight_bytes(&self) -> usize {
        norm_bytes(&self.input_layernorm)
            + self.self_attn.weight_bytes()
            + norm_bytes(&self.post_attention_layernorm)
            + self.mlp.weight_bytes()
    }
}

/// An MLA-family causal language model (DeepSeek-V2 and its relatives).
///
/// ```no_run
/// use deepblocks_deepseek::{Model, Positions};
/// let model = Model::load("path/to/DeepSeek-V2-Lite")?;
/// let mut cache = model.new_cache(64)?;
/// let logits = model.forward(&[100_000, 6, 7], &mut cache, Positions::Last)?; // [1, V]
/// let next = model.forward(&[8], &mut cache, Positions::Last)?; // one decode step
/// # Ok::<(), deepblocks_deepseek::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Model {
    arch: Architecture,
    embeddings: Embeddings, // embed_tokens [V, h], lm_head [V, h] (or tied)
    layers: Vec<DecoderLayer>,
    pub(crate) norm: RmsNorm, // model.norm [h]
    rope: RopeTable,          // cos/sin [positions, r/2], shared by every layer
    prefill_attention: AttentionPath,
    cache_dtype: CacheDType, // what new_cache keeps the latents in
    report: LoadReport,
}

impl Model {
    pub(crate) fn from_blocks(
        arch: Architecture,
        embeddings: Embeddings,
        layers: Vec<DecoderLayer>,
        norm: RmsNorm,
        rope: RopeTable,
        options: &LoadOptions,
        report: LoadReport,
    ) -> Model {
        Model {
            arch,
            embeddings,
            layers,
            norm,
            rope,
            prefill_attention: options.prefill_attention,
            cache_dtype: options.cache_dtype,
            report,
        }
    }

    /// The architecture description it was built from.
    pub fn config(&self) -> &Architecture {
        &self.arch
    }

    /// What loading found (unknown config keys, tensors read).
    pub fn load_report(&self) -> &LoadReport {
        &self.report
    }

    /// The embedding and unembedding.
    pub fn embeddings(&self) -> &Embeddings {
        &self.embeddings
    }

    /// The decoder layers.
    pub fn layers(&self) -> &[DecoderLayer] {
        &self.layers
    }

    /// Bytes of weights held (in their stored dtypes; memory-mapped ones included; RMSNorm
    /// weights as the f32 they are kept in; the absorbed attention's transposed `W_UK` copy
    /// included).
    pub fn weight_bytes(&self) -> usize {
        let mut bytes = self.embeddings.embed_tokens().weight().bytes() + norm_bytes(&self.norm);
        if let LmHead::Separate(w) = self.embeddings.lm_head() {
            bytes += w.bytes();
        }
        bytes
            + self
                .layers
                .iter()
                .map(DecoderLayer::weight_bytes)
                .sum::<usize>()
    }

    /// The sizes of this model's latent cache, in the element type it was loaded with
    /// ([`LoadOptions::cache_dtype`]).
    pub fn cache_config(&self) -> MlaCacheConfig {
        blocks::cache_config(&self.arch, self.cache_dtype)
    }

    /// An empty latent KV cache for this model, with room for `capacity` tokens before it
    /// grows (capped at the context; it grows as used up to `max_position_embeddings`), in
    /// [`LoadOptions::cache_dtype`] (a cache of another element type, made with
    /// [`MlaCache::with_capacity`] from [`Model::cache_config`], serves as well).
    ///
    /// # Errors
    /// Never for a validated description; the cache's own checks otherwise.
    pub fn new_cache(&self, capacity: usize) -> Result<MlaCache> {
        Ok(MlaCache::with_capacity(self.cache_config(), capacity)?)
    }

    /// Runs `tokens` at positions `p..p + t` (`p = cache.len()`), appending their latents to
    /// `cache`, and returns the logits of the last position (`[1, V]`) or of every position
    /// (`[t, V]`), row-major. See [`Model::forward_into`].
    ///
    /// # Errors
    /// As [`Model::forward_into`].
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut MlaCache,
        positions: Positions,
    ) -> Result<Vec<f32>> {
        let rows = positions.rows(tokens.len().max(1));
        let mut logits = vec![0.0f32; rows.saturating_mul(self.arch.vocab_size)];
        self.forward_into(&mut logits, tokens, cache, positions)?;
        Ok(logits)
    }

    /// ndarray wrapper of [`Model::forward_into`]: the logits as an array `[rows, V]`.
    ///
    /// # Errors
    /// As [`Model::forward_into`].
    #[cfg(feature = "ndarray")]
    pub fn forward_nd(
        &self,
        tokens: &[u32],
        cache: &mut MlaCache,
        positions: Positions,
    ) -> Result<ndarray::Array2<f32>> {
        let rows = positions.rows(tokens.len().max(1));
        let logits = self.forward(tokens, cache, positions)?;
        Ok(
            ndarray::Array2::from_shape_vec((rows, self.arch.vocab_size), logits)
                .expect("forward returns [rows, V]"),
        )
    }

    /// The forward pass, writing the logits into `logits` (`[1, V]` for [`Positions::Last`],
    /// `[t, V]` for [`Positions::All`], row-major):
    ///
    /// ```text
    /// x = embed_tokens[tokens]                               [t, h]
    /// for each layer:
    ///     x = x + MLA(RMSNorm(x))                            (input_layernorm, self_attn)
    ///     x = x + MLP_or_MoE(RMSNorm(x))                     (post_attention_layernorm, mlp)
    /// logits = lm_head(RMSNorm(x))                           (norm, lm_head)
    /// ```
    ///
    /// A single token (a decode step) uses the absorbed attention path; a longer prompt uses
    /// [`crate::LoadOptions::prefill_attention`].
    ///
    /// Everything that can be checked is checked before the cache is touched: the token count,
    /// the length of `logits`, the cache's sizes, the room left in the context and every token
    /// id. Each block's output is then checked for NaN and infinities (one pass over `t·h` values),
    /// so a non-finite value is reported where it starts. A failure in a layer rolls back what
    /// earlier layers appended. On error the cache is as it was.
    ///
    /// # Errors
    /// An MLA [`EmptyInput`](deepblocks_mla::Error::EmptyInput) for no tokens; a core
    /// [`Length`](deepblocks_core::Error::Length) error naming `logits`; an MLA
    /// [`CacheMismatch`](deepblocks_mla::Error::CacheMismatch) for a cache of another model, or
    /// [`ContextFull`](deepblocks_mla::Error::ContextFull) past `max_position_embeddings`; an
    /// embed [`TokenOutOfRange`](deepblocks_embed::Error::TokenOutOfRange) naming the id and its
    /// position; [`Error::NonFiniteOutput`] naming the layer and the block (attention, mlp,
    /// lm_head) whose output first holds a NaN or an infinity; [`Error::Layer`] around a block's
    /// own error (the router's NaN gate logits).
    pub fn forward_into(
        &self,
        logits: &mut [f32],
        tokens: &[u32],
        cache: &mut MlaCache,
        positions: Positions,
    ) -> Result<()> {
        let (t, h, vocab) = (tokens.len(), self.arch.hidden_size, self.arch.vocab_size);
        if t == 0 {
            return Err(deepblocks_mla::Error::EmptyInput.into());
        }
        let rows = positions.rows(t);
        if Some(logits.len()) != rows.checked_mul(vocab) {
            return Err(
                deepblocks_core::Error::length("logits", &[rows, vocab], logits.len()).into(),
            );
        }
        cache.check_config(&self.cache_config())?;
        cache.check_even()?;
        cache.check_room(t)?;
        self.embeddings.embed_tokens().check_ids(tokens)?;

        let p = cache.len();
        // One crossing into the pool for the whole pass: its parallel loops start there.
        let result = on_pool(|| {
            self.decode_layers(tokens, cache).and_then(|mut x| {
                // The final norm and lm_head, on the rows asked for only.
                let x_rows = &mut x[(t - rows) * h..];
                self.norm.forward_inplace(x_rows, rows);
                self.embeddings
                    .logits_into(logits, x_rows, rows, Positions::All)?;
                finite(logits, None, "lm_head")
            })
        });
        if result.is_err() {
            // Layers that ran before the failure appended their latents: roll them back.
            cache.rollback(p);
        }
        result
    }

    /// Embedding and every decoder layer: the hidden states `[t, h]` before the final norm.
    fn decode_layers(&self, tokens: &[u32], cache: &mut MlaCache) -> Result<Vec<f32>> {
        let (t, h) = (tokens.len(), self.arch.hidden_size);
        let p = cache.len();

        let mut x = vec![0.0f32; t * h]; // [t, h], the residual stream
        self.embeddings.embed_tokens().lookup(&mut x, tokens)?;

        // The rotary rows of positions p..p+t, gathered once for every layer. Dynamic NTK's
        // frequencies depend on the sequence length once it passes the original length, so past
        // it the table is built for this pass (a config.json never gets there: transformers
        // scales from max_position_embeddings, the end of the context).
        let positions: Vec<usize> = (p..p + t).collect();
        let dynamic;
        let table = match self.arch.rope.scaling {
            RopeScaling::DynamicNtk(d) if p + t > d.original_max_position_embeddings => {
                dynamic = RopeTable::with_len(blocks::rope_config(&self.arch), p + t)?;
                &dynamic
            }
            _ => &self.rope,
        };
        let rope = table.cos_sin(&positions)?;
        let path = if t == 1 {
            AttentionPath::Absorbed
        } else {
            self.prefill_attention
        };

        let mut normed = vec![0.0f32; t * h]; // [t, h]
        let mut delta = vec![0.0f32; t * h]; // [t, h], a block's output
        for (l, layer) in self.layers.iter().enumerate() {
            let in_layer = |e: Error| Error::Layer {
                layer: l,
                source: Box::new(e),
            };
            layer.input_layernorm.forward(&mut normed, &x, t);
            layer
                .self_attn
                .forward_with(&mut delta, &normed, t, cache.layer_mut(l)?, &rope, path)
                .map_err(|e| in_layer(e.into()))?;
            finite(&delta, Some(l), "attention")?;
            add(&mut x, &delta);
            layer.post_attention_layernorm.forward(&mut normed, &x, t);
            layer
                .mlp
                .forward(&mut delta, &normed, t)
                .map_err(in_layer)?;
            finite(&delta, Some(l), "mlp")?;
            add(&mut x, &delta);
        }
        Ok(x)
    }
}

/// The first non-finite element of a block's output, as an error naming the layer and the block.
fn finite(x: &[f32], layer: Option<usize>, block: &'static str) -> Result<()> {
    match deepblocks_core::first_non_finite(x) {
        None => Ok(()),
        Some(index) => Err(Error::NonFiniteOutput {
            layer,
            block,
            index,
            value: x[index],
        }),
    }
}

/// `x += y`.
fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

fn norm_bytes(norm: &RmsNorm) -> usize {
    std::mem::size_of_val(norm.weight())
}
