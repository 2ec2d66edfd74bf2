//! The DeepSeek-V2 decoder: loading from a Hugging Face folder and the forward pass.

use std::path::Path;
use std::time::Instant;

use deepblocks_core::{DType, SafeTensorsStore, Weight};
use deepblocks_embed::{Embedding, Embeddings, LmHead, Positions};
use deepblocks_mla::{AttentionPath, Mla, MlaCache, MlaWeights, QProj};
use deepblocks_moe::{Experts, FeedForward, Mlp, Moe, SharedExperts, TopkMethod, Weighting};
use deepblocks_norm::{RmsNorm, RmsNormConfig};
use deepblocks_rope::{RopeScaling, RopeTable};
use ndarray::Array2;

use crate::{Config, Error, Result};

/// Rows of the RoPE table computed at load time; later positions are computed when first used.
const ROPE_ROWS_AT_LOAD: usize = 8192;

/// How to load a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadOptions {
    /// Convert every matrix to this dtype instead of keeping the stored one (`Some(DType::F32)`
    /// widens a bf16 checkpoint: twice the memory, a copy instead of a memory map). `None` keeps
    /// bf16 weights bf16, borrowed from the map.
    pub dtype: Option<DType>,
    /// How routing weights combine `norm_topk_prob` and `routed_scaling_factor`. DeepSeek's rule
    /// by default; [`Weighting::ScaleOnly`] reproduces transformers 5 (which ignores
    /// `norm_topk_prob`). The two agree whenever `norm_topk_prob` is false, as in every
    /// released DeepSeek-V2 config.
    pub weighting: Weighting,
    /// The attention path for prompts of more than one token (decode steps always use the
    /// absorbed path).
    pub prefill_attention: AttentionPath,
    /// Report progress on stderr when loading takes more than a second.
    pub progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            dtype: None,
            weighting: Weighting::NormalizeOrScale,
            prefill_attention: AttentionPath::Absorbed,
            progress: true,
        }
    }
}

/// One decoder layer: pre-norm attention and pre-norm feed-forward, each with a residual.
#[derive(Debug, Clone)]
pub struct DecoderLayer {
    input_layernorm: RmsNorm, // [h]
    self_attn: Mla,
    post_attention_layernorm: RmsNorm, // [h]
    mlp: FeedForward,                  // dense SwiGLU MLP or DeepSeekMoE
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
}

/// A DeepSeek-V2-family causal language model.
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
    config: Config,
    embeddings: Embeddings, // embed_tokens [V, h], lm_head [V, h] (or tied)
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,   // model.norm [h]
    rope: RopeTable, // cos/sin [positions, r/2], shared by every layer
    prefill_attention: AttentionPath,
}

impl Model {
    /// Loads a Hugging Face model folder (`config.json` plus `model.safetensors` or the sharded
    /// `model.safetensors.index.json`) with [`LoadOptions::default`].
    ///
    /// # Errors
    /// As [`Model::load_with`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        Model::load_with(dir, &LoadOptions::default())
    }

    /// Loads a model folder. Weights are memory-mapped and stay in their stored dtype unless
    /// `options.dtype` asks otherwise.
    ///
    /// # Errors
    /// A bad `config.json` (naming the field), a missing file, a missing tensor (naming it and
    /// its expected shape), a tensor of the wrong shape or an unsupported dtype.
    pub fn load_with(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let config = Config::from_file(dir.join("config.json"))?;
        let store = SafeTensorsStore::open(dir)?;
        Model::from_store(config, &store, options)
    }

    /// Builds the model from a config and an open checkpoint.
    ///
    /// # Errors
    /// As [`Model::load_with`].
    pub fn from_store(
        config: Config,
        store: &SafeTensorsStore,
        options: &LoadOptions,
    ) -> Result<Self> {
        config.validate()?;
        let load = Loader {
            store,
            dtype: options.dtype,
        };
        let (v, h) = (config.vocab_size, config.hidden_size);
        let eps = config.rms_norm_eps;
        let embed_tokens = Embedding::new(load.weight("model.embed_tokens.weight", [v, h])?);
        let lm_head = if config.tie_word_embeddings {
            LmHead::Tied
        } else {
            LmHead::Separate(load.weight("lm_head.weight", [v, h])?)
        };
        let embeddings = Embeddings::new(embed_tokens, lm_head)?;

        let started = Instant::now();
        let mut reported = false;
        let n_layers = config.num_hidden_layers;
        let mut layers = Vec::with_capacity(n_layers);
        for l in 0..n_layers {
            let p = format!("model.layers.{l}");
            layers.push(DecoderLayer {
                input_layernorm: load.norm(&format!("{p}.input_layernorm.weight"), h, eps)?,
                self_attn: load.attention(&config, &format!("{p}.self_attn"))?,
                post_attention_layernorm: load.norm(
                    &format!("{p}.post_attention_layernorm.weight"),
                    h,
                    eps,
                )?,
                mlp: load.feed_forward(&config, l, &format!("{p}.mlp"), options.weighting)?,
            });
            if options.progress && started.elapsed().as_secs_f32() > 1.0 {
                eprint!("\rloading weights: layer {}/{n_layers}", l + 1);
                reported = true;
            }
        }
        if reported {
            eprintln!(" ({:.1} s)", started.elapsed().as_secs_f32());
        }
        let norm = load.norm("model.norm.weight", h, eps)?;
        let rope_config = config.rope_config();
        let rope = RopeTable::with_len(
            rope_config,
            ROPE_ROWS_AT_LOAD.min(rope_config.max_position_embeddings),
        )?;
        Ok(Model {
            config,
            embeddings,
            layers,
            norm,
            rope,
            prefill_attention: options.prefill_attention,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
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
        let mut bytes = self.embeddings.embed_tokens.weight().bytes() + norm_bytes(&self.norm);
        if let LmHead::Separate(w) = &self.embeddings.lm_head {
            bytes += w.bytes();
        }
        bytes + self.layers.iter().map(layer_bytes).sum::<usize>()
    }

    /// An empty latent KV cache for this model, preallocated for `capacity` tokens.
    ///
    /// # Errors
    /// Never for a validated config; the cache's own checks otherwise.
    pub fn new_cache(&self, capacity: usize) -> Result<MlaCache> {
        let c = &self.config;
        Ok(MlaCache::new(
            c.num_hidden_layers,
            c.kv_lora_rank,
            c.qk_rope_head_dim,
            capacity,
            c.max_position_embeddings,
        )?)
    }

    /// Runs `tokens` at positions `p..p + t` (`p = cache.len()`), appending their latents to
    /// `cache`, and returns the logits of the last position (`[1, V]`) or of every position
    /// (`[t, V]`):
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
    /// [`LoadOptions::prefill_attention`].
    ///
    /// # Errors
    /// [`Error::EmptyInput`], [`Error::TokenOutOfRange`] naming the id and its position,
    /// [`Error::ContextTooLong`], [`Error::CacheLayers`]; a block's error (e.g. NaN gate logits).
    /// On error the cache is left as it was.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut MlaCache,
        positions: Positions,
    ) -> Result<Array2<f32>> {
        let t = tokens.len();
        let mut logits = Array2::zeros((positions.rows(t.max(1)), self.config.vocab_size));
        self.forward_into(
            logits.as_slice_mut().expect("fresh array is contiguous"),
            tokens,
            cache,
            positions,
        )?;
        Ok(logits)
    }

    /// [`Model::forward`] writing into `logits` (`[1, V]` or `[t, V]`, row-major).
    ///
    /// # Errors
    /// As [`Model::forward`]; [`Error::Embed`] when `logits` has the wrong length.
    pub fn forward_into(
        &self,
        logits: &mut [f32],
        tokens: &[u32],
        cache: &mut MlaCache,
        positions: Positions,
    ) -> Result<()> {
        let cfg = &self.config;
        let (t, h) = (tokens.len(), cfg.hidden_size);
        if t == 0 {
            return Err(Error::EmptyInput);
        }
        if let Some((position, &id)) = tokens
            .iter()
            .enumerate()
            .find(|&(_, &id)| id as usize >= cfg.vocab_size)
        {
            return Err(Error::TokenOutOfRange {
                id,
                position,
                vocab_size: cfg.vocab_size,
            });
        }
        if cache.num_layers() != self.layers.len() {
            return Err(Error::CacheLayers {
                layers: cache.num_layers(),
                expected: self.layers.len(),
            });
        }
        let p = cache.len();
        if p + t > cfg.max_position_embeddings {
            return Err(Error::ContextTooLong {
                cached: p,
                adding: t,
                max_position_embeddings: cfg.max_position_embeddings,
            });
        }
        let result = self.decode_layers(tokens, cache);
        let mut x = match result {
            Ok(x) => x,
            Err(e) => {
                // Layers that ran before the failure appended their latents: roll them back.
                for l in 0..cache.num_layers() {
                    let layer = cache.layer_mut(l)?;
                    if layer.len() > p {
                        layer.truncate(p)?;
                    }
                }
                return Err(e);
            }
        };

        // Final norm and lm_head, on the rows asked for only.
        let rows = positions.rows(t);
        let x_rows = &mut x[(t - rows) * h..];
        self.norm.forward_inplace(x_rows, rows);
        self.embeddings
            .logits_into(logits, x_rows, rows, Positions::All)?;
        Ok(())
    }

    /// Embedding and every decoder layer: the hidden states `[t, h]` before the final norm.
    fn decode_layers(&self, tokens: &[u32], cache: &mut MlaCache) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let (t, h) = (tokens.len(), cfg.hidden_size);
        let p = cache.len();

        let mut x = vec![0.0f32; t * h]; // [t, h], the residual stream
        self.embeddings.embed_tokens.lookup(&mut x, tokens)?;

        // The rotary rows of positions p..p+t, gathered once for every layer. Dynamic NTK's
        // frequencies depend on the sequence length, so its table is built for this pass.
        let positions: Vec<usize> = (p..p + t).collect();
        let dynamic;
        let table = if let RopeScaling::DynamicNtk(_) = cfg.rope_scaling {
            dynamic = RopeTable::with_len(cfg.rope_config(), p + t)?;
            &dynamic
        } else {
            &self.rope
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
            layer.input_layernorm.forward(&mut normed, &x, t);
            layer.self_attn.forward_with(
                &mut delta,
                &normed,
                t,
                cache.layer_mut(l)?,
                &rope,
                path,
            )?;
            add(&mut x, &delta);
            layer.post_attention_layernorm.forward(&mut normed, &x, t);
            layer.mlp.forward(&mut delta, &normed, t)?;
            add(&mut x, &delta);
        }
        Ok(x)
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

fn layer_bytes(layer: &DecoderLayer) -> usize {
    norm_bytes(&layer.input_layernorm)
        + layer.self_attn.weight_bytes()
        + norm_bytes(&layer.post_attention_layernorm)
        + layer.mlp.weight_bytes()
}

/// Reads tensors by checkpoint name with the shape the config implies, converting on request.
struct Loader<'a> {
    store: &'a SafeTensorsStore,
    dtype: Option<DType>,
}

impl Loader<'_> {
    fn present(&self, name: &str, expected: &[usize]) -> Result<()> {
        if self.store.contains(name) {
            Ok(())
        } else {
            Err(Error::MissingTensor {
                name: name.to_string(),
                expected: expected.to_vec(),
                location: self.store.location().display().to_string(),
            })
        }
    }

    fn convert(&self, w: Weight) -> Weight {
        match self.dtype {
            Some(d) => w.to_dtype(d),
            None => w,
        }
    }

    fn weight(&self, name: &str, shape: [usize; 2]) -> Result<Weight> {
        self.present(name, &shape)?;
        Ok(self.convert(self.store.weight(name, shape)?))
    }

    /// A 3-D tensor `[a, b, c]` viewed as `[a·b, c]`.
    fn stacked(&self, name: &str, shape: [usize; 3]) -> Result<Weight> {
        self.present(name, &shape)?;
        let w = self
            .store
            .weight_reshaped(name, &shape, shape[0] * shape[1], shape[2])?;
        Ok(self.convert(w))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        self.present(name, &[len])?;
        Ok(self.store.tensor_f32(name, &[len])?.to_vec())
    }

    fn norm(&self, name: &str, hidden: usize, eps: f32) -> Result<RmsNorm> {
        let w = self.vector(name, hidden)?;
        Ok(RmsNorm::new(RmsNormConfig { hidden, eps }, w)?)
    }

    fn mlp(&self, prefix: &str, h: usize, i: usize) -> Result<Mlp> {
        Ok(Mlp::new(
            self.weight(&format!("{prefix}.gate_proj.weight"), [i, h])?,
            self.weight(&format!("{prefix}.up_proj.weight"), [i, h])?,
            self.weight(&format!("{prefix}.down_proj.weight"), [h, i])?,
        )?)
    }

    fn attention(&self, config: &Config, prefix: &str) -> Result<Mla> {
        let mla = config.mla_config()?;
        let (h, n, c) = (
            config.hidden_size,
            config.num_attention_heads,
            config.kv_lora_rank,
        );
        let (d, r, v) = (
            config.qk_nope_head_dim,
            config.qk_rope_head_dim,
            config.v_head_dim,
        );
        let name = |s: &str| format!("{prefix}.{s}");
        let q = match config.q_lora_rank {
            None => QProj::Full {
                q_proj: self.weight(&name("q_proj.weight"), [n * (d + r), h])?,
            },
            Some(q) => QProj::LowRank {
                q_a_proj: self.weight(&name("q_a_proj.weight"), [q, h])?,
                q_a_layernorm: self.norm(&name("q_a_layernorm.weight"), q, mla.rms_norm_eps)?,
                q_b_proj: self.weight(&name("q_b_proj.weight"), [n * (d + r), q])?,
            },
        };
        let weights = MlaWeights {
            q,
            kv_a_proj_with_mqa: self.weight(&name("kv_a_proj_with_mqa.weight"), [c + r, h])?,
            kv_a_layernorm: self.norm(&name("kv_a_layernorm.weight"), c, mla.rms_norm_eps)?,
            kv_b_proj: self.weight(&name("kv_b_proj.weight"), [n * (d + v), c])?,
            o_proj: self.weight(&name("o_proj.weight"), [h, n * v])?,
        };
        Ok(Mla::new(mla, weights)?)
    }

    fn feed_forward(
        &self,
        config: &Config,
        layer: usize,
        prefix: &str,
        weighting: Weighting,
    ) -> Result<FeedForward> {
        let h = config.hidden_size;
        if !config.is_moe_layer(layer) {
            return Ok(FeedForward::Dense(self.mlp(
                prefix,
                h,
                config.intermediate_size,
            )?));
        }
        let (e, i) = (config.n_routed_experts, config.moe_intermediate_size);
        let gate = self.weight(&format!("{prefix}.gate.weight"), [e, h])?;
        let bias = match config.topk_method {
            TopkMethod::NoauxTc { .. } => {
                Some(self.vector(&format!("{prefix}.gate.e_score_correction_bias"), e)?)
            }
            _ => None,
        };
        // transformers 5 keeps the routed experts packed; the hub checkpoints store each one.
        let packed = format!("{prefix}.experts.gate_up_proj");
        let experts = if self.store.contains(&packed) {
            Experts::from_packed(
                &self.stacked(&packed, [e, 2 * i, h])?,
                &self.stacked(&format!("{prefix}.experts.down_proj"), [e, h, i])?,
                e,
            )?
        } else {
            Experts::from_mlps(
                (0..e)
                    .map(|j| self.mlp(&format!("{prefix}.experts.{j}"), h, i))
                    .collect::<Result<Vec<_>>>()?,
            )?
        };
        let shared = match config.n_shared_experts {
            0 => SharedExperts::None,
            ns => SharedExperts::Mlp(self.mlp(&format!("{prefix}.shared_experts"), h, i * ns)?),
        };
        Ok(FeedForward::Moe(Box::new(Moe::new(
            config.moe_config(weighting),
            gate,
            bias,
            experts,
            shared,
        )?)))
    }
}
