//! The one loader: the only code that knows checkpoint tensor names. It reads each tensor with
//! the shape the architecture description implies and hands the blocks their weights.
//!
//! ```text
//! model.embed_tokens.weight                          [V, h]
//! model.layers.{l}.input_layernorm.weight            [h]
//! model.layers.{l}.self_attn.q_proj.weight           [n(d+r), h]         (q_lora_rank null)
//! model.layers.{l}.self_attn.q_a_proj.weight         [q, h]              (else, with
//! model.layers.{l}.self_attn.q_a_layernorm.weight    [q]                  q_a_layernorm and
//! model.layers.{l}.self_attn.q_b_proj.weight         [n(d+r), q]          q_b_proj)
//! model.layers.{l}.self_attn.kv_a_proj_with_mqa.weight [c+r, h]
//! model.layers.{l}.self_attn.kv_a_layernorm.weight   [c]
//! model.layers.{l}.self_attn.kv_b_proj.weight        [n(d+v), c]
//! model.layers.{l}.self_attn.o_proj.weight           [h, n·v]
//! model.layers.{l}.post_attention_layernorm.weight   [h]
//! model.layers.{l}.mlp.{gate,up,down}_proj.weight    [I, h] [I, h] [h, I]   (dense layers)
//! model.layers.{l}.mlp.gate.weight                   [e, h]                 (MoE layers)
//! model.layers.{l}.mlp.experts.{j}.{gate,up,down}_proj.weight  [i, h] [i, h] [h, i]
//!   or transformers 5's packed mlp.experts.gate_up_proj [e, 2i, h], mlp.experts.down_proj [e, h, i]
//! model.layers.{l}.mlp.shared_experts.{gate,up,down}_proj.weight  width n_shared·i
//! model.norm.weight                                  [h]
//! lm_head.weight                                     [V, h]                 (unless tied)
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use deepblocks_config::{
    Architecture, Fp8Quantization, LayerKind, Parsed, QueryProjection, TopkSelection,
};
use deepblocks_core::gguf::GgufFile;
use deepblocks_core::quant::BlockFormat;
use deepblocks_core::quant::fp8::Fp8Block;
use deepblocks_core::{Access, Bf16Products, DType, SafeTensorsStore, Weight, WeightFormat};
use deepblocks_embed::{Embedding, Embeddings, LmHead};
use deepblocks_mla::{AttentionPath, CacheDType, DEFAULT_CACHE_DTYPE, KvB, Mla, MlaWeights, QProj};
use deepblocks_moe::{Experts, Mlp, Moe, SharedExperts, Weighting};
use deepblocks_norm::RmsNorm;
use deepblocks_rope::{RopeScaling, RopeTable};

use crate::model::{DecoderLayer, FeedForward};
use crate::recipe::{Choice, Recipe, Role};
use crate::{Error, Model, Result, blocks};

/// Rows of the RoPE table computed at load time; later positions are computed when first used.
const ROPE_ROWS_AT_LOAD: usize = 8192;

/// What a load has done so far, passed to [`LoadOptions::progress`] after each decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadProgress {
    /// Decoder layers built.
    pub layers_loaded: usize,
    /// Decoder layers in the model.
    pub num_layers: usize,
}

/// A callback that sees the load's progress (the examples draw a bar with it; the library
/// writes nothing to stderr).
pub type ProgressFn = Arc<dyn Fn(LoadProgress) + Send + Sync>;

/// How to load a model.
#[derive(Clone)]
pub struct LoadOptions {
    /// Convert every matrix to this dtype instead of keeping the stored one (`Some(DType::F32)`
    /// widens a bf16 checkpoint: twice the memory, a copy instead of a memory map). `None` keeps
    /// bf16 weights bf16, borrowed from the map.
    pub dtype: Option<DType>,
    /// Overrides how routing weights combine `norm_topk_prob` and `routed_scaling_factor`.
    /// `None` (the default) is the family's own rule, from the architecture description
    /// (DeepSeek's for `deepseek_v2`); [`Weighting::ScaleOnly`] reproduces transformers 5's
    /// `deepseek_v2`, which ignores `norm_topk_prob`.
    pub weighting: Option<Weighting>,
    /// The attention path for prompts of more than one token (decode steps always use the
    /// absorbed path). The default, [`AttentionPath::Auto`], takes whichever core costs fewer
    /// multiply-adds for the call.
    pub prefill_attention: AttentionPath,
    /// The element type of the latent caches [`Model::new_cache`] makes:
    /// [`DEFAULT_CACHE_DTYPE`] (bf16) by default, half the bytes every decode step reads;
    /// [`CacheDType::F32`] keeps the latents exactly (reference runs, the golden tests),
    /// [`CacheDType::Q8_0`] takes 56% of bf16's bytes.
    pub cache_dtype: CacheDType,
    /// Called after each decoder layer is built.
    pub progress: Option<ProgressFn>,
    /// Scan every weight once while loading and refuse the first that holds a NaN or an infinity
    /// ([`Error::NonFiniteWeight`], naming the tensor). Off by default: it reads every byte of
    /// the checkpoint up front (the forward pass checks each block's output anyway).
    pub check_weights: bool,
    /// Quantize the matrices while loading, by this recipe (`None`: keep the stored dtypes).
    /// Each tensor is read, quantized and its pages of the memory map released before the
    /// next, so memory peaks near the quantized model, not the checkpoint. Norms and router
    /// gates stay unquantized (the gates widened to f32).
    pub quant: Option<Recipe>,
    /// How the checkpoint's bytes are reached: memory-mapped ([`Access::Map`], the default: no
    /// copy, but the files must not be modified while the model is alive) or read into memory
    /// once ([`Access::Read`]: for files that may change, at the cost of holding every byte).
    pub access: Access,
    /// How the bf16 matrices multiply their f32 inputs ([`Bf16Products`]; the routers' gates
    /// always keep theirs f32, as transformers computes them). The default,
    /// [`Bf16Products::auto`], rounds the inputs to bf16 where the CPU multiplies bf16 on
    /// `vdpbf16ps` (AVX512-BF16), as llama.cpp does — two to three times the f32 kernels' rate in
    /// prefill; on the bf16 golden the logits move by 1.9e-2 at most, where transformers
    /// computing in bf16 moves them by 0.90 — and keeps them f32 elsewhere.
    /// [`Bf16Products::F32`] keeps every product that of the values given (the golden tests
    /// against transformers' f32 compute).
    pub bf16_products: Bf16Products,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            dtype: None,
            weighting: None,
            prefill_attention: AttentionPath::default(),
            cache_dtype: DEFAULT_CACHE_DTYPE,
            progress: None,
            check_weights: false,
            quant: None,
            access: Access::default(),
            bf16_products: Bf16Products::auto(),
        }
    }
}

impl fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadOptions")
            .field("dtype", &self.dtype)
            .field("weighting", &self.weighting)
            .field("prefill_attention", &self.prefill_attention)
            .field("cache_dtype", &self.cache_dtype)
            .field("progress", &self.progress.as_ref().map(|_| "callback"))
            .field("check_weights", &self.check_weights)
            .field("quant", &self.quant)
            .field("access", &self.access)
            .field("bf16_products", &self.bf16_products)
            .finish()
    }
}

/// What loading found: the config keys it did not know, and what it read from the checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// `config.json` keys that were neither read nor known to be inert (see
    /// [`deepblocks_config::Parsed::unknown_keys`]); worth a note to the user.
    pub unknown_config_keys: Vec<String>,
    /// Tensors read from the checkpoint.
    pub tensors: usize,
    /// Their elements: the parameters the model holds (a tied `lm_head` counted once).
    pub parameters: usize,
    /// Tensors of the checkpoint the model knowingly does not read: tensors of no elements (as
    /// transformers writes for `n_shared_experts: 0`). Any other tensor the description does not
    /// account for is an [`Error::UnexpectedTensors`].
    pub skipped_tensors: Vec<String>,
    /// Tensors of the multi-token-prediction layers (`num_nextn_predict_layers` of them, stored
    /// as `model.layers.{num_hidden_layers}…`), which inference does not run, sorted.
    pub mtp_tensors: Vec<String>,
    /// With [`LoadOptions::quant`]: how many matrices of each kind got each format, sorted by
    /// kind.
    pub formats: Vec<FormatCount>,
    /// The recipe the weights were quantized with while loading ([`LoadOptions::quant`]).
    pub recipe: Option<Recipe>,
}

/// Matrices of one kind stored in one format (a line of [`LoadReport::formats`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatCount {
    /// The checkpoint names with each layer and expert index as `*`, e.g.
    /// `model.layers.*.mlp.experts.*.down_proj.weight`.
    pub kind: String,
    /// Their format.
    pub format: WeightFormat,
    /// How many.
    pub tensors: usize,
    /// The format the recipe asked for, when this is its fallback (rows not whole blocks).
    pub fallback_from: Option<BlockFormat>,
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

    /// Loads a model folder. Weights stay in their stored dtype unless `options.dtype` asks
    /// otherwise.
    ///
    /// # The memory map
    /// By default the checkpoint is memory-mapped and read in place: **do not modify or truncate
    /// the files while the model is alive** — a rewrite changes the weights under it, and a
    /// truncation kills the process (SIGBUS). For files that may change, load with
    /// `LoadOptions { access: Access::Read, .. }`, which reads them into memory once.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad `config.json` (naming the file and the key, or an unsupported
    /// `model_type`); [`Error::Core`] for a missing file or a missing tensor (naming it and its
    /// expected shape), a tensor of the wrong shape or an unsupported dtype.
    pub fn load_with(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let dir = dir.as_ref();
        let parsed = Architecture::from_file(dir.join("config.json"))?;
        let store = SafeTensorsStore::open_with(dir, options.access)?;
        Model::from_parsed(parsed, Source::SafeTensors(&store), options)
    }

    /// Loads a llama.cpp GGUF file of its `deepseek2` architecture: the description from its
    /// metadata ([`crate::architecture_from_gguf`]), the weights from its tensors in their
    /// stored formats, borrowed from the map (F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K; any
    /// other type is an error naming the tensor). Both of llama.cpp's MLA layouts load: the
    /// legacy `attn_kv_b`, and the split `attn_k_b` / `attn_v_b` newer converters write, which
    /// the absorbed path reads in place ([`deepblocks_mla::KvB::Split`]). `options` apply as to a
    /// folder (a recipe requantizes, `dtype` converts).
    ///
    /// # Errors
    /// [`Error::Gguf`] for a file that is not a GGUF we read; [`Error::GgufMetadata`] naming the
    /// key; a tensor's errors naming it.
    pub fn load_gguf(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self> {
        let file = GgufFile::open_with(path, options.access)?;
        let parsed = Parsed {
            architecture: crate::architecture_from_gguf(&file)?,
            unknown_keys: Vec::new(),
        };
        Model::from_parsed(parsed, Source::Gguf(&file), options)
    }

    /// Builds the model of `arch` (read, or built and edited by hand) from an open checkpoint.
    ///
    /// # Errors
    /// As [`Model::load_with`]; [`Error::Config`] when `arch` does not validate.
    pub fn from_store(
        arch: Architecture,
        store: &SafeTensorsStore,
        options: &LoadOptions,
    ) -> Result<Self> {
        let parsed = Parsed {
            architecture: arch,
            unknown_keys: Vec::new(),
        };
        Model::from_parsed(parsed, Source::SafeTensors(store), options)
    }

    fn from_parsed(
        parsed: Parsed<Architecture>,
        source: Source<'_>,
        options: &LoadOptions,
    ) -> Result<Self> {
        let arch = parsed.architecture;
        arch.validate()?;
        let load = Loader {
            source,
            dtype: options.dtype,
            products: options.bf16_products,
            check_weights: options.check_weights,
            read: RefCell::new(HashSet::new()),
            parameters: Cell::new(0),
            quant: options.quant,
            num_layers: arch.num_hidden_layers,
            tied: arch.tie_word_embeddings,
            formats: RefCell::new(Vec::new()),
            quantization: arch.quantization,
        };
        let embeddings = load.embeddings(&arch)?;
        let n_layers = arch.num_hidden_layers;
        // A layer count the file cannot hold fails here, before any reservation for it.
        let found = (0..n_layers)
            .find(|&l| !source.has_layer(l))
            .unwrap_or(n_layers);
        if found < n_layers {
            return Err(Error::MissingLayers {
                location: source.location(),
                num_hidden_layers: n_layers,
                found,
            });
        }
        let mut layers = Vec::with_capacity(n_layers);
        for l in 0..n_layers {
            layers.push(load.decoder_layer(&arch, l, options.weighting)?);
            if let Some(progress) = &options.progress {
                progress(LoadProgress {
                    layers_loaded: l + 1,
                    num_layers: n_layers,
                });
            }
        }
        let norm = load.norm("model.norm.weight", &arch, arch.hidden_size)?;
        let rope_config = blocks::rope_config(&arch);
        // Dynamic NTK: rows past the original length would rescale every frequency.
        let rows = match rope_config.scaling {
            RopeScaling::DynamicNtk(d) => d.original_max_position_embeddings,
            _ => rope_config.max_position_embeddings,
        };
        let rope = RopeTable::with_len(rope_config, ROPE_ROWS_AT_LOAD.min(rows))?;
        let (skipped_tensors, mtp_tensors) =
            load.account_for_every_tensor(&arch, &parsed.unknown_keys)?;
        let report = LoadReport {
            unknown_config_keys: parsed.unknown_keys,
            tensors: load.read.borrow().len(),
            parameters: load.parameters.get(),
            skipped_tensors,
            mtp_tensors,
            formats: load.formats.take(),
            recipe: options.quant,
        };
        Ok(Model::from_blocks(
            arch, embeddings, layers, norm, rope, options, report,
        ))
    }
}

/// Reads tensors by checkpoint name with the shape the description implies, converting on
/// request, and records what it read.
struct Loader<'a> {
    source: Source<'a>,
    dtype: Option<DType>,
    products: Bf16Products,
    check_weights: bool,
    read: RefCell<HashSet<String>>, // names of the tensors read
    parameters: Cell<usize>,
    quant: Option<Recipe>,
    num_layers: usize,
    tied: bool,
    formats: RefCell<Vec<FormatCount>>,
    quantization: Option<Fp8Quantization>,
}

impl Loader<'_> {
    fn counted(&self, name: &str, elements: usize) {
        if self.read.borrow_mut().insert(name.to_string()) {
            self.parameters.set(self.parameters.get() + elements);
        }
    }

    /// With `check_weights`, the first non-finite element of `w` is an error naming `name`.
    fn finite(&self, name: &str, w: &Weight) -> Result<()> {
        if !self.check_weights {
            return Ok(());
        }
        match w.first_non_finite() {
            None => Ok(()),
            Some((index, value)) => Err(Error::NonFiniteWeight {
                tensor: name.to_string(),
                index,
                value,
            }),
        }
    }

    /// Every tensor of the checkpoint was read, or is empty, or belongs to a
    /// multi-token-prediction layer (both returned, for the report); any other is an error
    /// listing them with the config key that would explain them.
    fn account_for_every_tensor(
        &self,
        arch: &Architecture,
        unknown_keys: &[String],
    ) -> Result<(Vec<String>, Vec<String>)> {
        let read = self.read.borrow();
        let mtp = arch.num_hidden_layers..arch.num_hidden_layers + arch.num_nextn_predict_layers;
        let (mut skipped, mut mtp_tensors, mut unexpected) = (Vec::new(), Vec::new(), Vec::new());
        for (name, numel) in self
            .source
            .names()
            .into_iter()
            .filter(|(n, _)| !read.contains(n))
        {
            if layer_of(&name).is_some_and(|l| mtp.contains(&l)) {
                mtp_tensors.push(name);
            } else if numel == 0 {
                skipped.push(name);
            } else {
                unexpected.push(name);
            }
        }
        skipped.sort();
        mtp_tensors.sort();
        if unexpected.is_empty() {
            return Ok((skipped, mtp_tensors));
        }
        unexpected.sort();
        Err(Error::UnexpectedTensors {
            location: self.source.location(),
            explanation: explain_unexpected(arch, &unexpected, unknown_keys),
            tensors: unexpected,
        })
    }

    /// `w` (tensor `name`) as the model keeps it: quantized by the recipe, or in the requested
    /// dtype, or as stored.
    fn place(&self, name: &str, w: Weight) -> Result<Weight> {
        let w = match Role::of(name) {
            Role::Router => w,
            _ => w.with_bf16_products(self.products),
        };
        let Some(recipe) = self.quant else {
            return Ok(self.convert(w));
        };
        let role = match Role::of(name) {
            // A tied embedding is also the output matrix: it gets the output's format.
            Role::TokenEmbedding if self.tied => Role::Output,
            role => role,
        };
        let (w, fallback_from) = match recipe.choose(role, self.num_layers, w.cols()) {
            Choice::Keep if role == Role::Router => (w.to_dtype(DType::F32), None),
            Choice::Keep => (self.convert(w), None),
            Choice::Quantize {
                format,
                fallback_from,
            } => {
                let q = w.to_format(format, name)?;
                drop(w);
                if let Source::SafeTensors(store) = self.source {
                    store.release(name);
                }
                (q, fallback_from)
            }
        };
        self.record(name, w.format(), fallback_from);
        Ok(w)
    }

    /// Counts `name` under its kind and format in the report.
    fn record(&self, name: &str, format: WeightFormat, fallback_from: Option<BlockFormat>) {
        let kind = name
            .split('.')
            .map(|part| {
                if part.bytes().all(|b| b.is_ascii_digit()) {
                    "*"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join(".");
        let mut formats = self.formats.borrow_mut();
        match formats
            .iter_mut()
            .find(|f| f.kind == kind && f.format == format && f.fallback_from == fallback_from)
        {
            Some(f) => f.tensors += 1,
            None => {
                formats.push(FormatCount {
                    kind,
                    format,
                    tensors: 1,
                    fallback_from,
                });
                formats.sort_by(|a, b| a.kind.cmp(&b.kind));
            }
        }
    }

    fn convert(&self, w: Weight) -> Weight {
        match self.dtype {
            Some(d) => w.to_dtype(d),
            None => w,
        }
    }

    fn weight(&self, name: &str, shape: [usize; 2]) -> Result<Weight> {
        let w = self.read_weight(name, shape)?;
        self.place(name, w)
    }

    /// Matrix `name` as stored (checked finite when asked, not yet converted or quantized).
    fn read_weight(&self, name: &str, shape: [usize; 2]) -> Result<Weight> {
        let w = match self.source {
            Source::Gguf(file) => self.gguf_weight(file, name, shape)?,
            Source::SafeTensors(store) => {
                let w = match self.fp8_scales(store, name)? {
                    Some((scales, block)) => {
                        let w = store.fp8_weight(name, shape, block, &scales)?;
                        self.read.borrow_mut().insert(scales); // read, but not a parameter
                        w
                    }
                    None => store.weight(name, shape)?,
                };
                self.counted(name, shape[0] * shape[1]);
                w
            }
        };
        self.finite(name, &w)?;
        Ok(w)
    }

    /// Matrix `name` (a transformers name) from a GGUF file, counted under its GGUF name(s).
    fn gguf_weight(&self, file: &GgufFile, name: &str, [rows, cols]: [usize; 2]) -> Result<Weight> {
        let g = gguf_name(name).ok_or_else(|| Error::GgufMetadata {
            path: file.path().display().to_string(),
            key: name.to_string(),
            reason: "no llama.cpp tensor holds it".into(),
        })?;
        let w = file.weight(&g, rows, cols)?;
        self.counted(&g, rows * cols);
        Ok(w)
    }

    /// The latent's up-projection of the attention at `prefix`. From a GGUF file, the layout it
    /// holds: the legacy `attn_kv_b` stacked, or the split newer converters write, `attn_k_b`
    /// (each head's `W_UKᵀ`, `ne [d, c, n]`) and `attn_v_b` (each head's `W_UV`, `ne [c, v, n]`),
    /// used in place. From a folder, `kv_b_proj`; quantized by a block recipe, it is split first,
    /// as llama.cpp's converter splits it, and each half gets the recipe's format for its own
    /// width (`attn_k_b` rows are `d` wide: `Q4_K` falls back to `Q5_0` at 128), so that the
    /// absorbed path reads them quantized and a GGUF written from the model holds them as they are.
    fn kv_b(&self, arch: &Architecture, prefix: &str) -> Result<KvB> {
        let a = &arch.attention;
        let (n, c) = (a.num_attention_heads, a.kv_lora_rank);
        let (d, v) = (a.qk_nope_head_dim, a.v_head_dim);
        let stacked = format!("{prefix}.kv_b_proj.weight");
        let (k_name, v_name) = (format!("{stacked}:attn_k_b"), format!("{stacked}:attn_v_b"));
        if let Source::Gguf(file) = self.source {
            let g = gguf_name(&stacked).unwrap_or_default();
            if file.tensor(&g).is_none() {
                let k = g.replace("attn_kv_b", "attn_k_b");
                let vb = g.replace("attn_kv_b", "attn_v_b");
                let k_b = file.weight(&k, n * c, d)?;
                self.counted(&k, n * c * d);
                self.finite(&k, &k_b)?;
                let v_b = file.weight(&vb, n * v, c)?;
                self.counted(&vb, n * v * c);
                self.finite(&vb, &v_b)?;
                return Ok(KvB::Split {
                    k_b: self.place(&k_name, k_b)?,
                    v_b: self.place(&v_name, v_b)?,
                });
            }
        }
        let block_recipe = self.quant.is_some_and(|r| r != Recipe::Fp8);
        if !block_recipe {
            return Ok(KvB::Stacked {
                kv_b_proj: self.weight(&stacked, [n * (d + v), c])?,
            });
        }
        // Read as stored (the recipe applies to the halves), then split.
        let kv_b_proj = self.read_weight(&stacked, [n * (d + v), c])?;
        let [k_b, v_b] =
            KvB::split_stacked(&kv_b_proj, n, d, v).map_err(|e| block(prefix, e.into()))?;
        drop(kv_b_proj);
        if let Source::SafeTensors(store) = self.source {
            store.release(&stacked);
        }
        Ok(KvB::Split {
            k_b: self.place(&k_name, k_b)?,
            v_b: self.place(&v_name, v_b)?,
        })
    }

    /// The block-scale tensor of `name` (`{name}_scale_inv`, DeepSeek-V3's name) and the block
    /// shape, when the checkpoint stores `name` in FP8 blocks: it is stored as `F8_E4M3` or has
    /// that scale tensor beside it (the store then checks it is both).
    fn fp8_scales(
        &self,
        store: &SafeTensorsStore,
        name: &str,
    ) -> Result<Option<(String, Fp8Block)>> {
        let scales = format!("{name}_scale_inv");
        let fp8 = store.info(name).is_ok_and(|i| i.dtype_name == "F8_E4M3");
        if !fp8 && !store.contains(&scales) {
            return Ok(None);
        }
        let Some(q) = self.quantization else {
            return Err(Error::Fp8WithoutQuantizationConfig {
                tensor: name.to_string(),
            });
        };
        let [rows, cols] = q.weight_block_size;
        Ok(Some((scales, Fp8Block { rows, cols })))
    }

    /// A 3-D tensor `[a, b, c]` viewed as `[a·b, c]`.
    fn stacked(&self, name: &str, shape: [usize; 3]) -> Result<Weight> {
        let [a, b, c] = shape;
        let Source::SafeTensors(store) = self.source else {
            unreachable!("packed transformers experts come only from safetensors");
        };
        let w = store.weight_reshaped(name, &shape, a * b, c)?;
        self.finite(name, &w)?;
        self.counted(name, a * b * c);
        self.place(name, w)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let v = match self.source {
            Source::SafeTensors(store) => {
                let v = store.tensor_f32(name, &[len])?.to_vec();
                self.counted(name, len);
                v
            }
            Source::Gguf(file) => {
                let g = gguf_name(name).ok_or_else(|| Error::GgufMetadata {
                    path: file.path().display().to_string(),
                    key: name.to_string(),
                    reason: "no llama.cpp tensor holds it".into(),
                })?;
                let v = file.vector_f32(&g, len)?;
                self.counted(&g, len);
                v
            }
        };
        if self.check_weights
            && let Some(index) = deepblocks_core::first_non_finite(&v)
        {
            return Err(Error::NonFiniteWeight {
                tensor: name.to_string(),
                index,
                value: v[index],
            });
        }
        Ok(v)
    }

    fn norm(&self, name: &str, arch: &Architecture, width: usize) -> Result<RmsNorm> {
        let w = self.vector(name, width)?;
        Ok(RmsNorm::new(blocks::norm_config(arch, width), w)?)
    }

    /// A latent's RMSNorm (`q_a_layernorm`, `kv_a_layernorm`), whose ε is
    /// [`blocks::LATENT_RMS_NORM_EPS`] whatever `rms_norm_eps` says.
    fn latent_norm(&self, name: &str, width: usize) -> Result<RmsNorm> {
        let w = self.vector(name, width)?;
        Ok(RmsNorm::new(blocks::latent_norm_config(width), w)?)
    }

    fn mlp(&self, prefix: &str, h: usize, i: usize) -> Result<Mlp> {
        Mlp::new(
            self.weight(&format!("{prefix}.gate_proj.weight"), [i, h])?,
            self.weight(&format!("{prefix}.up_proj.weight"), [i, h])?,
            self.weight(&format!("{prefix}.down_proj.weight"), [h, i])?,
        )
        .map_err(|e| block(prefix, e.into()))
    }

    fn embeddings(&self, arch: &Architecture) -> Result<Embeddings> {
        let (v, h) = (arch.vocab_size, arch.hidden_size);
        let embed_tokens = Embedding::new(self.weight("model.embed_tokens.weight", [v, h])?);
        let lm_head = if arch.tie_word_embeddings {
            LmHead::Tied
        } else {
            LmHead::Separate(self.weight("lm_head.weight", [v, h])?)
        };
        Ok(Embeddings::new(embed_tokens, lm_head)?)
    }

    fn decoder_layer(
        &self,
        arch: &Architecture,
        l: usize,
        weighting: Option<Weighting>,
    ) -> Result<DecoderLayer> {
        let p = format!("model.layers.{l}");
        let h = arch.hidden_size;
        Ok(DecoderLayer {
            input_layernorm: self.norm(&format!("{p}.input_layernorm.weight"), arch, h)?,
            self_attn: self.attention(arch, &format!("{p}.self_attn"))?,
            post_attention_layernorm: self.norm(
                &format!("{p}.post_attention_layernorm.weight"),
                arch,
                h,
            )?,
            mlp: self.feed_forward(arch, l, &format!("{p}.mlp"), weighting)?,
        })
    }

    fn attention(&self, arch: &Architecture, prefix: &str) -> Result<Mla> {
        let a = &arch.attention;
        let (h, n, c) = (arch.hidden_size, a.num_attention_heads, a.kv_lora_rank);
        let (d, r, v) = (a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim);
        let name = |s: &str| format!("{prefix}.{s}");
        let q = match a.q_proj {
            QueryProjection::Full => QProj::Full {
                q_proj: self.weight(&name("q_proj.weight"), [n * (d + r), h])?,
            },
            QueryProjection::LowRank { q_lora_rank: q } => QProj::LowRank {
                q_a_proj: self.weight(&name("q_a_proj.weight"), [q, h])?,
                q_a_layernorm: self.latent_norm(&name("q_a_layernorm.weight"), q)?,
                q_b_proj: self.weight(&name("q_b_proj.weight"), [n * (d + r), q])?,
            },
        };
        let weights = MlaWeights {
            q,
            kv_a_proj_with_mqa: self.weight(&name("kv_a_proj_with_mqa.weight"), [c + r, h])?,
            kv_a_layernorm: self.latent_norm(&name("kv_a_layernorm.weight"), c)?,
            kv_b: self.kv_b(arch, prefix)?,
            o_proj: self.weight(&name("o_proj.weight"), [h, n * v])?,
        };
        Mla::new(blocks::mla_config(arch)?, weights).map_err(|e| block(prefix, e.into()))
    }

    /// The routed experts of the MoE block at `prefix` from llama.cpp's stacked tensors
    /// (`ffn_{gate,up}_exps` `ne [h, i, e]`, `ffn_down_exps` `ne [i, h, e]`), one expert a row
    /// slice of each (no copy), each placed as its transformers name says.
    fn gguf_experts(
        &self,
        file: &GgufFile,
        prefix: &str,
        e: usize,
        i: usize,
        h: usize,
    ) -> Result<Vec<Mlp>> {
        let blk = gguf_name(&format!("{prefix}.gate.weight"))
            .and_then(|g| g.strip_suffix(".ffn_gate_inp.weight").map(str::to_string))
            .unwrap_or_default();
        let stacked = |part: &str, rows: usize, cols: usize| -> Result<Weight> {
            let name = format!("{blk}.ffn_{part}_exps.weight");
            let w = file.weight(&name, rows, cols)?;
            self.finite(&name, &w)?;
            self.counted(&name, rows * cols);
            Ok(w)
        };
        let (gate, up, down) = (
            stacked("gate", e * i, h)?,
            stacked("up", e * i, h)?,
            stacked("down", e * h, i)?,
        );
        (0..e)
            .map(|j| {
                let p = format!("{prefix}.experts.{j}");
                Ok(Mlp::new(
                    self.place(
                        &format!("{p}.gate_proj.weight"),
                        gate.slice_rows(j * i..(j + 1) * i),
                    )?,
                    self.place(
                        &format!("{p}.up_proj.weight"),
                        up.slice_rows(j * i..(j + 1) * i),
                    )?,
                    self.place(
                        &format!("{p}.down_proj.weight"),
                        down.slice_rows(j * h..(j + 1) * h),
                    )?,
                )?)
            })
            .collect()
    }

    fn feed_forward(
        &self,
        arch: &Architecture,
        layer: usize,
        prefix: &str,
        weighting: Option<Weighting>,
    ) -> Result<FeedForward> {
        let h = arch.hidden_size;
        let moe = match (arch.layer_kind(layer), arch.moe()) {
            (LayerKind::Moe, Some(moe)) => moe,
            _ => {
                return Ok(FeedForward::Dense(self.mlp(
                    prefix,
                    h,
                    arch.intermediate_size,
                )?));
            }
        };
        let (e, i) = (moe.n_routed_experts, moe.moe_intermediate_size);
        let gate = self.weight(&format!("{prefix}.gate.weight"), [e, h])?;
        // transformers 5 keeps the routed experts packed; the hub checkpoints store each one.
        let packed = format!("{prefix}.experts.gate_up_proj");
        let experts = if let Source::Gguf(file) = self.source {
            Experts::from_mlps(self.gguf_experts(file, prefix, e, i, h)?)
        } else if self.source.contains(&packed) {
            Experts::from_packed(
                &self.stacked(&packed, [e, 2 * i, h])?,
                &self.stacked(&format!("{prefix}.experts.down_proj"), [e, h, i])?,
                e,
            )
        } else {
            Experts::from_mlps(
                (0..e)
                    .map(|j| self.mlp(&format!("{prefix}.experts.{j}"), h, i))
                    .collect::<Result<Vec<_>>>()?,
            )
        }
        .map_err(|err| block(prefix, err.into()))?;
        let shared = match moe.n_shared_experts {
            0 => SharedExperts::None,
            ns => SharedExperts::Mlp(self.mlp(&format!("{prefix}.shared_experts"), h, i * ns)?),
        };
        // noaux_tc selects on the scores plus this bias; no other method has it.
        let bias = match moe.routing.topk_method {
            TopkSelection::NoauxTc { .. } => {
                Some(self.vector(&format!("{prefix}.gate.e_score_correction_bias"), e)?)
            }
            _ => None,
        };
        let moe_layer = Moe::new(
            blocks::moe_config(arch, moe, weighting),
            gate,
            bias,
            experts,
            shared,
        )
        .map_err(|err| block(prefix, err.into()))?;
        Ok(FeedForward::Moe(Box::new(moe_layer)))
    }
}

/// `err` in the block at `prefix`.
fn block(prefix: &str, err: Error) -> Error {
    Error::Block {
        prefix: prefix.to_string(),
        source: Box::new(err),
    }
}

/// Why tensors the description does not use are in the checkpoint, as the config key that would
/// account for them.
/// The layer index of a `model.layers.{l}.…` tensor.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn explain_unexpected(arch: &Architecture, tensors: &[String], unknown_keys: &[String]) -> String {
    let any = |pred: &dyn Fn(&str) -> bool| tensors.iter().any(|t| pred(t));
    let typo = if unknown_keys.is_empty() {
        String::new()
    } else {
        format!(
            " (config.json has keys deepblocks does not know: {} — a misspelt key?)",
            unknown_keys.join(", ")
        )
    };
    if let Some(max) = tensors.iter().filter_map(|t| layer_of(t)).max()
        && max >= arch.num_hidden_layers
    {
        let mtp = if arch.family.reads_v3_keys() {
            format!(
                " (and num_nextn_predict_layers {} multi-token-prediction layers after them)",
                arch.num_nextn_predict_layers
            )
        } else {
            String::new()
        };
        return format!(
            "num_hidden_layers is {}{mtp}, but the checkpoint has layers up to {max}",
            arch.num_hidden_layers
        );
    }
    if arch.tie_word_embeddings && any(&|t| t == "lm_head.weight") {
        return "tie_word_embeddings is true, but the checkpoint has its own lm_head.weight".into();
    }
    let shared = arch.moe().map_or(0, |m| m.n_shared_experts);
    if shared == 0 && any(&|t| t.contains(".mlp.shared_experts.")) {
        return format!(
            "n_shared_experts is 0 (or absent), but the checkpoint has shared experts{typo}"
        );
    }
    match arch.attention.q_proj {
        QueryProjection::Full if any(&|t| t.contains(".self_attn.q_a_proj.")) => {
            return "q_lora_rank is null, but the checkpoint has a low-rank query (q_a_proj)"
                .into();
        }
        QueryProjection::LowRank { .. } if any(&|t| t.contains(".self_attn.q_proj.")) => {
            return "q_lora_rank is set, but the checkpoint has a full q_proj".into();
        }
        _ => {}
    }
    if let Some(moe) = arch.moe() {
        let expert = |t: &str| -> Option<usize> {
            t.split(".mlp.experts.")
                .nth(1)?
                .split('.')
                .next()?
                .parse()
                .ok()
        };
        if let Some(j) = tensors.iter().filter_map(|t| expert(t)).max()
            && j >= moe.n_routed_experts
        {
            return format!(
                "n_routed_experts is {}, but the checkpoint has expert {j}",
                moe.n_routed_experts
            );
        }
    }
    if any(&|t| t.ends_with(".mlp.gate.e_score_correction_bias")) {
        return "the checkpoint has e_score_correction_bias, which only topk_method noaux_tc \
                (DeepSeek-V3's) uses"
            .into();
    }
    let moe_tensor = |t: &str| t.contains(".mlp.gate.") || t.contains(".mlp.experts.");
    if let Some(l) = tensors
        .iter()
        .filter(|t| moe_tensor(t))
        .find_map(|t| layer_of(t))
    {
        return format!(
            "first_k_dense_replace / moe_layer_freq make layer {l} dense, but the checkpoint has \
             experts there"
        );
    }
    if let Some(l) = tensors
        .iter()
        .filter(|t| t.contains(".mlp.gate_proj."))
        .find_map(|t| layer_of(t))
    {
        return format!(
            "first_k_dense_replace / moe_layer_freq make layer {l} a MoE layer, but the checkpoint \
             has a dense MLP there"
        );
    }
    format!("no config key accounts for them{typo}")
}

/// Where the tensors come from: a safetensors checkpoint (transformers' names), or a llama.cpp
/// GGUF file (its names, mapped from those by [`gguf_name`]).
#[derive(Clone, Copy)]
enum Source<'a> {
    SafeTensors(&'a SafeTensorsStore),
    Gguf(&'a GgufFile),
}

impl Source<'_> {
    fn location(&self) -> String {
        match self {
            Source::SafeTensors(s) => s.location().display().to_string(),
            Source::Gguf(f) => f.path().display().to_string(),
        }
    }

    /// Every tensor's source name and element count.
    fn names(&self) -> Vec<(String, usize)> {
        match self {
            Source::SafeTensors(s) => s.infos().map(|i| (i.name.clone(), i.numel())).collect(),
            Source::Gguf(f) => f
                .tensors()
                .iter()
                .map(|t| (t.name.clone(), t.numel() as usize))
                .collect(),
        }
    }

    /// Whether tensor `name` (a transformers name) is there.
    fn contains(&self, name: &str) -> bool {
        match self {
            Source::SafeTensors(s) => s.contains(name),
            Source::Gguf(f) => gguf_name(name).is_some_and(|g| f.tensor(&g).is_some()),
        }
    }

    /// Whether decoder layer `l` has any tensor.
    fn has_layer(&self, l: usize) -> bool {
        match self {
            Source::SafeTensors(s) => {
                let prefix = format!("model.layers.{l}.");
                s.infos().any(|t| t.name.starts_with(&prefix))
            }
            Source::Gguf(f) => {
                let prefix = format!("blk.{l}.");
                f.tensors().iter().any(|t| t.name.starts_with(&prefix))
            }
        }
    }
}

/// llama.cpp's name for a transformers tensor name (its `deepseek2` tensor map), or `None` for
/// one it does not hold under a name of its own (packed transformers experts).
pub(crate) fn gguf_name(name: &str) -> Option<String> {
    let top = match name {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "lm_head.weight" => Some("output.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(t.to_string());
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (l, part) = rest.split_once('.')?;
    let mapped = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.q_a_proj.weight" => "attn_q_a.weight",
        "self_attn.q_a_layernorm.weight" => "attn_q_a_norm.weight",
        "self_attn.q_b_proj.weight" => "attn_q_b.weight",
        "self_attn.kv_a_proj_with_mqa.weight" => "attn_kv_a_mqa.weight",
        "self_attn.kv_a_layernorm.weight" => "attn_kv_a_norm.weight",
        "self_attn.kv_b_proj.weight" => "attn_kv_b.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        "mlp.gate.weight" => "ffn_gate_inp.weight",
        "mlp.gate.e_score_correction_bias" => "exp_probs_b.bias",
        "mlp.shared_experts.gate_proj.weight" => "ffn_gate_shexp.weight",
        "mlp.shared_experts.up_proj.weight" => "ffn_up_shexp.weight",
        "mlp.shared_experts.down_proj.weight" => "ffn_down_shexp.weight",
        _ => return None,
    };
    Some(format!("blk.{l}.{mapped}"))
}
