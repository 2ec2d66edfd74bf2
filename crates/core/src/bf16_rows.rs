//! The two products of attention over rows of bf16 values (the latent cache of MLA), read as
//! they lie: no block of rows widened to f32 first.
//!
//! - [`bf16_scores`]: `S[j, r] = Σ_k K[j, k] · Q[r, k]`, one dot product per key and query row.
//!   A 512-bit load takes 32 bf16 values of a key; its even values become f32 by a shift of
//!   each 32-bit lane by 16 bits, its odd ones by masking the low 16 bits off (a bf16 is the top
//!   half of an f32). So the queries are kept with each block of 32 values in that *pair order*
//!   — the 16 even ones, then the 16 odd ones ([`Bf16Queries`]) — and a tile of 2 keys × 8 query
//!   rows holds 16 accumulators of 16 lanes, summed across lanes once at the end. The query
//!   rows start on cache lines (an [`crate::aligned::AlignedVec`]), so no load of them spans two.
//! - [`bf16_mix`]: `O[r, c] += Σ_j P[j, r] · V[j, c]`, one fused multiply-add per row `j`, in
//!   order: the values are split in the same way, 32 columns at a time, each broadcast
//!   probability serving two registers; `O` is put in pair order while a tile works on it and
//!   back in column order after.
//!
//! On AVX-512F where [`crate::avx512`] allows, else on AVX2 + FMA where [`crate::isa`] does (the
//! same steps on 256-bit registers: 2 keys × 4 rows, 16 columns × 6 rows); [`bf16_mix_portable`]
//! is the scalar twin both mixes equal bit for bit, [`bf16_scores_portable`] a plain loop (the
//! SIMD scores add in another order), and the `_naive` twins sum in f64. Blocked attention uses
//! these kernels on AVX-512 only: on AVX2 registers they measured no faster than widening a
//! block and running [`crate::matmul_strided`] (docs/performance.md).

use crate::aligned::AlignedVec;
use half::bf16;

/// Values per block of the pair order: the bf16 values of one 512-bit load.
pub const BF16_BLOCK: usize = 32;

/// Where value `k` of a row sits in pair order: in its block of 32, the even positions first,
/// then the odd ones.
const fn pair_index(k: usize) -> usize {
    let (b, i) = (k / BF16_BLOCK, k % BF16_BLOCK);
    b * BF16_BLOCK
        + if i.is_multiple_of(2) {
            i / 2
        } else {
            16 + i / 2
        }
}

/// Query rows as [`bf16_scores`] reads them: `[rp, dkp]` f32, `dkp` = `dk` rounded up to whole
/// blocks of 32 (zeros after `dk`), each block in pair order.
#[derive(Debug, Clone)]
pub struct Bf16Queries {
    q: AlignedVec<f32>, // [rp, dkp], pair order (rows on cache lines: dkp · 4 bytes is 128·k)
    rounded: AlignedVec<bf16>, // [rp, dkp], column order: each value rounded to bf16, for the dots
    dk: usize,
    rp: usize,
}

impl Bf16Queries {
    /// The queries of `qt[dk, rp]` (query `r`'s value `k` at `qt[k · rp + r]`, as attention keeps
    /// a block of query rows).
    ///
    /// ```
    /// use deepblocks_core::bf16_rows::Bf16Queries;
    /// let qt = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [3, 2]: rows (1, 3, 5) and (2, 4, 6)
    /// let q = Bf16Queries::from_transposed(&qt, 3, 2);
    /// assert_eq!(q.dims(), (3, 2));
    /// assert_eq!(q.row(1)[..3], [2.0, 4.0, 6.0]);
    /// ```
    ///
    /// # Panics
    /// If `qt` is not `dk · rp` long (a caller's invariant).
    pub fn from_transposed(qt: &[f32], dk: usize, rp: usize) -> Bf16Queries {
        assert_eq!(
            Some(qt.len()),
            dk.checked_mul(rp),
            "Bf16Queries: {} values are not [{dk}, {rp}]",
            qt.len()
        );
        let dkp = dk.div_ceil(BF16_BLOCK) * BF16_BLOCK;
        let mut q = AlignedVec::zeros(rp * dkp);
        let mut rounded = AlignedVec::zeros(rp * dkp);
        for (k, col) in qt.chunks_exact(rp.max(1)).enumerate().take(dk) {
            let at = pair_index(k);
            for (r, &x) in col.iter().enumerate() {
                q[r * dkp + at] = x;
                rounded[r * dkp + k] = bf16::from_f32(x);
            }
        }
        Bf16Queries { q, rounded, dk, rp }
    }

    /// Query row `r` rounded to bf16 (to nearest, ties to even), as [`bf16_dot_scores`] reads
    /// it, padded to whole blocks.
    ///
    /// # Panics
    /// If `r ≥ rp`.
    pub fn rounded_row(&self, r: usize) -> &[bf16] {
        assert!(
            r < self.rp,
            "Bf16Queries::rounded_row: row {r} of {}",
            self.rp
        );
        &self.rounded[r * self.dkp()..(r + 1) * self.dkp()]
    }

    /// `(dk, rp)`: values per query, query rows.
    pub fn dims(&self) -> (usize, usize) {
        (self.dk, self.rp)
    }

    /// Query row `r` in column order, padded to whole blocks (for tests and references).
    ///
    /// # Panics
    /// If `r ≥ rp`.
    pub fn row(&self, r: usize) -> Vec<f32> {
        assert!(r < self.rp, "Bf16Queries::row: row {r} of {}", self.rp);
        (0..self.dkp()).map(|k| self.at(r, k)).collect()
    }

    /// Value `k` of query row `r`.
    fn at(&self, r: usize, k: usize) -> f32 {
        self.q[r * self.dkp() + pair_index(k)]
    }

    fn dkp(&self) -> usize {
        self.dk.div_ceil(BF16_BLOCK) * BF16_BLOCK
    }
}

/// Checks a scores call's lengths.
fn check_scores(st: &[f32], keys: &[bf16], stride: usize, q: &Bf16Queries, w: usize) {
    let (dk, rp) = q.dims();
    assert!(
        dk <= stride,
        "bf16_scores: rows of {stride} values hold no keys of {dk}"
    );
    crate::assert_lengths(
        "bf16_scores",
        format_args!("w {w} rows of {stride}, dk {dk}, rp {rp}"),
        &[
            ("st", st.len(), w.checked_mul(rp)),
            ("keys", keys.len(), w.checked_mul(stride)),
        ],
    );
}

/// `st[j, r] = Σ_k keys[j, k] · q[r, k]` for `j < w`, `r < rp`, `k < dk`: the scores of `w` key
/// rows (`[w, stride]` bf16, the key is the first `dk` values of a row) against the query rows.
/// On AVX-512F where [`crate::avx512`] allows, else AVX2 + FMA, else [`bf16_scores_portable`].
///
/// ```
/// use deepblocks_core::bf16_rows::{Bf16Queries, bf16_scores};
/// use deepblocks_core::half::bf16;
/// let keys: Vec<bf16> = [1.0, 2.0, 0.5, -1.0].map(bf16::from_f32).to_vec(); // [2, 2]
/// let q = Bf16Queries::from_transposed(&[1.0, 0.0, 3.0, 1.0], 2, 2); // rows (1, 3), (0, 1)
/// let mut st = [0.0f32; 4];
/// bf16_scores(&mut st, &keys, 2, &q, 2);
/// assert_eq!(st, [7.0, 2.0, -2.5, -1.0]);
/// ```
///
/// # Panics
/// If `st` is not `w · rp` long, `keys` not `w · stride`, or `dk > stride`.
pub fn bf16_scores(st: &mut [f32], keys: &[bf16], stride: usize, q: &Bf16Queries, w: usize) {
    check_scores(st, keys, stride, q, w);
    #[cfg(target_arch = "x86_64")]
    if crate::avx512() {
        // SAFETY: the CPU has AVX-512F; the lengths were checked.
        unsafe { x86::scores_zmm(st, keys, stride, q, w) };
        return;
    }
    bf16_scores_avx2(st, keys, stride, q, w);
}

/// [`bf16_scores`] on AVX2 registers whatever [`crate::avx512`] says ([`bf16_scores_portable`]
/// on CPUs without AVX2), for tests that compare the implementations.
///
/// # Panics
/// As [`bf16_scores`].
#[doc(hidden)]
pub fn bf16_scores_avx2(st: &mut [f32], keys: &[bf16], stride: usize, q: &Bf16Queries, w: usize) {
    check_scores(st, keys, stride, q, w);
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA; the lengths were checked.
        unsafe { x86::scores_ymm(st, keys, stride, q, w) };
        return;
    }
    scores_plain(st, keys, stride, q, w);
}

/// The portable twin of [`bf16_scores`]: per key and query row, a dot product in f32 in `k`
/// order.
///
/// # Panics
/// As [`bf16_scores`].
pub fn bf16_scores_portable(
    st: &mut [f32],
    keys: &[bf16],
    stride: usize,
    q: &Bf16Queries,
    w: usize,
) {
    check_scores(st, keys, stride, q, w);
    scores_plain(st, keys, stride, q, w);
}

fn scores_plain(st: &mut [f32], keys: &[bf16], stride: usize, q: &Bf16Queries, w: usize) {
    dot_products(st, keys, stride, q, w, |r, k| q.at(r, k));
}

/// `st[j, r] = Σ_k keys[j, k] · query(r, k)` in f32, in `k` order: the plain scores over the
/// queries as given or as rounded.
fn dot_products(
    st: &mut [f32],
    keys: &[bf16],
    stride: usize,
    q: &Bf16Queries,
    w: usize,
    query: impl Fn(usize, usize) -> f32,
) {
    let (dk, rp) = q.dims();
    for j in 0..w {
        let key = &keys[j * stride..j * stride + dk];
        for r in 0..rp {
            st[j * rp + r] = key
                .iter()
                .enumerate()
                .fold(0.0f32, |acc, (k, x)| x.to_f32().mul_add(query(r, k), acc));
        }
    }
}

/// The naive twin of [`bf16_scores`]: each score summed in f64.
///
/// # Panics
/// As [`bf16_scores`].
pub fn bf16_scores_naive(st: &mut [f32], keys: &[bf16], stride: usize, q: &Bf16Queries, w: usize) {
    check_scores(st, keys, stride, q, w);
    let (dk, rp) = q.dims();
    for j in 0..w {
        for r in 0..rp {
            st[j * rp + r] = (0..dk)
                .map(|k| keys[j * stride + k].to_f64() * q.at(r, k) as f64)
                .sum::<f64>() as f32;
        }
    }
}

/// Checks a mix call's lengths.
#[allow(clippy::too_many_arguments)]
fn check_mix(o: &[f32], p: &[f32], values: &[bf16], stride: usize, w: usize, dv: usize, rp: usize) {
    assert!(
        dv <= stride,
        "bf16_mix: rows of {stride} values hold no {dv} values"
    );
    crate::assert_lengths(
        "bf16_mix",
        format_args!("w {w} rows of {stride}, dv {dv}, rp {rp}"),
        &[
            ("o", o.len(), rp.checked_mul(dv)),
            ("p", p.len(), w.checked_mul(rp)),
            ("values", values.len(), w.checked_mul(stride)),
        ],
    );
}

/// `o[r, c] += Σ_j p[j, r] · v[j, c]` for `r < rp`, `c < dv`, `j < w`: the weighted sum of the
/// first `dv` values of `w` bf16 rows (`[w, stride]`) — the mix of attention over a bf16 latent
/// cache. On AVX-512F where [`crate::avx512`] allows, else AVX2 + FMA, equal bit for bit to
/// [`bf16_mix_portable`]: every `o[r, c]` gains `p[j, r] · v[j, c]` by one fused multiply-add
/// per row `j`, in order.
///
/// `ahead` is memory to bring into the L2 cache while the mix works (AVX-512 only; empty for
/// none, it changes no value): the next block of rows, which the next scores will read, its
/// lines spread over the mix's steps. Over four layers' caches streaming from memory this took
/// one layer's decode attention 8–11% faster with this mix, 0.3–6.5% with [`bf16_dot_mix`]
/// (docs/performance.md); issued all at once before the mix, the same prefetches had made it
/// slower.
///
/// ```
/// use deepblocks_core::bf16_rows::bf16_mix;
/// use deepblocks_core::half::bf16;
/// let v: Vec<bf16> = [1.0, 2.0, 3.0, 4.0].map(bf16::from_f32).to_vec(); // [2, 2]
/// let p = [0.25, 1.0, 0.75, 0.0]; // [2 rows of v, 2 outputs]
/// let mut o = [0.0f32; 4];
/// bf16_mix(&mut o, &p, &v, 2, 2, 2, 2, &[]);
/// assert_eq!(o, [2.5, 3.5, 1.0, 2.0]);
/// ```
///
/// # Panics
/// If the lengths do not match (`o` `rp · dv`, `p` `w · rp`, `values` `w · stride`) or
/// `dv > stride`.
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
pub fn bf16_mix(
    o: &mut [f32],
    p: &[f32],
    values: &[bf16],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
    ahead: &[bf16],
) {
    check_mix(o, p, values, stride, w, dv, rp);
    #[cfg(target_arch = "x86_64")]
    if crate::avx512() {
        // SAFETY: the CPU has AVX-512F; the lengths were checked.
        unsafe { x86::mix_zmm(o, p, values, stride, w, dv, rp, ahead) };
        return;
    }
    bf16_mix_avx2(o, p, values, stride, w, dv, rp);
}

/// [`bf16_mix`] on AVX2 registers whatever [`crate::avx512`] says ([`bf16_mix_portable`] on
/// CPUs without AVX2), for tests that compare the implementations.
///
/// # Panics
/// As [`bf16_mix`].
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn bf16_mix_avx2(
    o: &mut [f32],
    p: &[f32],
    values: &[bf16],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, values, stride, w, dv, rp);
    #[cfg(target_arch = "x86_64")]
    if crate::isa() == crate::Isa::Avx2 {
        // SAFETY: the CPU has AVX2 and FMA; the lengths were checked.
        unsafe { x86::mix_ymm(o, p, values, stride, w, dv, rp) };
        return;
    }
    mix_columns(o, p, values, stride, w, dv, rp, 0);
}

/// The scalar twin of [`bf16_mix`].
///
/// # Panics
/// As [`bf16_mix`].
#[allow(clippy::too_many_arguments)]
pub fn bf16_mix_portable(
    o: &mut [f32],
    p: &[f32],
    values: &[bf16],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, values, stride, w, dv, rp);
    mix_columns(o, p, values, stride, w, dv, rp, 0);
}

/// [`bf16_mix_portable`]'s steps for the columns `first .. dv` only (the SIMD kernel's tail).
#[allow(clippy::too_many_arguments)]
fn mix_columns(
    o: &mut [f32],
    p: &[f32],
    values: &[bf16],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
    first: usize,
) {
    for j in 0..w {
        let row = &values[j * stride + first..j * stride + dv];
        for r in 0..rp {
            let pj = p[j * rp + r];
            let out = &mut o[r * dv + first..(r + 1) * dv];
            for (y, v) in out.iter_mut().zip(row) {
                *y = pj.mul_add(v.to_f32(), *y);
            }
        }
    }
}

/// The naive twin of [`bf16_mix`]: each `o[r, c]` summed in f64.
///
/// # Panics
/// As [`bf16_mix`].
#[allow(clippy::too_many_arguments)]
pub fn bf16_mix_naive(
    o: &mut [f32],
    p: &[f32],
    values: &[bf16],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, values, stride, w, dv, rp);
    for r in 0..rp {
        for c in 0..dv {
            let sum: f64 = (0..w)
                .map(|j| p[j * rp + r] as f64 * values[j * stride + c].to_f64())
                .sum();
            o[r * dv + c] = (o[r * dv + c] as f64 + sum) as f32;
        }
    }
}

/// `st[j, r] = Σ_k keys[j, k] · q̃[r, k]`: [`bf16_scores`] with the query rows rounded to bf16
/// ([`Bf16Queries::rounded_row`]), so that a product of two bf16 values is one lane of
/// AVX512-BF16's `vdpbf16ps` (32 multiply-adds an instruction, twice the f32 FMAs' rate on
/// the CPUs that have it). On those CPUs where [`crate::bf16_dot`] allows, else
/// [`bf16_dot_scores_portable`]. Each score moves from [`bf16_scores`]'s by the queries'
/// rounding, at most `2⁻⁸ · Σ_k |keys[j, k] · q[r, k]|`, plus the f32 sums' rounding.
///
/// ```
/// use deepblocks_core::bf16_rows::{Bf16Queries, bf16_dot_scores};
/// use deepblocks_core::half::bf16;
/// let keys: Vec<bf16> = [1.0, 2.0, 0.5, -1.0].map(bf16::from_f32).to_vec(); // [2, 2]
/// let q = Bf16Queries::from_transposed(&[1.0, 0.0, 3.0, 1.0], 2, 2); // rows (1, 3), (0, 1)
/// let mut st = [0.0f32; 4];
/// bf16_dot_scores(&mut st, &keys, 2, &q, 2);
/// assert_eq!(st, [7.0, 2.0, -2.5, -1.0]); // these queries are bf16 values already
/// ```
///
/// # Panics
/// As [`bf16_scores`].
pub fn bf16_dot_scores(st: &mut [f32], keys: &[bf16], stride: usize, q: &Bf16Queries, w: usize) {
    check_scores(st, keys, stride, q, w);
    #[cfg(target_arch = "x86_64")]
    if crate::bf16_dot() {
        // SAFETY: the CPU has AVX-512F and AVX512-BF16; the lengths were checked.
        unsafe { x86::dot_scores_zmm(st, keys, stride, q, w) };
        return;
    }
    dot_scores_plain(st, keys, stride, q, w);
}

/// The portable twin of [`bf16_dot_scores`]: per key and query row, a dot product of the keys
/// and the rounded queries in f32, in `k` order.
///
/// # Panics
/// As [`bf16_scores`].
pub fn bf16_dot_scores_portable(
    st: &mut [f32],
    keys: &[bf16],
    stride: usize,
    q: &Bf16Queries,
    w: usize,
) {
    check_scores(st, keys, stride, q, w);
    dot_scores_plain(st, keys, stride, q, w);
}

fn dot_scores_plain(st: &mut [f32], keys: &[bf16], stride: usize, q: &Bf16Queries, w: usize) {
    dot_products(st, keys, stride, q, w, |r, k| q.rounded_row(r)[k].to_f32());
}

/// The naive twin of [`bf16_dot_scores`]: each score of the keys and the rounded queries summed
/// in f64.
///
/// # Panics
/// As [`bf16_scores`].
pub fn bf16_dot_scores_naive(
    st: &mut [f32],
    keys: &[bf16],
    stride: usize,
    q: &Bf16Queries,
    w: usize,
) {
    check_scores(st, keys, stride, q, w);
    let (dk, rp) = q.dims();
    for j in 0..w {
        for r in 0..rp {
            let row = q.rounded_row(r);
            st[j * rp + r] = (0..dk)
                .map(|k| keys[j * stride + k].to_f64() * row[k].to_f64())
                .sum::<f64>() as f32;
        }
    }
}

/// A block's probabilities rounded to bf16 and paired as `vdpbf16ps` takes them: for each two
/// rows of values `2i, 2i + 1` and each output row `r`, the two weights side by side (the
/// buffer [`bf16_dot_mix`] fills and reads, kept between calls).
#[derive(Debug, Clone, Default)]
pub struct Bf16Pairs {
    pairs: AlignedVec<bf16>, // [w.div_ceil(2), rp, 2]
}

impl Bf16Pairs {
    /// An empty buffer; the first [`bf16_dot_mix`] sizes it.
    pub fn new() -> Bf16Pairs {
        Bf16Pairs::default()
    }

    /// `p[w, rp]` rounded to bf16 and paired (a zero beside the last row of an odd `w`).
    fn fill(&mut self, p: &[f32], w: usize, rp: usize) {
        let pairs = w.div_ceil(2);
        self.pairs.resize_zeroed(pairs * rp * 2);
        let mut first = 0; // rows done sixteen at a time
        #[cfg(target_arch = "x86_64")]
        if crate::bf16_dot() {
            first = rp / 16 * 16;
            // SAFETY: the CPU has AVX-512F, BW and AVX512-BF16; `p` is [w, rp] (checked by the
            // caller) and the pairs [w.div_ceil(2), rp, 2].
            unsafe { x86::pair_rows(&mut self.pairs, p, w, rp) };
        }
        for i in 0..pairs {
            for r in first..rp {
                let at = (i * rp + r) * 2;
                self.pairs[at] = bf16::from_f32(p[2 * i * rp + r]);
                self.pairs[at + 1] = if 2 * i + 1 < w {
                    bf16::from_f32(p[(2 * i + 1) * rp + r])
                } else {
                    bf16::ZERO
                };
            }
        }
    }
}

/// `o[r, c] += Σ_j p̃[j, r] · v[j, c]`: [`bf16_mix`] with the probabilities rounded to bf16
/// (`p̃`), so that two rows of values at a time go through `vdpbf16ps` on the CPUs that have
/// AVX512-BF16 where [`crate::bf16_dot`] allows, else [`bf16_dot_mix_portable`]. Each `o[r, c]`
/// moves from [`bf16_mix`]'s by the rounding, at most `2⁻⁸ · Σ_j p[j, r] · |v[j, c]|` for
/// non-negative `p`, plus the f32 sums' rounding. `pairs` is a buffer kept between calls.
///
/// `ahead` as for [`bf16_mix`].
///
/// ```
/// use deepblocks_core::bf16_rows::{Bf16Pairs, bf16_dot_mix};
/// use deepblocks_core::half::bf16;
/// let v: Vec<bf16> = [1.0, 2.0, 3.0, 4.0].map(bf16::from_f32).to_vec(); // [2, 2]
/// let p = [0.25, 1.0, 0.75, 0.0]; // [2 rows of v, 2 outputs]
/// let mut o = [0.0f32; 4];
/// bf16_dot_mix(&mut o, &p, &v, 2, 2, 2, 2, &mut Bf16Pairs::new(), &[]);
/// assert_eq!(o, [2.5, 3.5, 1.0, 2.0]);
/// ```
///
/// # Panics
/// As [`bf16_mix`].
#[allow(clippy::too_many_arguments)] // llm.c-style kernel: buffers, then every dimension
pub fn bf16_dot_mix(
    o: &mut [f32],
    p: &[f32],
    values: &[bf16],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
    pairs: &mut Bf16Pairs,
    ahead: &[bf16],
) {
    check_mix(o, p, values, stride, w, dv, rp);
    #[cfg(target_arch = "x86_64")]
    if crate::bf16_dot() {
        pairs.fill(p, w, rp);
        // SAFETY: the CPU has AVX-512F, BW and AVX512-BF16; the lengths were checked.
        unsafe { x86::dot_mix_zmm(o, p, &pairs.pairs, values, stride, w, dv, rp, ahead) };
        return;
    }
    dot_mix_columns(o, p, values, stride, w, dv, rp, 0);
}

/// The scalar twin of [`bf16_dot_mix`]: every `o[r, c]` gains `p̃[j, r] · v[j, c]` by one fused
/// multiply-add per row `j`, in order.
///
/// # Panics
/// As [`bf16_mix`].
#[allow(clippy::too_many_arguments)]
pub fn bf16_dot_mix_portable(
    o: &mut [f32],
    p: &[f32],
    values: &[bf16],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, values, stride, w, dv, rp);
    dot_mix_columns(o, p, values, stride, w, dv, rp, 0);
}

/// [`bf16_dot_mix_portable`]'s steps for the columns `first .. dv` only.
#[allow(clippy::too_many_arguments)]
fn dot_mix_columns(
    o: &mut [f32],
    p: &[f32],
    values: &[bf16],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
    first: usize,
) {
    for j in 0..w {
        let row = &values[j * stride + first..j * stride + dv];
        for r in 0..rp {
            let pj = bf16::from_f32(p[j * rp + r]).to_f32();
            let out = &mut o[r * dv + first..(r + 1) * dv];
            for (y, v) in out.iter_mut().zip(row) {
                *y = pj.mul_add(v.to_f32(), *y);
            }
        }
    }
}

/// The naive twin of [`bf16_dot_mix`]: each `o[r, c]` of the rounded probabilities summed in
/// f64.
///
/// # Panics
/// As [`bf16_mix`].
#[allow(clippy::too_many_arguments)]
pub fn bf16_dot_mix_naive(
    o: &mut [f32],
    p: &[f32],
    values: &[bf16],
    stride: usize,
    w: usize,
    dv: usize,
    rp: usize,
) {
    check_mix(o, p, values, stride, w, dv, rp);
    for r in 0..rp {
        for c in 0..dv {
            let sum: f64 = (0..w)
                .map(|j| bf16::from_f32(p[j * rp + r]).to_f64() * values[j * stride + c].to_f64())
                .sum();
            o[r * dv + c] = (o[r * dv + c] as f64 + sum) as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::sum_lanes;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BF16_BLOCK, Bf16Queries, dot_mix_columns, mix_columns};
    use crate::ahead::Ahead;
    use half::bf16;
    use std::arch::x86_64::*;

    /// Keys and query rows of a scores tile, and keys prefetched ahead. 2 × 8 splits each block
    /// of keys once per 16 multiply-adds (4 × 4: once per 8) and measured 1.16× faster in cache
    /// once the query rows sat on cache lines (docs/performance.md).
    const TJ: usize = 2;
    const TR: usize = 8;
    /// Keys prefetched ahead: 6 measured 4–14% faster than 2 for one layer's decode attention at
    /// 16,384 cached tokens on Zen 4 (three alternating runs each, f32 and dot products); on
    /// Ice Lake-SP 4 to 10 had measured the same as 2 (docs/performance.md).
    const PF: usize = 6;

    /// The odd bf16 value of each 32-bit lane as f32: the lane with its low 16 bits cleared.
    const HIGH: i32 = 0xFFFF_0000_u32 as i32;

    /// A 32-value block of bf16 as two f32 registers in pair order: the even values (each lane
    /// shifted up 16 bits), the odd ones (each lane's low half cleared).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn split(raw: __m512i) -> [__m512; 2] {
        [
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(raw)),
            _mm512_castsi512_ps(_mm512_and_si512(raw, _mm512_set1_epi32(HIGH))),
        ]
    }

    /// [`super::bf16_scores`] on AVX-512F: tiles of 2 keys × 8 query rows (then single keys and
    /// single rows at the edges).
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `super::check_scores` passed for these arguments.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores_zmm(
        st: &mut [f32],
        keys: &[bf16],
        stride: usize,
        q: &Bf16Queries,
        w: usize,
    ) {
        let (dk, rp) = q.dims();
        tiles(
            keys,
            stride,
            dk,
            w,
            rp,
            TJ,
            TR,
            |whole_keys, whole_rows, j0, r0| {
                // SAFETY: keys j0 .. j0 + J ≤ w and rows r0 .. r0 + R ≤ rp; check_scores bounded the
                // rest; the caller vouched for AVX-512F.
                unsafe {
                    match (whole_keys, whole_rows) {
                        (true, true) => scores_tile::<TJ, TR>(st, keys, stride, q, j0, r0),
                        (true, false) => scores_tile::<TJ, 1>(st, keys, stride, q, j0, r0),
                        (false, true) => scores_tile::<1, TR>(st, keys, stride, q, j0, r0),
                        (false, false) => scores_tile::<1, 1>(st, keys, stride, q, j0, r0),
                    }
                }
            },
        );
    }

    /// The tiles of a scores call in order: keys `j0` in steps of `tj` and query rows `r0` in
    /// steps of `tr` (single keys and rows at the edges), `tile(whole_keys, whole_rows, j0, r0)`;
    /// the keys after each step of keys are prefetched while its tiles run (a tile waits on
    /// every load from memory).
    #[allow(clippy::too_many_arguments)]
    fn tiles(
        keys: &[bf16],
        stride: usize,
        dk: usize,
        w: usize,
        rp: usize,
        tj: usize,
        tr: usize,
        mut tile: impl FnMut(bool, bool, usize, usize),
    ) {
        let mut j0 = 0;
        while j0 < w {
            let whole_keys = w - j0 >= tj;
            for j in (j0 + tj..j0 + tj + PF).take_while(|&j| j < w) {
                for at in (j * stride..j * stride + dk).step_by(BF16_BLOCK) {
                    // SAFETY: inside `keys` (key j < w); a prefetch reads nothing.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(keys.as_ptr().add(at).cast()) };
                }
            }
            let mut r0 = 0;
            while r0 < rp {
                let whole_rows = rp - r0 >= tr;
                tile(whole_keys, whole_rows, j0, r0);
                r0 += if whole_rows { tr } else { 1 };
            }
            j0 += if whole_keys { tj } else { 1 };
        }
    }

    /// The short last blocks (`dk mod 32` values) of keys `j0 .. j0 + J` beside zeros, as bits;
    /// zeros when the keys are whole blocks.
    fn last_blocks<const J: usize>(
        keys: &[bf16],
        stride: usize,
        dk: usize,
        j0: usize,
    ) -> [[u16; BF16_BLOCK]; J] {
        let (whole, tail) = (dk / BF16_BLOCK * BF16_BLOCK, dk % BF16_BLOCK);
        let mut buf = [[0u16; BF16_BLOCK]; J];
        for (j, row) in buf.iter_mut().enumerate() {
            let at = (j0 + j) * stride + whole;
            for (x, k) in row.iter_mut().zip(&keys[at..at + tail]) {
                *x = k.to_bits();
            }
        }
        buf
    }

    /// Scores of keys `j0 .. j0 + J` against query rows `r0 .. r0 + R`.
    ///
    /// # Safety
    /// As [`scores_zmm`]; `j0 + J ≤ w`, `r0 + R ≤ rp`.
    #[target_feature(enable = "avx512f")]
    unsafe fn scores_tile<const J: usize, const R: usize>(
        st: &mut [f32],
        keys: &[bf16],
        stride: usize,
        q: &Bf16Queries,
        j0: usize,
        r0: usize,
    ) {
        let (dk, rp) = q.dims();
        let dkp = q.dkp();
        let whole = dk / BF16_BLOCK;
        let (kp, qp) = (keys.as_ptr().cast::<u16>(), q.q.as_ptr());
        let mut acc = [[_mm512_setzero_ps(); R]; J];
        let tail = dk - whole * BF16_BLOCK;
        let buf = last_blocks::<J>(keys, stride, dk, j0); // the short last block beside zeros
        for b in 0..whole + usize::from(tail > 0) {
            let mut raw = [_mm512_setzero_si512(); J];
            for (j, x) in raw.iter_mut().enumerate() {
                // SAFETY: key j0 + j < w, its values 32·b .. 32·b + 32 ≤ dk ≤ stride, or the
                // buffer of 32 values of the short last block (the queries are zero past dk).
                *x = unsafe {
                    if b < whole {
                        _mm512_loadu_si512(kp.add((j0 + j) * stride + 32 * b).cast())
                    } else {
                        _mm512_loadu_si512(buf[j].as_ptr().cast())
                    }
                };
            }
            // The even values of the block against the first half of the queries' block, the
            // odd ones against the second.
            for h in 0..2 {
                let mut k = [_mm512_setzero_ps(); J];
                for (x, &r) in k.iter_mut().zip(&raw) {
                    *x = split(r)[h];
                }
                for r in 0..R {
                    // SAFETY: row r0 + r < rp of the queries, whose rows are dkp long, and
                    // 32·b + 16·h + 16 ≤ dkp.
                    let x = unsafe { _mm512_loadu_ps(qp.add((r0 + r) * dkp + 32 * b + 16 * h)) };
                    for (a, &kj) in acc.iter_mut().zip(&k) {
                        a[r] = _mm512_fmadd_ps(kj, x, a[r]);
                    }
                }
            }
        }
        store_scores(st, &acc, rp, j0, r0);
    }

    /// The scores of a tile: `st[j0 + j, r0 + r]` = the sum of the lanes of `acc[j][r]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn store_scores<const J: usize, const R: usize>(
        st: &mut [f32],
        acc: &[[__m512; R]; J],
        rp: usize,
        j0: usize,
        r0: usize,
    ) {
        if J * R == 16 {
            let sums = sum_lanes(std::array::from_fn(|i| acc[i / R][i % R]));
            let mut lanes = [0.0f32; 16];
            // SAFETY: 16 floats.
            unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sums) };
            for (j, part) in lanes.chunks_exact(R).enumerate() {
                let at = (j0 + j) * rp + r0;
                st[at..at + R].copy_from_slice(part);
            }
        } else {
            for (j, row) in acc.iter().enumerate() {
                for (r, x) in row.iter().enumerate() {
                    st[(j0 + j) * rp + r0 + r] = _mm512_reduce_add_ps(*x);
                }
            }
        }
    }

    /// [`super::bf16_dot_scores`] on AVX512-BF16: tiles of 2 keys × 8 query rows (then single
    /// keys and rows at the edges), a `vdpbf16ps` per key, query row and block of 32 values.
    ///
    /// # Safety
    /// The CPU supports AVX-512F and AVX512-BF16; `super::check_scores` passed for these
    /// arguments.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn dot_scores_zmm(
        st: &mut [f32],
        keys: &[bf16],
        stride: usize,
        q: &Bf16Queries,
        w: usize,
    ) {
        let (dk, rp) = q.dims();
        tiles(
            keys,
            stride,
            dk,
            w,
            rp,
            TJ,
            TR,
            |whole_keys, whole_rows, j0, r0| {
                // SAFETY: keys j0 .. j0 + J ≤ w and rows r0 .. r0 + R ≤ rp; check_scores bounded the
                // rest; the caller vouched for the instructions.
                unsafe {
                    match (whole_keys, whole_rows) {
                        (true, true) => dot_scores_tile::<TJ, TR>(st, keys, stride, q, j0, r0),
                        (true, false) => dot_scores_tile::<TJ, 1>(st, keys, stride, q, j0, r0),
                        (false, true) => dot_scores_tile::<1, TR>(st, keys, stride, q, j0, r0),
                        (false, false) => dot_scores_tile::<1, 1>(st, keys, stride, q, j0, r0),
                    }
                }
            },
        );
    }

    /// 32 bf16 values as `vdpbf16ps` takes them.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    fn as_bh(x: __m512i) -> __m512bh {
        // SAFETY: both are 64 bytes of plain bits.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(x) }
    }

    /// Scores of keys `j0 .. j0 + J` against the rounded query rows `r0 .. r0 + R`.
    ///
    /// # Safety
    /// As [`dot_scores_zmm`]; `j0 + J ≤ w`, `r0 + R ≤ rp`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn dot_scores_tile<const J: usize, const R: usize>(
        st: &mut [f32],
        keys: &[bf16],
        stride: usize,
        q: &Bf16Queries,
        j0: usize,
        r0: usize,
    ) {
        let (dk, rp) = q.dims();
        let dkp = q.dkp();
        let whole = dk / BF16_BLOCK;
        let (kp, qp) = (
            keys.as_ptr().cast::<u16>(),
            q.rounded.as_ptr().cast::<u16>(),
        );
        let mut acc = [[_mm512_setzero_ps(); R]; J];
        let tail = dk - whole * BF16_BLOCK;
        let buf = last_blocks::<J>(keys, stride, dk, j0); // the short last block beside zeros
        for b in 0..whole + usize::from(tail > 0) {
            let mut k = [as_bh(_mm512_setzero_si512()); J];
            for (j, x) in k.iter_mut().enumerate() {
                // SAFETY: key j0 + j < w, its values 32·b .. 32·b + 32 ≤ dk ≤ stride, or the
                // buffer of 32 values of the short last block (the queries are zero past dk).
                *x = as_bh(unsafe {
                    if b < whole {
                        _mm512_loadu_si512(kp.add((j0 + j) * stride + 32 * b).cast())
                    } else {
                        _mm512_loadu_si512(buf[j].as_ptr().cast())
                    }
                });
            }
            for r in 0..R {
                // SAFETY: row r0 + r < rp of the rounded queries (rows dkp long), 32·b + 32 ≤ dkp.
                let x =
                    as_bh(unsafe { _mm512_loadu_si512(qp.add((r0 + r) * dkp + 32 * b).cast()) });
                for (a, &kj) in acc.iter_mut().zip(&k) {
                    a[r] = _mm512_dpbf16_ps(a[r], kj, x);
                }
            }
        }
        store_scores(st, &acc, rp, j0, r0);
    }

    /// Lane `i` of the result is the sum of the 16 lanes of `x[i]`: halves of registers added
    /// pairwise, four times (30 shuffles and 15 additions for 16 sums).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) fn sum_lanes(x: [__m512; 16]) -> __m512 {
        // The tree below leaves the sum of its input m at lane ORDER[m] (an involution), so it
        // takes x[ORDER[m]] as input m.
        const ORDER: [usize; 16] = [0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15];
        let a: [__m512; 16] = std::array::from_fn(|m| x[ORDER[m]]);
        // 256-bit halves: lanes 0-7 hold partial sums of a[i], 8-15 of a[i + 8].
        let b: [__m512; 8] = std::array::from_fn(|i| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(a[i], a[i + 8]),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(a[i], a[i + 8]),
            )
        });
        // 128-bit quarters: four partial sums each of a[i], a[i + 8], a[i + 4], a[i + 12].
        let c: [__m512; 4] = std::array::from_fn(|i| {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(b[i], b[i + 4]),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(b[i], b[i + 4]),
            )
        });
        // Pairs inside each quarter.
        let d: [__m512; 2] = std::array::from_fn(|i| {
            _mm512_add_ps(
                _mm512_shuffle_ps::<0b01_00_01_00>(c[i], c[i + 2]),
                _mm512_shuffle_ps::<0b11_10_11_10>(c[i], c[i + 2]),
            )
        });
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b10_00_10_00>(d[0], d[1]),
            _mm512_shuffle_ps::<0b11_01_11_01>(d[0], d[1]),
        )
    }

    /// [`super::bf16_mix`] on AVX-512F: 32 columns × up to 8 rows at a time, the last
    /// `dv mod 32` columns by the portable steps.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `super::check_mix` passed for these arguments.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn mix_zmm(
        o: &mut [f32],
        p: &[f32],
        values: &[bf16],
        stride: usize,
        w: usize,
        dv: usize,
        rp: usize,
        ahead: &[bf16],
    ) {
        let whole = dv / BF16_BLOCK * BF16_BLOCK;
        mix_tiles(whole, rp, ahead, |rows, r0, c, ahead| {
            macro_rules! go {
                ($($r:literal)*) => {
                    match rows {
                        $($r => mix_tile::<$r>(o, p, values, stride, w, dv, rp, r0, c, ahead),)*
                        _ => unreachable!("1 to 8 rows"),
                    }
                };
            }
            // SAFETY: rows r0 .. r0 + rows ≤ rp, columns c .. c + 32 ≤ whole ≤ dv; the caller
            // checked the rest.
            unsafe { go!(1 2 3 4 5 6 7 8) };
        });
        if whole < dv {
            mix_columns(o, p, values, stride, w, dv, rp, whole);
        }
    }

    /// The tiles of a mix in order, columns `c` in steps of 32 up to `whole` and up to 8 rows
    /// `r0 ..` at a time: `tile(rows, r0, c, share)`, each tile with an equal share of
    /// `ahead`'s cache lines to prefetch.
    fn mix_tiles(
        whole: usize,
        rp: usize,
        ahead: &[bf16],
        mut tile: impl FnMut(usize, usize, usize, Ahead),
    ) {
        let mut shares = Ahead::shares(ahead, (whole / BF16_BLOCK) * rp.div_ceil(8));
        for c in (0..whole).step_by(BF16_BLOCK) {
            let mut r0 = 0;
            while r0 < rp {
                let rows = (rp - r0).min(8);
                let share = shares.next().expect("a share per tile");
                tile(rows, r0, c, share);
                r0 += rows;
            }
        }
    }

    /// Rows `r0 .. r0 + R`, columns `c .. c + 32` of [`mix_zmm`].
    ///
    /// # Safety
    /// As [`mix_zmm`]; `r0 + R ≤ rp`, `c + 32 ≤ dv`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn mix_tile<const R: usize>(
        o: &mut [f32],
        p: &[f32],
        values: &[bf16],
        stride: usize,
        w: usize,
        dv: usize,
        rp: usize,
        r0: usize,
        c: usize,
        mut ahead: Ahead,
    ) {
        let per_step = ahead.per_step(w);
        // Column order ↔ pair order of 32 columns held in two registers.
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
        let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
        let high = _mm512_add_epi32(low, _mm512_set1_epi32(8));
        let (o, p, v) = (o.as_mut_ptr(), p.as_ptr(), values.as_ptr().cast::<u16>());
        // SAFETY: rows r0 + i < rp of `o` and `p`, columns c .. c + 32 ≤ dv of `o`, and 32
        // values of row j < w from j·stride + c, inside the row (c + 32 ≤ dv ≤ stride).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for (i, a) in acc.iter_mut().enumerate() {
                let at = o.add((r0 + i) * dv + c);
                let (x, y) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
                *a = [
                    _mm512_permutex2var_ps(x, even, y),
                    _mm512_permutex2var_ps(x, odd, y),
                ];
            }
            for j in 0..w {
                ahead.step(per_step);
                let [lo, hi] = split(_mm512_loadu_si512(v.add(j * stride + c).cast()));
                let pj = p.add(j * rp + r0);
                for (i, a) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*pj.add(i));
                    a[0] = _mm512_fmadd_ps(x, lo, a[0]);
                    a[1] = _mm512_fmadd_ps(x, hi, a[1]);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                let at = o.add((r0 + i) * dv + c);
                _mm512_storeu_ps(at, _mm512_permutex2var_ps(a[0], low, a[1]));
                _mm512_storeu_ps(at.add(16), _mm512_permutex2var_ps(a[0], high, a[1]));
            }
        }
    }

    /// [`super::bf16_dot_mix`] on AVX512-BF16: 32 columns × up to 8 rows at a time, the last
    /// `dv mod 32` columns by the portable steps.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, AVX-512BW and AVX512-BF16; `super::check_mix` passed for these
    /// arguments; `pairs` is `p` paired (`Bf16Pairs::fill`).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn dot_mix_zmm(
        o: &mut [f32],
        p: &[f32],
        pairs: &[bf16],
        values: &[bf16],
        stride: usize,
        w: usize,
        dv: usize,
        rp: usize,
        ahead: &[bf16],
    ) {
        let whole = dv / BF16_BLOCK * BF16_BLOCK;
        mix_tiles(whole, rp, ahead, |rows, r0, c, ahead| {
            macro_rules! go {
                ($($r:literal)*) => {
                    match rows {
                        $($r => dot_mix_tile::<$r>(o, pairs, values, stride, w, dv, rp, r0, c, ahead),)*
                        _ => unreachable!("1 to 8 rows"),
                    }
                };
            }
            // SAFETY: rows r0 .. r0 + rows ≤ rp, columns c .. c + 32 ≤ whole ≤ dv; the caller
            // checked the rest.
            unsafe { go!(1 2 3 4 5 6 7 8) };
        });
        if whole < dv {
            dot_mix_columns(o, p, values, stride, w, dv, rp, whole);
        }
    }

    /// The first `rp / 16 · 16` rows of `Bf16Pairs::fill`: for each two rows of `p` and
    /// sixteen output rows, both rows rounded (`vcvtne2ps2bf16`: to nearest, ties to even;
    /// inputs below f32's normal range as zero) and interleaved (`vpermw`).
    ///
    /// # Safety
    /// The CPU has AVX-512F, BW and AVX512-BF16; `p` is `[w, rp]`, `pairs` `[w.div_ceil(2), rp, 2]`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pair_rows(pairs: &mut [bf16], p: &[f32], w: usize, rp: usize) {
        // Word 2r of the result is word r of the first row (the low half), 2r + 1 word r of the
        // second.
        let interleave = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        let (out, p) = (pairs.as_mut_ptr().cast::<u16>(), p.as_ptr());
        for i in 0..w.div_ceil(2) {
            for r in (0..rp / 16 * 16).step_by(16) {
                // SAFETY: rows 2i (and 2i + 1 when < w) of p, columns r .. r + 16 ≤ rp; pair i,
                // rows r .. r + 16 of `pairs`.
                unsafe {
                    let a = _mm512_loadu_ps(p.add(2 * i * rp + r));
                    let b = if 2 * i + 1 < w {
                        _mm512_loadu_ps(p.add((2 * i + 1) * rp + r))
                    } else {
                        _mm512_setzero_ps()
                    };
                    let both = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(b, a));
                    let paired = _mm512_permutexvar_epi16(interleave, both);
                    _mm512_storeu_si512(out.add((i * rp + r) * 2).cast(), paired);
                }
            }
        }
    }

    /// Rows `r0 .. r0 + R`, columns `c .. c + 32` of [`dot_mix_zmm`]. Two rows of values
    /// `2i, 2i + 1` interleaved by `vpunpcklwd`/`vpunpckhwd` hold, in each 32-bit lane, one
    /// column's two values: the low register columns `8m .. 8m + 4`, the high one `8m + 4 ..
    /// 8m + 8` of each 128-bit quarter `m`; `O` is held in that order while the tile works.
    ///
    /// # Safety
    /// As [`dot_mix_zmm`]; `r0 + R ≤ rp`, `c + 32 ≤ dv`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn dot_mix_tile<const R: usize>(
        o: &mut [f32],
        pairs: &[bf16],
        values: &[bf16],
        stride: usize,
        w: usize,
        dv: usize,
        rp: usize,
        r0: usize,
        c: usize,
        mut ahead: Ahead,
    ) {
        let per_step = ahead.per_step(w.div_ceil(2));
        // Column order (x: columns 0-15, y: 16-31) ↔ the interleaved order (lo, hi).
        let to_lo = _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27);
        let to_hi = _mm512_add_epi32(to_lo, _mm512_set1_epi32(4));
        let to_x = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
        let to_y = _mm512_add_epi32(to_x, _mm512_set1_epi32(8));
        let (o, pp, v) = (
            o.as_mut_ptr(),
            pairs.as_ptr().cast::<i32>(),
            values.as_ptr().cast::<u16>(),
        );
        // SAFETY: rows r0 + i < rp of `o` and of each pair of `pairs` ([w.div_ceil(2), rp]
        // 32-bit pairs), columns c .. c + 32 ≤ dv of `o`, and 32 values of row j < w from
        // j·stride + c, inside the row (c + 32 ≤ dv ≤ stride).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for (i, a) in acc.iter_mut().enumerate() {
                let at = o.add((r0 + i) * dv + c);
                let (x, y) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
                *a = [
                    _mm512_permutex2var_ps(x, to_lo, y),
                    _mm512_permutex2var_ps(x, to_hi, y),
                ];
            }
            for i in 0..w.div_ceil(2) {
                ahead.step(per_step);
                let a = _mm512_loadu_si512(v.add(2 * i * stride + c).cast());
                let b = if 2 * i + 1 < w {
                    _mm512_loadu_si512(v.add((2 * i + 1) * stride + c).cast())
                } else {
                    _mm512_setzero_si512() // the zero weight beside an odd last row
                };
                let lo = as_bh(_mm512_unpacklo_epi16(a, b));
                let hi = as_bh(_mm512_unpackhi_epi16(a, b));
                let pi = pp.add(i * rp + r0);
                for (r, x) in acc.iter_mut().enumerate() {
                    let pr = as_bh(_mm512_set1_epi32(pi.add(r).read()));
                    x[0] = _mm512_dpbf16_ps(x[0], lo, pr);
                    x[1] = _mm512_dpbf16_ps(x[1], hi, pr);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                let at = o.add((r0 + i) * dv + c);
                _mm512_storeu_ps(at, _mm512_permutex2var_ps(a[0], to_x, a[1]));
                _mm512_storeu_ps(at.add(16), _mm512_permutex2var_ps(a[0], to_y, a[1]));
            }
        }
    }

    /// [`split`] on 256-bit registers: 16 bf16 values as their 8 even and 8 odd ones in f32.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn split_ymm(raw: __m256i) -> [__m256; 2] {
        [
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(raw)),
            _mm256_castsi256_ps(_mm256_and_si256(raw, _mm256_set1_epi32(HIGH))),
        ]
    }

    /// Keys and query rows of an AVX2 scores tile (16 registers: 8 accumulators).
    const TJ_YMM: usize = 2;
    const TR_YMM: usize = 4;

    /// [`super::bf16_scores`] on AVX2 + FMA: tiles of 2 keys × 4 query rows, each 32-value
    /// block as two 16-value halves in 256-bit registers (then single keys and rows at the edges).
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `super::check_scores` passed for these arguments.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_ymm(
        st: &mut [f32],
        keys: &[bf16],
        stride: usize,
        q: &Bf16Queries,
        w: usize,
    ) {
        let (dk, rp) = q.dims();
        tiles(
            keys,
            stride,
            dk,
            w,
            rp,
            TJ_YMM,
            TR_YMM,
            |whole_keys, whole_rows, j0, r0| {
                // SAFETY: keys j0 .. j0 + J ≤ w and rows r0 .. r0 + R ≤ rp; check_scores bounded the
                // rest; the caller vouched for AVX2 and FMA.
                unsafe {
                    match (whole_keys, whole_rows) {
                        (true, true) => {
                            scores_tile_ymm::<TJ_YMM, TR_YMM>(st, keys, stride, q, j0, r0)
                        }
                        (true, false) => scores_tile_ymm::<TJ_YMM, 1>(st, keys, stride, q, j0, r0),
                        (false, true) => scores_tile_ymm::<1, TR_YMM>(st, keys, stride, q, j0, r0),
                        (false, false) => scores_tile_ymm::<1, 1>(st, keys, stride, q, j0, r0),
                    }
                }
            },
        );
    }

    /// Scores of keys `j0 .. j0 + J` against query rows `r0 .. r0 + R` on AVX2.
    ///
    /// # Safety
    /// As [`scores_ymm`]; `j0 + J ≤ w`, `r0 + R ≤ rp`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn scores_tile_ymm<const J: usize, const R: usize>(
        st: &mut [f32],
        keys: &[bf16],
        stride: usize,
        q: &Bf16Queries,
        j0: usize,
        r0: usize,
    ) {
        let (dk, rp) = q.dims();
        let dkp = q.dkp();
        let whole = dk / BF16_BLOCK;
        let (kp, qp) = (keys.as_ptr().cast::<u16>(), q.q.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); R]; J];
        let tail = dk - whole * BF16_BLOCK;
        let buf = last_blocks::<J>(keys, stride, dk, j0); // the short last block beside zeros
        for b in 0..whole + usize::from(tail > 0) {
            // Half `g` of the block (values 16·g .. 16·g + 16): its even values pair with the
            // queries' block at 8·g, its odd ones at 16 + 8·g.
            for g in 0..2 {
                let mut raw = [_mm256_setzero_si256(); J];
                for (j, x) in raw.iter_mut().enumerate() {
                    // SAFETY: key j0 + j < w, its values 32·b + 16·g .. + 16 ≤ dk ≤ stride, or
                    // the buffer of the short last block.
                    *x = unsafe {
                        if b < whole {
                            _mm256_loadu_si256(kp.add((j0 + j) * stride + 32 * b + 16 * g).cast())
                        } else {
                            _mm256_loadu_si256(buf[j].as_ptr().add(16 * g).cast())
                        }
                    };
                }
                for h in 0..2 {
                    let mut k = [_mm256_setzero_ps(); J];
                    for (x, &r) in k.iter_mut().zip(&raw) {
                        *x = split_ymm(r)[h];
                    }
                    for r in 0..R {
                        // SAFETY: row r0 + r < rp of the queries (rows dkp long), and
                        // 32·b + 16·h + 8·g + 8 ≤ dkp.
                        let x = unsafe {
                            _mm256_loadu_ps(qp.add((r0 + r) * dkp + 32 * b + 16 * h + 8 * g))
                        };
                        for (a, &kj) in acc.iter_mut().zip(&k) {
                            a[r] = _mm256_fmadd_ps(kj, x, a[r]);
                        }
                    }
                }
            }
        }
        if J * R == 8 {
            let sums = sum_lanes_ymm(std::array::from_fn(|i| acc[i / R][i % R]));
            let mut lanes = [0.0f32; 8];
            // SAFETY: 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sums) };
            for (j, part) in lanes.chunks_exact(R).enumerate() {
                let at = (j0 + j) * rp + r0;
                st[at..at + R].copy_from_slice(part);
            }
        } else {
            for (j, row) in acc.iter().enumerate() {
                for (r, x) in row.iter().enumerate() {
                    let x = sum_lanes_ymm([*x; 8]);
                    st[(j0 + j) * rp + r0 + r] = _mm256_cvtss_f32(x);
                }
            }
        }
    }

    /// Lane `i` of the result is the sum of the 8 lanes of `x[i]`: horizontal pairs added three
    /// times, then the two 128-bit halves.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn sum_lanes_ymm(x: [__m256; 8]) -> __m256 {
        let h: [__m256; 4] = std::array::from_fn(|i| _mm256_hadd_ps(x[2 * i], x[2 * i + 1]));
        // Halves: the lower 128 bits hold partial sums of x[0..4] (or x[4..8]) over lanes 0-3,
        // the upper over lanes 4-7.
        let (a, b) = (_mm256_hadd_ps(h[0], h[1]), _mm256_hadd_ps(h[2], h[3]));
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(a, b),
            _mm256_permute2f128_ps::<0x31>(a, b),
        )
    }

    /// [`super::bf16_mix`] on AVX2 + FMA: 16 columns × up to 6 rows at a time, the last
    /// `dv mod 16` columns by the portable steps.
    ///
    /// # Safety
    /// The CPU supports AVX2 and FMA; `super::check_mix` passed for these arguments.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn mix_ymm(
        o: &mut [f32],
        p: &[f32],
        values: &[bf16],
        stride: usize,
        w: usize,
        dv: usize,
        rp: usize,
    ) {
        let whole = dv / 16 * 16;
        for c in (0..whole).step_by(16) {
            let mut r0 = 0;
            while r0 < rp {
                let rows = (rp - r0).min(6);
                macro_rules! go {
                    ($($r:literal)*) => {
                        match rows {
                            $($r => mix_tile_ymm::<$r>(o, p, values, stride, w, dv, rp, r0, c),)*
                            _ => unreachable!("1 to 6 rows"),
                        }
                    };
                }
                // SAFETY: rows r0 .. r0 + rows ≤ rp, columns c .. c + 16 ≤ whole ≤ dv; the
                // caller checked the rest.
                unsafe { go!(1 2 3 4 5 6) };
                r0 += rows;
            }
        }
        if whole < dv {
            mix_columns(o, p, values, stride, w, dv, rp, whole);
        }
    }

    /// Rows `r0 .. r0 + R`, columns `c .. c + 16` of [`mix_ymm`].
    ///
    /// # Safety
    /// As [`mix_ymm`]; `r0 + R ≤ rp`, `c + 16 ≤ dv`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mix_tile_ymm<const R: usize>(
        o: &mut [f32],
        p: &[f32],
        values: &[bf16],
        stride: usize,
        w: usize,
        dv: usize,
        rp: usize,
        r0: usize,
        c: usize,
    ) {
        let (o, p, v) = (o.as_mut_ptr(), p.as_ptr(), values.as_ptr().cast::<u16>());
        // SAFETY: rows r0 + i < rp of `o` and `p`, columns c .. c + 16 ≤ dv of `o`, and 16
        // values of row j < w from j·stride + c, inside the row (c + 16 ≤ dv ≤ stride).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for (i, a) in acc.iter_mut().enumerate() {
                // Columns c .. c + 16 as their even and odd ones.
                let at = o.add((r0 + i) * dv + c);
                let (x, y) = (_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8)));
                let even = _mm256_shuffle_ps::<0b10_00_10_00>(x, y);
                let odd = _mm256_shuffle_ps::<0b11_01_11_01>(x, y);
                *a = [
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                        even,
                    ))),
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                        odd,
                    ))),
                ];
            }
            for j in 0..w {
                let [lo, hi] = split_ymm(_mm256_loadu_si256(v.add(j * stride + c).cast()));
                let pj = p.add(j * rp + r0);
                for (i, a) in acc.iter_mut().enumerate() {
                    let x = _mm256_broadcast_ss(&*pj.add(i));
                    a[0] = _mm256_fmadd_ps(x, lo, a[0]);
                    a[1] = _mm256_fmadd_ps(x, hi, a[1]);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                let (lo, hi) = (
                    _mm256_unpacklo_ps(a[0], a[1]),
                    _mm256_unpackhi_ps(a[0], a[1]),
                );
                let at = o.add((r0 + i) * dv + c);
                _mm256_storeu_ps(at, _mm256_permute2f128_ps::<0x20>(lo, hi));
                _mm256_storeu_ps(at.add(8), _mm256_permute2f128_ps::<0x31>(lo, hi));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    ^ seed.wrapping_mul(0xD1B5_4A32_D192_ED03);
                (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn narrow(x: &[f32]) -> Vec<bf16> {
        x.iter().map(|&v| bf16::from_f32(v)).collect()
    }

    #[test]
    fn pair_order_puts_even_values_first() {
        let order: Vec<usize> = (0..34).map(pair_index).collect();
        assert_eq!(order[..4], [0, 16, 1, 17]);
        assert_eq!(order[30..], [15, 31, 32, 48]);
        let mut seen = order[..32].to_vec();
        seen.sort_unstable();
        assert_eq!(seen, (0..32).collect::<Vec<_>>());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// The scores equal their naive twin (in f64) to f32 rounding, from either kernel, over
        /// keys of any width (short last blocks, several blocks), rows wider than the keys,
        /// and key and query counts off the 2 × 8 tiles.
        #[test]
        fn scores_equal_the_naive_twin(
            seed in 0u64..10_000,
            (dk, extra) in (1usize..100, 0usize..5),
            (w, rp) in (0usize..11, 1usize..20),
        ) {
            let stride = dk + extra;
            let keys = narrow(&values(w * stride, seed));
            let qt = values(dk * rp, seed + 1);
            let q = Bf16Queries::from_transposed(&qt, dk, rp);
            let mut want = vec![f32::NAN; w * rp];
            bf16_scores_naive(&mut want, &keys, stride, &q, w);
            for (name, f) in [
                ("dispatch", bf16_scores as fn(&mut [f32], &[bf16], usize, &Bf16Queries, usize)),
                ("avx2", bf16_scores_avx2),
                ("portable", bf16_scores_portable),
            ] {
                let mut got = vec![f32::NAN; w * rp];
                f(&mut got, &keys, stride, &q, w);
                for (i, (g, x)) in got.iter().zip(&want).enumerate() {
                    // |S| ≤ dk / 4; f32 sums of dk terms are off by a few ulps of that.
                    proptest::prop_assert!(
                        (g - x).abs() <= 1e-6 * dk as f32,
                        "{name}: score {i}: {g} vs {x}"
                    );
                }
            }
        }

        /// The mix equals its scalar twin bit for bit (both SIMD kernels) and its naive twin to f32 rounding, over
        /// value widths off the 32-column blocks (tails alone, blocks and a tail), any row count
        /// and rows wider than the values.
        #[test]
        fn mix_equals_its_twins(
            seed in 0u64..10_000,
            (dv, extra) in (0usize..100, 0usize..5),
            (w, rp) in (0usize..12, 1usize..20),
        ) {
            let stride = dv + extra;
            let v = narrow(&values(w * stride, seed));
            let p = values(w * rp, seed + 1);
            let o0 = values(rp * dv, seed + 2);
            let mut plain = o0.clone();
            bf16_mix_portable(&mut plain, &p, &v, stride, w, dv, rp);
            let mut fast = o0.clone();
            bf16_mix(&mut fast, &p, &v, stride, w, dv, rp, &v);
            proptest::prop_assert_eq!(&fast, &plain);
            let mut avx2 = o0.clone();
            bf16_mix_avx2(&mut avx2, &p, &v, stride, w, dv, rp);
            proptest::prop_assert_eq!(&avx2, &plain);
            let mut want = o0;
            bf16_mix_naive(&mut want, &p, &v, stride, w, dv, rp);
            for (i, (g, x)) in plain.iter().zip(&want).enumerate() {
                proptest::prop_assert!((g - x).abs() <= 1e-6 * (w + 1) as f32, "element {i}: {g} vs {x}");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// The scores over rounded queries (`vdpbf16ps` where the CPU has AVX512-BF16, the
        /// portable loop elsewhere) equal their naive twin to f32 rounding, and the exact scores
        /// within the queries' rounding: `Σ_k |k| · |q − q̃|` more. Same shapes as above.
        #[test]
        fn dot_scores_stay_within_the_queries_rounding(
            seed in 0u64..10_000,
            (dk, extra) in (1usize..100, 0usize..5),
            (w, rp) in (0usize..11, 1usize..20),
        ) {
            let stride = dk + extra;
            let keys = narrow(&values(w * stride, seed));
            let qt = values(dk * rp, seed + 1);
            let q = Bf16Queries::from_transposed(&qt, dk, rp);
            let mut rounded = vec![f32::NAN; w * rp];
            bf16_dot_scores_naive(&mut rounded, &keys, stride, &q, w);
            let mut exact = vec![f32::NAN; w * rp];
            bf16_scores_naive(&mut exact, &keys, stride, &q, w);
            for (name, f) in [
                ("dispatch", bf16_dot_scores as fn(&mut [f32], &[bf16], usize, &Bf16Queries, usize)),
                ("portable", bf16_dot_scores_portable),
            ] {
                let mut got = vec![f32::NAN; w * rp];
                f(&mut got, &keys, stride, &q, w);
                for j in 0..w {
                    for r in 0..rp {
                        let i = j * rp + r;
                        let (g, x, e) = (got[i], rounded[i], exact[i]);
                        proptest::prop_assert!(
                            (g - x).abs() <= 1e-6 * dk as f32,
                            "{name}: score {i}: {g} vs {x} (rounded queries)"
                        );
                        let moved: f32 = (0..dk)
                            .map(|k| {
                                let (qk, qr) = (qt[k * rp + r], q.rounded_row(r)[k].to_f32());
                                keys[j * stride + k].to_f32().abs() * (qk - qr).abs()
                            })
                            .sum();
                        proptest::prop_assert!(
                            (g - e).abs() <= moved + 1e-6 * dk as f32,
                            "{name}: score {i}: {g} vs exact {e}, rounding bound {moved}"
                        );
                    }
                }
            }
        }

        /// The mix of rounded probabilities (`vdpbf16ps` over pairs of rows where the CPU has
        /// AVX512-BF16, the scalar twin elsewhere) equals its naive twin to f32 rounding and the
        /// exact mix within the probabilities' rounding, `Σ_j |p − p̃| · |v|` more: over value widths
        /// off the 32-column blocks, odd and even row counts (a zero weight beside an odd last
        /// row) and any number of output rows.
        #[test]
        fn dot_mix_stays_within_the_probabilities_rounding(
            seed in 0u64..10_000,
            (dv, extra) in (0usize..100, 0usize..5),
            (w, rp) in (0usize..12, 1usize..20),
        ) {
            let stride = dv + extra;
            let v = narrow(&values(w * stride, seed));
            let p = values(w * rp, seed + 1);
            let o0 = values(rp * dv, seed + 2);
            let mut fast = o0.clone();
            bf16_dot_mix(&mut fast, &p, &v, stride, w, dv, rp, &mut Bf16Pairs::new(), &v);
            let mut plain = o0.clone();
            bf16_dot_mix_portable(&mut plain, &p, &v, stride, w, dv, rp);
            let mut rounded = o0.clone();
            bf16_dot_mix_naive(&mut rounded, &p, &v, stride, w, dv, rp);
            let mut exact = o0;
            bf16_mix_naive(&mut exact, &p, &v, stride, w, dv, rp);
            for r in 0..rp {
                for c in 0..dv {
                    let i = r * dv + c;
                    let moved: f32 = (0..w)
                        .map(|j| {
                            let pj = p[j * rp + r];
                            (pj - bf16::from_f32(pj).to_f32()).abs() * v[j * stride + c].to_f32().abs()
                        })
                        .sum();
                    for (name, g) in [("dispatch", fast[i]), ("portable", plain[i])] {
                        proptest::prop_assert!(
                            (g - rounded[i]).abs() <= 1e-6 * (w + 1) as f32,
                            "{name}: element {i}: {g} vs {} (rounded probabilities)", rounded[i]
                        );
                        proptest::prop_assert!(
                            (g - exact[i]).abs() <= moved + 1e-6 * (w + 1) as f32,
                            "{name}: element {i}: {g} vs exact {}, rounding bound {moved}", exact[i]
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "bf16_scores: keys has 5 elements")]
    fn scores_of_keys_of_the_wrong_length_panic() {
        let q = Bf16Queries::from_transposed(&[1.0; 4], 2, 2);
        bf16_scores(&mut [0.0; 6], &narrow(&[1.0; 5]), 2, &q, 3);
    }
}
