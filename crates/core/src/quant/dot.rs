//! Dot products of one row of weight blocks with one row of quantized activations, in integers
//! per block and f32 across blocks — the portable versions here (which are also the plain
//! reference the AVX2 ones are tested against), the table of the process's instruction set.

use std::sync::OnceLock;

use super::act::{ActQ8_0, ActQ8K};
use super::q4_k::scale_min;
use super::read_f16;
use crate::{Isa, isa};

/// `Σ_b` over `nb` blocks of the dot of weight blocks at `w` with activation blocks at `x`.
///
/// # Safety
/// `w` points to `nb` blocks of the format, `x` to `nb` activation blocks; the CPU supports the
/// table's instruction set.
pub(crate) type DotFn<A> = unsafe fn(*const u8, *const A, usize) -> f32;

/// Four dots of one weight row with four activation rows: `out[j] = dot(w, x + j·x_stride)`
/// over `nb` blocks (`x_stride` in blocks), each weight block unpacked once for all four.
///
/// # Safety
/// As [`DotFn`] for each of the four rows; `out` points to four writable f32.
pub(crate) type Tile4Fn<A> = unsafe fn(*mut f32, *const u8, *const A, usize, usize);

/// One format's kernels.
#[derive(Clone, Copy)]
pub(crate) struct FormatKernels<A: 'static> {
    pub(crate) dot: DotFn<A>,
    pub(crate) tile4: Tile4Fn<A>,
}

/// The dot kernels of one instruction set, one per block format.
pub(crate) struct DotKernels {
    pub(crate) isa: Isa,
    pub(crate) q8_0: FormatKernels<ActQ8_0>,
    pub(crate) q4_0: FormatKernels<ActQ8_0>,
    pub(crate) q5_0: FormatKernels<ActQ8_0>,
    pub(crate) q4_k: FormatKernels<ActQ8K>,
    pub(crate) q6_k: FormatKernels<ActQ8K>,
}

/// The portable kernels; their four-row tiles are four dots.
pub(crate) static PORTABLE: DotKernels = DotKernels {
    isa: Isa::Portable,
    q8_0: FormatKernels {
        dot: q8_0_raw,
        tile4: tile4_by_dots::<ActQ8_0, 34>,
    },
    q4_0: FormatKernels {
        dot: q4_0_raw,
        tile4: tile4_by_dots::<ActQ8_0, 18>,
    },
    q5_0: FormatKernels {
        dot: q5_0_raw,
        tile4: tile4_by_dots::<ActQ8_0, 22>,
    },
    q4_k: FormatKernels {
        dot: q4_k_raw,
        tile4: tile4_by_dots::<ActQ8K, 144>,
    },
    q6_k: FormatKernels {
        dot: q6_k_raw,
        tile4: tile4_by_dots::<ActQ8K, 210>,
    },
};

/// A [`Tile4Fn`] made of four portable dots (`BYTES` per weight block).
///
/// # Safety
/// As [`Tile4Fn`].
unsafe fn tile4_by_dots<A: PortableDot, const BYTES: usize>(
    out: *mut f32,
    w: *const u8,
    x: *const A,
    x_stride: usize,
    nb: usize,
) {
    // SAFETY: the caller passes `nb` weight blocks, four rows of `nb` activation blocks
    // `x_stride` apart, and four writable outputs.
    unsafe {
        let w = std::slice::from_raw_parts(w, nb * BYTES);
        for j in 0..4 {
            let xj = std::slice::from_raw_parts(x.add(j * x_stride), nb);
            *out.add(j) = A::dot(w, xj, BYTES);
        }
    }
}

/// The portable dot for each activation type, by weight block size.
trait PortableDot: Sized {
    fn dot(w: &[u8], x: &[Self], bytes: usize) -> f32;
}

impl PortableDot for ActQ8_0 {
    fn dot(w: &[u8], x: &[Self], bytes: usize) -> f32 {
        match bytes {
            34 => q8_0(w, x),
            18 => q4_0(w, x),
            _ => q5_0(w, x),
        }
    }
}

impl PortableDot for ActQ8K {
    fn dot(w: &[u8], x: &[Self], bytes: usize) -> f32 {
        match bytes {
            144 => q4_k(w, x),
            _ => q6_k(w, x),
        }
    }
}

/// The kernels of this process's instruction set, chosen on first use.
pub(crate) fn kernels() -> &'static DotKernels {
    static CHOSEN: OnceLock<&'static DotKernels> = OnceLock::new();
    CHOSEN.get_or_init(|| match isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &super::dot_avx2::AVX2,
        _ => &PORTABLE,
    })
}

macro_rules! raw {
    ($raw:ident, $safe:ident, $act:ty, $bytes:expr) => {
        /// # Safety
        /// As [`DotFn`] (no instruction-set requirement).
        unsafe fn $raw(w: *const u8, x: *const $act, nb: usize) -> f32 {
            // SAFETY: the caller passes `nb` blocks at each pointer.
            let (w, x) = unsafe {
                (
                    std::slice::from_raw_parts(w, nb * $bytes),
                    std::slice::from_raw_parts(x, nb),
                )
            };
            $safe(w, x)
        }
    };
}

raw!(q8_0_raw, q8_0, ActQ8_0, 34);
raw!(q4_0_raw, q4_0, ActQ8_0, 18);
raw!(q5_0_raw, q5_0, ActQ8_0, 22);
raw!(q4_k_raw, q4_k, ActQ8K, 144);
raw!(q6_k_raw, q6_k, ActQ8K, 210);

/// `Σ_b d_w·d_x · Σ_i w_i x_i` for `Q8_0` weights.
pub fn q8_0(w: &[u8], x: &[ActQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (b, a) in w.chunks_exact(34).zip(x) {
        let sumi: i32 = b[2..34]
            .iter()
            .zip(&a.qs)
            .map(|(&q, &v)| q as i8 as i32 * v as i32)
            .sum();
        sum += sumi as f32 * (read_f16(b) * a.d);
    }
    sum
}

/// `Σ_b d_w·d_x · Σ_i (q_i − 8) x_i` for `Q4_0` weights.
pub fn q4_0(w: &[u8], x: &[ActQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (b, a) in w.chunks_exact(18).zip(x) {
        let mut sumi = 0i32;
        for (j, &q) in b[2..18].iter().enumerate() {
            sumi += ((q & 0x0F) as i32 - 8) * a.qs[j] as i32;
            sumi += ((q >> 4) as i32 - 8) * a.qs[j + 16] as i32;
        }
        sum += sumi as f32 * (read_f16(b) * a.d);
    }
    sum
}

/// `Σ_b d_w·d_x · Σ_i (q_i − 16) x_i` for `Q5_0` weights.
pub fn q5_0(w: &[u8], x: &[ActQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (b, a) in w.chunks_exact(22).zip(x) {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let mut sumi = 0i32;
        for (j, &q) in b[6..22].iter().enumerate() {
            let lo = ((q & 0x0F) as u32 | (((qh >> j) & 1) << 4)) as i32 - 16;
            let hi = ((q >> 4) as u32 | (((qh >> (j + 16)) & 1) << 4)) as i32 - 16;
            sumi += lo * a.qs[j] as i32 + hi * a.qs[j + 16] as i32;
        }
        sum += sumi as f32 * (read_f16(b) * a.d);
    }
    sum
}

/// `Σ_b d_x · (d_w · Σ_j sc_j Σ_i q_i x_i − dmin_w · Σ_j m_j Σ_i x_i)` for `Q4_K` weights, the
/// second sum from the activations' block sums.
pub fn q4_k(w: &[u8], x: &[ActQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (b, a) in w.chunks_exact(144).zip(x) {
        let scales = &b[4..16];
        let (mut sumi, mut summ) = (0i32, 0i32);
        for (g, qs) in b[16..144].chunks_exact(32).enumerate() {
            for (half, shift) in [(0usize, 0u8), (1, 4)] {
                let j = 2 * g + half;
                let (sc, m) = scale_min(j, scales);
                let dot: i32 = qs
                    .iter()
                    .zip(&a.qs[32 * j..32 * j + 32])
                    .map(|(&q, &v)| ((q >> shift) & 0x0F) as i32 * v as i32)
                    .sum();
                sumi += sc as i32 * dot;
                summ += m as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32);
            }
        }
        let d = read_f16(&b[0..2]) * a.d;
        let dmin = read_f16(&b[2..4]) * a.d;
        sum += d * sumi as f32 - dmin * summ as f32;
    }
    sum
}

/// `Σ_b d_w·d_x · Σ_j sc_j Σ_i (q_i − 32) x_i` for `Q6_K` weights.
pub fn q6_k(w: &[u8], x: &[ActQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (b, a) in w.chunks_exact(210).zip(x) {
        let sc = &b[192..208];
        let mut sumi = 0i32;
        for (n, q) in super::q6_k::codes(b).into_iter().enumerate() {
            sumi += sc[n / 16] as i8 as i32 * q as i32 * a.qs[n] as i32;
        }
        sum += (read_f16(&b[208..210]) * a.d) * sumi as f32;
    }
    sum
}
