//! The rotation kernels: functions over slices, output first, every dimension explicit.
//!
//! A block `x[t, n, r]` (t tokens, n heads, r rotary features) is rotated with per-token rows
//! `cos[t, r/2]`, `sin[t, r/2]` (the table rows of each token's position, cos/sin factor
//! included): for every token `j`, head `h` and pair `i` with indices `(a, b)` given by the
//! [`Layout`],
//!
//! ```text
//! out[j, h, a] = x[j, h, a]·cos[j, i] − x[j, h, b]·sin[j, i]
//! out[j, h, b] = x[j, h, a]·sin[j, i] + x[j, h, b]·cos[j, i]
//! ```
//!
//! The fast kernels and the `*_naive` twins evaluate the same products and sums, so they agree
//! bit for bit. The fast ones prepare each token's row once for all its heads (for interleaved
//! pairs: `cos` duplicated per element and `sin` with the sign of each element folded in, so a
//! head is `out = x·cc + swap(x)·ss` over contiguous lanes — `x_a·c + x_b·(−s)` is exactly
//! `x_a·c − x_b·s`), in fixed-size blocks the compiler vectorises (no FMA: products and sums
//! round separately, as in torch and in the naive twin), and split large blocks over rayon
//! threads.

use rayon::prelude::*;

use crate::config::Layout;

/// Blocks with at least this many elements are split over threads.
const PARALLEL_MIN_ELEMS: usize = 1 << 16;

/// Rotates `x[t, n, r]` into `out[t, n, r]` with per-token rows `cos[t, r/2]`, `sin[t, r/2]`.
///
/// ```
/// use deepblocks_rope::{rope_apply, Layout};
/// // One token, one head, one pair, rotated by 90°.
/// let mut out = [0.0f32; 2];
/// rope_apply(&mut out, &[1.0, 2.0], &[0.0], &[1.0], 1, 1, 2, Layout::Interleaved);
/// assert_eq!(out, [-2.0, 1.0]);
/// ```
///
/// # Panics
/// If `r` is odd or a slice length does not match its shape (`x`, `out`: `t·n·r`; `cos`, `sin`:
/// `t·r/2`). [`RopeTable::apply`](crate::RopeTable::apply) checks these and returns `Err`.
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
pub fn rope_apply(
    out: &mut [f32],
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    t: usize,
    n: usize,
    r: usize,
    layout: Layout,
) {
    check("rope_apply", x.len(), r, cos, sin, [t, n, r]);
    assert_eq!(out.len(), t * n * r, "rope_apply: out is not [t, n, r]");
    if t * n * r == 0 {
        return;
    }
    let h = r / 2;
    let token = |(j, (o, xi)): (usize, (&mut [f32], &[f32]))| {
        let (c, s) = (&cos[j * h..(j + 1) * h], &sin[j * h..(j + 1) * h]);
        token_dispatch(Heads::Out(o, xi), c, s, r, layout);
    };
    let per_token = n * r;
    if t > 1 && t * per_token >= PARALLEL_MIN_ELEMS {
        out.par_chunks_mut(per_token)
            .zip(x.par_chunks(per_token))
            .enumerate()
            .for_each(token);
    } else {
        out.chunks_mut(per_token)
            .zip(x.chunks(per_token))
            .enumerate()
            .for_each(token);
    }
}

/// [`rope_apply`] in place on a contiguous `x[t, n, r]`.
///
/// # Panics
/// As [`rope_apply`].
pub fn rope_apply_inplace(
    x: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    t: usize,
    n: usize,
    r: usize,
    layout: Layout,
) {
    rope_apply_inplace_strided(x, cos, sin, t, n, r, r, 0, layout);
}

/// [`rope_apply`] in place on the rotary part of strided head rows: `x` holds `t·n` rows of
/// `stride` elements (token-major, then head), and the `r` features at `offset..offset + r` of
/// each row are rotated; the rest is left untouched.
///
/// This is how MLA uses it without copies: the queries `q[t, n, d + r]` rotate their last `r`
/// features (`stride = d + r`, `offset = d`), and the shared key part of
/// `kv_a_proj_with_mqa`'s output `[t, c + r]` is one head per token (`n = 1`,
/// `stride = c + r`, `offset = c`).
///
/// ```
/// use deepblocks_rope::{rope_apply_inplace_strided, Layout};
/// // One token, one head row [nope 9, rope 1, 0], rotated by 180°: the nope part stays.
/// let mut q = [9.0f32, 1.0, 0.0];
/// rope_apply_inplace_strided(&mut q, &[-1.0], &[0.0], 1, 1, 2, 3, 1, Layout::HalfSplit);
/// assert_eq!(q, [9.0, -1.0, 0.0]);
/// ```
///
/// # Panics
/// If `r` is odd, `offset + r > stride`, `x.len() != t·n·stride` or `cos`/`sin` are not
/// `t·r/2` long.
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
pub fn rope_apply_inplace_strided(
    x: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    t: usize,
    n: usize,
    r: usize,
    stride: usize,
    offset: usize,
    layout: Layout,
) {
    assert!(
        offset + r <= stride,
        "rope_apply_inplace_strided: offset + r > stride"
    );
    check(
        "rope_apply_inplace_strided",
        x.len(),
        stride,
        cos,
        sin,
        [t, n, r],
    );
    if t * n * r == 0 {
        return;
    }
    let h = r / 2;
    let token = |(j, xi): (usize, &mut [f32])| {
        let (c, s) = (&cos[j * h..(j + 1) * h], &sin[j * h..(j + 1) * h]);
        token_dispatch(Heads::InPlace(xi, stride, offset), c, s, r, layout);
    };
    let per_token = n * stride;
    if t > 1 && t * n * r >= PARALLEL_MIN_ELEMS {
        x.par_chunks_mut(per_token).enumerate().for_each(token);
    } else {
        x.chunks_mut(per_token).enumerate().for_each(token);
    }
}

/// The naive twin of [`rope_apply`]: the formula, one element pair at a time, with the pair
/// indices from [`Layout::pair`].
///
/// # Panics
/// As [`rope_apply`].
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
pub fn rope_apply_naive(
    out: &mut [f32],
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    t: usize,
    n: usize,
    r: usize,
    layout: Layout,
) {
    check("rope_apply_naive", x.len(), r, cos, sin, [t, n, r]);
    assert_eq!(
        out.len(),
        t * n * r,
        "rope_apply_naive: out is not [t, n, r]"
    );
    for j in 0..t {
        for head in 0..n {
            let base = (j * n + head) * r;
            for i in 0..r / 2 {
                let (a, b) = layout.pair(i, r);
                let (c, s) = (cos[j * (r / 2) + i], sin[j * (r / 2) + i]);
                let (xa, xb) = (x[base + a], x[base + b]);
                out[base + a] = xa * c - xb * s;
                out[base + b] = xa * s + xb * c;
            }
        }
    }
}

/// The naive twin of [`rope_apply_inplace_strided`].
///
/// # Panics
/// As [`rope_apply_inplace_strided`].
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
pub fn rope_apply_inplace_strided_naive(
    x: &mut [f32],
    cos: &[f32],
    sin: &[f32],
    t: usize,
    n: usize,
    r: usize,
    stride: usize,
    offset: usize,
    layout: Layout,
) {
    assert!(offset + r <= stride, "rope: offset + r > stride");
    check(
        "rope_apply_inplace_strided_naive",
        x.len(),
        stride,
        cos,
        sin,
        [t, n, r],
    );
    for j in 0..t {
        for head in 0..n {
            let base = (j * n + head) * stride + offset;
            for i in 0..r / 2 {
                let (a, b) = layout.pair(i, r);
                let (c, s) = (cos[j * (r / 2) + i], sin[j * (r / 2) + i]);
                let (xa, xb) = (x[base + a], x[base + b]);
                x[base + a] = xa * c - xb * s;
                x[base + b] = xa * s + xb * c;
            }
        }
    }
}

/// Shared shape checks: `x` is `[t, n, width]` (`width` is `r`, or the stride), `cos` and `sin`
/// are `[t, r/2]`, `r` is even.
fn check(name: &str, x_len: usize, width: usize, cos: &[f32], sin: &[f32], dims: [usize; 3]) {
    let [t, n, r] = dims;
    assert!(r.is_multiple_of(2), "{name}: r = {r} is odd");
    assert_eq!(x_len, t * n * width, "{name}: x is not [t, n, {width}]");
    assert_eq!(cos.len(), t * (r / 2), "{name}: cos is not [t, r/2]");
    assert_eq!(sin.len(), t * (r / 2), "{name}: sin is not [t, r/2]");
}

/// The head rows of one token.
enum Heads<'a> {
    /// `out[n, r]` from `x[n, r]`.
    Out(&'a mut [f32], &'a [f32]),
    /// `x[n, stride]`, rotary part at `offset..offset + r`, in place.
    InPlace(&'a mut [f32], usize, usize),
}

/// Rotates one token's heads with its rows `c[r/2]`, `s[r/2]`. Portable code the compiler
/// vectorises for the baseline ISA; no CPU detection here (the one detection lives in
/// deepblocks-core, which this crate does not depend on). RoPE is O(t·n·r), far below a layer's
/// matmuls ([`docs/performance.md`]).
///
/// [`docs/performance.md`]: https://github.com/deepblocks/deepblocks/blob/main/docs/performance.md
fn token_dispatch(heads: Heads<'_>, c: &[f32], s: &[f32], r: usize, layout: Layout) {
    token(heads, c, s, r, layout);
}

#[inline(always)]
fn token(heads: Heads<'_>, c: &[f32], s: &[f32], r: usize, layout: Layout) {
    match layout {
        Layout::Interleaved => {
            // cc = (c0, c0, c1, c1, …), ss = (−s0, s0, −s1, s1, …): out = x·cc + swap(x)·ss.
            let mut cc = vec![0.0f32; r];
            let mut ss = vec![0.0f32; r];
            for (((cc, ss), &c), &s) in cc
                .chunks_exact_mut(2)
                .zip(ss.chunks_exact_mut(2))
                .zip(c)
                .zip(s)
            {
                cc[0] = c;
                cc[1] = c;
                ss[0] = -s;
                ss[1] = s;
            }
            match heads {
                Heads::Out(out, x) => {
                    for (o, x) in out.chunks_exact_mut(r).zip(x.chunks_exact(r)) {
                        interleaved(o, x, &cc, &ss);
                    }
                }
                Heads::InPlace(x, stride, offset) => {
                    for row in x.chunks_exact_mut(stride) {
                        interleaved_inplace(&mut row[offset..offset + r], &cc, &ss);
                    }
                }
            }
        }
        Layout::HalfSplit => match heads {
            Heads::Out(out, x) => {
                for (o, x) in out.chunks_exact_mut(r).zip(x.chunks_exact(r)) {
                    half_split(o, x, c, s);
                }
            }
            Heads::InPlace(x, stride, offset) => {
                for row in x.chunks_exact_mut(stride) {
                    half_split_inplace(&mut row[offset..offset + r], c, s);
                }
            }
        },
    }
}

/// Lanes per block in the interleaved kernels (one 256-bit register where the CPU has them).
const LANES: usize = 8;

/// One interleaved head: `o[k] = x[k]·cc[k] + x[k ^ 1]·ss[k]`.
#[inline(always)]
fn interleaved(o: &mut [f32], x: &[f32], cc: &[f32], ss: &[f32]) {
    let mut o8 = o.chunks_exact_mut(LANES);
    let mut x8 = x.chunks_exact(LANES);
    let mut c8 = cc.chunks_exact(LANES);
    let mut s8 = ss.chunks_exact(LANES);
    for (((o, x), c), s) in (&mut o8).zip(&mut x8).zip(&mut c8).zip(&mut s8) {
        let o: &mut [f32; LANES] = o.try_into().expect("chunk of LANES");
        block(o, x, c, s);
    }
    pairs_tail(
        o8.into_remainder(),
        x8.remainder(),
        c8.remainder(),
        s8.remainder(),
    );
}

/// One interleaved head in place.
#[inline(always)]
fn interleaved_inplace(x: &mut [f32], cc: &[f32], ss: &[f32]) {
    let mut x8 = x.chunks_exact_mut(LANES);
    let mut c8 = cc.chunks_exact(LANES);
    let mut s8 = ss.chunks_exact(LANES);
    for ((xo, c), s) in (&mut x8).zip(&mut c8).zip(&mut s8) {
        let xo: &mut [f32; LANES] = xo.try_into().expect("chunk of LANES");
        let x = *xo;
        block(xo, &x, c, s);
    }
    let (c, s) = (c8.remainder(), s8.remainder());
    for ((xp, c), s) in x8
        .into_remainder()
        .chunks_exact_mut(2)
        .zip(c.chunks_exact(2))
        .zip(s.chunks_exact(2))
    {
        let (a, b) = (xp[0], xp[1]);
        xp[0] = a * c[0] + b * s[0];
        xp[1] = b * c[1] + a * s[1];
    }
}

/// `o[k] = x[k]·c[k] + x[k ^ 1]·s[k]` over one block of `LANES` (fixed-size: no bounds checks,
/// the swap is a lane shuffle).
#[inline(always)]
fn block(o: &mut [f32; LANES], x: &[f32], c: &[f32], s: &[f32]) {
    let x: &[f32; LANES] = x.try_into().expect("chunk of LANES");
    let c: &[f32; LANES] = c.try_into().expect("chunk of LANES");
    let s: &[f32; LANES] = s.try_into().expect("chunk of LANES");
    for k in 0..LANES {
        o[k] = x[k] * c[k] + x[k ^ 1] * s[k];
    }
}

/// The pairs after the last full block.
#[inline(always)]
fn pairs_tail(o: &mut [f32], x: &[f32], c: &[f32], s: &[f32]) {
    for (((o, x), c), s) in o
        .chunks_exact_mut(2)
        .zip(x.chunks_exact(2))
        .zip(c.chunks_exact(2))
        .zip(s.chunks_exact(2))
    {
        o[0] = x[0] * c[0] + x[1] * s[0];
        o[1] = x[1] * c[1] + x[0] * s[1];
    }
}

/// One half-split head: pair `i` is `(x[i], x[i + r/2])`.
#[inline(always)]
fn half_split(out: &mut [f32], x: &[f32], c: &[f32], s: &[f32]) {
    let h = c.len();
    let (o1, o2) = out.split_at_mut(h);
    let (x1, x2) = x.split_at(h);
    for ((o1, o2), ((&a, &b), (&c, &s))) in o1
        .iter_mut()
        .zip(o2.iter_mut())
        .zip(x1.iter().zip(x2).zip(c.iter().zip(s)))
    {
        *o1 = a * c - b * s;
        *o2 = a * s + b * c;
    }
}

/// One half-split head in place.
#[inline(always)]
fn half_split_inplace(x: &mut [f32], c: &[f32], s: &[f32]) {
    let h = c.len();
    let (x1, x2) = x.split_at_mut(h);
    for ((a, b), (&c, &s)) in x1.iter_mut().zip(x2.iter_mut()).zip(c.iter().zip(s)) {
        let (xa, xb) = (*a, *b);
        *a = xa * c - xb * s;
        *b = xa * s + xb * c;
    }
}
