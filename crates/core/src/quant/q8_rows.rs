//! Rows of `Q8_0` values kept as two arrays — codes and scales — for data appended once and read
//! by every later step (the latent cache of MLA), and the attention scores computed from them in
//! integers.
//!
//! Every 32 consecutive values share a scale: value `i` is `d[i / 32] · q_i`, `q_i ∈ [−127, 127]`,
//! with `d` and `q` exactly as ggml's `Q8_0` quantizer gives them (`d = max|x| / 127` rounded to
//! f16, `q = round(x / d)`), so the values equal a `Q8_0` tensor's and a `q8_0` KV cache's in
//! llama.cpp. Only the storage differs from GGUF's 34-byte blocks: the codes are stored as
//! `u_i = q_i + 128` in one byte array, the scales as f32 in another (one per 32 codes), so that a
//! SIMD load takes 32 codes of one row and `vpdpbusd`, which multiplies unsigned bytes by signed
//! ones, takes them as they lie. A row of a width that is not a multiple of 32 ends in a short
//! block, quantized over its own values and padded with zero codes to 32 (`u = 128`): rows are
//! always whole blocks.
//!
//! [`q8_scores`] multiplies such rows (keys) by queries quantized the same way ([`Q8Queries`],
//! 32-value blocks per query row) with one integer sum per block and key and query row:
//!
//! ```text
//! S[j, r] = Σ_b  d_k[j, b] · d_q[b, r] · Σ_{i ∈ b} q_k[j, i] · q_q[r, i]
//! ```
//!
//! where `Σ q_k · q_q = Σ u_k · q_q − 128 · Σ q_q` (the second sum is the query's, computed once).
//! [`q8_scores_portable`] is the scalar twin the SIMD kernel equals bit for bit;
//! [`q8_scores_naive`] is the plain reference over the dequantized values.

use super::act::{ActBlock, ActQ8_0};
use crate::aligned::AlignedVec;

/// Values per scale.
pub const Q8_BLOCK: usize = 32;

/// What is added to a code to store it in a byte (`u = q + 128`).
const OFFSET: i32 = 128;

/// Bytes of codes for a row of `width` values: `width` rounded up to whole blocks.
pub const fn q8_row_codes(width: usize) -> usize {
    width.div_ceil(Q8_BLOCK) * Q8_BLOCK
}

/// `codes[i] = q_i + 128` and `scales[b]` for the values `x` (one row), by ggml's `Q8_0`
/// quantizer, block by block; a last short block is quantized over its own values and its codes
/// padded with zero codes (the values finite).
///
/// ```
/// use deepblocks_core::quant::q8_rows::{q8_dequantize_into, q8_quantize_into};
/// let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
/// let (mut codes, mut scales) = (vec![0u8; 32], vec![0.0f32; 1]);
/// q8_quantize_into(&mut codes, &mut scales, &x);
/// assert_eq!(codes[0], 128 - 127); // −16 is the block's largest magnitude: q = −127
/// let mut back = vec![0.0f32; 32];
/// q8_dequantize_into(&mut back, &codes, &scales, 0);
/// assert!(back.iter().zip(&x).all(|(b, x)| (b - x).abs() <= 16.0 / 254.0 + 1e-3));
/// ```
///
/// # Panics
/// If `codes` is not [`q8_row_codes`]`(x.len())` long or `scales` not one per 32 codes (lengths
/// are the caller's invariant).
pub fn q8_quantize_into(codes: &mut [u8], scales: &mut [f32], x: &[f32]) {
    assert!(
        codes.len() == q8_row_codes(x.len()) && scales.len() == codes.len() / Q8_BLOCK,
        "q8_quantize_into: {} values, {} codes, {} scales",
        x.len(),
        codes.len(),
        scales.len()
    );
    let mut padded = [0.0f32; Q8_BLOCK];
    for ((xb, cb), d) in x
        .chunks(Q8_BLOCK)
        .zip(codes.chunks_exact_mut(Q8_BLOCK))
        .zip(scales.iter_mut())
    {
        padded.fill(0.0);
        padded[..xb.len()].copy_from_slice(xb);
        let block = ActQ8_0::quantize(&padded);
        *d = block.d;
        for (c, &q) in cb.iter_mut().zip(&block.qs) {
            *c = (q as i32 + OFFSET) as u8;
        }
    }
}

/// The rows of `x[rows, width]` by [`q8_quantize_into`], one after the other: `codes[rows,
/// stride]` and `scales[rows, stride / 32]`, `stride` = [`q8_row_codes`]`(width)` (what a `Q8_0`
/// latent cache appends).
///
/// # Panics
/// If the lengths are not those of whole rows (`x` empty when `width` is 0).
pub fn q8_quantize_rows(codes: &mut [u8], scales: &mut [f32], x: &[f32], width: usize) {
    let stride = q8_row_codes(width);
    let rows = x.len().checked_div(width).unwrap_or(0);
    assert!(
        rows * width == x.len()
            && codes.len() == rows * stride
            && scales.len() * Q8_BLOCK == codes.len(),
        "q8_quantize_rows: {} values of width {width}, {} codes, {} scales",
        x.len(),
        codes.len(),
        scales.len()
    );
    for ((row, c), d) in x
        .chunks_exact(width.max(1))
        .zip(codes.chunks_exact_mut(stride.max(1)))
        .zip(scales.chunks_exact_mut((stride / Q8_BLOCK).max(1)))
    {
        q8_quantize_into(c, d, row);
    }
}

/// `out[i] = d · q` of codes `start + i` of rows whose codes are `codes` and scales `scales`
/// (code `v`'s scale is `scales[v / 32]`: rows of whole blocks are one run of blocks).
///
/// # Panics
/// If the values `start .. start + out.len()` pass the end of `codes` or their blocks the end
/// of `scales`.
pub fn q8_dequantize_into(out: &mut [f32], codes: &[u8], scales: &[f32], start: usize) {
    let codes = &codes[start..start + out.len()];
    // The rest of the first block, then whole blocks (a loop of 32 the compiler vectorizes),
    // then the start of the last.
    let head = ((Q8_BLOCK - start % Q8_BLOCK) % Q8_BLOCK).min(out.len());
    let (out_head, out_rest) = out.split_at_mut(head);
    let (codes_head, codes_rest) = codes.split_at(head);
    if head > 0 {
        dequantize_run(out_head, codes_head, scales[start / Q8_BLOCK]);
    }
    let first = start.div_ceil(Q8_BLOCK); // the block of out_rest[0]
    let whole = out_rest.len() / Q8_BLOCK * Q8_BLOCK;
    let (out_whole, out_tail) = out_rest.split_at_mut(whole);
    let scales_whole = &scales[first..first + whole / Q8_BLOCK];
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2; out_whole, codes_rest and scales_whole hold the same whole
        // blocks.
        unsafe { x86::dequantize_blocks(out_whole, codes_rest, scales_whole) };
    } else {
        dequantize_blocks(out_whole, codes_rest, scales_whole);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dequantize_blocks(out_whole, codes_rest, scales_whole);
    if !out_tail.is_empty() {
        dequantize_run(
            out_tail,
            &codes_rest[whole..],
            scales[first + whole / Q8_BLOCK],
        );
    }
}

/// Whole blocks: `out[i] = scales[i / 32] · (codes[i] − 128)`.
fn dequantize_blocks(out: &mut [f32], codes: &[u8], scales: &[f32]) {
    for ((o, c), &d) in out
        .chunks_exact_mut(Q8_BLOCK)
        .zip(codes.chunks_exact(Q8_BLOCK))
        .zip(scales)
    {
        dequantize_run(o, c, d);
    }
}

/// `out[i] = d · (codes[i] − 128)`.
#[inline(always)]
fn dequantize_run(out: &mut [f32], codes: &[u8], d: f32) {
    for (o, &u) in out.iter_mut().zip(codes) {
        *o = d * (u as i32 - OFFSET) as f32;
    }
}

/// Query rows quantized for [`q8_scores`]: `rp` rows (a multiple of 8; rows past the real ones
/// zero) of `dk` values, as 32-value `Q8_0` blocks (`dk` rounded up to whole blocks, the padding
/// zero).
#[derive(Debug, Clone)]
pub struct Q8Queries {
    dk: usize, // whole blocks: q8_row_codes(the queries' width)
    rp: usize,
    codes: AlignedVec<i8>, // [dk / 4, rp, 4]: four consecutive values of a row, rows side by side
    d: Vec<f32>,           // [dk / 32, rp]: the blocks' scales
    n: Vec<i32>,           // [dk / 32, rp]: −128 · Σ of the block's codes
}

impl Q8Queries {
    /// The rows of `qt[dk, rp]` (the queries transposed: row `r` is column `r`), quantized by
    /// ggml's `Q8_0` quantizer in blocks of 32 of each row.
    ///
    /// # Panics
    /// If `rp` is not a multiple of 8 or `qt` not `dk · rp` long.
    pub fn from_transposed(qt: &[f32], dk: usize, rp: usize) -> Q8Queries {
        assert!(
            rp.is_multiple_of(8) && Some(qt.len()) == dk.checked_mul(rp),
            "Q8Queries: qt has {} values for dk {dk} × rp {rp} (rp a multiple of 8)",
            qt.len()
        );
        let width = dk;
        let dk = q8_row_codes(width);
        let nb = dk / Q8_BLOCK;
        let mut q = Q8Queries {
            dk,
            rp,
            codes: AlignedVec::zeros(dk * rp),
            d: vec![0.0; nb * rp],
            n: vec![0; nb * rp],
        };
        let mut row = [0.0f32; Q8_BLOCK];
        for r in 0..rp {
            for b in 0..nb {
                for (i, x) in row.iter_mut().enumerate() {
                    let v = b * Q8_BLOCK + i;
                    *x = if v < width { qt[v * rp + r] } else { 0.0 };
                }
                let block = ActQ8_0::quantize(&row);
                q.d[b * rp + r] = block.d;
                q.n[b * rp + r] = -OFFSET * block.qs.iter().map(|&c| c as i32).sum::<i32>();
                for (i, &c) in block.qs.iter().enumerate() {
                    let v = b * Q8_BLOCK + i;
                    q.codes[((v / 4) * rp + r) * 4 + v % 4] = c;
                }
            }
        }
        q
    }

    /// `(dk, rp)`: values per row (whole blocks), rows.
    pub fn dims(&self) -> (usize, usize) {
        (self.dk, self.rp)
    }

    /// Row `r`'s dequantized values (`d · q`), for tests.
    pub fn row(&self, r: usize) -> Vec<f32> {
        (0..self.dk)
            .map(|v| {
                let c = self.codes[((v / 4) * self.rp + r) * 4 + v % 4];
                self.d[(v / Q8_BLOCK) * self.rp + r] * c as f32
            })
            .collect()
    }
}

/// Checks a scores call's lengths.
fn check(st: &[f32], codes: &[u8], scales: &[f32], q: &Q8Queries, w: usize) {
    let (dk, rp) = (q.dk, q.rp);
    crate::assert_lengths(
        "q8_scores",
        format_args!("w {w} keys of dk {dk}, rp {rp} rows"),
        &[
            ("st", st.len(), w.checked_mul(rp)),
            ("codes", codes.len(), w.checked_mul(dk)),
            ("scales", scales.len(), w.checked_mul(dk / Q8_BLOCK)),
        ],
    );
}

/// `st[j, r] = S[j, r]` (module docs) for the `w` keys whose codes are `codes[w, dk]` and scales
/// `scales[w, dk / 32]` against the rows of `q` (`dk` in whole blocks, [`Q8Queries::dims`]):
/// with `vpdpbusd` where the CPU has VNNI
/// ([`crate::vnni`]), [`q8_scores_portable`] otherwise, equal to it bit for bit.
///
/// # Panics
/// If `st` is not `w · rp`, `codes` not `w · dk` or `scales` not `w · dk / 32` long.
pub fn q8_scores(st: &mut [f32], codes: &[u8], scales: &[f32], q: &Q8Queries, w: usize) {
    check(st, codes, scales, q, w);
    #[cfg(target_arch = "x86_64")]
    if crate::vnni() {
        // SAFETY: the CPU has VNNI in one of its encodings; `check` bounded every index.
        unsafe { x86::scores(st, codes, scales, q, w) };
        return;
    }
    q8_scores_portable(st, codes, scales, q, w);
}

/// The scalar twin of [`q8_scores`]: the same integer sums, then per block
/// `f ← (Σ as f32) · (d_q · d_k) + f` as one fused multiply-add, in block order.
///
/// # Panics
/// As [`q8_scores`].
pub fn q8_scores_portable(st: &mut [f32], codes: &[u8], scales: &[f32], q: &Q8Queries, w: usize) {
    check(st, codes, scales, q, w);
    let (dk, rp) = (q.dk, q.rp);
    let nb = dk / Q8_BLOCK;
    for (j, out) in st.chunks_exact_mut(rp).enumerate() {
        let key = &codes[j * dk..(j + 1) * dk];
        for (r, o) in out.iter_mut().enumerate() {
            let mut f = 0.0f32;
            for b in 0..nb {
                let mut s = q.n[b * rp + r];
                for (v, &u) in key.iter().enumerate().skip(b * Q8_BLOCK).take(Q8_BLOCK) {
                    s += u as i32 * q.codes[((v / 4) * rp + r) * 4 + v % 4] as i32;
                }
                f = (s as f32).mul_add(q.d[b * rp + r] * scales[j * nb + b], f);
            }
            *o = f;
        }
    }
}

/// The naive twin of [`q8_scores`]: keys and queries dequantized, then `S[j, r] = Σ_i k_i q_i`
/// summed in f64 in `i` order.
///
/// # Panics
/// As [`q8_scores`].
pub fn q8_scores_naive(st: &mut [f32], codes: &[u8], scales: &[f32], q: &Q8Queries, w: usize) {
    check(st, codes, scales, q, w);
    let (dk, rp) = (q.dk, q.rp);
    let rows: Vec<Vec<f32>> = (0..rp).map(|r| q.row(r)).collect();
    let mut key = vec![0.0f32; dk];
    for (j, out) in st.chunks_exact_mut(rp).enumerate() {
        q8_dequantize_into(&mut key, codes, scales, j * dk);
        for (o, row) in out.iter_mut().zip(&rows) {
            *o = key
                .iter()
                .zip(row)
                .map(|(&k, &x)| k as f64 * x as f64)
                .sum::<f64>() as f32;
        }
    }
}

/// Checks a mix call's lengths.
#[allow(clippy::too_many_arguments)]
fn check_mix(
    o: &[f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    assert!(
        stride.is_multiple_of(Q8_BLOCK) && dv <= stride,
        "q8_mix: rows of {stride} codes (whole blocks) hold no {dv} values"
    );
    crate::assert_lengths(
        "q8_mix",
        format_args!("w {w} rows of {stride} codes, dv {dv}, rp {rp}"),
        &[
            ("o", o.len(), rp.checked_mul(dv)),
            ("p", p.len(), w.checked_mul(rp)),
            ("codes", codes.len(), w.checked_mul(stride)),
            ("scales", scales.len(), w.checked_mul(stride / Q8_BLOCK)),
        ],
    );
}

/// `o[r, c] += Σ_j p[j, r] · v[j, c]` for `r < rp`, `c < dv`: the weighted sum of the first `dv`
/// values of `w` rows (codes `[w, stride]`, scales `[w, stride / 32]`, `stride` whole blocks),
/// read from the codes as they lie — the mix of attention over a `Q8_0` latent cache. With
/// AVX-512F or AVX2 registers where [`crate::isa`] allows, [`q8_mix_portable`] otherwise, equal to
/// it bit for bit: every `o[r, c]` gains `p[j, r] · v[j, c]` by one fused multiply-add per row `j`,
/// in order, with `v = d · (u − 128)`.
///
/// # Panics
/// If the lengths do not match (`o` `rp · dv`, `p` `w · rp`, `codes` `w · stride`, `scales`
/// `w · stride / 32`) or `dv > stride`.
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
pub fn q8_mix(
    o: &mut [f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, codes, scales, stride, w, dv, rp);
    #[cfg(target_arch = "x86_64")]
    if crate::avx512() {
        // SAFETY: the CPU has AVX-512F; the lengths were checked.
        unsafe { x86::mix_zmm(o, p, codes, scales, stride, w, dv, rp) };
        return;
    }
    q8_mix_avx2(o, p, codes, scales, stride, w, dv, rp);
}

/// [`q8_mix`] on AVX2 registers whatever [`crate::avx512`] says ([`q8_mix_portable`] on CPUs
/// without AVX2), for tests that compare the implementations.
///
/// # Panics
/// As [`q8_mix`].
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn q8_mix_avx2(
    o: &mut [f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, codes, scales, stride, w, dv, rp);
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA; the lengths were checked.
        unsafe { x86::mix_ymm(o, p, codes, scales, stride, w, dv, rp) };
        return;
    }
    q8_mix_portable(o, p, codes, scales, stride, w, dv, rp);
}

/// The scalar twin of [`q8_mix`].
///
/// # Panics
/// As [`q8_mix`].
#[allow(clippy::too_many_arguments)]
pub fn q8_mix_portable(
    o: &mut [f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, codes, scales, stride, w, dv, rp);
    mix_columns(o, p, codes, scales, stride, w, dv, rp, 0);
}

/// [`q8_mix_portable`]'s steps for the columns `first .. dv` only (the SIMD kernels' tails).
#[allow(clippy::too_many_arguments)]
fn mix_columns(
    o: &mut [f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
    first: usize,
) {
    if first >= dv {
        return;
    }
    let nb = stride / Q8_BLOCK;
    for j in 0..w {
        let row = &codes[j * stride + first..j * stride + dv];
        for r in 0..rp {
            let pj = p[j * rp + r];
            let out = &mut o[r * dv + first..(r + 1) * dv];
            for (c, (y, &u)) in (first..).zip(out.iter_mut().zip(row)) {
                let v = scales[j * nb + c / Q8_BLOCK] * (u as i32 - OFFSET) as f32;
                *y = pj.mul_add(v, *y);
            }
        }
    }
}

/// The naive twin of [`q8_mix`]: the rows dequantized, each `o[r, c]` summed in f64.
///
/// # Panics
/// As [`q8_mix`].
#[allow(clippy::too_many_arguments)]
pub fn q8_mix_naive(
    o: &mut [f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, codes, scales, stride, w, dv, rp);
    let mut v = vec![0.0f32; w * dv];
    for (j, row) in v.chunks_exact_mut(dv.max(1)).enumerate().take(w) {
        q8_dequantize_into(row, codes, scales, j * stride);
    }
    for r in 0..rp {
        for c in 0..dv {
            let sum: f64 = (0..w)
                .map(|j| p[j * rp + r] as f64 * v[j * dv + c] as f64)
                .sum();
            o[r * dv + c] = (o[r * dv + c] as f64 + sum) as f32;
        }
    }
}

/// The most keys one [`q8_mix_quantized`] call takes: its integer sums (`Σ_j u · q`, each term at
/// most 255 · 127 in size) stay inside `i32` up to 66,000 keys.
pub const QUANTIZED_MIX_KEYS: usize = 65_536;

/// The probabilities of a mix over `Q8_0` rows quantized for integer products
/// ([`q8_mix_quantized`]). A row's value `v[j, c] = d[j, b] · q[j, c]` (`b = c / 32`) carries the
/// scale of its block, so the weight that multiplies the codes `q[j, c]` is
/// `x[j, r, b] = p[j, r] · d[j, b]`; per output row `r` and block `b` these are quantized over the
/// keys to 8 unsigned bits,
///
/// ```text
/// X = max_j x[j, r, b],   step[b, r] = X / 255,   u[j, r, b] = round(x[j, r, b] · (255 / X))
/// ```
///
/// (all zero where `X = 0`), so that the mix of that block is `step · Σ_j u · q`: one integer sum.
/// The buffers are kept between calls (no allocation once they are large enough).
#[derive(Debug, Clone, Default)]
pub struct Q8Weights {
    w: usize,
    rp: usize,
    nb: usize,          // 32-value blocks of the columns mixed in integers
    u: AlignedVec<u8>, // [nb, w.div_ceil(4), rp, 4]: four consecutive keys' weights of a row side by side
    step: Vec<f32>,    // [nb, rp]
    x: AlignedVec<f32>, // [w.div_ceil(4) · 4, 16]: one block's weights of sixteen rows (SIMD)
}

impl Q8Weights {
    /// An empty buffer.
    pub fn new() -> Q8Weights {
        Q8Weights::default()
    }

    /// Sizes the buffers for `w` keys, `rp` rows and `nb` blocks (the quantizers write every
    /// value, the zero weights of keys past `w` in the last group of four included).
    fn size(&mut self, w: usize, rp: usize, nb: usize) {
        (self.w, self.rp, self.nb) = (w, rp, nb);
        self.u.resize_zeroed(nb * w.div_ceil(4) * rp * 4);
        self.step.resize(nb * rp, 0.0);
    }

    /// `(step, 255 / X)` of one row and block from its largest weight `X` (zeros where `X = 0`).
    #[inline(always)]
    fn scale(x_max: f32) -> (f32, f32) {
        if x_max > 0.0 {
            (x_max / 255.0, 255.0 / x_max)
        } else {
            (0.0, 0.0)
        }
    }

    /// The weights of `p[w, rp]` against the scales `scales[w, stride / 32]` for the first `nb`
    /// blocks, by the scalar steps the SIMD quantizer equals bit for bit.
    fn quantize_portable(
        &mut self,
        p: &[f32],
        scales: &[f32],
        stride: usize,
        w: usize,
        nb: usize,
        rp: usize,
    ) {
        self.size(w, rp, nb);
        let (nbs, g4) = (stride / Q8_BLOCK, w.div_ceil(4));
        for b in 0..nb {
            for r in 0..rp {
                let x = |j: usize| p[j * rp + r] * scales[j * nbs + b];
                let x_max = (0..w).map(x).fold(0.0f32, f32::max);
                let (step, inv) = Q8Weights::scale(x_max);
                self.step[b * rp + r] = step;
                for j in 0..4 * g4 {
                    // Saturated to a byte as `vpackus` does (a NaN's conversion is 0).
                    let u = if j < w {
                        ((x(j) * inv).round_ties_even() as i32).clamp(0, 255)
                    } else {
                        0
                    };
                    self.u[((b * g4 + j / 4) * rp + r) * 4 + j % 4] = u as u8;
                }
            }
        }
    }

    /// [`Q8Weights::quantize_portable`] on 512-bit registers where [`integer_mix`] holds.
    fn quantize(
        &mut self,
        p: &[f32],
        scales: &[f32],
        stride: usize,
        w: usize,
        nb: usize,
        rp: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        if integer_mix() {
            self.size(w, rp, nb);
            // SAFETY: the CPU has AVX-512F and BW; the buffers were sized for these dimensions
            // and the caller checked `p` (`w · rp`) and `scales` (`w · stride / 32`, `nb` blocks
            // of them within a row).
            unsafe { x86::quantize_weights(self, p, scales, stride) };
            return;
        }
        self.quantize_portable(p, scales, stride, w, nb, rp);
    }
}

/// Whether [`q8_mix_quantized`] runs on `vpdpbusd` over 512-bit registers: the CPU has AVX-512
/// VNNI, VL and BW, and [`crate::avx512`] allows the registers. Elsewhere it is its scalar twin,
/// slower than [`q8_mix`]; callers that want speed take [`q8_mix`] there.
pub fn integer_mix() -> bool {
    crate::avx512() && crate::isa::vnni_evex() && crate::isa::avx512bw()
}

/// [`q8_mix`] with the probabilities quantized to 8 bits ([`Q8Weights`]) so that the whole
/// 32-value blocks of the first `dv` columns mix as integer sums, on VNNI where
/// [`integer_mix`] holds:
///
/// ```text
/// o[r, c] += step[b, r] · Σ_j u[j, r, b] · q[j, c]      b = c / 32, q = u_code − 128
/// ```
///
/// one fused multiply-add per value after the exact sum (the SIMD kernel takes rows in eights:
/// for other `rp` the scalar twin runs). The columns past the last whole block mix as
/// [`q8_mix_portable`] mixes them. Against the exact mix ([`q8_mix_naive`]) each weight
/// is off by at most half a step, so `o[r, c]` by at most `step[b, r] / 2 · Σ_j |q[j, c]|` (plus
/// f32 rounding). The probabilities are the caller's: finite and non-negative (a softmax's).
/// `weights` is scratch, kept between calls. `ahead` is memory to bring into the L2 cache while
/// the mix works (the next block's codes; empty for none, it changes no value), as
/// [`bf16_mix`](crate::bf16_rows::bf16_mix) takes it.
///
/// # Panics
/// As [`q8_mix`], and if `w` is above [`QUANTIZED_MIX_KEYS`].
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
pub fn q8_mix_quantized(
    o: &mut [f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
    weights: &mut Q8Weights,
    ahead: &[u8],
) {
    check_quantized_mix(o, p, codes, scales, stride, w, dv, rp);
    let nb = dv / Q8_BLOCK;
    weights.quantize(p, scales, stride, w, nb, rp);
    #[cfg(target_arch = "x86_64")]
    if integer_mix() && rp.is_multiple_of(8) {
        // SAFETY: the CPU has AVX-512F, BW and VNNI; the lengths were checked, `weights`
        // quantized for these dimensions, and the rows come in whole eights.
        unsafe { x86::mix_quantized(o, weights, codes, stride, dv, ahead) };
        mix_columns(o, p, codes, scales, stride, w, dv, rp, nb * Q8_BLOCK);
        return;
    }
    mix_quantized_portable(o, weights, codes, stride, dv);
    mix_columns(o, p, codes, scales, stride, w, dv, rp, nb * Q8_BLOCK);
}

/// The scalar twin of [`q8_mix_quantized`], equal to it bit for bit on every CPU.
///
/// # Panics
/// As [`q8_mix_quantized`].
#[allow(clippy::too_many_arguments)]
pub fn q8_mix_quantized_portable(
    o: &mut [f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
    weights: &mut Q8Weights,
) {
    check_quantized_mix(o, p, codes, scales, stride, w, dv, rp);
    let nb = dv / Q8_BLOCK;
    weights.quantize_portable(p, scales, stride, w, nb, rp);
    mix_quantized_portable(o, weights, codes, stride, dv);
    mix_columns(o, p, codes, scales, stride, w, dv, rp, nb * Q8_BLOCK);
}

/// Checks a quantized mix call.
#[allow(clippy::too_many_arguments)]
fn check_quantized_mix(
    o: &[f32],
    p: &[f32],
    codes: &[u8],
    scales: &[f32],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, codes, scales, stride, w, dv, rp);
    assert!(
        w <= QUANTIZED_MIX_KEYS,
        "q8_mix_quantized: {w} keys, more than {QUANTIZED_MIX_KEYS} in one call"
    );
}

/// The integer sums of the whole blocks: `o[r, c] ← step · Σ_j u · q + o[r, c]` (one fused
/// multiply-add), `c < 32 · nb`.
fn mix_quantized_portable(
    o: &mut [f32],
    weights: &Q8Weights,
    codes: &[u8],
    stride: usize,
    dv: usize,
) {
    let Q8Weights { w, rp, nb, .. } = *weights;
    let g4 = w.div_ceil(4);
    for b in 0..nb {
        for r in 0..rp {
            let step = weights.step[b * rp + r];
            for c in b * Q8_BLOCK..(b + 1) * Q8_BLOCK {
                let sum: i32 = (0..w)
                    .map(|j| {
                        let u = weights.u[((b * g4 + j / 4) * rp + r) * 4 + j % 4] as i32;
                        u * (codes[j * stride + c] as i32 - OFFSET)
                    })
                    .sum();
                let y = &mut o[r * dv + c];
                *y = step.mul_add(sum as f32, *y);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::panel::avx2::{dp_vnni, dp_vnni512};

    use super::{Q8_BLOCK, Q8Queries, Q8Weights};
    use crate::ahead::Ahead;

    /// [`super::q8_scores`] on VNNI: sixteen query rows a 512-bit register where the CPU has
    /// AVX-512 VNNI (and [`crate::avx512`] allows it) and the rows come in sixteens, eight a
    /// 256-bit register otherwise; four keys at a time, each key's sums in two halves (even and
    /// odd groups of four columns) so that eight `vpdpbusd` chains are in flight.
    ///
    /// # Safety
    /// The CPU has AVX-VNNI or AVX-512 VNNI with VL (as [`crate::vnni`] checks); the lengths
    /// were checked.
    pub(super) unsafe fn scores(
        st: &mut [f32],
        codes: &[u8],
        scales: &[f32],
        q: &Q8Queries,
        w: usize,
    ) {
        // AVX-512F (allowed by the environment) and AVX-512 VNNI.
        let wide = crate::avx512() && crate::isa::vnni_evex() && q.rp.is_multiple_of(16);
        let vex = crate::isa::vnni_vex();
        let (dk, rp) = (q.dk, q.rp);
        let nb = dk / Q8_BLOCK;
        let lanes = if wide { 16 } else { 8 };
        let (st, codes, scales) = (st.as_mut_ptr(), codes.as_ptr(), scales.as_ptr());
        for rg in 0..rp / lanes {
            let mut j = 0;
            while j < w {
                let keys = (w - j).min(4);
                // SAFETY: keys j .. j + keys are within the `w` keys of `codes` (`dk` apart),
                // `scales` (`nb` apart) and `st` (`rp` apart); the caller has the instructions.
                unsafe {
                    let (c, s, o) = (codes.add(j * dk), scales.add(j * nb), st.add(j * rp));
                    macro_rules! go {
                        ($f:ident) => {
                            match keys {
                                4 => $f::<4>(o, c, s, q, rg),
                                3 => $f::<3>(o, c, s, q, rg),
                                2 => $f::<2>(o, c, s, q, rg),
                                _ => $f::<1>(o, c, s, q, rg),
                            }
                        };
                    }
                    if wide {
                        go!(keys_zmm)
                    } else if vex {
                        go!(keys_vnni)
                    } else {
                        go!(keys_vnni512)
                    }
                }
                j += keys;
            }
        }
    }

    macro_rules! keys_kernel {
        ($name:ident, $features:literal, $dp:ident) => {
            /// `K` keys (codes `dk` apart from `codes`, scales `dk / 32` apart from `scales`)
            /// against query rows `8·rg .. 8·rg + 8`, into `st` (rows `rp` apart).
            ///
            /// # Safety
            /// As [`scores`], for these keys and rows.
            #[target_feature(enable = $features)]
            unsafe fn $name<const K: usize>(
                st: *mut f32,
                codes: *const u8,
                scales: *const f32,
                q: &Q8Queries,
                rg: usize,
            ) {
                let (dk, rp) = (q.dk, q.rp);
                let nb = dk / Q8_BLOCK;
                let (qc, qd, qn) = (q.codes.as_ptr(), q.d.as_ptr(), q.n.as_ptr());
                let mut f = [_mm256_setzero_ps(); K];
                // SAFETY: every access below is in bounds: b < nb, v < dk, k < K, rows 8·rg .. 8·rg + 8 < rp.
                unsafe {
                    for b in 0..nb {
                        let mut even = [_mm256_loadu_si256(qn.add(b * rp + 8 * rg).cast()); K];
                        let mut odd = [_mm256_setzero_si256(); K];
                        for g in (0..Q8_BLOCK / 4).step_by(2) {
                            for (half, sums) in [(0, &mut even), (1, &mut odd)] {
                                let v = b * Q8_BLOCK + 4 * (g + half);
                                let x =
                                    _mm256_loadu_si256(qc.add(((v / 4) * rp + 8 * rg) * 4).cast());
                                for (k, s) in sums.iter_mut().enumerate() {
                                    let u = codes.add(k * dk + v).cast::<i32>().read_unaligned();
                                    *s = $dp(*s, _mm256_set1_epi32(u), x);
                                }
                            }
                        }
                        let d = _mm256_loadu_ps(qd.add(b * rp + 8 * rg));
                        for k in 0..K {
                            let sum = _mm256_add_epi32(even[k], odd[k]);
                            let e = _mm256_mul_ps(d, _mm256_set1_ps(*scales.add(k * nb + b)));
                            f[k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), e, f[k]);
                        }
                    }
                    for (k, f) in f.iter().enumerate() {
                        _mm256_storeu_ps(st.add(k * rp + 8 * rg), *f);
                    }
                }
            }
        };
    }

    /// [`keys_vnni`] on 512-bit registers: query rows `16·rg .. 16·rg + 16`.
    ///
    /// # Safety
    /// As [`scores`], for these keys and rows; the CPU has AVX-512F and AVX-512 VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn keys_zmm<const K: usize>(
        st: *mut f32,
        codes: *const u8,
        scales: *const f32,
        q: &Q8Queries,
        rg: usize,
    ) {
        let (dk, rp) = (q.dk, q.rp);
        let nb = dk / Q8_BLOCK;
        let (qc, qd, qn) = (q.codes.as_ptr(), q.d.as_ptr(), q.n.as_ptr());
        let mut f = [_mm512_setzero_ps(); K];
        // SAFETY: every access below is in bounds: b < nb, v < dk, k < K, rows 16·rg .. 16·rg + 16 < rp.
        unsafe {
            for b in 0..nb {
                let mut even = [_mm512_loadu_si512(qn.add(b * rp + 16 * rg).cast()); K];
                let mut odd = [_mm512_setzero_si512(); K];
                for g in (0..Q8_BLOCK / 4).step_by(2) {
                    for (half, sums) in [(0, &mut even), (1, &mut odd)] {
                        let v = b * Q8_BLOCK + 4 * (g + half);
                        let x = _mm512_loadu_si512(qc.add(((v / 4) * rp + 16 * rg) * 4).cast());
                        for (k, s) in sums.iter_mut().enumerate() {
                            let u = codes.add(k * dk + v).cast::<i32>().read_unaligned();
                            *s = _mm512_dpbusd_epi32(*s, _mm512_set1_epi32(u), x);
                        }
                    }
                }
                let d = _mm512_loadu_ps(qd.add(b * rp + 16 * rg));
                for k in 0..K {
                    let sum = _mm512_add_epi32(even[k], odd[k]);
                    let e = _mm512_mul_ps(d, _mm512_set1_ps(*scales.add(k * nb + b)));
                    f[k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), e, f[k]);
                }
            }
            for (k, f) in f.iter().enumerate() {
                _mm512_storeu_ps(st.add(k * rp + 16 * rg), *f);
            }
        }
    }

    /// [`super::dequantize_blocks`] in AVX2: eight codes widened per step.
    ///
    /// # Safety
    /// The CPU has AVX2; `out` is whole blocks, `codes` at least as long, `scales` one per block.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dequantize_blocks(out: &mut [f32], codes: &[u8], scales: &[f32]) {
        let offset = _mm256_set1_epi32(128);
        for ((o, c), &d) in out
            .chunks_exact_mut(Q8_BLOCK)
            .zip(codes.chunks_exact(Q8_BLOCK))
            .zip(scales)
        {
            let d = _mm256_set1_ps(d);
            for i in (0..Q8_BLOCK).step_by(8) {
                // SAFETY: i + 8 ≤ 32 = the lengths of `o` and `c`.
                unsafe {
                    let u = _mm_loadl_epi64(c.as_ptr().add(i).cast());
                    let q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(u), offset);
                    let v = _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
                    _mm256_storeu_ps(o.as_mut_ptr().add(i), v);
                }
            }
        }
    }

    /// [`super::q8_mix`] on AVX-512F: up to eight output rows at a time over a whole block of 32
    /// values (two registers: each broadcast probability serves both), then the columns past the
    /// last whole block sixteen a register (the last under a mask), up to sixteen rows at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the lengths were checked.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn mix_zmm(
        o: &mut [f32],
        p: &[f32],
        codes: &[u8],
        scales: &[f32],
        stride: usize,
        w: usize,
        dv: usize,
        rp: usize,
    ) {
        let whole = dv / Q8_BLOCK * Q8_BLOCK;
        let mut r0 = 0;
        while r0 < rp {
            let rows = (rp - r0).min(8);
            macro_rules! go {
                ($($r:literal)*) => {
                    match rows {
                        $($r => mix_blocks_zmm::<$r>(o, p, codes, scales, stride, w, whole, dv, rp, r0),)*
                        _ => unreachable!("1 to 8 rows"),
                    }
                };
            }
            // SAFETY: rows r0 .. r0 + rows < rp, columns below whole ≤ dv; the caller checked
            // the rest.
            unsafe { go!(1 2 3 4 5 6 7 8) };
            r0 += rows;
        }
        if whole == dv {
            return;
        }
        let mut r0 = 0;
        while r0 < rp {
            let rows = (rp - r0).min(16);
            macro_rules! go {
                ($($r:literal)*) => {
                    match rows {
                        $($r => mix_rows_zmm::<$r>(o, p, codes, scales, stride, w, whole, dv, rp, r0),)*
                        _ => unreachable!("1 to 16 rows"),
                    }
                };
            }
            // SAFETY: rows r0 .. r0 + rows < rp; the caller checked the rest.
            unsafe { go!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16) };
            r0 += rows;
        }
    }

    /// Output rows `r0 .. r0 + R` of [`mix_zmm`] over the columns `0 .. whole` (whole blocks).
    ///
    /// # Safety
    /// As [`mix_zmm`]; `r0 + R ≤ rp`, `whole ≤ dv` a multiple of 32.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn mix_blocks_zmm<const R: usize>(
        o: &mut [f32],
        p: &[f32],
        codes: &[u8],
        scales: &[f32],
        stride: usize,
        w: usize,
        whole: usize,
        dv: usize,
        rp: usize,
        r0: usize,
    ) {
        let nb = stride / Q8_BLOCK;
        let (o, p, codes, scales) = (o.as_mut_ptr(), p.as_ptr(), codes.as_ptr(), scales.as_ptr());
        for c in (0..whole).step_by(Q8_BLOCK) {
            // SAFETY: every access below is in bounds: rows r0 + i < rp of `o` and `p`; columns
            // c .. c + 32 ≤ whole ≤ dv of `o`; 32 codes of row j < w from j·stride + c, inside
            // the row (c + 32 ≤ dv ≤ stride); the scale of their block.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); 2]; R];
                for (i, a) in acc.iter_mut().enumerate() {
                    for (h, x) in a.iter_mut().enumerate() {
                        *x = _mm512_loadu_ps(o.add((r0 + i) * dv + c + 16 * h));
                    }
                }
                for j in 0..w {
                    // v = d·(u − 128) as d·u − 128·d in one rounding: the same value (128·d is
                    // exact), one operation fewer per register.
                    let scale = *scales.add(j * nb + c / Q8_BLOCK);
                    let (d, shift) = (_mm512_set1_ps(scale), _mm512_set1_ps(-128.0 * scale));
                    let row = codes.add(j * stride + c);
                    let v: [__m512; 2] = std::array::from_fn(|h| {
                        let u = _mm512_cvtepu8_epi32(_mm_loadu_si128(row.add(16 * h).cast()));
                        _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(u), shift)
                    });
                    let pj = p.add(j * rp + r0);
                    for (i, a) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*pj.add(i));
                        a[0] = _mm512_fmadd_ps(x, v[0], a[0]);
                        a[1] = _mm512_fmadd_ps(x, v[1], a[1]);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    for (h, x) in a.iter().enumerate() {
                        _mm512_storeu_ps(o.add((r0 + i) * dv + c + 16 * h), *x);
                    }
                }
            }
        }
    }

    /// Output rows `r0 .. r0 + R` of [`mix_zmm`] over the columns `first .. dv`, sixteen a
    /// register.
    ///
    /// # Safety
    /// As [`mix_zmm`]; `r0 + R ≤ rp`, `first` a multiple of 16.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn mix_rows_zmm<const R: usize>(
        o: &mut [f32],
        p: &[f32],
        codes: &[u8],
        scales: &[f32],
        stride: usize,
        w: usize,
        first: usize,
        dv: usize,
        rp: usize,
        r0: usize,
    ) {
        let nb = stride / Q8_BLOCK;
        let (o, p, codes, scales) = (o.as_mut_ptr(), p.as_ptr(), codes.as_ptr(), scales.as_ptr());
        let offset = _mm512_set1_epi32(128);
        let mut c = first;
        while c < dv {
            let mask: u16 = if dv - c >= 16 {
                u16::MAX
            } else {
                (1u16 << (dv - c)) - 1
            };
            // SAFETY: every access below is in bounds: rows r0 + i < rp of `o` and `p`; columns c .. c + 16
            // of `o` under the mask (c + 16 > dv only for the last, masked); 16 codes of row
            // j < w from j·stride + c, inside the row since c is a multiple of 16 below
            // dv ≤ stride, a multiple of 32; the scale of their block.
            unsafe {
                let mut acc = [_mm512_setzero_ps(); R];
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_maskz_loadu_ps(mask, o.add((r0 + i) * dv + c));
                }
                for j in 0..w {
                    let u = _mm_loadu_si128(codes.add(j * stride + c).cast());
                    let q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(u), offset);
                    let d = _mm512_set1_ps(*scales.add(j * nb + c / Q8_BLOCK));
                    let v = _mm512_mul_ps(d, _mm512_cvtepi32_ps(q));
                    let pj = p.add(j * rp + r0);
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(*pj.add(i)), v, *a);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(o.add((r0 + i) * dv + c), mask, *a);
                }
            }
            c += 16;
        }
    }

    /// [`super::q8_mix`] on AVX2: eight values of a row a register, up to eight output rows at a
    /// time (the last `dv mod 8` values by the scalar twin's steps).
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; the lengths were checked.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mix_ymm(
        o: &mut [f32],
        p: &[f32],
        codes: &[u8],
        scales: &[f32],
        stride: usize,
        w: usize,
        dv: usize,
        rp: usize,
    ) {
        let mut r0 = 0;
        while r0 < rp {
            let rows = (rp - r0).min(8);
            macro_rules! go {
                ($($r:literal)*) => {
                    match rows {
                        $($r => mix_rows_ymm::<$r>(o, p, codes, scales, stride, w, dv, rp, r0),)*
                        _ => unreachable!("1 to 8 rows"),
                    }
                };
            }
            // SAFETY: rows r0 .. r0 + rows < rp; the caller checked the rest.
            unsafe { go!(1 2 3 4 5 6 7 8) };
            r0 += rows;
        }
        // The columns past the last whole eight, as the portable twin computes them.
        super::mix_columns(o, p, codes, scales, stride, w, dv, rp, dv / 8 * 8);
    }

    /// Output rows `r0 .. r0 + R` of [`mix_ymm`], whole eights of columns.
    ///
    /// # Safety
    /// As [`mix_ymm`]; `r0 + R ≤ rp`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mix_rows_ymm<const R: usize>(
        o: &mut [f32],
        p: &[f32],
        codes: &[u8],
        scales: &[f32],
        stride: usize,
        w: usize,
        dv: usize,
        rp: usize,
        r0: usize,
    ) {
        let nb = stride / Q8_BLOCK;
        let (o, p, codes, scales) = (o.as_mut_ptr(), p.as_ptr(), codes.as_ptr(), scales.as_ptr());
        let offset = _mm256_set1_epi32(128);
        for c in (0..dv / 8 * 8).step_by(8) {
            // SAFETY: every access below is in bounds: rows r0 + i < rp of `o` and `p`, columns c .. c + 8
            // ≤ dv, rows j < w of `codes` (8 bytes from j·stride + c, c + 8 ≤ dv ≤ stride) and
            // their scales.
            unsafe {
                let mut acc = [_mm256_setzero_ps(); R];
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_loadu_ps(o.add((r0 + i) * dv + c));
                }
                for j in 0..w {
                    let u = _mm_loadl_epi64(codes.add(j * stride + c).cast());
                    let q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(u), offset);
                    let d = _mm256_set1_ps(*scales.add(j * nb + c / Q8_BLOCK));
                    let v = _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
                    let pj = p.add(j * rp + r0);
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(_mm256_set1_ps(*pj.add(i)), v, *a);
                    }
                }
                for (i, a) in acc.iter().enumerate() {
                    _mm256_storeu_ps(o.add((r0 + i) * dv + c), *a);
                }
            }
        }
    }

    /// [`super::Q8Weights::quantize_portable`] on 512-bit registers: sixteen rows a register
    /// (the last eight under a mask), four blocks at a time ([`quantize_blocks`]).
    ///
    /// # Safety
    /// The CPU has AVX-512F and BW; `weights` was sized for `w` keys, `rp` rows and `nb` blocks;
    /// `p` is `w · rp` long, `scales` `w · stride / 32` with `nb ≤ stride / 32`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_weights(
        weights: &mut Q8Weights,
        p: &[f32],
        scales: &[f32],
        stride: usize,
    ) {
        let Q8Weights { w, rp, nb, .. } = *weights;
        weights.x.resize_zeroed(4 * w.div_ceil(4) * 16 * 4);
        for r0 in (0..rp).step_by(16) {
            let mut b = 0;
            while b < nb {
                // SAFETY: as this function's; blocks b .. b + 4 (or b) below nb.
                unsafe {
                    if nb - b >= 4 {
                        quantize_blocks::<4>(weights, p, scales, stride, b, r0);
                        b += 4;
                    } else {
                        quantize_blocks::<1>(weights, p, scales, stride, b, r0);
                        b += 1;
                    }
                }
            }
        }
    }

    /// Blocks `b0 .. b0 + B` of rows `r0 .. r0 + 16` of [`quantize_weights`]: the weights
    /// `x = p · d` and their largest value per block first (each key's probabilities loaded once
    /// for the `B` blocks), then four keys' weights rounded, packed to bytes (`vpackusdw`,
    /// `vpackuswb`, both saturating as the twin clamps) and turned so that each row's 32-bit
    /// lane holds its four.
    ///
    /// # Safety
    /// As [`quantize_weights`]; `b0 + B ≤ nb`, `r0 < rp`, `weights.x` holds `4 · ⌈w / 4⌉ · B`
    /// registers.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn quantize_blocks<const B: usize>(
        weights: &mut Q8Weights,
        p: &[f32],
        scales: &[f32],
        stride: usize,
        b0: usize,
        r0: usize,
    ) {
        let Q8Weights { w, rp, .. } = *weights;
        let (nbs, g4) = (stride / Q8_BLOCK, w.div_ceil(4));
        let (u, step, x) = (
            weights.u.as_mut_ptr(),
            weights.step.as_mut_ptr(),
            weights.x.as_mut_ptr(),
        );
        let (p, scales) = (p.as_ptr(), scales.as_ptr());
        let (zero, top) = (_mm512_setzero_ps(), _mm512_set1_ps(255.0));
        // Within a lane: [key k: rows 0..4] → [row i: keys 0..4].
        let turn = _mm512_broadcast_i32x4(_mm_setr_epi8(
            0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
        ));
        let mask: u16 = if rp - r0 >= 16 {
            u16::MAX
        } else {
            (1u16 << (rp - r0)) - 1
        };
        // x[(j · B + i) · 16 ..]: key j's weights of block b0 + i.
        // SAFETY: rows r0 .. r0 + 16 of `p` under the mask (r0 + i < rp), keys j < w, blocks
        // below b0 + B ≤ nb ≤ nbs; `x` holds 4·g4·B registers (those past w zero), `step`
        // nb · rp values and `u` nb · g4 · rp lanes, the last rows under the mask.
        unsafe {
            let mut x_max = [zero; B];
            for j in 0..w {
                let pj = _mm512_maskz_loadu_ps(mask, p.add(j * rp + r0));
                for (i, m) in x_max.iter_mut().enumerate() {
                    let d = _mm512_set1_ps(*scales.add(j * nbs + b0 + i));
                    let xj = _mm512_mul_ps(pj, d);
                    *m = _mm512_max_ps(*m, xj);
                    _mm512_store_ps(x.add((j * B + i) * 16), xj);
                }
            }
            for j in w * B..4 * g4 * B {
                _mm512_store_ps(x.add(16 * j), zero);
            }
            for (i, &m) in x_max.iter().enumerate() {
                let some = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m, zero);
                let inv = _mm512_maskz_div_ps(some, top, m);
                let s = _mm512_maskz_div_ps(some, m, top);
                let b = b0 + i;
                _mm512_mask_storeu_ps(step.add(b * rp + r0), mask, s);
                for g in 0..g4 {
                    let q: [__m512i; 4] = std::array::from_fn(|k| {
                        let xj = _mm512_load_ps(x.add(((4 * g + k) * B + i) * 16));
                        _mm512_cvtps_epi32(_mm512_mul_ps(xj, inv))
                    });
                    let bytes = _mm512_packus_epi16(
                        _mm512_packus_epi32(q[0], q[1]),
                        _mm512_packus_epi32(q[2], q[3]),
                    );
                    let packed = _mm512_shuffle_epi8(bytes, turn);
                    _mm512_mask_storeu_epi32(
                        u.add(((b * g4 + g) * rp + r0) * 4).cast(),
                        mask,
                        packed,
                    );
                }
            }
        }
    }

    /// The integer sums of [`super::q8_mix_quantized`]'s whole blocks on AVX-512 VNNI: eight
    /// output rows × 32 columns a tile (sixteen accumulators), four keys a step. The codes of
    /// four keys are turned in registers so that each 32-bit lane holds one column's four codes
    /// (`vpermt2d`, then `vpshufb` within lanes) and made signed (`q = u − 128` is `u ^ 0x80`);
    /// each row's four packed weights are one broadcast.
    ///
    /// # Safety
    /// The CPU has AVX-512F, BW and VNNI; `weights` was quantized for `w` keys of `codes`
    /// (`stride` apart, `32 · nb ≤ stride`), `rp` rows, and `o` is `rp · dv` long with
    /// `32 · nb ≤ dv`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn mix_quantized(
        o: &mut [f32],
        weights: &Q8Weights,
        codes: &[u8],
        stride: usize,
        dv: usize,
        ahead: &[u8],
    ) {
        let Q8Weights { w, rp, nb, .. } = *weights;
        let g4 = w.div_ceil(4);
        let mut shares = Ahead::shares(ahead, nb * rp.div_ceil(8));
        let (o, u, step, codes) = (
            o.as_mut_ptr(),
            weights.u.as_ptr(),
            weights.step.as_ptr(),
            codes.as_ptr(),
        );
        // Codes of "no key" (past `w` in the last group): their weights are zero.
        let none = [0x80u8; Q8_BLOCK];
        // Lane L of half h: the dwords 4h + L of rows 0 and 1 (from `a`) and 2 and 3 (from `c`).
        let turn: [__m512i; 2] = std::array::from_fn(|h| {
            let i = |l: i32| {
                [
                    4 * h as i32 + l,
                    8 + 4 * h as i32 + l,
                    16 + 4 * h as i32 + l,
                    24 + 4 * h as i32 + l,
                ]
            };
            let (a, b, c, d) = (i(0), i(1), i(2), i(3));
            _mm512_setr_epi32(
                a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1],
                d[2], d[3],
            )
        });
        // Within a lane: [row k: columns 0..4] → [column c: rows 0..4].
        let bytes = _mm512_broadcast_i32x4(_mm_setr_epi8(
            0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
        ));
        let sign = _mm512_set1_epi8(0x80u8 as i8);
        for b in 0..nb {
            for r0 in (0..rp).step_by(8) {
                let mut share = shares.next().expect("a share per tile");
                let per_step = share.per_step(g4);
                // SAFETY: rows j < w of `codes` from j·stride + 32b (32 bytes, inside the row as
                // 32b + 32 ≤ 32·nb ≤ stride), or `none`; weights and steps of rows r0 + i < rp
                // (rp a multiple of 8), groups g < g4, blocks b < nb; `o` rows r0 + i, columns
                // 32b .. 32b + 32 ≤ dv.
                unsafe {
                    let mut acc = [[_mm512_setzero_si512(); 2]; 8];
                    for g in 0..g4 {
                        share.step(per_step);
                        let row = |k: usize| -> *const u8 {
                            let j = 4 * g + k;
                            if j < w {
                                codes.add(j * stride + b * Q8_BLOCK)
                            } else {
                                none.as_ptr()
                            }
                        };
                        let pair = |k: usize| {
                            let lo = _mm512_castsi256_si512(_mm256_loadu_si256(row(k).cast()));
                            _mm512_inserti64x4::<1>(lo, _mm256_loadu_si256(row(k + 1).cast()))
                        };
                        let (a, c) = (pair(0), pair(2));
                        let x: [__m512i; 2] = std::array::from_fn(|h| {
                            let t = _mm512_shuffle_epi8(
                                _mm512_permutex2var_epi32(a, turn[h], c),
                                bytes,
                            );
                            _mm512_xor_si512(t, sign)
                        });
                        let ug = u.add(((b * g4 + g) * rp + r0) * 4);
                        for (i, acc) in acc.iter_mut().enumerate() {
                            let wi =
                                _mm512_set1_epi32(ug.add(4 * i).cast::<i32>().read_unaligned());
                            acc[0] = _mm512_dpbusd_epi32(acc[0], wi, x[0]);
                            acc[1] = _mm512_dpbusd_epi32(acc[1], wi, x[1]);
                        }
                    }
                    for (i, acc) in acc.iter().enumerate() {
                        let s = _mm512_set1_ps(*step.add(b * rp + r0 + i));
                        for (h, sum) in acc.iter().enumerate() {
                            let y = o.add((r0 + i) * dv + b * Q8_BLOCK + 16 * h);
                            _mm512_storeu_ps(
                                y,
                                _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(*sum), _mm512_loadu_ps(y)),
                            );
                        }
                    }
                }
            }
        }
    }

    // The one-instruction products the integer panels use too.
    keys_kernel!(keys_vnni, "avx2,fma,f16c,avxvnni", dp_vnni);
    keys_kernel!(
        keys_vnni512,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        dp_vnni512
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 2003.0 - 0.5) * 3.0)
            .collect()
    }

    #[test]
    fn quantized_values_are_those_of_q8_0_blocks() {
        let x = values(96, 1);
        let (mut codes, mut scales) = (vec![0u8; 96], vec![0.0f32; 3]);
        q8_quantize_into(&mut codes, &mut scales, &x);
        let mut blocks = vec![0u8; 3 * 34];
        super::super::BlockFormat::Q8_0.quantize_row(&mut blocks, &x);
        let mut want = vec![0.0f32; 96];
        super::super::BlockFormat::Q8_0.dequantize_row(&mut want, &blocks);
        let mut got = vec![0.0f32; 96];
        q8_dequantize_into(&mut got, &codes, &scales, 0);
        assert_eq!(got, want);
        // A range that starts and ends inside blocks.
        let mut part = vec![0.0f32; 50];
        q8_dequantize_into(&mut part, &codes, &scales, 17);
        assert_eq!(part, want[17..67]);
    }

    #[test]
    fn mix_equals_the_portable_twin_and_the_naive_reference() {
        for (w, width, dv, rp) in [
            (1, 32, 16, 8),
            (5, 40, 24, 8),
            (64, 576, 512, 16),
            (7, 96, 77, 24),
            (3, 64, 64, 40),
        ] {
            let stride = q8_row_codes(width);
            let rows = values(w * width, 7);
            let (mut codes, mut scales) = (vec![0u8; w * stride], vec![0.0f32; w * stride / 32]);
            q8_quantize_rows(&mut codes, &mut scales, &rows, width);
            let p: Vec<f32> = values(w * rp, 9).iter().map(|x| x.abs()).collect();
            let start = values(rp * dv, 11);
            let (mut fast, mut port, mut naive) = (start.clone(), start.clone(), start.clone());
            let mut avx2 = start.clone();
            q8_mix(&mut fast, &p, &codes, &scales, stride, w, dv, rp);
            q8_mix_avx2(&mut avx2, &p, &codes, &scales, stride, w, dv, rp);
            q8_mix_portable(&mut port, &p, &codes, &scales, stride, w, dv, rp);
            q8_mix_naive(&mut naive, &p, &codes, &scales, stride, w, dv, rp);
            assert_eq!(fast, port, "w {w} width {width} dv {dv} rp {rp}");
            assert_eq!(avx2, port, "AVX2: w {w} width {width} dv {dv} rp {rp}");
            for (a, b) in port.iter().zip(&naive) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()) * w as f32,
                    "{a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn a_short_last_block_is_quantized_over_its_own_values() {
        let x = values(40, 2);
        let (mut codes, mut scales) = (vec![0u8; 64], vec![0.0f32; 2]);
        q8_quantize_into(&mut codes, &mut scales, &x);
        let mut whole = (vec![0u8; 32], vec![0.0f32; 1]);
        let mut tail = [0.0f32; 32];
        tail[..8].copy_from_slice(&x[32..]);
        q8_quantize_into(&mut whole.0, &mut whole.1, &tail);
        assert_eq!(scales[1], whole.1[0]);
        assert_eq!(codes[32..], whole.0[..]);
        assert!(
            codes[40..].iter().all(|&u| u == 128),
            "padding codes are zero"
        );
        // Three such rows as one matrix: each row as it alone quantizes.
        let x3 = values(120, 4);
        let (mut codes3, mut scales3) = (vec![0u8; 3 * 64], vec![0.0f32; 6]);
        q8_quantize_rows(&mut codes3, &mut scales3, &x3, 40);
        for j in 0..3 {
            q8_quantize_into(&mut codes, &mut scales, &x3[j * 40..(j + 1) * 40]);
            assert_eq!(codes3[j * 64..(j + 1) * 64], codes[..], "row {j}");
            assert_eq!(scales3[j * 2..(j + 1) * 2], scales[..], "row {j}");
        }
    }

    #[test]
    fn scores_equal_the_portable_twin_and_the_naive_reference() {
        for (w, width, rp) in [
            (1, 32, 8),
            (7, 64, 8),
            (9, 576, 16),
            (4, 96, 24),
            (5, 40, 8),
        ] {
            let qt = values(width * rp, 3);
            let q = Q8Queries::from_transposed(&qt, width, rp);
            let dk = q.dims().0;
            let keys = values(w * width, 5);
            let (mut codes, mut scales) = (vec![0u8; w * dk], vec![0.0f32; w * dk / 32]);
            q8_quantize_rows(&mut codes, &mut scales, &keys, width);
            let mut fast = vec![0.0f32; w * rp];
            let mut port = vec![0.0f32; w * rp];
            let mut naive = vec![0.0f32; w * rp];
            q8_scores(&mut fast, &codes, &scales, &q, w);
            q8_scores_portable(&mut port, &codes, &scales, &q, w);
            q8_scores_naive(&mut naive, &codes, &scales, &q, w);
            assert_eq!(fast, port, "w {w} dk {dk} rp {rp}");
            for (a, b) in port.iter().zip(&naive) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
        }
    }
}
