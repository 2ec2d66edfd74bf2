//! Many-row `y = x · Wᵀ` for block weights in integers, eight weight rows at a time.
//!
//! A *panel* is eight weight rows unpacked into unsigned byte codes `u`, interleaved four
//! columns at a time: `codes[c][r][0..4]` holds row `r`'s codes of columns `4c .. 4c + 4`. One
//! 32-byte load then holds four columns of all eight rows, and one `vpdpbusd` (AVX-VNNI) adds,
//! in each row's own i32 lane, the four products with four activation codes broadcast to every
//! lane — no horizontal sums. Every format unpacks to the same form: in sub-block `b` of
//! [`Spec::sub`] columns, weight `j` of row `r` is
//!
//! ```text
//! w[r, j] = scale[b, r] · (u[r, j] − offset) + bias[b, r]
//! ```
//!
//! (`offset` is the format's constant: 128 for `Q8_0`, whose signed codes are stored `+ 128`;
//! the bias is the k-quants' minimum, non-zero in `Q4_K` only). With the activations in `Q8_0`
//! blocks, `x[i, j] = d[i, B] · q[i, j]`, the output is
//!
//! ```text
//! y[i, r] = Σ_b d[i, b] · ( scale[b, r] · (Σ_j q[i, j] u[r, j] − offset · Σ_j q[i, j])
//!                           + bias[b, r] · Σ_j q[i, j] )
//! ```
//!
//! the inner sums exact in i32 (the accumulator starts at `−offset · Σ q`), the rest in f32
//! in that order. [`Dp::Portable`] computes exactly that in scalar code: the fast
//! kernels equal it bit for bit. On AVX2 without VNNI `vpdpbusd` is `vpmaddubsw` + `vpmaddwd`,
//! exact only while a pair of products fits an i16 — codes below 128, so not `Q8_0`
//! ([`available`] says which).

use std::cell::RefCell;

use super::BlockFormat;
use rayon::prelude::*;

use super::act::{ActBlock, ActQ8_0};
use super::q4_k::scale_min;
use super::read_f16;

/// Weight rows per panel: the eight i32 lanes of a 256-bit register.
const ROWS: usize = 8;

/// Activation rows per tile: four accumulators of each kind, 8 of 16 registers.
const TILE: usize = 4;

/// How a format unpacks: see the module documentation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spec {
    /// Columns per scale (32, `Q6_K`'s 16).
    sub: usize,
    /// The constant subtracted from every code.
    offset: i32,
    /// Whether rows carry a bias per sub-block (`Q4_K`'s minimums).
    bias: bool,
    /// The largest code.
    max_code: u8,
}

fn spec(format: BlockFormat) -> Spec {
    let (sub, offset, bias, max_code) = match format {
        BlockFormat::Q8_0 => (32, 128, false, 255),
        BlockFormat::Q4_0 => (32, 8, false, 15),
        BlockFormat::Q5_0 => (32, 16, false, 31),
        BlockFormat::Q4_K => (32, 0, true, 15),
        BlockFormat::Q6_K => (16, 32, false, 63),
    };
    Spec {
        sub,
        offset,
        bias,
        max_code,
    }
}

/// The instruction that multiplies unsigned weight codes by signed activation codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dp {
    /// Scalar code: the reference.
    Portable,
    /// AVX2: `vpmaddubsw` then `vpmaddwd` (codes below 128 only).
    Avx2,
    /// `vpdpbusd` on 256-bit registers (AVX-VNNI's encoding, or AVX-512 VNNI's).
    Vnni,
}

/// From this many input rows `linear` runs block weights through panels with `dp` (below, the
/// one-row dots and four-row tiles of `dot.rs` win). Measured, k 2048 · n 1408 (an expert's
/// shape), 2 threads: with VNNI at 6 rows Q4_0 0.31 vs 0.52 ms, Q8_0 0.40 vs 0.57, Q4_K 0.39 vs
/// 0.43, Q6_K even; at 4 rows the tiles are ahead (Q4_K 0.27 vs 0.35 ms). With AVX2 alone the
/// k-quants break even near 8 (at 6 rows Q4_K 0.43 vs 0.40 ms, at 12 rows 0.55 vs 0.68).
pub(crate) fn min_rows(dp: Dp) -> usize {
    match dp {
        Dp::Vnni => 6,
        Dp::Avx2 => 8,
        Dp::Portable => 1,
    }
}

/// Whether `dp` runs `format` exactly (AVX2's byte pairs saturate at an i16).
pub(crate) fn available(dp: Dp, format: BlockFormat) -> bool {
    dp != Dp::Avx2 || spec(format).max_code < 128
}

/// The panel instruction this process uses, if any: VNNI where [`crate::vnni`] says so, AVX2
/// on the AVX2 kernels otherwise.
pub(crate) fn chosen() -> Option<Dp> {
    match crate::isa() {
        crate::Isa::Avx2 if crate::vnni() => Some(Dp::Vnni),
        crate::Isa::Avx2 => Some(Dp::Avx2),
        crate::Isa::Portable => None,
    }
}

/// Eight weight rows of `k` columns, unpacked.
#[derive(Default)]
struct Panel {
    codes: Vec<u8>,      // [k / 4, ROWS, 4]
    scale: Vec<f32>,     // [k / sub, ROWS]
    bias: Vec<f32>,      // [k / sub, ROWS], zeros unless the spec has a bias
    row_scale: Vec<f32>, // [k / sub] scratch: one row's scales
    row_bias: Vec<f32>,  // [k / sub] scratch: one row's biases
}

/// The activations of one call, prepared for a format's panels.
struct Acts {
    k: usize,
    nb: usize,    // sub-blocks per row: k / sub
    q: Vec<i8>,   // [t, k] the Q8_0 codes
    d: Vec<f32>,  // [t, nb] the scale of the Q8_0 block holding each sub-block
    n: Vec<i32>,  // [t, nb] −offset · Σ q over the sub-block
    ds: Vec<f32>, // [t, nb] d · Σ q over the sub-block (the bias's factor)
}

fn prepare(x: &[f32], t: usize, k: usize, s: Spec) -> Acts {
    let nb = k / s.sub;
    let mut a = Acts {
        k,
        nb,
        q: vec![0; t * k],
        d: vec![0.0; t * nb],
        n: vec![0; t * nb],
        ds: vec![0.0; t * nb],
    };
    let rows =
        a.q.par_chunks_mut(k)
            .zip(a.d.par_chunks_mut(nb))
            .zip(a.n.par_chunks_mut(nb))
            .zip(a.ds.par_chunks_mut(nb))
            .zip(x.par_chunks(k));
    rows.for_each(|((((q, d), n), ds), x)| {
        let per = 32 / s.sub;
        for (g, (xb, qb)) in x.chunks_exact(32).zip(q.chunks_exact_mut(32)).enumerate() {
            let blk = ActQ8_0::quantize(xb);
            qb.copy_from_slice(&blk.qs);
            for (h, part) in blk.qs.chunks_exact(s.sub).enumerate() {
                let sum: i32 = part.iter().map(|&q| q as i32).sum();
                d[g * per + h] = blk.d;
                n[g * per + h] = -s.offset * sum;
                ds[g * per + h] = blk.d * sum as f32;
            }
        }
    });
    a
}

/// Row `r`'s 32 codes of column group `g` (columns `32g .. 32g + 32`) and the scales and
/// biases of the sub-blocks in it (one, or two for `Q6_K`), in scalar code.
fn group_portable(format: BlockFormat, row: &[u8], g: usize) -> ([u8; 32], [f32; 2], [f32; 2]) {
    let mut u = [0u8; 32];
    let mut scale = [0.0f32; 2];
    let mut bias = [0.0f32; 2];
    match format {
        BlockFormat::Q8_0 => {
            let b = &row[34 * g..34 * g + 34];
            scale[0] = read_f16(b);
            for (u, &q) in u.iter_mut().zip(&b[2..]) {
                *u = q ^ 0x80;
            }
        }
        BlockFormat::Q4_0 => {
            let b = &row[18 * g..18 * g + 18];
            scale[0] = read_f16(b);
            for (j, &q) in b[2..].iter().enumerate() {
                (u[j], u[j + 16]) = (q & 0x0F, q >> 4);
            }
        }
        BlockFormat::Q5_0 => {
            let b = &row[22 * g..22 * g + 22];
            scale[0] = read_f16(b);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            for (j, &q) in b[6..].iter().enumerate() {
                let fifth = |e: usize| (((qh >> e) & 1) << 4) as u8;
                (u[j], u[j + 16]) = ((q & 0x0F) | fifth(j), (q >> 4) | fifth(j + 16));
            }
        }
        BlockFormat::Q4_K => {
            let (b, j) = (&row[144 * (g / 8)..144 * (g / 8) + 144], g % 8);
            let (d, dmin) = (read_f16(&b[0..2]), read_f16(&b[2..4]));
            let (sc, m) = scale_min(j, &b[4..16]);
            (scale[0], bias[0]) = (d * sc as f32, -(dmin * m as f32));
            let shift = 4 * (j % 2);
            for (u, &q) in u
                .iter_mut()
                .zip(&b[16 + 32 * (j / 2)..16 + 32 * (j / 2) + 32])
            {
                *u = (q >> shift) & 0x0F;
            }
        }
        BlockFormat::Q6_K => {
            let (b, gg) = (&row[210 * (g / 8)..210 * (g / 8) + 210], g % 8);
            let (half, kq) = (gg / 4, gg % 4);
            let ql = &b[64 * half + 32 * (kq % 2)..][..32];
            let qh = &b[128 + 32 * half..][..32];
            for (l, u) in u.iter_mut().enumerate() {
                let low = if kq < 2 { ql[l] & 0x0F } else { ql[l] >> 4 };
                *u = low | (((qh[l] >> (2 * kq)) & 3) << 4);
            }
            let d = read_f16(&b[208..210]);
            for (h, s) in scale.iter_mut().enumerate() {
                *s = d * b[192 + 2 * gg + h] as i8 as f32;
            }
        }
    }
    (u, scale, bias)
}

/// Unpacks `nr ≤ 8` weight rows (`rows`, `rb` bytes each) into `p`; the missing rows are zero.
/// `simd` picks the AVX2 code unpacking (the same bytes as the scalar one, tested).
#[allow(clippy::too_many_arguments)]
fn unpack(
    p: &mut Panel,
    format: BlockFormat,
    rows: &[u8],
    rb: usize,
    nr: usize,
    k: usize,
    simd: bool,
) {
    let s = spec(format);
    p.codes.resize(k * ROWS, 0);
    p.scale.resize(k / s.sub * ROWS, 0.0);
    p.bias.resize(k / s.sub * ROWS, 0.0);
    p.row_scale.resize(k / s.sub, 0.0);
    p.row_bias.resize(k / s.sub, 0.0);
    for r in 0..ROWS {
        if r < nr {
            row_scales(
                &mut p.row_scale,
                &mut p.row_bias,
                format,
                &rows[r * rb..(r + 1) * rb],
            );
        } else {
            p.row_scale.fill(0.0);
            p.row_bias.fill(0.0);
        }
        for (b, (&sc, &bi)) in p.row_scale.iter().zip(&p.row_bias).enumerate() {
            p.scale[b * ROWS + r] = sc;
            p.bias[b * ROWS + r] = bi;
        }
    }
    for g in 0..k / 32 {
        let out = &mut p.codes[g * 32 * ROWS..(g + 1) * 32 * ROWS];
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is only asked for on AVX2 CPUs (`linear_panels`); every row `< nr`
            // holds group `g` (the caller's lengths), `out` 256 writable bytes.
            unsafe { avx2::group_codes(out, format, rows, rb, nr, g) };
            continue;
        }
        let _ = simd;
        for r in 0..ROWS {
            let u = if r < nr {
                group_portable(format, &rows[r * rb..(r + 1) * rb], g).0
            } else {
                [0; 32]
            };
            for c in 0..8 {
                out[(c * ROWS + r) * 4..][..4].copy_from_slice(&u[4 * c..4 * c + 4]);
            }
        }
    }
}

/// The scales and biases of every sub-block of a row (`k / sub` each), as `group_portable`
/// gives them group by group.
fn row_scales(scale: &mut [f32], bias: &mut [f32], format: BlockFormat, row: &[u8]) {
    let bb = format.block_bytes();
    match format {
        BlockFormat::Q8_0 | BlockFormat::Q4_0 | BlockFormat::Q5_0 => {
            for (s, b) in scale.iter_mut().zip(row.chunks_exact(bb)) {
                *s = read_f16(b);
            }
            bias.fill(0.0);
        }
        BlockFormat::Q4_K => {
            for ((s, m), b) in scale
                .chunks_exact_mut(8)
                .zip(bias.chunks_exact_mut(8))
                .zip(row.chunks_exact(bb))
            {
                let (d, dmin) = (read_f16(&b[0..2]), read_f16(&b[2..4]));
                for j in 0..8 {
                    let (sc, mn) = scale_min(j, &b[4..16]);
                    (s[j], m[j]) = (d * sc as f32, -(dmin * mn as f32));
                }
            }
        }
        BlockFormat::Q6_K => {
            for (s, b) in scale.chunks_exact_mut(16).zip(row.chunks_exact(bb)) {
                let d = read_f16(&b[208..210]);
                for (s, &sc) in s.iter_mut().zip(&b[192..208]) {
                    *s = d * sc as i8 as f32;
                }
            }
            bias.fill(0.0);
        }
    }
}

/// One tile in scalar code: `out[i][r]` for activation rows `i0 .. i0 + rows` and the panel's
/// eight weight rows, in the order of the module documentation.
fn tile_portable(
    out: &mut [[f32; ROWS]; TILE],
    p: &Panel,
    a: &Acts,
    i0: usize,
    rows: usize,
    s: Spec,
) {
    for (i, out) in out.iter_mut().enumerate().take(rows) {
        let q = &a.q[(i0 + i) * a.k..(i0 + i + 1) * a.k];
        let at = (i0 + i) * a.nb;
        for (r, y) in out.iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for b in 0..a.nb {
                let mut sum = a.n[at + b];
                for (j, &qj) in q.iter().enumerate().skip(b * s.sub).take(s.sub) {
                    let u = p.codes[((j / 4) * ROWS + r) * 4 + j % 4];
                    sum += u as i32 * qj as i32;
                }
                acc = (sum as f32).mul_add(p.scale[b * ROWS + r] * a.d[at + b], acc);
                if s.bias {
                    acc = p.bias[b * ROWS + r].mul_add(a.ds[at + b], acc);
                }
            }
            *y = acc;
        }
    }
}

thread_local! {
    static PANEL: RefCell<Panel> = RefCell::new(Panel::default());
}

/// Asks for the cache lines of `bytes` (a hint: nothing is read, nothing can fault).
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch reads nothing and cannot fault; SSE is in every x86-64.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Panels per parallel task.
const PANELS_PER_TASK: usize = 2;

/// `y` shared by the tasks, each writing only its own columns.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: tasks write disjoint columns of `y` (`linear_panels`), which outlives them.
unsafe impl Send for Out {}
// SAFETY: as above.
unsafe impl Sync for Out {}

impl Out {
    /// Element `i` of `y` (a method, so closures capture the whole `Out`, which is `Sync`).
    ///
    /// # Safety
    /// `i` is within `y`.
    unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: the caller's `i` is within `y`.
        unsafe { self.0.add(i) }
    }
}

/// `y[t, n] = x[t, k] · W[n, k]ᵀ` through panels with `dp`, for `W` in `format` (whole blocks,
/// lengths checked by the caller, [`available`]`(dp, format)`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn linear_panels(
    dp: Dp,
    y: &mut [f32],
    x: &[f32],
    format: BlockFormat,
    w: &[u8],
    t: usize,
    k: usize,
    n: usize,
) {
    debug_assert!(available(dp, format));
    assert!(
        y.len() == t * n && x.len() == t * k,
        "linear_panels: [t {t}, k {k}, n {n}]"
    );
    let s = spec(format);
    let rb = format.row_bytes(k).unwrap_or(0);
    assert!(
        w.len() == n * rb,
        "linear_panels: {} weight bytes for {n} rows",
        w.len()
    );
    let a = prepare(x, t, k, s);
    let out = Out(y.as_mut_ptr());
    let task = |first: usize| {
        PANEL.with_borrow_mut(|p| {
            for o in (first..n.min(first + PANELS_PER_TASK * ROWS)).step_by(ROWS) {
                let nr = ROWS.min(n - o);
                unpack(
                    p,
                    format,
                    &w[o * rb..(o + nr) * rb],
                    rb,
                    nr,
                    k,
                    dp != Dp::Portable,
                );
                // The next panel's rows come from memory while this one is multiplied: without
                // this the unpacking waits on its blocks (a MoE expert's few rows do not hide it).
                // Spread over the tiles: 2 lines per sub-block each, as a burst they stall.
                let next = (o + ROWS).min(n);
                let mut ahead = w[next * rb..(next + ROWS).min(n) * rb].chunks(2 * 64 * a.nb);
                let mut tile = [[0.0f32; ROWS]; TILE];
                for i0 in (0..t).step_by(TILE) {
                    let pf = ahead.next().unwrap_or(&[]);
                    let m = TILE.min(t - i0);
                    match dp {
                        Dp::Portable => {
                            prefetch(pf);
                            tile_portable(&mut tile, p, &a, i0, m, s)
                        }
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: `dp` is AVX2 or VNNI only where the CPU has it (`chosen`,
                        // tests check before asking); the panel and activations have the
                        // lengths of `k` and `t` set above.
                        _ => unsafe { avx2::tile(dp, &mut tile, p, &a, i0, m, s, pf) },
                        #[cfg(not(target_arch = "x86_64"))]
                        _ => unreachable!("no SIMD panels off x86-64"),
                    }
                    for (i, row) in tile.iter().enumerate().take(m) {
                        // SAFETY: row i0 + i < t, columns o .. o + nr ≤ n of `y`, which only
                        // this task writes.
                        let dst = unsafe { out.at((i0 + i) * n + o) };
                        for (r, &v) in row.iter().enumerate().take(nr) {
                            // SAFETY: as above.
                            unsafe { *dst.add(r) = v };
                        }
                    }
                }
            }
        })
    };
    let step = PANELS_PER_TASK * ROWS;
    if n * rb * t < 1 << 16 {
        (0..n).step_by(step).for_each(task);
    } else {
        (0..n.div_ceil(step))
            .into_par_iter()
            .for_each(|b| task(b * step));
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::*;

    /// 32 codes of column group `g` of a row, as `group_portable` computes them.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn codes32(format: BlockFormat, row: *const u8, g: usize) -> __m256i {
        let low = _mm256_set1_epi8(0x0F);
        // SAFETY: the caller's row holds group `g` of `format`.
        unsafe {
            let nibbles = |p: *const u8| {
                let q = _mm_loadu_si128(p.cast());
                _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low)
            };
            match format {
                BlockFormat::Q8_0 => _mm256_xor_si256(
                    _mm256_loadu_si256(row.add(34 * g + 2).cast()),
                    _mm256_set1_epi8(-128),
                ),
                BlockFormat::Q4_0 => nibbles(row.add(18 * g + 2)),
                BlockFormat::Q5_0 => {
                    let b = row.add(22 * g);
                    let qh = b.add(2).cast::<u32>().read_unaligned();
                    // Byte e takes byte e / 8 of qh; all ones iff its bit e % 8 is set.
                    let spread = _mm256_shuffle_epi8(
                        _mm256_set1_epi32(qh as i32),
                        _mm256_set_epi64x(
                            0x0303_0303_0303_0303,
                            0x0202_0202_0202_0202,
                            0x0101_0101_0101_0101,
                            0,
                        ),
                    );
                    let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
                    let set =
                        _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1));
                    _mm256_or_si256(
                        nibbles(b.add(6)),
                        _mm256_and_si256(set, _mm256_set1_epi8(0x10)),
                    )
                }
                BlockFormat::Q4_K => {
                    let (b, j) = (row.add(144 * (g / 8)), g % 8);
                    let q = _mm256_loadu_si256(b.add(16 + 32 * (j / 2)).cast());
                    if j % 2 == 0 {
                        _mm256_and_si256(q, low)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16(q, 4), low)
                    }
                }
                BlockFormat::Q6_K => {
                    let (b, gg) = (row.add(210 * (g / 8)), g % 8);
                    let (half, kq) = (gg / 4, gg % 4);
                    let ql = _mm256_loadu_si256(b.add(64 * half + 32 * (kq % 2)).cast());
                    let qh = _mm256_loadu_si256(b.add(128 + 32 * half).cast());
                    let lo = if kq < 2 {
                        _mm256_and_si256(ql, low)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16(ql, 4), low)
                    };
                    let hi = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * kq as i32));
                    let hi = _mm256_slli_epi16(_mm256_and_si256(hi, _mm256_set1_epi8(3)), 4);
                    _mm256_or_si256(lo, hi)
                }
            }
        }
    }

    /// Group `g`'s codes of `nr ≤ 8` rows, interleaved: `out[c][r][0..4]` (256 bytes).
    ///
    /// # Safety
    /// AVX2 CPU; rows `< nr` of `rows` (`rb` bytes apart) hold group `g`; `out.len() ≥ 256`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn group_codes(
        out: &mut [u8],
        format: BlockFormat,
        rows: &[u8],
        rb: usize,
        nr: usize,
        g: usize,
    ) {
        let mut v = [_mm256_setzero_si256(); ROWS];
        for (r, v) in v.iter_mut().enumerate().take(nr) {
            // SAFETY: row r < nr holds group g (the caller).
            *v = unsafe { codes32(format, rows.as_ptr().add(r * rb), g) };
        }
        // An 8 × 8 transpose of i32 elements: row r's dword c goes to dword r of vector c.
        let t0 = _mm256_unpacklo_epi32(v[0], v[1]);
        let t1 = _mm256_unpackhi_epi32(v[0], v[1]);
        let t2 = _mm256_unpacklo_epi32(v[2], v[3]);
        let t3 = _mm256_unpackhi_epi32(v[2], v[3]);
        let t4 = _mm256_unpacklo_epi32(v[4], v[5]);
        let t5 = _mm256_unpackhi_epi32(v[4], v[5]);
        let t6 = _mm256_unpacklo_epi32(v[6], v[7]);
        let t7 = _mm256_unpackhi_epi32(v[6], v[7]);
        let s0 = _mm256_unpacklo_epi64(t0, t2);
        let s1 = _mm256_unpackhi_epi64(t0, t2);
        let s2 = _mm256_unpacklo_epi64(t1, t3);
        let s3 = _mm256_unpackhi_epi64(t1, t3);
        let s4 = _mm256_unpacklo_epi64(t4, t6);
        let s5 = _mm256_unpackhi_epi64(t4, t6);
        let s6 = _mm256_unpacklo_epi64(t5, t7);
        let s7 = _mm256_unpackhi_epi64(t5, t7);
        let cols = [
            _mm256_permute2x128_si256::<0x20>(s0, s4),
            _mm256_permute2x128_si256::<0x20>(s1, s5),
            _mm256_permute2x128_si256::<0x20>(s2, s6),
            _mm256_permute2x128_si256::<0x20>(s3, s7),
            _mm256_permute2x128_si256::<0x31>(s0, s4),
            _mm256_permute2x128_si256::<0x31>(s1, s5),
            _mm256_permute2x128_si256::<0x31>(s2, s6),
            _mm256_permute2x128_si256::<0x31>(s3, s7),
        ];
        for (c, v) in cols.iter().enumerate() {
            // SAFETY: out holds 256 bytes (the caller).
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(32 * c).cast(), *v) };
        }
    }

    /// One tile with `dp` (AVX2 or VNNI): as `tile_portable`, bit for bit.
    ///
    /// # Safety
    /// The CPU has `dp`'s instructions; `p` and `a` are unpacked and prepared for the same
    /// `k` and spec `s`, `a` holds rows `i0 .. i0 + rows`, `rows ≤ 4`. The cache lines of `pf`
    /// (up to two per sub-block) are prefetched along the way.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        dp: Dp,
        out: &mut [[f32; ROWS]; TILE],
        p: &Panel,
        a: &Acts,
        i0: usize,
        rows: usize,
        s: Spec,
        pf: &[u8],
    ) {
        macro_rules! go {
            ($f:ident) => {
                // SAFETY: as this function's contract.
                unsafe {
                    match (rows, s.sub, s.bias) {
                        (4, 32, false) => $f::<4, 32, false>(out, p, a, i0, pf),
                        (4, 32, true) => $f::<4, 32, true>(out, p, a, i0, pf),
                        (4, _, _) => $f::<4, 16, false>(out, p, a, i0, pf),
                        (3, 32, false) => $f::<3, 32, false>(out, p, a, i0, pf),
                        (3, 32, true) => $f::<3, 32, true>(out, p, a, i0, pf),
                        (3, _, _) => $f::<3, 16, false>(out, p, a, i0, pf),
                        (2, 32, false) => $f::<2, 32, false>(out, p, a, i0, pf),
                        (2, 32, true) => $f::<2, 32, true>(out, p, a, i0, pf),
                        (2, _, _) => $f::<2, 16, false>(out, p, a, i0, pf),
                        (_, 32, false) => $f::<1, 32, false>(out, p, a, i0, pf),
                        (_, 32, true) => $f::<1, 32, true>(out, p, a, i0, pf),
                        (_, _, _) => $f::<1, 16, false>(out, p, a, i0, pf),
                    }
                }
            };
        }
        match dp {
            Dp::Vnni if crate::isa::vnni_vex() => go!(tile_vnni),
            Dp::Vnni => go!(tile_vnni512),
            _ => go!(tile_avx2),
        }
    }

    macro_rules! tile_kernel {
        ($name:ident, $features:literal, $dp:ident) => {
            /// The tile kernel for `R` activation rows, sub-blocks of `SUB` columns, with or
            /// without a bias.
            ///
            /// # Safety
            /// As [`tile`].
            #[target_feature(enable = $features)]
            unsafe fn $name<const R: usize, const SUB: usize, const BIAS: bool>(
                out: &mut [[f32; ROWS]; TILE],
                p: &Panel,
                a: &Acts,
                i0: usize,
                pf: &[u8],
            ) {
                let mut acc = [_mm256_setzero_ps(); R];
                let (codes, scale, bias) = (p.codes.as_ptr(), p.scale.as_ptr(), p.bias.as_ptr());
                // SAFETY (every access below): the panel holds k / SUB sub-blocks of eight
                // rows and k · 8 code bytes, the activations rows i0 .. i0 + R of k codes and
                // nb sub-blocks each (the caller); b < nb, j < k.
                let q: [*const i8; R] = std::array::from_fn(|i| a.q[(i0 + i) * a.k..].as_ptr());
                let at: [usize; R] = std::array::from_fn(|i| (i0 + i) * a.nb);
                let (an, ad, ads) = (a.n.as_ptr(), a.d.as_ptr(), a.ds.as_ptr());
                for b in 0..a.nb {
                    for line in [b, b + a.nb] {
                        if 64 * line < pf.len() {
                            // SAFETY: a prefetch reads nothing and cannot fault.
                            unsafe {
                                _mm_prefetch::<_MM_HINT_T0>(pf.as_ptr().add(64 * line).cast())
                            };
                        }
                    }
                    let mut sum: [__m256i; R] = std::array::from_fn(|i| {
                        // SAFETY: as above.
                        _mm256_set1_epi32(unsafe { *an.add(at[i] + b) })
                    });
                    for c in 0..SUB / 4 {
                        let j = b * SUB + 4 * c;
                        // SAFETY: as above.
                        unsafe {
                            let wv = _mm256_loadu_si256(codes.add(j * ROWS).cast());
                            for (s, q) in sum.iter_mut().zip(&q) {
                                let xq = q.add(j).cast::<i32>().read_unaligned();
                                *s = $dp(*s, wv, _mm256_set1_epi32(xq));
                            }
                        }
                    }
                    // SAFETY: as above.
                    unsafe {
                        let sc = _mm256_loadu_ps(scale.add(b * ROWS));
                        for i in 0..R {
                            let f = _mm256_mul_ps(sc, _mm256_set1_ps(*ad.add(at[i] + b)));
                            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[i]), f, acc[i]);
                        }
                        if BIAS {
                            let bi = _mm256_loadu_ps(bias.add(b * ROWS));
                            for i in 0..R {
                                acc[i] = _mm256_fmadd_ps(
                                    bi,
                                    _mm256_set1_ps(*ads.add(at[i] + b)),
                                    acc[i],
                                );
                            }
                        }
                    }
                }
                for (o, acc) in out.iter_mut().zip(&acc) {
                    // SAFETY: `o` is eight writable f32.
                    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *acc) };
                }
            }
        };
    }

    /// `acc + Σ` of the four products in each i32 lane, by two AVX2 multiplies (exact for
    /// codes `u < 128`: a pair of products fits the i16 `vpmaddubsw` saturates at).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn dp_avx2(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(u, x);
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }

    /// `acc + Σ` of the four products in each i32 lane, by one `vpdpbusd`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    pub(in crate::quant) fn dp_vnni(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, u, x)
    }

    /// [`dp_vnni`] in AVX-512 VNNI's encoding (the same instruction on 256-bit registers, for
    /// CPUs such as AMD's Zen 4 that have AVX-512 VNNI but not AVX-VNNI).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    pub(in crate::quant) fn dp_vnni512(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, x)
    }

    tile_kernel!(tile_avx2, "avx2,fma,f16c", dp_avx2);
    tile_kernel!(tile_vnni, "avx2,fma,f16c,avxvnni", dp_vnni);
    tile_kernel!(
        tile_vnni512,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        dp_vnni512
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(format: BlockFormat, n: usize, k: usize, seed: usize) -> Vec<u8> {
        let rb = format.row_bytes(k).unwrap();
        let mut w = vec![0u8; n * rb];
        for (o, row) in w.chunks_exact_mut(rb).enumerate() {
            let wf: Vec<f32> = (0..k)
                .map(|j| (((o * k + j) * 104_729 + seed) % 2003) as f32 / 2003.0 - 0.5)
                .collect();
            format.quantize_row(row, &wf);
        }
        w
    }

    /// The unpacked panel reproduces the dequantizer: `scale · (u − offset) + bias` equals
    /// each weight (up to the one rounding of the product's form), for SIMD and scalar codes,
    /// which are the same bytes.
    #[test]
    fn panels_unpack_to_the_dequantized_weights() {
        for format in BlockFormat::ALL {
            let k = 2 * format.block_len().max(64);
            let (n, rb) = (5, format.row_bytes(k).unwrap());
            let w = weights(format, n, k, 3);
            let s = spec(format);
            let mut scalar = Panel::default();
            unpack(&mut scalar, format, &w, rb, n, k, false);
            if chosen().is_some() {
                let mut simd = Panel::default();
                unpack(&mut simd, format, &w, rb, n, k, true);
                assert_eq!(simd.codes, scalar.codes, "{format}");
                assert_eq!(simd.scale, scalar.scale, "{format}");
                assert_eq!(simd.bias, scalar.bias, "{format}");
            }
            let mut row = vec![0.0f32; k];
            for r in 0..ROWS {
                if r < n {
                    format.dequantize_row(&mut row, &w[r * rb..(r + 1) * rb]);
                } else {
                    row.fill(0.0);
                }
                for (j, &want) in row.iter().enumerate() {
                    let u = scalar.codes[((j / 4) * ROWS + r) * 4 + j % 4];
                    assert!(u <= s.max_code, "{format}");
                    let b = (j / s.sub) * ROWS + r;
                    let got = scalar.scale[b] * (u as i32 - s.offset) as f32 + scalar.bias[b];
                    assert!(
                        (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                        "{format} row {r} col {j}: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Every panel instruction this CPU has equals the scalar panels bit for bit, and all are
    /// near the naive f32 product (the activations' 8-bit rounding), over tails of every kind:
    /// activation rows not a multiple of four, weight rows not a multiple of eight.
    #[test]
    fn panel_kernels_equal_the_scalar_panels_and_the_reference() {
        let mut dps = vec![];
        if chosen().is_some() {
            dps.push(Dp::Avx2);
        }
        if crate::vnni() {
            dps.push(Dp::Vnni);
        }
        for format in BlockFormat::ALL {
            let k = 2 * format.block_len().max(64);
            for (t, n) in [(1, 3), (5, 9), (8, 16), (11, 21)] {
                let w = weights(format, n, k, 11);
                let x: Vec<f32> = (0..t * k)
                    .map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 300.0)
                    .collect();
                let mut want = vec![0.0; t * n];
                super::super::linear::linear_blocks_naive(&mut want, &x, format, &w, t, k, n);
                let mut base = vec![f32::NAN; t * n];
                linear_panels(Dp::Portable, &mut base, &x, format, &w, t, k, n);
                let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                for (i, (&b, &e)) in base.iter().zip(&want).enumerate() {
                    assert!(
                        (b - e).abs() <= 0.02 * scale,
                        "{format} t{t} n{n} at {i}: {b} vs {e}"
                    );
                }
                for &dp in dps.iter().filter(|&&dp| available(dp, format)) {
                    let mut got = vec![f32::NAN; t * n];
                    linear_panels(dp, &mut got, &x, format, &w, t, k, n);
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        base.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{format} {dp:?} t{t} n{n}"
                    );
                }
            }
        }
    }
}
