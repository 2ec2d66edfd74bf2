//! The MLA block: config, weights, and the naive and absorbed forward paths.

use deepblocks_core::{SafeTensorsStore, Weight, linear, matmul, matmul_bt, softmax_rows};
use deepblocks_norm::{RmsNorm, RmsNormConfig};
use deepblocks_rope::{CosSin, RopeTable};
use rayon::prelude::*;

use crate::{Error, LatentCache, Result};

/// Budget for one block of attention scores, in f32 values: queries are processed in chunks so
/// that `heads · chunk · cached ≤` this (16 MiB), whatever the prompt length.
const SCORE_BUDGET: usize = 1 << 22;

/// How the query is produced (`q_lora_rank` in the checkpoint config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QProjConfig {
    /// `q = q_proj(x)` (`q_lora_rank: null`, DeepSeek-V2-Lite).
    Full,
    /// `q = q_b_proj(RMSNorm(q_a_proj(x)))` through a rank-`q_lora_rank` latent (DeepSeek-V2: 1536).
    LowRank {
        /// The query latent width `q`.
        q_lora_rank: usize,
    },
}

/// The configuration of one MLA layer, in the checkpoint's names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlaConfig {
    /// `h`: the model width.
    pub hidden_size: usize,
    /// `n`: attention heads.
    pub num_heads: usize,
    /// Full or low-rank query projection.
    pub q_proj: QProjConfig,
    /// `c`: the KV latent width (512 in DeepSeek-V2).
    pub kv_lora_rank: usize,
    /// `d`: per-head query/key features without RoPE (128).
    pub qk_nope_head_dim: usize,
    /// `r`: per-head query features with RoPE, and the shared RoPE key's width (64).
    pub qk_rope_head_dim: usize,
    /// `v`: per-head value features (128).
    pub v_head_dim: usize,
    /// The factor on `q·k` before the softmax: `(d + r)^−½`, times YaRN's `mscale²` when the
    /// checkpoint sets `mscale_all_dim` — take it from [`deepblocks_rope::softmax_scale`].
    pub softmax_scale: f32,
    /// ε of the latent RMSNorms (`rms_norm_eps`).
    pub rms_norm_eps: f32,
}

impl MlaConfig {
    /// `d + r`: the width of one head's query and key.
    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// `c + r`: values cached per token and layer.
    pub fn cache_values_per_token(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::ZeroDim`] naming the first zero dimension, [`Error::SoftmaxScale`].
    pub fn validate(&self) -> Result<()> {
        let q_rank = match self.q_proj {
            QProjConfig::Full => 1,
            QProjConfig::LowRank { q_lora_rank } => q_lora_rank,
        };
        for (field, v) in [
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
            ("q_lora_rank", q_rank),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("qk_rope_head_dim", self.qk_rope_head_dim),
            ("v_head_dim", self.v_head_dim),
        ] {
            if v == 0 {
                return Err(Error::ZeroDim { field });
            }
        }
        if !(self.softmax_scale.is_finite() && self.softmax_scale > 0.0) {
            return Err(Error::SoftmaxScale(self.softmax_scale));
        }
        Ok(())
    }

    fn norm(&self, hidden: usize) -> RmsNormConfig {
        RmsNormConfig {
            hidden,
            eps: self.rms_norm_eps,
        }
    }
}

/// The query projection's weights.
#[derive(Debug, Clone)]
pub enum QProj {
    /// A plain projection.
    Full {
        /// `q_proj.weight`.
        q_proj: Weight, // [n*(d+r), h]
    },
    /// Down-projection, norm, up-projection.
    LowRank {
        /// `q_a_proj.weight`.
        q_a_proj: Weight, // [q, h]
        /// `q_a_layernorm.weight`.
        q_a_layernorm: RmsNorm, // [q]
        /// `q_b_proj.weight`.
        q_b_proj: Weight, // [n*(d+r), q]
    },
}

/// The weights of one MLA layer, named as in the checkpoint.
#[derive(Debug, Clone)]
pub struct MlaWeights {
    /// The query projection.
    pub q: QProj,
    /// `kv_a_proj_with_mqa.weight`: the KV latent and the shared RoPE key in one projection.
    pub kv_a_proj_with_mqa: Weight, // [c + r, h]
    /// `kv_a_layernorm.weight`.
    pub kv_a_layernorm: RmsNorm, // [c]
    /// `kv_b_proj.weight`: per head, `d` rows of `W_UK` then `v` rows of `W_UV`.
    pub kv_b_proj: Weight, // [n*(d+v), c]
    /// `o_proj.weight`.
    pub o_proj: Weight, // [h, n*v]
}

impl MlaWeights {
    /// Loads a layer's weights from a checkpoint: `{prefix}.q_proj.weight` or
    /// `{prefix}.q_a_proj.weight` … with `prefix` like `model.layers.3.self_attn`. Weights stay in
    /// their stored dtype (borrowed from the memory map).
    ///
    /// # Errors
    /// A missing tensor or a shape other than the config implies, naming the tensor.
    pub fn from_store(store: &SafeTensorsStore, prefix: &str, config: &MlaConfig) -> Result<Self> {
        config.validate()?;
        let (h, n, c) = (config.hidden_size, config.num_heads, config.kv_lora_rank);
        let (d, r, v) = (
            config.qk_nope_head_dim,
            config.qk_rope_head_dim,
            config.v_head_dim,
        );
        let name = |s: &str| format!("{prefix}.{s}");
        let q = match config.q_proj {
            QProjConfig::Full => QProj::Full {
                q_proj: store.weight(&name("q_proj.weight"), [n * (d + r), h])?,
            },
            QProjConfig::LowRank { q_lora_rank } => QProj::LowRank {
                q_a_proj: store.weight(&name("q_a_proj.weight"), [q_lora_rank, h])?,
                q_a_layernorm: RmsNorm::from_store(
                    store,
                    &name("q_a_layernorm.weight"),
                    config.norm(q_lora_rank),
                )?,
                q_b_proj: store.weight(&name("q_b_proj.weight"), [n * (d + r), q_lora_rank])?,
            },
        };
        Ok(MlaWeights {
            q,
            kv_a_proj_with_mqa: store.weight(&name("kv_a_proj_with_mqa.weight"), [c + r, h])?,
            kv_a_layernorm: RmsNorm::from_store(
                store,
                &name("kv_a_layernorm.weight"),
                config.norm(c),
            )?,
            kv_b_proj: store.weight(&name("kv_b_proj.weight"), [n * (d + v), c])?,
            o_proj: store.weight(&name("o_proj.weight"), [h, n * v])?,
        })
    }
}

/// Which computation [`Mla::forward`] runs; both give the same result (to rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionPath {
    /// Expand every cached latent into per-head keys and values through `kv_b_proj`, then plain
    /// causal attention — transformers' computation, the reference. Cost per cached token:
    /// `n·(d+v)·c` multiply-adds.
    Naive,
    /// Fold `W_UK` into the query and `W_UV` into the output, so scores are taken against the
    /// cached latent directly and no per-head key or value is ever formed. Cost per cached token:
    /// `2·n·(c+r)`, independent of `d` and `v`.
    #[default]
    Absorbed,
}

/// One Multi-head Latent Attention layer (DeepSeek-V2 §2.1).
#[derive(Debug, Clone)]
pub struct Mla {
    config: MlaConfig,
    q: QProj,
    kv_a_proj_with_mqa: Weight, // [c + r, h]
    kv_a_layernorm: RmsNorm,    // [c]
    kv_b_proj: Weight,          // [n*(d+v), c], naive path
    w_uk_t: Vec<Weight>,        // n × [c, d]: W_UKᵀ per head, absorbed path (a transposed copy)
    w_uv: Vec<Weight>,          // n × [v, c]: W_UV per head, absorbed path (views of kv_b_proj)
    o_proj: Weight,             // [h, n*v]
}

impl Mla {
    /// Builds the layer, checking every weight's shape against `config` and splitting
    /// `kv_b_proj` into the per-head `W_UK` (transposed once, kept in its dtype) and `W_UV`
    /// (views, no copy) of the absorbed path.
    ///
    /// # Errors
    /// An invalid config, or [`Error::WeightShape`] naming the weight.
    pub fn new(config: MlaConfig, weights: MlaWeights) -> Result<Self> {
        config.validate()?;
        let (h, n, c) = (config.hidden_size, config.num_heads, config.kv_lora_rank);
        let (d, r, v) = (
            config.qk_nope_head_dim,
            config.qk_rope_head_dim,
            config.v_head_dim,
        );
        let check = |name: &'static str, w: &Weight, expected: [usize; 2]| {
            if w.shape() == expected {
                Ok(())
            } else {
                Err(Error::WeightShape {
                    name,
                    expected: expected.to_vec(),
                    found: w.shape().to_vec(),
                })
            }
        };
        let check_norm = |name: &'static str, norm: &RmsNorm, expected: usize| {
            if norm.config().hidden == expected {
                Ok(())
            } else {
                Err(Error::WeightShape {
                    name,
                    expected: vec![expected],
                    found: vec![norm.config().hidden],
                })
            }
        };
        match &weights.q {
            QProj::Full { q_proj } => {
                if let QProjConfig::LowRank { .. } = config.q_proj {
                    return Err(Error::QProjKind {
                        config: "low-rank (q_lora_rank set)",
                        weights: "a full q_proj",
                    });
                }
                check("q_proj", q_proj, [n * (d + r), h])?;
            }
            QProj::LowRank {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => {
                let QProjConfig::LowRank { q_lora_rank } = config.q_proj else {
                    return Err(Error::QProjKind {
                        config: "full (q_lora_rank null)",
                        weights: "low-rank q_a_proj/q_b_proj",
                    });
                };
                check("q_a_proj", q_a_proj, [q_lora_rank, h])?;
                check_norm("q_a_layernorm", q_a_layernorm, q_lora_rank)?;
                check("q_b_proj", q_b_proj, [n * (d + r), q_lora_rank])?;
            }
        }
        check(
            "kv_a_proj_with_mqa",
            &weights.kv_a_proj_with_mqa,
            [c + r, h],
        )?;
        check_norm("kv_a_layernorm", &weights.kv_a_layernorm, c)?;
        check("kv_b_proj", &weights.kv_b_proj, [n * (d + v), c])?;
        check("o_proj", &weights.o_proj, [h, n * v])?;

        let kv_b = &weights.kv_b_proj;
        let w_uk_t = (0..n)
            .map(|head| transpose(&kv_b.slice_rows(head * (d + v)..head * (d + v) + d)))
            .collect();
        let w_uv = (0..n)
            .map(|head| kv_b.slice_rows(head * (d + v) + d..(head + 1) * (d + v)))
            .collect();
        Ok(Mla {
            config,
            q: weights.q,
            kv_a_proj_with_mqa: weights.kv_a_proj_with_mqa,
            kv_a_layernorm: weights.kv_a_layernorm,
            kv_b_proj: weights.kv_b_proj,
            w_uk_t,
            w_uv,
            o_proj: weights.o_proj,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MlaConfig {
        &self.config
    }

    /// Bytes of weights this layer holds, in their stored dtypes, including the transposed copy
    /// of `W_UK` the absorbed path keeps (`W_UV` shares `kv_b_proj`'s memory).
    pub fn weight_bytes(&self) -> usize {
        let q = match &self.q {
            QProj::Full { q_proj } => q_proj.bytes(),
            QProj::LowRank {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => q_a_proj.bytes() + 4 * q_a_layernorm.weight().len() + q_b_proj.bytes(),
        };
        q + self.kv_a_proj_with_mqa.bytes()
            + 4 * self.kv_a_layernorm.weight().len()
            + self.kv_b_proj.bytes()
            + self.w_uk_t.iter().map(Weight::bytes).sum::<usize>()
            + self.o_proj.bytes()
    }

    /// `out[t, h] = MLA(x[t, h])` for `t` tokens at positions `p..p+t`, where `p = cache.len()`:
    /// appends their latents to `cache`, then attends causally over all `p + t` cached tokens.
    /// Looks up the rotary rows in `rope`; see [`Mla::forward_with`] to share them across layers.
    ///
    /// # Errors
    /// [`Error::Input`] for a wrong length or `t = 0`, [`Error::CacheMismatch`],
    /// [`Error::ContextFull`] past the cache's maximum, a rope error past the table's maximum.
    /// On error the cache is unchanged.
    pub fn forward(
        &self,
        out: &mut [f32],
        x: &[f32],
        t: usize,
        cache: &mut LatentCache,
        rope: &RopeTable,
        path: AttentionPath,
    ) -> Result<()> {
        let p = cache.len();
        let positions: Vec<usize> = (p..p + t).collect();
        let cs = rope.cos_sin(&positions)?;
        self.forward_with(out, x, t, cache, &cs, path)
    }

    /// [`Mla::forward`] with the rotary rows of positions `cache.len()..cache.len() + t`
    /// gathered by the caller (once per forward pass for every layer).
    ///
    /// # Errors
    /// As [`Mla::forward`]; [`Error::Input`] also when `rope` does not hold `t` rows of width
    /// `qk_rope_head_dim`.
    pub fn forward_with(
        &self,
        out: &mut [f32],
        x: &[f32],
        t: usize,
        cache: &mut LatentCache,
        rope: &CosSin<'_>,
        path: AttentionPath,
    ) -> Result<()> {
        let cfg = &self.config;
        let (h, n, c) = (cfg.hidden_size, cfg.num_heads, cfg.kv_lora_rank);
        let (d, r, v) = (cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim);
        if t == 0 || x.len() != t * h || out.len() != t * h {
            let found = if x.len() != t * h { x.len() } else { out.len() };
            return Err(Error::Input {
                t,
                hidden: h,
                found,
            });
        }
        if cache.dims() != (c, r) {
            let (cache_c, cache_r) = cache.dims();
            return Err(Error::CacheMismatch {
                cache_c,
                cache_r,
                c,
                r,
            });
        }
        if rope.t() != t || rope.r() != r {
            return Err(Error::Input {
                t,
                hidden: h,
                found: rope.t(),
            });
        }
        cache.check_room(t)?;

        // Queries: q[t, n, d + r] = q_proj(x) or q_b_proj(RMSNorm(q_a_proj(x))); rotate q_pe.
        let mut q = vec![0.0f32; t * n * (d + r)];
        match &self.q {
            QProj::Full { q_proj } => linear(&mut q, x, q_proj, t),
            QProj::LowRank {
                q_a_proj,
                q_a_layernorm,
                q_b_proj,
            } => {
                let mut q_lat = vec![0.0f32; t * q_a_proj.rows()];
                linear(&mut q_lat, x, q_a_proj, t);
                q_a_layernorm.forward_inplace(&mut q_lat, t);
                linear(&mut q, &q_lat, q_b_proj, t);
            }
        }
        rope.apply_inplace_strided(&mut q, n, d + r, d)?;

        // The latent and the shared key: [c_kv | k_pe][t, c + r] = kv_a_proj_with_mqa(x);
        // c_kv ← RMSNorm(c_kv), k_pe ← RoPE(k_pe). These two are all the cache keeps.
        let mut kv_a = vec![0.0f32; t * (c + r)];
        linear(&mut kv_a, x, &self.kv_a_proj_with_mqa, t);
        rope.apply_inplace_strided(&mut kv_a, 1, c + r, c)?;
        let mut c_kv = vec![0.0f32; t * c];
        let mut k_pe = vec![0.0f32; t * r];
        for ((row, ck), kp) in kv_a
            .chunks_exact(c + r)
            .zip(c_kv.chunks_exact_mut(c))
            .zip(k_pe.chunks_exact_mut(r))
        {
            ck.copy_from_slice(&row[..c]);
            kp.copy_from_slice(&row[c..]);
        }
        self.kv_a_layernorm.forward_inplace(&mut c_kv, t);
        cache.append(&c_kv, &k_pe, t)?;

        // Attention over the s = p + t cached tokens, in query chunks that bound the scores.
        let s = cache.len();
        let p = s - t;
        let mut attn = vec![0.0f32; t * n * v]; // [t, n, v]
        let chunk = (SCORE_BUDGET / (n * s)).clamp(1, t);
        let expanded = match path {
            AttentionPath::Naive => {
                let mut kv = vec![0.0f32; s * n * (d + v)];
                linear(&mut kv, cache.c_kv(), &self.kv_b_proj, s);
                Some(kv)
            }
            AttentionPath::Absorbed => None,
        };
        let mut i0 = 0;
        while i0 < t {
            let tc = chunk.min(t - i0);
            let q_chunk = &q[i0 * n * (d + r)..(i0 + tc) * n * (d + r)];
            let out_chunk = &mut attn[i0 * n * v..(i0 + tc) * n * v];
            match &expanded {
                Some(kv) => self.attend_naive(out_chunk, q_chunk, tc, p + i0, kv, cache),
                None => self.attend_absorbed(out_chunk, q_chunk, tc, p + i0, cache),
            }
            i0 += tc;
        }

        // out[t, h] = o_proj(attn[t, n·v]).
        linear(out, &attn, &self.o_proj, t);
        Ok(())
    }

    /// Naive attention for `t` queries at positions `p0..p0+t`: per head, keys
    /// `[k_nope_h | k_pe]` and values `v_h` expanded from every cached latent (`kv`).
    fn attend_naive(
        &self,
        attn: &mut [f32], // [t, n, v]
        q: &[f32],        // [t, n, d + r], q_pe rotated
        t: usize,
        p0: usize,
        kv: &[f32], // [s, n, d + v]
        cache: &LatentCache,
    ) {
        let cfg = &self.config;
        let (n, d, r, v) = (
            cfg.num_heads,
            cfg.qk_nope_head_dim,
            cfg.qk_rope_head_dim,
            cfg.v_head_dim,
        );
        let s = cache.len();
        let k_pe = cache.k_pe();
        let heads: Vec<Vec<f32>> = (0..n)
            .into_par_iter()
            .map(|head| {
                let mut key = vec![0.0f32; s * (d + r)]; // [s, d + r]
                let mut val = vec![0.0f32; s * v]; // [s, v]
                for j in 0..s {
                    let row = &kv[(j * n + head) * (d + v)..(j * n + head + 1) * (d + v)];
                    key[j * (d + r)..j * (d + r) + d].copy_from_slice(&row[..d]);
                    key[j * (d + r) + d..(j + 1) * (d + r)]
                        .copy_from_slice(&k_pe[j * r..(j + 1) * r]);
                    val[j * v..(j + 1) * v].copy_from_slice(&row[d..]);
                }
                let mut qh = vec![0.0f32; t * (d + r)]; // [t, d + r]
                for i in 0..t {
                    qh[i * (d + r)..(i + 1) * (d + r)].copy_from_slice(
                        &q[(i * n + head) * (d + r)..(i * n + head + 1) * (d + r)],
                    );
                }
                let mut scores = vec![0.0f32; t * s]; // [t, s]
                matmul_bt(&mut scores, &qh, &key, t, d + r, s);
                self.scale_mask_softmax(&mut scores, t, s, p0);
                let mut o = vec![0.0f32; t * v]; // [t, v]
                matmul(&mut o, &scores, &val, t, s, v);
                o
            })
            .collect();
        scatter_heads(attn, &heads, t, n, v);
    }

    /// Absorbed attention: `q_lat = W_UKᵀ q_nope` per head, scores
    /// `q_lat·c_KVᵀ + q_pe·k_peᵀ` against the cache, `o_lat = P·c_KV`, then `W_UV o_lat` per head.
    /// Rows are head-major (`head·t + i`) so each head's block is contiguous.
    fn attend_absorbed(
        &self,
        attn: &mut [f32], // [t, n, v]
        q: &[f32],        // [t, n, d + r], q_pe rotated
        t: usize,
        p0: usize,
        cache: &LatentCache,
    ) {
        let cfg = &self.config;
        let (n, c, d, r, v) = (
            cfg.num_heads,
            cfg.kv_lora_rank,
            cfg.qk_nope_head_dim,
            cfg.qk_rope_head_dim,
            cfg.v_head_dim,
        );
        let s = cache.len();
        // Per head: q_lat[t, c] = q_nope[t, d] · W_UK_h (W_UKᵀ stored as [c, d]).
        let q_lat: Vec<Vec<f32>> = (0..n)
            .into_par_iter()
            .map(|head| {
                let mut q_nope = vec![0.0f32; t * d];
                for i in 0..t {
                    let src = (i * n + head) * (d + r);
                    q_nope[i * d..(i + 1) * d].copy_from_slice(&q[src..src + d]);
                }
                let mut ql = vec![0.0f32; t * c];
                linear(&mut ql, &q_nope, &self.w_uk_t[head], t);
                ql
            })
            .collect();
        let rows = n * t;
        let mut x_lat = Vec::with_capacity(rows * c); // [n·t, c]
        for ql in &q_lat {
            x_lat.extend_from_slice(ql);
        }
        let mut x_pe = vec![0.0f32; rows * r]; // [n·t, r]
        for head in 0..n {
            for i in 0..t {
                let src = (i * n + head) * (d + r) + d;
                x_pe[(head * t + i) * r..(head * t + i + 1) * r].copy_from_slice(&q[src..src + r]);
            }
        }
        // scores[n·t, s] = x_lat · c_KVᵀ + x_pe · k_peᵀ: the cache is read once for all heads.
        let mut scores = vec![0.0f32; rows * s];
        let mut rope_scores = vec![0.0f32; rows * s];
        matmul_bt(&mut scores, &x_lat, cache.c_kv(), rows, c, s);
        matmul_bt(&mut rope_scores, &x_pe, cache.k_pe(), rows, r, s);
        for (a, b) in scores.iter_mut().zip(&rope_scores) {
            *a += b;
        }
        for head in 0..n {
            self.scale_mask_softmax(&mut scores[head * t * s..(head + 1) * t * s], t, s, p0);
        }
        // o_lat[n·t, c] = P · c_KV.
        let mut o_lat = vec![0.0f32; rows * c];
        matmul(&mut o_lat, &scores, cache.c_kv(), rows, s, c);
        // Per head: o[t, v] = o_lat_h[t, c] · W_UV_hᵀ.
        let heads: Vec<Vec<f32>> = (0..n)
            .into_par_iter()
            .map(|head| {
                let mut o = vec![0.0f32; t * v];
                linear(
                    &mut o,
                    &o_lat[head * t * c..(head + 1) * t * c],
                    &self.w_uv[head],
                    t,
                );
                o
            })
            .collect();
        scatter_heads(attn, &heads, t, n, v);
    }

    /// `scores[t, s] ← softmax(scale · scores)` with query `i` (position `p0 + i`) blind to keys
    /// after it.
    fn scale_mask_softmax(&self, scores: &mut [f32], t: usize, s: usize, p0: usize) {
        let scale = self.config.softmax_scale;
        for (i, row) in scores.chunks_exact_mut(s).enumerate() {
            let visible = (p0 + i + 1).min(s);
            for x in &mut row[..visible] {
                *x *= scale;
            }
            row[visible..].fill(f32::NEG_INFINITY);
        }
        softmax_rows(scores, t, s);
    }
}

/// `attn[i, head, :] = heads[head][i, :]`.
fn scatter_heads(attn: &mut [f32], heads: &[Vec<f32>], t: usize, n: usize, v: usize) {
    for (head, o) in heads.iter().enumerate() {
        for i in 0..t {
            attn[(i * n + head) * v..(i * n + head + 1) * v]
                .copy_from_slice(&o[i * v..(i + 1) * v]);
        }
    }
}

/// `wᵀ` in `w`'s dtype (a copy, made once at load time). Narrowing values that were widened from
/// that dtype is exact, so the copy holds the same numbers.
fn transpose(w: &Weight) -> Weight {
    let (rows, cols) = (w.rows(), w.cols());
    let f = w.to_f32_vec();
    let mut tr = vec![0.0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            tr[j * rows + i] = f[i * cols + j];
        }
    }
    Weight::from_f32(tr, cols, rows)
        .expect("transpose keeps the element count")
        .to_dtype(w.dtype())
}
