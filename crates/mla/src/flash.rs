//! Blocked causal attention with an online softmax (flash attention; flash-decoding when the
//! cached positions are split across threads): both attention cores run on it.
//!
//! Query rows come in groups of `g` per position (`g = n` heads sharing the latent for the
//! absorbed core; `g = 1`, one head at a time, for the naive core): row `i·g + h` is query `i`,
//! at position `p0 + i` (`p0 = s − t`), and sees keys `0..=p0 + i`. For a block of rows and a
//! block of `kb` keys the kernel computes
//!
//! ```text
//! S[j, r]   = scale · q_r · k_j                 (keys × rows; −∞ where key j is after row r)
//! m'_r      = max(m_r, max_j S[j, r])
//! α_r       = e^(m_r − m'_r);  l_r ← α_r l_r + Σ_j e^(S[j, r] − m'_r)
//! Oᵀ[·, r]  ← α_r Oᵀ[·, r] + Σ_j e^(S[j, r] − m'_r) v_j
//! ```
//!
//! and after the last block `o_r = Oᵀ[·, r] / l_r`. Nothing larger than `[kb, rows]` scores is
//! ever formed, whatever `t` and `s`. The two products are
//! [`matmul_strided`](deepblocks_core::matmul_strided) with the rows along
//! the contiguous axis, so the softmax's steps run across rows eight lanes at a time. A latent
//! cache in bf16 or f16 is widened to f32 one key block at a time — except where the products run
//! on the AMX tile unit ([`Products::Tiles`], [`run_task_tiles`]) or, elsewhere on AVX-512, on
//! [`bf16_scores`] and [`bf16_mix`] ([`direct_bf16`]; on AVX512-BF16, [`bf16_dot_scores`] and
//! [`bf16_dot_mix`], the queries and probabilities rounded to bf16, the sums adding the rounded
//! probabilities: [`online_softmax_columns_bf16`]): a bf16 cache is read as it is. So is a
//! `Q8_0` cache on VNNI ([`q8_scores`]; the mix [`q8_mix_quantized`], in integers with each
//! block's probabilities in 8 bits, where [`integer_mix`] holds, [`q8_mix`] on f32 registers
//! elsewhere). Those kernels keep `O[rows, dv]`.
//!
//! Work is split into tasks of (a block of rows, a chunk of keys): a prompt gives many row
//! blocks, each over all its keys; a decode step gives one row block, its keys split into
//! chunks that shrink towards the end (each `1/threads` of the keys left). The pool's threads
//! take the tasks largest first, and the chunks of one row block are combined with
//! `e^(m_chunk − m)` weights in the tasks' order, whichever thread ran each.

use deepblocks_core::aligned::AlignedVec;
use deepblocks_core::bf16_dot;
use deepblocks_core::bf16_rows::{
    Bf16Pairs, Bf16Queries, bf16_dot_mix, bf16_dot_scores, bf16_mix, bf16_scores,
};
use deepblocks_core::half::bf16;
use deepblocks_core::quant::q8_rows::{
    Q8_BLOCK, Q8Queries, Q8Weights, integer_mix, q8_mix, q8_mix_quantized, q8_scores,
};
use deepblocks_core::{
    TILE, TILE_K, exp_f32, matmul_bf16_pairs, pairs_into, split_bf16, split_bf16_transposed,
};
use deepblocks_core::{
    online_softmax_columns, online_softmax_columns_bf16, scale_columns, scale_rows,
};
use rayon::prelude::*;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::LatentRows;

/// The product the kernel runs its two matrix products with (the dispatching kernel, or one
/// implementation for tests): the signature of [`deepblocks_core::matmul_strided`].
pub(crate) type Gemm = fn(&mut [f32], &[f32], usize, usize, &[f32], usize, usize, usize, bool);

/// What the kernel runs its two products on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Products {
    /// f32 products ([`Gemm`]) on f32 keys, or on a block of bf16/f16 rows widened to f32.
    F32(Gemm),
    /// bf16 tile products ([`deepblocks_core::matmul_bf16_pairs`]) straight from a bf16 latent
    /// cache whose widths fit the tiles (`dk` a multiple of 32, `dv` of 16), the queries and the
    /// probabilities passed as two bf16 parts each; [`Products::F32`] with the [`Gemm`] for any
    /// other rows.
    Tiles(Gemm),
}

impl Products {
    /// What the attention cores run: tiles where the CPU has the AMX unit
    /// ([`deepblocks_core::amx`]), the dispatching f32 product otherwise.
    pub fn best() -> Products {
        if deepblocks_core::amx() {
            Products::Tiles(deepblocks_core::matmul_strided)
        } else {
            Products::F32(deepblocks_core::matmul_strided)
        }
    }

    /// Whether these products run on tiles for these keys and shape.
    fn tiles(self, kv: Kv<'_>, shape: &FlashShape) -> bool {
        matches!(self, Products::Tiles(_))
            && matches!(kv, Kv::Latent(LatentRows::BF16(_)))
            && shape.dk.is_multiple_of(TILE_K)
            && shape.dv.is_multiple_of(TILE)
    }

    fn gemm(self) -> Gemm {
        match self {
            Products::F32(g) | Products::Tiles(g) => g,
        }
    }
}

/// The sizes of one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlashShape {
    /// Query positions `t`.
    pub t: usize,
    /// Query rows per position `g`.
    pub g: usize,
    /// Key positions `s ≥ t`; query `i` is at position `s − t + i`.
    pub s: usize,
    /// Key (and query) width.
    pub dk: usize,
    /// Value width.
    pub dv: usize,
    /// The factor on `q·k`.
    pub scale: f32,
}

/// `width` columns of each row of a row-major matrix whose rows are `stride` apart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub data: &'a [f32],
    pub stride: usize,
    pub width: usize,
}

/// Where the keys and values come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kv<'a> {
    /// The latent rows `[s, dk]`: the key is the whole row, the value its first `dv` columns.
    Latent(LatentRows<'a>),
    /// f32 keys in two column parts (`k1.width + k2.width = dk`) and separate values.
    Split {
        k1: Strided<'a>,
        k2: Strided<'a>,
        v: Strided<'a>,
    },
}

/// How the work is cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blocking {
    /// Query rows per task, about (a whole position's `g` rows at least).
    pub rows: usize,
    /// Keys per block.
    pub kb: usize,
    /// The fewest keys in a chunk of a split key range.
    pub min_chunk: usize,
    /// Tasks to aim for: the row blocks' keys are split when there are fewer row blocks.
    pub tasks: usize,
    /// The threads a split key range is shared among: each chunk takes `1/threads` of the keys
    /// left (at least `min_chunk`), so the chunks shrink towards the end of the range and the
    /// last ones even out the threads' finishing times.
    pub threads: usize,
}

impl Blocking {
    /// Measured on the bench shapes (`cargo bench --bench mla`): 64 rows, blocks of 64 keys,
    /// chunks of at least 256 keys, split when there are fewer than four row blocks per thread,
    /// each chunk `1/threads` of the keys left.
    pub fn default_for_threads() -> Blocking {
        let threads = rayon::current_num_threads();
        Blocking {
            rows: 64,
            kb: 64,
            min_chunk: 256,
            tasks: 4 * threads,
            threads,
        }
    }

    /// The keys of the next chunk of a row block's `left` keys still to cut: all of them when
    /// the keys are not `split`, else a `1/threads` share, at least `min_chunk`, whole blocks.
    fn chunk(&self, left: usize, split: bool) -> usize {
        if !split {
            return left;
        }
        let kb = self.kb.max(1);
        let share = left.div_ceil(self.threads.max(1)).max(self.min_chunk);
        (share.div_ceil(kb) * kb).min(left)
    }
}

/// One task's running state: per row (padded to `rp`) the maximum `m`, the sum `l`, and the
/// values mixed so far `O[rp, dv]`.
struct Partial {
    m: Vec<f32>,        // [rp]
    l: Vec<f32>,        // [rp]
    o: AlignedVec<f32>, // [rp, dv] (the f32 products: [dv, rp] until `columns_to_rows`)
}

impl Partial {
    /// The values of a task mixed as `Oᵀ[dv, rp]` (the f32 products) made the partial's
    /// `O[rp, dv]`.
    fn columns_to_rows(&mut self, dv: usize) {
        let rp = self.m.len();
        let mut rows = AlignedVec::zeros(rp * dv);
        for (c, column) in self.o.chunks_exact(rp).enumerate() {
            for (r, &x) in column.iter().enumerate() {
                rows[r * dv + c] = x;
            }
        }
        self.o = rows;
    }
}

/// How a task holds the values it has mixed in `Partial::o`.
#[derive(Debug, Clone, Copy)]
enum Mixed {
    /// `O[rp, dv]`, a row per query row.
    Rows,
    /// `Oᵀ[dv, rp]`, the query rows along the contiguous axis.
    Columns,
}

/// `out[t·g, dv]` = causal attention of `q[t·g, dk]` over `kv`: blocked, online softmax, in
/// parallel. The caller checked the lengths.
pub(crate) fn flash_attention(
    out: &mut [f32],
    q: &[f32],
    kv: Kv<'_>,
    shape: &FlashShape,
    blocking: Blocking,
    products: Products,
) {
    let FlashShape { t, g, s, dv, .. } = *shape;
    let tiles = products.tiles(kv, shape);
    if out.is_empty() || dv == 0 {
        out.fill(0.0); // no rows, or values of no width: nothing to mix
        return;
    }
    let p0 = s - t;
    let tq = (blocking.rows / g).max(1); // positions per row block
    let blocks = t.div_ceil(tq);
    // A row block's keys are split in chunks when row blocks alone give too few tasks (a decode
    // step: one row block), the chunks shrinking towards the end of the range.
    let split = blocking.tasks > blocks;
    let kb = blocking.kb.max(1);
    let mut tasks = Vec::new(); // (block, first key, end of keys)
    for b in 0..blocks {
        let visible = p0 + ((b + 1) * tq).min(t);
        let mut j0 = 0;
        while j0 < visible {
            let j1 = j0 + blocking.chunk(visible - j0, split);
            tasks.push((b, j0, j1));
            j0 = j1;
        }
    }
    // Each row block's queries, transposed and scaled once for all its chunks (and for tiles,
    // split into two bf16 parts in the pair layout).
    let q8 = integer_scores(kv);
    let direct = direct_bf16(kv) && !tiles;
    let qts: Vec<Queries> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            let qt = transposed_queries(q, shape, b * tq, ((b + 1) * tq).min(t), tiles);
            let rp = qt.len() / shape.dk;
            if tiles {
                Queries::Tiles(query_pairs(&qt, shape.dk))
            } else if q8 {
                Queries::Q8(Q8Queries::from_transposed(&qt, shape.dk, rp))
            } else if direct {
                Queries::Bf16(Bf16Queries::from_transposed(&qt, shape.dk, rp))
            } else {
                Queries::F32(qt)
            }
        })
        .collect();
    let size = |&(_, j0, j1): &(usize, usize, usize)| j1 - j0;
    let partials = largest_first(&tasks, blocking.threads, size, |&(b, j0, j1)| {
        let i0 = b * tq;
        let i1 = (i0 + tq).min(t);
        match (&qts[b], kv) {
            (Queries::Tiles(qp), Kv::Latent(LatentRows::BF16(rows))) => {
                run_task_tiles(qp, rows, shape, i0, i1, j0, j1, kb)
            }
            (Queries::Tiles(_), _) => {
                unreachable!("tiles are chosen for bf16 latent rows only")
            }
            (queries, _) => run_task(queries, kv, shape, i0, i1, j0, j1, kb, products.gemm()),
        }
    });
    // Combine each row block's chunks (consecutive in `tasks`), one output row at a time.
    let mut first = vec![0usize; blocks + 1];
    for &(b, ..) in &tasks {
        first[b + 1] += 1;
    }
    for b in 0..blocks {
        first[b + 1] += first[b];
    }
    let rows_per_block = tq * g;
    out.par_chunks_mut(dv).enumerate().for_each(|(row, o)| {
        let b = row / rows_per_block;
        combine(
            o,
            &partials[first[b]..first[b + 1]],
            row % rows_per_block,
            dv,
        )
    });
}

/// `run(task)` for every task, by up to `threads` pool threads that each take the next task not
/// yet taken, the largest (by `size`) first: the small ones come last and even out the threads'
/// finishing times (the chunks of a split key range shrink towards its end; a prompt's later row
/// blocks see more keys). The results come in the tasks' order, whichever thread ran each.
fn largest_first<T: Sync, R: Send + Sync>(
    tasks: &[T],
    threads: usize,
    size: impl Fn(&T) -> usize,
    run: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(size(&tasks[i])));
    let next = AtomicUsize::new(0);
    let results: Vec<OnceLock<R>> = tasks.iter().map(|_| OnceLock::new()).collect();
    (0..threads.clamp(1, tasks.len().max(1)))
        .into_par_iter()
        .for_each(|_| {
            while let Some(&i) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
                // Each place in `order` is taken once, so each result is set once.
                let _ = results[i].set(run(&tasks[i]));
            }
        });
    results
        .into_iter()
        .map(|r| r.into_inner().expect("every task ran"))
        .collect()
}

/// Row `r` of a row block from the partials of its chunks: `o = Σ_p e^(m_p − m) O_p[r, ·] /
/// Σ_p e^(m_p − m) l_p`, `m = max_p m_p`.
fn combine(o: &mut [f32], parts: &[Partial], r: usize, dv: usize) {
    let m = parts
        .iter()
        .map(|p| p.m[r])
        .fold(f32::NEG_INFINITY, f32::max);
    o.fill(0.0);
    let mut l = 0.0f32;
    for p in parts {
        if p.m[r] == f32::NEG_INFINITY {
            continue; // this chunk held no key the row sees
        }
        let f = exp_f32(p.m[r] - m);
        l += f * p.l[r];
        for (y, &x) in o.iter_mut().zip(&p.o[r * dv..(r + 1) * dv]) {
            *y += f * x;
        }
    }
    let inv = 1.0 / l;
    for y in o.iter_mut() {
        *y *= inv;
    }
}

/// Whether the scores over `kv` are integer products ([`q8_scores`]): `Q8_0` latent rows, on a
/// CPU with VNNI. Elsewhere `Q8_0` rows are widened to f32 as bf16 rows are.
fn integer_scores(kv: Kv<'_>) -> bool {
    matches!(kv, Kv::Latent(LatentRows::Q8_0 { .. })) && deepblocks_core::vnni()
}

/// Whether both products over `kv` read bf16 rows as they lie ([`bf16_scores`], [`bf16_mix`]):
/// bf16 latent rows, on a CPU whose 512-bit registers those kernels use
/// ([`deepblocks_core::avx512`]). Elsewhere a block of rows is widened to f32 first.
fn direct_bf16(kv: Kv<'_>) -> bool {
    matches!(kv, Kv::Latent(LatentRows::BF16(_))) && deepblocks_core::avx512()
}

/// A row block's queries as the products take them.
enum Queries {
    /// `Qᵀ[dk, rp]`.
    F32(Vec<f32>),
    /// The rows quantized to `Q8_0` blocks, for [`q8_scores`] over `Q8_0` latent rows.
    Q8(Q8Queries),
    /// The rows in pair order, for [`bf16_scores`] over bf16 latent rows.
    Bf16(Bf16Queries),
    /// `Qᵀ = hi + lo`, each `[dk, rp]` in the pair layout.
    Tiles([Vec<bf16>; 2]),
}

/// The rows of a block padded to whole registers (8 lanes) or whole tiles (16 rows).
fn padded(rows: usize, tiles: bool) -> usize {
    let unit = if tiles { TILE } else { 8 };
    rows.div_ceil(unit) * unit
}

/// `Qᵀ[dk, rp]` of the rows of positions `i0..i1`, scaled (once here instead of every score),
/// the rows padded with zeros to `rp` ([`padded`]).
fn transposed_queries(
    q: &[f32],
    shape: &FlashShape,
    i0: usize,
    i1: usize,
    tiles: bool,
) -> Vec<f32> {
    let FlashShape { g, dk, scale, .. } = *shape;
    let rows = (i1 - i0) * g;
    let rp = padded(rows, tiles);
    let mut qt = vec![0.0f32; dk * rp];
    for r in 0..rows {
        let qr = &q[(i0 * g + r) * dk..(i0 * g + r + 1) * dk];
        for (k, &x) in qr.iter().enumerate() {
            qt[k * rp + r] = scale * x;
        }
    }
    qt
}

/// `Qᵀ[dk, rp]` as two bf16 parts in the pair layout, the `B` of the scores' tile product.
fn query_pairs(qt: &[f32], dk: usize) -> [Vec<bf16>; 2] {
    let rp = qt.len() / dk;
    let (mut hi, mut lo) = (vec![bf16::ZERO; qt.len()], vec![bf16::ZERO; qt.len()]);
    split_bf16(&mut hi, &mut lo, qt);
    [hi, lo].map(|part| {
        let mut pairs = vec![bf16::ZERO; part.len()];
        pairs_into(&mut pairs, &part, rp, dk, rp);
        pairs
    })
}

/// Rows of positions `i0..i1` over keys `j0..j1`, in blocks of `kb` keys, with the rows'
/// queries as the products take them.
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
fn run_task(
    queries: &Queries,
    kv: Kv<'_>,
    shape: &FlashShape,
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
    kb: usize,
    gemm: Gemm,
) -> Partial {
    let FlashShape { g, dk, dv, .. } = *shape;
    let rows = (i1 - i0) * g;
    let rp = padded(rows, false); // rows padded to whole registers (padding rows are zero)
    // The kernels that read the rows as they lie keep O[rp, dv]; the f32 products Oᵀ[dv, rp]
    // until the end.
    let row_major = matches!(queries, Queries::Q8(_) | Queries::Bf16(_));
    SCRATCH.with(|scratch| {
        let scratch = &mut *scratch.borrow_mut();
        let widen = !row_major && !matches!(kv, Kv::Latent(LatentRows::F32(_)) | Kv::Split { .. });
        scratch.size(kb * rp, if widen { kb * dk } else { 0 }, rp);
        let Scratch {
            st,
            keys,
            alpha,
            weights,
            pairs,
        } = scratch;
        let mut part = Partial {
            m: vec![f32::NEG_INFINITY; rp],
            l: vec![0.0; rp],
            o: AlignedVec::zeros(dv * rp),
        };
        let mixes = Mixes { weights, pairs };
        blocks(
            &mut part, queries, st, keys, alpha, mixes, kv, shape, i0, rows, j0, j1, kb, gemm,
        );
        if !row_major {
            part.columns_to_rows(dv);
        }
        part
    })
}

/// The buffers of one task, kept per thread between tasks (the widened key block alone is
/// 147 KB at DeepSeek's shapes: allocating it per task costs page faults).
#[derive(Default)]
struct Scratch {
    st: AlignedVec<f32>,   // [kb, rp]: a block's scores, then probabilities
    keys: AlignedVec<f32>, // [kb, dk]: a block of latent rows widened to f32
    alpha: Vec<f32>,       // [rp]
    weights: Q8Weights,    // a block's probabilities in 8 bits, for the integer mix
    pairs: Bf16Pairs,      // a block's probabilities in bf16 pairs, for the bf16 dot mix
}

impl Scratch {
    fn size(&mut self, st: usize, keys: usize, rp: usize) {
        self.st.resize_zeroed(st);
        self.keys.resize_zeroed(keys);
        self.alpha.resize(rp, 0.0);
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// A block of keys the products read as they lie, with the queries that go with them: `Q8_0`
/// codes ([`q8_scores`], [`q8_mix`]) or bf16 rows ([`bf16_scores`], [`bf16_mix`]).
enum InPlace<'a> {
    Q8 {
        q: &'a Q8Queries,
        codes: &'a [u8],   // [w, stride]
        scales: &'a [f32], // [w, stride / 32]
        ahead: &'a [u8],   // [next, stride]: the task's next block of codes
        stride: usize,     // whole blocks
    },
    Bf16 {
        q: &'a Bf16Queries,
        rows: &'a [bf16],  // [w, dk]
        ahead: &'a [bf16], // [next, dk]: the task's next block, prefetched while this one mixes
        dk: usize,
    },
}

impl<'a> InPlace<'a> {
    /// Keys `jb .. jb + w` of `kv`, when `queries` were made to read them in place, before
    /// `next` more keys of the same task.
    fn block(
        queries: &'a Queries,
        kv: Kv<'a>,
        jb: usize,
        w: usize,
        next: usize,
        dk: usize,
    ) -> Option<Self> {
        match (queries, kv) {
            (Queries::Q8(q), Kv::Latent(LatentRows::Q8_0 { codes, scales, .. })) => {
                let stride = q.dims().0; // the rows' codes, whole blocks
                let nb = stride / Q8_BLOCK;
                Some(InPlace::Q8 {
                    q,
                    codes: &codes[jb * stride..(jb + w) * stride],
                    scales: &scales[jb * nb..(jb + w) * nb],
                    ahead: &codes[(jb + w) * stride..(jb + w + next) * stride],
                    stride,
                })
            }
            (Queries::Bf16(q), Kv::Latent(LatentRows::BF16(latent))) => Some(InPlace::Bf16 {
                q,
                rows: &latent[jb * dk..(jb + w) * dk],
                ahead: &latent[(jb + w) * dk..(jb + w + next) * dk],
                dk,
            }),
            _ => None,
        }
    }

    /// Whether [`Self::mix`] takes the probabilities rounded to bf16 ([`bf16_dot_mix`]).
    fn rounds_probabilities(&self) -> bool {
        matches!(self, InPlace::Bf16 { .. }) && bf16_dot()
    }

    /// `S[w, rp] = K_block · Qᵀ`: over bf16 rows with the queries rounded to bf16 where
    /// [`bf16_dot`] holds.
    fn scores(&self, st: &mut [f32], w: usize) {
        match *self {
            InPlace::Q8 {
                q, codes, scales, ..
            } => q8_scores(st, codes, scales, q, w),
            InPlace::Bf16 { q, rows, dk, .. } if bf16_dot() => bf16_dot_scores(st, rows, dk, q, w),
            InPlace::Bf16 { q, rows, dk, .. } => bf16_scores(st, rows, dk, q, w),
        }
    }

    /// `O[rp, dv] += Pᵀ · V_block` (the first `dv` values of each row): over `Q8_0` codes in
    /// integers with the probabilities in 8 bits where [`integer_mix`] holds, over bf16 rows
    /// with the probabilities in bf16 where [`bf16_dot`] holds, on f32 registers elsewhere.
    #[allow(clippy::too_many_arguments)]
    fn mix(&self, o: &mut [f32], p: &[f32], w: usize, dv: usize, rp: usize, mixes: Mixes<'_>) {
        match *self {
            InPlace::Q8 {
                codes,
                scales,
                ahead,
                stride,
                ..
            } if integer_mix() => {
                q8_mix_quantized(o, p, codes, scales, stride, w, dv, rp, mixes.weights, ahead)
            }
            InPlace::Q8 {
                codes,
                scales,
                stride,
                ..
            } => q8_mix(o, p, codes, scales, stride, w, dv, rp),
            InPlace::Bf16 {
                rows, dk, ahead, ..
            } if bf16_dot() => bf16_dot_mix(o, p, rows, dk, w, dv, rp, mixes.pairs, ahead),
            InPlace::Bf16 {
                rows, dk, ahead, ..
            } => bf16_mix(o, p, rows, dk, w, dv, rp, ahead),
        }
    }
}

/// The buffers of the mixes that round a block's probabilities first.
struct Mixes<'a> {
    weights: &'a mut Q8Weights, // for the integer mix over Q8_0 codes
    pairs: &'a mut Bf16Pairs,   // for the bf16 dot mix
}

/// The key blocks of one task: [`run_task`]'s loop, over its buffers.
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
fn blocks(
    part: &mut Partial,
    queries: &Queries,
    st: &mut [f32],    // [kb, rp]
    keys: &mut [f32],  // [kb, dk] when the rows are widened
    alpha: &mut [f32], // [rp]
    mixes: Mixes<'_>,
    kv: Kv<'_>,
    shape: &FlashShape,
    i0: usize,
    rows: usize,
    j0: usize,
    j1: usize,
    kb: usize,
    gemm: Gemm,
) {
    let FlashShape {
        t, g, s, dk, dv, ..
    } = *shape;
    let p0 = s - t;
    let rp = alpha.len();
    let mut jb = j0;
    while jb < j1 {
        let w = kb.min(j1 - jb);
        let st = &mut st[..w * rp];
        // The rows read as they lie: S[w, rp] = K_block · Qᵀ, probabilities, then
        // O[rp, dv] = α O + Pᵀ · V_block.
        let next = kb.min(j1 - jb - w); // the task's next block, brought in during this mix
        if let Some(block) = InPlace::block(queries, kv, jb, w, next, dk) {
            block.scores(st, w);
            // Probabilities in bf16 for a mix that takes them so: the sums then divide by the
            // weights the mix uses.
            let round = block.rounds_probabilities();
            probabilities(part, Mixed::Rows, round, st, alpha, jb, p0 + i0, g, rows);
            let mixes = Mixes {
                weights: &mut *mixes.weights,
                pairs: &mut *mixes.pairs,
            };
            block.mix(&mut part.o, st, w, dv, rp, mixes);
            jb += w;
            continue;
        }
        let Queries::F32(qt) = queries else {
            unreachable!("the queries of rows read as they lie go with those rows")
        };
        // S[w, rp] = K_block · Qᵀ, then V_block (row-major, `sv` apart) for the mix.
        let (v, sv): (&[f32], usize) = match kv {
            Kv::Latent(rows_kv) => {
                let block: &[f32] = match rows_kv {
                    LatentRows::F32(x) => &x[jb * dk..],
                    _ => {
                        rows_kv.widen_into(&mut keys[..w * dk], jb * dk);
                        &keys[..w * dk]
                    }
                };
                gemm(st, block, dk, 1, qt, w, dk, rp, false);
                (block, dk)
            }
            Kv::Split { k1, k2, v } => {
                let d1 = k1.width;
                gemm(
                    st,
                    &k1.data[jb * k1.stride..],
                    k1.stride,
                    1,
                    &qt[..d1 * rp],
                    w,
                    d1,
                    rp,
                    false,
                );
                gemm(
                    st,
                    &k2.data[jb * k2.stride..],
                    k2.stride,
                    1,
                    &qt[d1 * rp..],
                    w,
                    k2.width,
                    rp,
                    true,
                );
                (&v.data[jb * v.stride..], v.stride)
            }
        };
        probabilities(part, Mixed::Columns, false, st, alpha, jb, p0 + i0, g, rows);
        // Oᵀ[dv, rp] += V_blockᵀ · P.
        gemm(&mut part.o, v, 1, sv, st, dv, w, rp, true);
        jb += w;
    }
}

/// The scores `st[w, rp]` of a block whose first key is `jb` made probabilities (masked, the
/// online softmax's step, rounded to bf16 when `round`; `p` the position of the task's first
/// row), and the values already mixed in `part.o` rescaled where the maxima moved.
#[allow(clippy::too_many_arguments)]
fn probabilities(
    part: &mut Partial,
    mixed: Mixed,
    round: bool,
    st: &mut [f32],    // [w, rp]
    alpha: &mut [f32], // [rp]
    jb: usize,
    p: usize,
    g: usize,
    rows: usize,
) {
    let rp = alpha.len();
    mask(st, rp, jb, p, g, rows);
    let step = if round {
        online_softmax_columns_bf16
    } else {
        online_softmax_columns
    };
    if step(st, &mut part.m, &mut part.l, alpha) {
        match mixed {
            Mixed::Rows => scale_rows(&mut part.o, alpha),
            Mixed::Columns => scale_columns(&mut part.o, alpha),
        }
    }
}

/// Causal mask of a block of scores `st[w, rp]` whose first key is `jb`: key `j` is after the
/// positions of rows `r < g·(j − p)`, `p` the position of the block's first row.
fn mask(st: &mut [f32], rp: usize, jb: usize, p: usize, g: usize, rows: usize) {
    for (jj, row) in st.chunks_exact_mut(rp).enumerate() {
        let j = jb + jj;
        if j > p {
            row[..(g * (j - p)).min(rows)].fill(f32::NEG_INFINITY);
        }
    }
}

/// [`run_task`] on tiles ([`Products::Tiles`]) over bf16 latent rows: per block of `kb` keys
/// (a partial block copied beside zero keys, whole tiles, the zero keys masked),
///
/// ```text
/// Sᵀ[w, rp] = K_block · (Qᵀ_hi + Qᵀ_lo)          two tile products a tile, K read where it lies
/// P = online softmax of Sᵀ, transposed: P_hi + P_lo [rp, w]
/// O[rp, dv] = α O + (P_hi + P_lo) · V_block       V_block in the pair layout
/// ```
///
/// `O` the partial's values as they are.
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
fn run_task_tiles(
    qp: &[Vec<bf16>; 2], // [dk, rp] each, pair layout
    latent: &[bf16],     // [s, dk]
    shape: &FlashShape,
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
    kb: usize,
) -> Partial {
    let FlashShape {
        t, g, s, dk, dv, ..
    } = *shape;
    let p0 = s - t;
    let rows = (i1 - i0) * g;
    let rp = padded(rows, true);
    let kbp = kb.div_ceil(TILE_K) * TILE_K;
    TILE_SCRATCH.with(|scratch| {
        let sc = &mut *scratch.borrow_mut();
        sc.size(kbp, rp, dk, dv);
        let mut part = Partial {
            m: vec![f32::NEG_INFINITY; rp],
            l: vec![0.0; rp],
            o: AlignedVec::zeros(dv * rp),
        };
        let TileScratch {
            st,
            padded_keys,
            p_hi,
            p_lo,
            v_pairs,
            alpha,
        } = sc;
        // part.o holds O[rp, dv].
        let mut jb = j0;
        while jb < j1 {
            let w = kb.min(j1 - jb);
            let wp = w.div_ceil(TILE_K) * TILE_K;
            // A whole block is read in place; a partial one is copied beside zero keys.
            let block: &[bf16] = if w == wp {
                &latent[jb * dk..(jb + w) * dk]
            } else {
                padded_keys[..w * dk].copy_from_slice(&latent[jb * dk..(jb + w) * dk]);
                padded_keys[w * dk..wp * dk].fill(bf16::ZERO);
                &padded_keys[..wp * dk]
            };
            // The values in the pair layout first: this reads the block's rows front to back, as
            // the hardware prefetches, so the tiles of the scores then find them in cache (read
            // 64 bytes of 16 rows at a time from memory, they wait on every load).
            let v_pairs = &mut v_pairs[..wp * dv];
            pairs_into(v_pairs, block, dk, wp, dv);
            let st = &mut st[..wp * rp];
            matmul_bf16_pairs(st, rp, &[block], dk, &[&qp[0], &qp[1]], wp, rp, dk, false);
            st[w * rp..].fill(f32::NEG_INFINITY); // the zero keys
            probabilities(
                &mut part,
                Mixed::Rows,
                false,
                st,
                alpha,
                jb,
                p0 + i0,
                g,
                rows,
            );
            // P[rp, wp] = (the probabilities [wp, rp])ᵀ as two parts.
            let (p_hi, p_lo) = (&mut p_hi[..rp * wp], &mut p_lo[..rp * wp]);
            split_bf16_transposed(p_hi, p_lo, st, wp, rp);
            matmul_bf16_pairs(
                &mut part.o,
                dv,
                &[p_hi, p_lo],
                wp,
                &[v_pairs],
                rp,
                dv,
                wp,
                true,
            );
            jb += w;
        }
        part
    })
}

/// The buffers of one tile task, kept per thread between tasks.
#[derive(Default)]
struct TileScratch {
    st: Vec<f32>,           // [kbp, rp]: a block's scores, then probabilities
    padded_keys: Vec<bf16>, // [kbp, dk]: a partial block beside zero keys
    p_hi: Vec<bf16>,        // [rp, kbp]
    p_lo: Vec<bf16>,        // [rp, kbp]
    v_pairs: Vec<bf16>,     // [kbp, dv] in the pair layout
    alpha: Vec<f32>,        // [rp]
}

impl TileScratch {
    fn size(&mut self, kbp: usize, rp: usize, dk: usize, dv: usize) {
        self.st.resize(kbp * rp, 0.0);
        self.padded_keys.resize(kbp * dk, bf16::ZERO);
        self.p_hi.resize(rp * kbp, bf16::ZERO);
        self.p_lo.resize(rp * kbp, bf16::ZERO);
        self.v_pairs.resize(kbp * dv, bf16::ZERO);
        self.alpha.resize(rp, 0.0);
    }
}

thread_local! {
    static TILE_SCRATCH: std::cell::RefCell<TileScratch> =
        std::cell::RefCell::new(TileScratch::default());
}

/// The naive twin of [`flash_attention`]: per row, every visible score, the softmax, the
/// weighted sum of values — plainly, in f32, one row at a time.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn flash_attention_naive(out: &mut [f32], q: &[f32], kv: Kv<'_>, shape: &FlashShape) {
    let FlashShape {
        t,
        g,
        s,
        dk,
        dv,
        scale,
    } = *shape;
    let latent = match kv {
        Kv::Latent(rows) => rows.columns_f32(dk, 0, dk), // [s, dk]
        Kv::Split { .. } => Vec::new(),
    };
    let key = |j: usize| -> Vec<f32> {
        match kv {
            Kv::Latent(_) => latent[j * dk..(j + 1) * dk].to_vec(),
            Kv::Split { k1, k2, .. } => {
                let a = &k1.data[j * k1.stride..j * k1.stride + k1.width];
                let b = &k2.data[j * k2.stride..j * k2.stride + k2.width];
                a.iter().chain(b).copied().collect()
            }
        }
    };
    let value = |j: usize| -> Vec<f32> {
        match kv {
            Kv::Latent(_) => latent[j * dk..j * dk + dv].to_vec(),
            Kv::Split { v, .. } => v.data[j * v.stride..j * v.stride + dv].to_vec(),
        }
    };
    let keys: Vec<Vec<f32>> = (0..s).map(key).collect();
    let values: Vec<Vec<f32>> = (0..s).map(value).collect();
    for row in 0..t * g {
        let visible = s - t + row / g + 1;
        let qr = &q[row * dk..(row + 1) * dk];
        let scores: Vec<f32> = keys[..visible]
            .iter()
            .map(|k| scale * qr.iter().zip(k).map(|(a, b)| a * b).sum::<f32>())
            .collect();
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = scores.iter().map(|x| (x - max).exp()).collect();
        let z: f32 = e.iter().sum();
        let o = &mut out[row * dv..(row + 1) * dv];
        o.fill(0.0);
        for (p, v) in e.iter().zip(&values) {
            for (y, x) in o.iter_mut().zip(v) {
                *y += p / z * x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_first_runs_every_task_once_and_keeps_their_order() {
        let tasks: Vec<usize> = (0..37).map(|i| (i * 7) % 11).collect();
        let runs = AtomicUsize::new(0);
        for threads in [0, 1, 2, 5, 64] {
            let got = largest_first(
                &tasks,
                threads,
                |&x| x,
                |&x| {
                    runs.fetch_add(1, Ordering::Relaxed);
                    10 * x
                },
            );
            assert_eq!(got, tasks.iter().map(|x| 10 * x).collect::<Vec<_>>());
        }
        assert_eq!(runs.load(Ordering::Relaxed), 5 * tasks.len());
        assert!(largest_first(&[] as &[usize], 2, |&x| x, |&x| x).is_empty());
    }

    #[test]
    fn chunks_of_a_split_range_shrink_and_cover_it() {
        let blocking = Blocking {
            rows: 64,
            kb: 64,
            min_chunk: 256,
            tasks: 8,
            threads: 2,
        };
        let mut chunks = Vec::new();
        let mut left = 16_384;
        while left > 0 {
            let c = blocking.chunk(left, true);
            chunks.push(c);
            left -= c;
        }
        assert_eq!(chunks, [8192, 4096, 2048, 1024, 512, 256, 256]);
        // Whole blocks, at least min_chunk but for the last, never past the range.
        let mut left = 1000;
        let mut got = Vec::new();
        while left > 0 {
            let c = blocking.chunk(left, true);
            got.push(c);
            left -= c;
        }
        assert_eq!(got, [512, 256, 232]);
        assert_eq!(blocking.chunk(16_384, false), 16_384);
    }
    use deepblocks_core::half::{bf16, f16};
    use deepblocks_core::quant::q8_rows::{q8_quantize_rows, q8_row_codes};
    use deepblocks_core::{matmul_strided_naive, matmul_strided_portable};

    fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
                ((h >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect()
    }

    /// Every product the kernel can run on: the dispatching one (AVX-512 or AVX2 here when the
    /// CPU has it), the AVX2 one, the portable one, and the naive twin.
    fn gemms() -> [(&'static str, Gemm); 4] {
        [
            ("dispatch", deepblocks_core::matmul_strided),
            ("avx2", deepblocks_core::matmul_strided_avx2),
            ("portable", matmul_strided_portable),
            ("naive", matmul_strided_naive),
        ]
    }

    /// Every way the kernel can run its products: each [`gemms`] in f32, and the tiles (on the
    /// tile unit where the CPU has one, on their plain twin elsewhere).
    fn products() -> Vec<(&'static str, Products)> {
        let mut all: Vec<_> = gemms()
            .into_iter()
            .map(|(name, g)| (name, Products::F32(g)))
            .collect();
        all.push(("tiles", Products::Tiles(deepblocks_core::matmul_strided)));
        all
    }

    /// `Q8_0` latent rows (codes, scales) of `rows[s, dk]`.
    fn q8_rows(rows: &[f32], s: usize, dk: usize) -> (Vec<u8>, Vec<f32>) {
        let stride = q8_row_codes(dk);
        let (mut codes, mut scales) = (vec![0u8; s * stride], vec![0.0f32; s * stride / 32]);
        q8_quantize_rows(&mut codes, &mut scales, rows, dk);
        (codes, scales)
    }

    /// `scale · q[rows, dk]` as the integer scores see it: each row quantized to `Q8_0` blocks.
    fn quantized_queries(q: &[f32], rows: usize, dk: usize, scale: f32) -> Vec<f32> {
        let rp = rows.div_ceil(8) * 8;
        let mut qt = vec![0.0f32; dk * rp];
        for r in 0..rows {
            for k in 0..dk {
                qt[k * rp + r] = scale * q[r * dk + k];
            }
        }
        let quantized = Q8Queries::from_transposed(&qt, dk, rp);
        (0..rows)
            .flat_map(|r| quantized.row(r)[..dk].to_vec())
            .collect()
    }

    fn check(
        got: &[f32],
        want: &[f32],
        what: &str,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        check_within(got, want, 0.0, what)
    }

    /// [`check`] with `slack` more allowed on every element.
    fn check_within(
        got: &[f32],
        want: &[f32],
        slack: f32,
        what: &str,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            proptest::prop_assert!(
                (g - w).abs() <= 2e-5 + 2e-5 * w.abs() + slack,
                "{}: element {}: {} vs {}",
                what,
                i,
                g,
                w
            );
        }
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

        /// The blocked kernel equals its naive twin for every product implementation, latent
        /// rows of each element type and split keys, over block sizes from one key up (chunk
        /// boundaries anywhere), row blocks from one position up, caches of one position,
        /// prefill (`t = s`), decode (`t = 1`) and everything between (masked keys inside a
        /// block, blocks some rows cannot see at all).
        #[test]
        fn blocked_attention_equals_the_naive_twin(
            seed in 0u64..10_000,
            g in 1usize..5,
            (s, back) in (1usize..40, 0usize..40),
            (d1, d2, dv_extra) in (1usize..12, 1usize..5, 0usize..6),
            (kb, rows, min_chunk, tasks, threads) in (1usize..9, 1usize..20, 1usize..12, 1usize..7, 1usize..5),
            dtype in 0usize..5,
        ) {
            let t = s - back.min(s - 1);
            let dk = d1 + d2;
            let shape_for = |dv| FlashShape { t, g, s, dk, dv, scale: 0.6 };
            let q = values(t * g * dk, seed, 1.5);
            let (codes, scales) = q8_rows(&values(s * dk, seed + 1, 1.0), s, dk);
            let blocking = Blocking { rows, kb, min_chunk, tasks, threads };
            let rows_f32 = values(s * dk, seed + 1, 1.0);
            let narrowed_bf16: Vec<bf16> = rows_f32.iter().map(|&x| bf16::from_f32(x)).collect();
            let narrowed_f16: Vec<f16> = rows_f32.iter().map(|&x| f16::from_f32(x)).collect();
            let v_split = values(s * (dv_extra + 1) * 2, seed + 2, 1.0);
            let (kv, dv) = match dtype {
                0 => (Kv::Latent(LatentRows::F32(&rows_f32)), (d1 + dv_extra).min(dk)),
                1 => (Kv::Latent(LatentRows::BF16(&narrowed_bf16)), d1),
                2 => (Kv::Latent(LatentRows::F16(&narrowed_f16)), d1),
                4 => (Kv::Latent(LatentRows::Q8_0 { codes: &codes, scales: &scales, width: dk }), d1),
                _ => (
                    Kv::Split {
                        k1: Strided { data: &rows_f32, stride: dk, width: d1 },
                        k2: Strided { data: &rows_f32[d1..], stride: dk, width: d2 },
                        v: Strided { data: &v_split, stride: 2 * (dv_extra + 1), width: dv_extra + 1 },
                    },
                    dv_extra + 1,
                ),
            };
            let shape = shape_for(dv);
            let mut want = vec![f32::NAN; t * g * dv];
            let mut slack = 0.0;
            if integer_scores(kv) {
                // The integer scores see the scaled queries quantized: so does the reference.
                let q = quantized_queries(&q, t * g, dk, shape.scale);
                flash_attention_naive(&mut want, &q, kv, &FlashShape { scale: 1.0, ..shape });
            } else if direct_bf16(kv) && bf16_dot() {
                // The bf16 dot products see the scaled queries rounded to bf16 (so does the
                // reference) and each probability rounded to bf16, the sums too: an output,
                // Σ_j p̃_j v_j / Σ_j p̃_j with p̃_j within 2⁻⁸ of p_j, moves by at most about
                // 2 · 2⁻⁸ · max |v| from that.
                let q: Vec<f32> =
                    q.iter().map(|&x| bf16::from_f32(shape.scale * x).to_f32()).collect();
                flash_attention_naive(&mut want, &q, kv, &FlashShape { scale: 1.0, ..shape });
                let largest = narrowed_bf16
                    .chunks_exact(dk)
                    .flat_map(|row| &row[..dv])
                    .fold(0.0f32, |m, v| m.max(v.to_f32().abs()));
                slack = largest / 128.0;
            } else {
                flash_attention_naive(&mut want, &q, kv, &shape);
            }
            for (name, products) in products() {
                let mut got = vec![f32::NAN; t * g * dv];
                flash_attention(&mut got, &q, kv, &shape, blocking, products);
                check_within(&got, &want, slack, name)?;
            }
        }

        /// On tile-shaped widths (keys a multiple of 32 wide, values of 16) over a bf16 cache, the
        /// tile path ([`Products::Tiles`]: queries and probabilities in two bf16 parts) equals
        /// the naive twin to about 16 bits: partial blocks, chunk boundaries, padding rows,
        /// prefill and decode.
        #[test]
        fn tile_products_equal_the_naive_twin(
            seed in 0u64..10_000,
            g in 1usize..20,
            (s, back) in (1usize..150, 0usize..150),
            (dkt, dvt) in (1usize..3, 1usize..3),
            (kb, rows, min_chunk, tasks, threads) in (1usize..100, 1usize..40, 1usize..80, 1usize..7, 1usize..5),
        ) {
            let t = s - back.min(s - 1);
            let (dk, dv) = (32 * dkt, 16 * dvt);
            let shape = FlashShape { t, g, s, dk, dv, scale: 0.3 };
            let q = values(t * g * dk, seed, 1.5);
            let latent: Vec<bf16> = values(s * dk, seed + 1, 1.0)
                .iter()
                .map(|&x| bf16::from_f32(x))
                .collect();
            let kv = Kv::Latent(LatentRows::BF16(&latent));
            let blocking = Blocking { rows, kb, min_chunk, tasks, threads };
            let mut want = vec![f32::NAN; t * g * dv];
            flash_attention_naive(&mut want, &q, kv, &shape);
            let mut got = vec![f32::NAN; t * g * dv];
            let tiles = Products::Tiles(deepblocks_core::matmul_strided);
            proptest::prop_assert!(tiles.tiles(kv, &shape));
            flash_attention(&mut got, &q, kv, &shape, blocking, tiles);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                proptest::prop_assert!(
                    (g - w).abs() <= 1e-4 + 1e-4 * w.abs(),
                    "element {}: {} vs {}", i, g, w
                );
            }
        }

        /// Over `Q8_0` rows whose values hold whole 32-value blocks, the blocked kernel equals
        /// the naive twin (with the queries quantized as the integer scores see them) within
        /// what quantizing the probabilities to 8 bits allows where [`integer_mix`] holds: each
        /// weight `P_i · d_i` (`P` the final probabilities, `d` the key's scale of the value's
        /// block) within half a step of its block, the step `1/255` of the block's largest, so
        /// `|Δo[r, c]| ≤ Σ_j (0.5 / 255) · max_{|i − j| < kb} P_i d_i · |q[j, c]|` (any block
        /// holding `j` lies in that window). Elsewhere the mix is f32 and the plain tolerance
        /// holds.
        #[test]
        fn q8_0_rows_mix_within_half_a_step_of_each_weight(
            seed in 0u64..10_000,
            g in 1usize..5,
            (s, back) in (1usize..150, 0usize..150),
            (blocks_k, extra_k, blocks_v, extra_v) in (1usize..3, 0usize..20, 1usize..3, 0usize..20),
            (kb, rows, min_chunk, tasks, threads) in (1usize..80, 1usize..40, 1usize..80, 1usize..7, 1usize..5),
        ) {
            let t = s - back.min(s - 1);
            let dk = 32 * blocks_k + extra_k;
            let dv = (32 * blocks_v + extra_v).min(dk);
            let shape = FlashShape { t, g, s, dk, dv, scale: 0.6 };
            let q = values(t * g * dk, seed, 1.5);
            let (codes, scales) = q8_rows(&values(s * dk, seed + 1, 1.0), s, dk);
            let kv = Kv::Latent(LatentRows::Q8_0 { codes: &codes, scales: &scales, width: dk });
            let blocking = Blocking { rows, kb, min_chunk, tasks, threads };
            let quantized = integer_scores(kv);
            let qq = if quantized { quantized_queries(&q, t * g, dk, shape.scale) } else { q.clone() };
            let naive_shape = FlashShape { scale: if quantized { 1.0 } else { shape.scale }, ..shape };
            let mut want = vec![f32::NAN; t * g * dv];
            flash_attention_naive(&mut want, &qq, kv, &naive_shape);
            let mut got = vec![f32::NAN; t * g * dv];
            flash_attention(&mut got, &q, kv, &shape, blocking, Products::best());
            // The latent rows, and the final probabilities of each row, as the naive twin has them.
            let stride = q8_row_codes(dk);
            let latent = LatentRows::Q8_0 { codes: &codes, scales: &scales, width: dk }.columns_f32(dk, 0, dk);
            for row in 0..t * g {
                let visible = s - t + row / g + 1;
                let qr = &qq[row * dk..(row + 1) * dk];
                let sc: Vec<f32> = (0..visible)
                    .map(|j| naive_shape.scale * qr.iter().zip(&latent[j * dk..(j + 1) * dk]).map(|(a, b)| a * b).sum::<f32>())
                    .collect();
                let max = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f64> = sc.iter().map(|x| ((x - max) as f64).exp()).collect();
                let z: f64 = e.iter().sum();
                for c in 0..dv {
                    let b = c / Q8_BLOCK;
                    let mut bound = 2e-5 + 2e-5 * (want[row * dv + c].abs() as f64);
                    if integer_mix() && c < dv / Q8_BLOCK * Q8_BLOCK {
                        let x = |i: usize| e[i] / z * scales[i * (stride / Q8_BLOCK) + b] as f64;
                        for j in 0..visible {
                            let near = j.saturating_sub(kb - 1)..(j + kb).min(visible);
                            let x_max = near.map(x).fold(0.0, f64::max);
                            let code = (codes[j * stride + c] as f64 - 128.0).abs();
                            bound += 0.5 / 255.0 * x_max * code * (1.0 + 1e-4);
                        }
                    }
                    let (gv, wv) = (got[row * dv + c] as f64, want[row * dv + c] as f64);
                    proptest::prop_assert!(
                        (gv - wv).abs() <= bound,
                        "row {} column {}: {} vs {} (bound {})", row, c, gv, wv, bound
                    );
                }
            }
        }

        /// The strided product equals its naive twin for every implementation, any strides
        /// (row-major, transposed), accumulating or not, widths off the 8- and 16-lane tiles.
        #[test]
        fn strided_products_equal_the_naive_twin(
            seed in 0u64..10_000,
            (m, k, n) in (1usize..15, 1usize..12, 1usize..40),
            transposed in proptest::bool::ANY,
            accumulate in proptest::bool::ANY,
        ) {
            let (a_rs, a_cs) = if transposed { (1, m + 2) } else { (k + 1, 1) };
            let a = values(m.max(k) * (m.max(k) + 3), seed, 1.0);
            let b = values(k * n, seed + 1, 1.0);
            let c0 = values(m * n, seed + 2, 1.0);
            let mut want = c0.clone();
            matmul_strided_naive(&mut want, &a, a_rs, a_cs, &b, m, k, n, accumulate);
            for (name, gemm) in gemms() {
                let mut got = c0.clone();
                gemm(&mut got, &a, a_rs, a_cs, &b, m, k, n, accumulate);
                check(&got, &want, name)?;
            }
        }
    }
}
