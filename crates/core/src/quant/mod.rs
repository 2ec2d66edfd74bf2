//! Block-quantized weight formats, with GGUF's byte layouts so that a GGUF tensor is used as it is
//! stored: each row of a `[out, in]` matrix is a run of blocks, each block a few scales and the
//! packed integer codes of `block_len` consecutive weights.
//!
//! | format | weights per block | bytes per block | bits per weight | a weight is |
//! |---|---|---|---|---|
//! | `Q8_0` | 32 | 34: `d` f16, 32 × i8 | 8.5 | `d · q`, `q ∈ [−127, 127]` |
//! | `Q4_0` | 32 | 18: `d` f16, 16 bytes of nibbles | 4.5 | `d · (q − 8)`, `q ∈ [0, 15]` |
//! | `Q5_0` | 32 | 22: `d` f16, `qh` u32 (fifth bits), 16 bytes of nibbles | 5.5 | `d · (q − 16)`, `q ∈ [0, 31]` |
//! | `Q4_K` | 256 | 144: `d`, `dmin` f16, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles | 4.5 | `d·sc_j · q − dmin·m_j` in sub-block `j` of 32 |
//! | `Q6_K` | 256 | 210: 128 bytes of low nibbles, 64 of high bit pairs, 16 × i8 scales, `d` f16 | 6.5625 | `d·sc_j · (q − 32)` in sub-block `j` of 16 |
//!
//! Each format has a reference dequantizer (bit-identical to gguf-py's `gguf.quants`, tested on
//! fixtures [`scripts/golden/quants.py`] writes with it) and a quantizer (bit-identical to ggml's
//! reference `quantize_row_*_ref` for the 32-blocks).
//!
//! Beside them, [`fp8`]: FP8 E4M3 codes, one byte per weight, with an f32 scale per
//! `[rows, cols]` block of the matrix (DeepSeek-V3's `weight_scale_inv`), a
//! [`crate::WeightFormat::Fp8`] rather than a row-of-blocks format.
//!
//! [`scripts/golden/quants.py`]: https://github.com/deepblocks/deepblocks/blob/main/scripts/golden/quants.py

pub mod act;
pub(crate) mod dot;
#[cfg(target_arch = "x86_64")]
mod dot_avx2;
pub mod fp8;
pub(crate) mod fp8_linear;
mod k_quants;
pub(crate) mod linear;
mod panel;
mod q4_0;
mod q4_k;
mod q5_0;
mod q6_k;
mod q8_0;
pub mod q8_rows;

use std::fmt;

use half::f16;

/// The instruction set of the dot kernels block-format weights use in this process.
pub fn kernel_isa() -> crate::Isa {
    dot::kernels().isa
}

/// The instruction set of the kernel FP8 weights use in this process.
pub fn fp8_kernel_isa() -> crate::Isa {
    fp8_linear::kernels().isa
}

/// A block-quantized storage format (GGUF's `ggml_type` of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)] // the formats' own names
pub enum BlockFormat {
    /// 8-bit codes, one f16 scale per 32 weights.
    Q8_0,
    /// 4-bit codes offset by 8, one f16 scale per 32 weights.
    Q4_0,
    /// 5-bit codes offset by 16, one f16 scale per 32 weights.
    Q5_0,
    /// 4-bit codes in 256-weight super-blocks: 8 sub-blocks of 32, each with a 6-bit scale and
    /// a 6-bit minimum, scaled by the super-block's f16 `d` and `dmin`.
    Q4_K,
    /// 6-bit codes offset by 32 in 256-weight super-blocks: 16 sub-blocks of 16, each with an
    /// 8-bit scale, scaled by the super-block's f16 `d`.
    Q6_K,
}

impl BlockFormat {
    /// Every format.
    pub const ALL: [BlockFormat; 5] = [
        BlockFormat::Q8_0,
        BlockFormat::Q4_0,
        BlockFormat::Q5_0,
        BlockFormat::Q4_K,
        BlockFormat::Q6_K,
    ];

    /// Weights per block.
    pub const fn block_len(self) -> usize {
        match self {
            BlockFormat::Q8_0 | BlockFormat::Q4_0 | BlockFormat::Q5_0 => 32,
            BlockFormat::Q4_K | BlockFormat::Q6_K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q5_0 => 22,
            BlockFormat::Q4_K => 144,
            BlockFormat::Q6_K => 210,
        }
    }

    /// Stored bits per weight, scales included.
    pub fn bits_per_weight(self) -> f64 {
        (8 * self.block_bytes()) as f64 / self.block_len() as f64
    }

    /// The name GGUF and llama.cpp use.
    pub const fn name(self) -> &'static str {
        match self {
            BlockFormat::Q8_0 => "Q8_0",
            BlockFormat::Q4_0 => "Q4_0",
            BlockFormat::Q5_0 => "Q5_0",
            BlockFormat::Q4_K => "Q4_K",
            BlockFormat::Q6_K => "Q6_K",
        }
    }

    /// Bytes of a row of `cols` weights, or `None` when `cols` is not a multiple of
    /// [`BlockFormat::block_len`] (or the count overflows).
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        if !cols.is_multiple_of(self.block_len()) {
            return None;
        }
        (cols / self.block_len()).checked_mul(self.block_bytes())
    }

    /// `out[n] = ` the weights of the blocks in `blocks` (`n / block_len` whole blocks).
    ///
    /// # Panics
    /// If `blocks` is not `out.len() / block_len` blocks long or `out.len()` is not a multiple of
    /// the block length.
    pub fn dequantize_row(self, out: &mut [f32], blocks: &[u8]) {
        self.check_row("dequantize_row", out.len(), blocks.len());
        let (n, b) = (self.block_len(), self.block_bytes());
        let f = match self {
            BlockFormat::Q8_0 => q8_0::dequantize_block,
            BlockFormat::Q4_0 => q4_0::dequantize_block,
            BlockFormat::Q5_0 => q5_0::dequantize_block,
            BlockFormat::Q4_K => q4_k::dequantize_block,
            BlockFormat::Q6_K => q6_k::dequantize_block,
        };
        for (o, block) in out.chunks_exact_mut(n).zip(blocks.chunks_exact(b)) {
            f(o, block);
        }
    }

    /// `out = ` the blocks of `x` (`x.len() / block_len` blocks), as ggml's reference quantizer
    /// writes them. The values must be finite (check with [`crate::first_non_finite`]).
    ///
    /// # Panics
    /// As [`BlockFormat::dequantize_row`].
    pub fn quantize_row(self, out: &mut [u8], x: &[f32]) {
        self.check_row("quantize_row", x.len(), out.len());
        let (n, b) = (self.block_len(), self.block_bytes());
        let f = match self {
            BlockFormat::Q8_0 => q8_0::quantize_block,
            BlockFormat::Q4_0 => q4_0::quantize_block,
            BlockFormat::Q5_0 => q5_0::quantize_block,
            BlockFormat::Q4_K => q4_k::quantize_block,
            BlockFormat::Q6_K => q6_k::quantize_block,
        };
        for (block, xb) in out.chunks_exact_mut(b).zip(x.chunks_exact(n)) {
            f(block, xb);
        }
    }

    fn check_row(self, what: &str, values: usize, bytes: usize) {
        let name = self.name();
        let blocks = values / self.block_len();
        assert!(
            values.is_multiple_of(self.block_len()),
            "{name}::{what}: {values} values are not whole blocks of {}",
            self.block_len()
        );
        assert!(
            Some(bytes) == blocks.checked_mul(self.block_bytes()),
            "{name}::{what}: {bytes} bytes for {blocks} blocks of {}",
            self.block_bytes()
        );
    }
}

impl fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The f16 at `b[0..2]` (little-endian), widened.
#[inline]
fn read_f16(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// Writes `v` rounded to f16 (nearest, ties to even) at `b[0..2]`.
#[inline]
fn write_f16(b: &mut [u8], v: f32) {
    b[..2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// The element of largest magnitude, the first of equals (ggml's `max` in the 32-block
/// quantizers, sign kept).
fn signed_absmax(x: &[f32]) -> f32 {
    let mut best = 0.0f32;
    for &v in x {
        if v.abs() > best.abs() {
            best = v;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_ggufs() {
        let bits: Vec<f64> = BlockFormat::ALL
            .iter()
            .map(|f| f.bits_per_weight())
            .collect();
        assert_eq!(bits, [8.5, 4.5, 5.5, 4.5, 6.5625]);
        assert_eq!(BlockFormat::Q4_K.row_bytes(2048), Some(8 * 144));
        assert_eq!(BlockFormat::Q4_K.row_bytes(1408), None); // V2-Lite's expert width
        assert_eq!(BlockFormat::Q8_0.row_bytes(1408), Some(44 * 34));
    }

    #[test]
    fn every_format_round_trips_within_its_step() {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0)
            .collect();
        for f in BlockFormat::ALL {
            let mut q = vec![0u8; f.row_bytes(x.len()).unwrap()];
            f.quantize_row(&mut q, &x);
            let mut y = vec![0.0; x.len()];
            f.dequantize_row(&mut y, &q);
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let levels = match f {
                BlockFormat::Q8_0 => 127.0,
                BlockFormat::Q4_0 | BlockFormat::Q4_K => 7.0,
                BlockFormat::Q5_0 => 15.0,
                BlockFormat::Q6_K => 31.0,
            };
            let worst = x
                .iter()
                .zip(&y)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(worst <= amax / levels, "{f}: {worst} > {}", amax / levels);
        }
    }

    #[test]
    #[should_panic(expected = "Q8_0::dequantize_row: 33 bytes for 1 blocks of 34")]
    fn a_short_row_is_refused() {
        BlockFormat::Q8_0.dequantize_row(&mut [0.0; 32], &[0; 33]);
    }
}
