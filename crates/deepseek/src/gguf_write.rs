//! Writing a model as a llama.cpp `deepseek2` GGUF file: the metadata keys its converter
//! (`convert_hf_to_gguf.py`, `DeepseekV2Model`) writes, the tokenizer as `tokenizer.ggml.*`, and
//! every tensor under llama.cpp's name in the format the model holds it in — the inverse of
//! [`crate::architecture_from_gguf`], [`crate::tokenizer_from_gguf`] and [`Model::load_gguf`].
//!
//! The attention's up-projection is written in the split layout newer converters write
//! (`attn_k_b` `ne [d, c, n]`: each head's `W_UKᵀ`; `attn_v_b` `ne [c, v, n]`: each head's
//! `W_UV`), routed experts stacked (`ffn_{gate,up}_exps` `ne [h, i, e]`, `ffn_down_exps`
//! `ne [i, h, e]`), norms and the router as f32.

use std::path::Path;

use deepblocks_config::{Architecture, Ffn, QueryProjection, RoutingRule, ScoringFunc};
use deepblocks_core::gguf::{GgufValue, GgufWriter};
use deepblocks_core::quant::BlockFormat;
use deepblocks_core::{DType, Weight, WeightFormat};
use deepblocks_embed::LmHead;
use deepblocks_mla::QProj;
use deepblocks_moe::{GateUp, Mlp, SharedExperts};
use deepblocks_norm::RmsNorm;
use deepblocks_rope::RopeScaling;
use deepblocks_tokenize::Tokenizer;

use crate::loader::gguf_name;
use crate::model::FeedForward;
use crate::{Error, Model, Recipe, Result};

fn unwritable(what: &str, reason: impl Into<String>) -> Error {
    Error::GgufUnwritable {
        what: what.to_string(),
        reason: reason.into(),
    }
}

/// llama.cpp's `general.file_type` (`llama_ftype`) for a model whose matrices are mostly in
/// `format`: `MOSTLY_F32` 0, `F16` 1, `Q4_0` 2, `Q8_0` 7, `Q5_0` 8, `Q4_K_M` 15, `Q6_K` 18,
/// `BF16` 32.
pub fn gguf_file_type(format: WeightFormat) -> Option<u32> {
    Some(match format {
        WeightFormat::Float(DType::F32) => 0,
        WeightFormat::Float(DType::F16) => 1,
        WeightFormat::Float(DType::BF16) => 32,
        WeightFormat::Blocks(BlockFormat::Q4_0) => 2,
        WeightFormat::Blocks(BlockFormat::Q8_0) => 7,
        WeightFormat::Blocks(BlockFormat::Q5_0) => 8,
        WeightFormat::Blocks(BlockFormat::Q4_K) => 15,
        WeightFormat::Blocks(BlockFormat::Q6_K) => 18,
        WeightFormat::Fp8(_) => return None,
    })
}

/// The `deepseek2.*` metadata of `arch`, as llama.cpp's converter writes it (keys in its order).
///
/// # Errors
/// [`Error::GgufUnwritable`] naming what llama.cpp's `deepseek2` cannot express: RoPE on halves
/// (`rope_interleave` false), RoPE scaling other than YaRN, YaRN with `mscale` ≠
/// `mscale_all_dim` (GGUF keeps one), a MoE schedule with `moe_layer_freq` ≠ 1.
pub fn gguf_metadata(arch: &Architecture) -> Result<Vec<(String, GgufValue)>> {
    let u = |v: usize| GgufValue::U32(v as u32);
    let f = |v: f64| GgufValue::F32(v as f32);
    let mut m: Vec<(String, GgufValue)> = Vec::new();
    let mut put = |k: &str, v: GgufValue| m.push((format!("deepseek2.{k}"), v));
    if !arch.rope_interleave {
        return Err(unwritable(
            "rope_interleave",
            "false (RoPE on halves): llama.cpp's deepseek2 rotates interleaved pairs",
        ));
    }
    let a = &arch.attention;
    put("block_count", u(arch.num_hidden_layers));
    put("context_length", u(arch.max_position_embeddings));
    put("embedding_length", u(arch.hidden_size));
    put("feed_forward_length", u(arch.intermediate_size));
    put("attention.head_count", u(a.num_attention_heads));
    put("attention.head_count_kv", u(1));
    match &arch.rope.scaling {
        RopeScaling::None => {}
        RopeScaling::Yarn(y) => {
            put("rope.scaling.type", GgufValue::String("yarn".into()));
            put("rope.scaling.factor", f(y.factor));
            put(
                "rope.scaling.original_context_length",
                u(y.original_max_position_embeddings),
            );
            put("rope.scaling.yarn_beta_fast", f(y.beta_fast));
            put("rope.scaling.yarn_beta_slow", f(y.beta_slow));
        }
        other => {
            return Err(unwritable(
                "rope_scaling",
                format!("{other:?}: llama.cpp's deepseek2 reads YaRN only"),
            ));
        }
    }
    put("rope.freq_base", f(arch.rope.rope_theta));
    put(
        "attention.layer_norm_rms_epsilon",
        GgufValue::F32(arch.rms_norm_eps),
    );
    if let Ffn::Moe(moe) = &arch.ffn {
        if moe.moe_layer_freq != 1 {
            return Err(unwritable(
                "moe_layer_freq",
                format!(
                    "{}: llama.cpp's deepseek2 makes every layer after the leading dense ones MoE",
                    moe.moe_layer_freq
                ),
            ));
        }
        put("expert_count", u(moe.n_routed_experts));
        put("expert_used_count", u(moe.num_experts_per_tok));
        let RoutingRule {
            scoring_func,
            topk_method,
            norm_topk_prob,
            routed_scaling_factor,
            ..
        } = moe.routing;
        if let Some((n_group, topk_group)) = topk_method.groups() {
            put("expert_group_count", u(n_group));
            put("expert_group_used_count", u(topk_group));
        }
        put(
            "attention.key_length",
            u(a.kv_lora_rank + a.qk_rope_head_dim),
        );
        put("attention.value_length", u(a.kv_lora_rank));
        put("leading_dense_block_count", u(moe.first_k_dense_replace));
        put("vocab_size", u(arch.vocab_size));
        put_attention(&mut put, arch);
        put("expert_feed_forward_length", u(moe.moe_intermediate_size));
        put("expert_shared_count", u(moe.n_shared_experts));
        put(
            "expert_weights_scale",
            GgufValue::F32(routed_scaling_factor),
        );
        put("expert_weights_norm", GgufValue::Bool(norm_topk_prob));
        put(
            "expert_gating_func",
            u(match scoring_func {
                ScoringFunc::Softmax => 1,
                ScoringFunc::Sigmoid => 2,
            }),
        );
    } else {
        put(
            "attention.key_length",
            u(a.kv_lora_rank + a.qk_rope_head_dim),
        );
        put("attention.value_length", u(a.kv_lora_rank));
        put("vocab_size", u(arch.vocab_size));
        put_attention(&mut put, arch);
    }
    put("rope.dimension_count", u(a.qk_rope_head_dim));
    if let RopeScaling::Yarn(y) = &arch.rope.scaling {
        let (m, all) = (y.mscale, y.mscale_all_dim);
        if m.is_some() && m != all {
            return Err(unwritable(
                "rope_scaling.mscale",
                format!(
                    "{m:?} beside mscale_all_dim {all:?}: GGUF keeps one (yarn_log_multiplier)"
                ),
            ));
        }
        if let Some(all) = all {
            put("rope.scaling.yarn_log_multiplier", f(0.1 * all));
        }
    }
    Ok(m)
}

/// The MLA sizes (after `vocab_size`, as the converter orders them).
fn put_attention(put: &mut impl FnMut(&str, GgufValue), arch: &Architecture) {
    let a = &arch.attention;
    let u = |v: usize| GgufValue::U32(v as u32);
    put(
        "attention.q_lora_rank",
        u(match a.q_proj {
            QueryProjection::Full => 0,
            QueryProjection::LowRank { q_lora_rank } => q_lora_rank,
        }),
    );
    put("attention.kv_lora_rank", u(a.kv_lora_rank));
    put(
        "attention.key_length_mla",
        u(a.qk_nope_head_dim + a.qk_rope_head_dim),
    );
    put("attention.value_length_mla", u(a.v_head_dim));
}

/// The tokenizer's `tokenizer.ggml.*` keys and `tokenizer.chat_template`, its vocabulary padded
/// with `[PAD{id}]` tokens (type 5, unused) to the model's `vocab_size`, as the converter pads.
fn tokenizer_metadata(
    tokenizer: &Tokenizer,
    vocab_size: usize,
) -> Result<Vec<(String, GgufValue)>> {
    let mut v = tokenizer.to_gguf_vocab()?;
    if v.tokens.len() > vocab_size {
        return Err(unwritable(
            "tokenizer.ggml.tokens",
            format!("{} tokens for a vocab_size of {vocab_size}", v.tokens.len()),
        ));
    }
    for id in v.tokens.len()..vocab_size {
        v.tokens.push(format!("[PAD{id}]"));
        v.token_types.push(5);
    }
    let strings =
        |xs: Vec<String>| GgufValue::Array(xs.into_iter().map(GgufValue::String).collect());
    let mut m = vec![
        (
            "tokenizer.ggml.model".to_string(),
            GgufValue::String(v.model),
        ),
        ("tokenizer.ggml.pre".to_string(), GgufValue::String(v.pre)),
        ("tokenizer.ggml.tokens".to_string(), strings(v.tokens)),
        (
            "tokenizer.ggml.token_type".to_string(),
            GgufValue::Array(v.token_types.into_iter().map(GgufValue::I32).collect()),
        ),
        ("tokenizer.ggml.merges".to_string(), strings(v.merges)),
    ];
    if let Some(id) = v.bos_id {
        m.push(("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(id)));
    }
    if let Some(id) = v.eos_id {
        m.push(("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(id)));
    }
    let config = tokenizer.config();
    if let Some(b) = config.add_bos_token {
        m.push(("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(b)));
    }
    if let Some(b) = config.add_eos_token {
        m.push(("tokenizer.ggml.add_eos_token".into(), GgufValue::Bool(b)));
    }
    if let Some(t) = v.chat_template {
        m.push(("tokenizer.chat_template".into(), GgufValue::String(t)));
    }
    Ok(m)
}

/// What the tensors of one file are being written into.
struct Tensors<'a> {
    out: &'a mut GgufWriter,
    /// Weight elements per format, for `general.file_type`.
    formats: Vec<(WeightFormat, usize)>,
}

impl Tensors<'_> {
    fn add(&mut self, name: &str, ne: &[u64], parts: &[Weight]) -> Result<()> {
        if let Some(p) = parts
            .iter()
            .find(|p| matches!(p.format(), WeightFormat::Fp8(_)))
        {
            return Err(unwritable(
                name,
                format!(
                    "{}: GGUF has no FP8 type (quantize with a block recipe, or load with --dtype bf16)",
                    p.format()
                ),
            ));
        }
        self.out.add_stacked(name, ne, parts)?;
        if ne.len() >= 2 {
            let elements: usize = parts.iter().map(|p| p.rows() * p.cols()).sum();
            let format = parts[0].format();
            match self.formats.iter_mut().find(|(f, _)| *f == format) {
                Some((_, n)) => *n += elements,
                None => self.formats.push((format, elements)),
            }
        }
        Ok(())
    }

    /// A matrix under the GGUF name of its transformers name.
    fn matrix(&mut self, hf: &str, w: &Weight) -> Result<()> {
        let name = gguf_name(hf).ok_or_else(|| unwritable(hf, "no llama.cpp tensor holds it"))?;
        self.add(
            &name,
            &[w.cols() as u64, w.rows() as u64],
            std::slice::from_ref(w),
        )
    }

    fn norm(&mut self, hf: &str, norm: &RmsNorm) -> Result<()> {
        let v = norm.weight().to_vec();
        let w = Weight::from_f32(v, 1, norm.weight().len())?;
        let name = gguf_name(hf).ok_or_else(|| unwritable(hf, "no llama.cpp tensor holds it"))?;
        self.add(&name, &[w.cols() as u64], &[w])
    }

    fn mlp(&mut self, prefix: &str, mlp: &Mlp) -> Result<()> {
        let (gate, up) = gate_up(mlp);
        self.matrix(&format!("{prefix}.gate_proj.weight"), &gate)?;
        self.matrix(&format!("{prefix}.up_proj.weight"), &up)?;
        self.matrix(&format!("{prefix}.down_proj.weight"), mlp.down_proj())
    }
}

/// An expert's gate and up projections as two matrices (views of a fused one).
fn gate_up(mlp: &Mlp) -> (Weight, Weight) {
    match mlp.gate_up() {
        GateUp::Separate { gate_proj, up_proj } => (gate_proj.clone(), up_proj.clone()),
        GateUp::Fused(w) => {
            let i = w.rows() / 2;
            (w.slice_rows(0..i), w.slice_rows(i..2 * i))
        }
    }
}

impl Model {
    /// The model as a llama.cpp `deepseek2` GGUF file (see the module docs): the metadata
    /// ([`gguf_metadata`]), `general.name`, `general.file_type` (the recipe's when it was
    /// quantized while loading, else the format most of its matrix elements are in), the tokenizer when given, and every weight in the format it is held in
    /// (a model quantized while loading writes its blocks as they are: nothing is requantized).
    ///
    /// # Errors
    /// [`Error::GgufUnwritable`] naming what GGUF or llama.cpp cannot hold (an FP8 weight, a
    /// tokenizer without a byte-level BPE form, the metadata cases of [`gguf_metadata`]).
    pub fn to_gguf(&self, tokenizer: Option<&Tokenizer>, name: &str) -> Result<GgufWriter> {
        let arch = self.config();
        let mut out = GgufWriter::new();
        out.set(
            "general.architecture",
            GgufValue::String("deepseek2".into()),
        );
        out.set("general.type", GgufValue::String("model".into()));
        out.set("general.name", GgufValue::String(name.into()));
        for (k, v) in gguf_metadata(arch)? {
            out.set(&k, v);
        }
        out.set("general.quantization_version", GgufValue::U32(2));
        match tokenizer {
            Some(t) => {
                for (k, v) in tokenizer_metadata(t, arch.vocab_size)? {
                    out.set(&k, v);
                }
            }
            None => {
                out.set("tokenizer.ggml.model", GgufValue::String("none".into()));
                if let Some(id) = arch.bos_token_id {
                    out.set("tokenizer.ggml.bos_token_id", GgufValue::U32(id));
                }
                if let Some(&id) = arch.eos_token_ids.first() {
                    out.set("tokenizer.ggml.eos_token_id", GgufValue::U32(id));
                }
            }
        }
        let mut t = Tensors {
            out: &mut out,
            formats: Vec::new(),
        };
        let emb = self.embeddings();
        t.matrix("model.embed_tokens.weight", emb.embed_tokens().weight())?;
        for (l, layer) in self.layers().iter().enumerate() {
            let p = format!("model.layers.{l}");
            t.norm(
                &format!("{p}.input_layernorm.weight"),
                &layer.input_layernorm,
            )?;
            let attn = layer.self_attn();
            let a = format!("{p}.self_attn");
            match attn.q() {
                QProj::Full { q_proj } => t.matrix(&format!("{a}.q_proj.weight"), q_proj)?,
                QProj::LowRank {
                    q_a_proj,
                    q_a_layernorm,
                    q_b_proj,
                } => {
                    t.matrix(&format!("{a}.q_a_proj.weight"), q_a_proj)?;
                    t.norm(&format!("{a}.q_a_layernorm.weight"), q_a_layernorm)?;
                    t.matrix(&format!("{a}.q_b_proj.weight"), q_b_proj)?;
                }
            }
            t.matrix(
                &format!("{a}.kv_a_proj_with_mqa.weight"),
                attn.kv_a_proj_with_mqa(),
            )?;
            t.norm(&format!("{a}.kv_a_layernorm.weight"), attn.kv_a_layernorm())?;
            let up = attn.kv_up();
            let (n, (c, d)) = (
                up.w_uk_t().len(),
                (up.w_uk_t()[0].rows(), up.w_uk_t()[0].cols()),
            );
            let v = up.w_uv()[0].rows();
            t.add(
                &format!("blk.{l}.attn_k_b.weight"),
                &[d as u64, c as u64, n as u64],
                up.w_uk_t(),
            )?;
            t.add(
                &format!("blk.{l}.attn_v_b.weight"),
                &[c as u64, v as u64, n as u64],
                up.w_uv(),
            )?;
            t.matrix(&format!("{a}.o_proj.weight"), attn.o_proj())?;
            t.norm(
                &format!("{p}.post_attention_layernorm.weight"),
                &layer.post_attention_layernorm,
            )?;
            match layer.mlp() {
                FeedForward::Dense(mlp) => t.mlp(&format!("{p}.mlp"), mlp)?,
                FeedForward::Moe(moe) => {
                    let router = moe.router();
                    let gate = router.weight().to_dtype(DType::F32);
                    t.matrix(&format!("{p}.mlp.gate.weight"), &gate)?;
                    if let Some(bias) = router.e_score_correction_bias() {
                        let w = Weight::from_f32(bias.to_vec(), 1, bias.len())?;
                        t.add(
                            &format!("blk.{l}.exp_probs_b.bias"),
                            &[bias.len() as u64],
                            &[w],
                        )?;
                    }
                    let experts = moe.experts().as_slice();
                    let (e, i, h) = (
                        experts.len() as u64,
                        experts[0].intermediate_size() as u64,
                        experts[0].hidden_size() as u64,
                    );
                    let (gates, ups): (Vec<Weight>, Vec<Weight>) =
                        experts.iter().map(gate_up).unzip();
                    let downs: Vec<Weight> =
                        experts.iter().map(|x| x.down_proj().clone()).collect();
                    t.add(&format!("blk.{l}.ffn_gate_exps.weight"), &[h, i, e], &gates)?;
                    t.add(&format!("blk.{l}.ffn_up_exps.weight"), &[h, i, e], &ups)?;
                    t.add(&format!("blk.{l}.ffn_down_exps.weight"), &[i, h, e], &downs)?;
                    if let SharedExperts::Mlp(shared) = moe.shared_experts() {
                        t.mlp(&format!("{p}.mlp.shared_experts"), shared)?;
                    }
                }
            }
        }
        t.norm("model.norm.weight", &self.norm)?;
        if let LmHead::Separate(w) = emb.lm_head() {
            t.matrix("lm_head.weight", w)?;
        }
        // The recipe's own llama_ftype (Q4_K_M is 15 even when a small model's rows fall back
        // to other formats), else the format most matrix elements are in.
        let by_recipe = match self.load_report().recipe {
            Some(Recipe::Q8_0) => Some(7),
            Some(Recipe::Q4_0) => Some(2),
            Some(Recipe::Q4_K_M) => Some(15),
            Some(Recipe::Fp8) | None => None,
        };
        let mostly = t
            .formats
            .iter()
            .max_by_key(|(_, n)| *n)
            .map(|(f, _)| *f)
            .unwrap_or(WeightFormat::Float(DType::F32));
        let file_type = match by_recipe {
            Some(t) => t,
            None => gguf_file_type(mostly)
                .ok_or_else(|| unwritable("general.file_type", format!("{mostly}")))?,
        };
        out.set("general.file_type", GgufValue::U32(file_type));
        Ok(out)
    }

    /// Writes [`Model::to_gguf`] to `path`.
    ///
    /// # Errors
    /// As [`Model::to_gguf`]; [`Error::Gguf`] for the file's I/O errors.
    pub fn write_gguf(
        &self,
        path: impl AsRef<Path>,
        tokenizer: Option<&Tokenizer>,
        name: &str,
    ) -> Result<()> {
        Ok(self.to_gguf(tokenizer, name)?.write_file(path)?)
    }
}
