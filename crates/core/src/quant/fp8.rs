//! FP8 E4M3 weights with one f32 scale per block of weights, as DeepSeek-V3 ships them.
//!
//! A code is torch's `float8_e4m3fn`: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits, no
//! infinities, `S.1111.111` NaN, largest finite ±448, smallest subnormal 2⁻⁹. A `[rows, cols]`
//! matrix is `rows × cols` codes, row-major, and a grid of `ceil(rows / bo) × ceil(cols / bi)` f32
//! scales (`weight_scale_inv` in the checkpoint), one per `[bo, bi]` block; the blocks at the
//! bottom and right edges are partial. Weight `(r, c)` is `e4m3(code[r, c]) · scale[r / bo, c / bi]`.
//!
//! The conversions are bit-identical to torch's (`tensor.to(torch.float8_e4m3fn)` rounds to
//! nearest, ties to even, and saturates: magnitudes past 448 and infinities become ±448, NaN stays
//! NaN), tested on fixtures [`scripts/golden/fp8.py`] writes with torch 2.15. The quantizer is the block-absmax rule of
//! DeepSeek-V3's and transformers' FP8 code: `scale = amax / 448`, `code = e4m3(x / scale)`
//! (clamped to ±448 first; an all-zero block gets scale 1).
//!
//! [`scripts/golden/fp8.py`]: https://github.com/deepblocks/deepblocks/blob/main/scripts/golden/fp8.py

use std::fmt;

/// The largest finite E4M3 magnitude.
pub const E4M3_MAX: f32 = 448.0;

/// The shape of the weight blocks that share one scale: `rows` output features × `cols` input
/// features (`quantization_config.weight_block_size` of a checkpoint; `[128, 128]` in V3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fp8Block {
    /// Rows (output features) per block.
    pub rows: usize,
    /// Columns (input features) per block.
    pub cols: usize,
}

impl Fp8Block {
    /// DeepSeek-V3's `[128, 128]`.
    pub const DEEPSEEK_V3: Fp8Block = Fp8Block {
        rows: 128,
        cols: 128,
    };

    /// The scale grid of a `[rows, cols]` matrix, `[ceil(rows / bo), ceil(cols / bi)]`; `None`
    /// for an empty block shape.
    pub fn grid(self, rows: usize, cols: usize) -> Option<[usize; 2]> {
        if self.rows == 0 || self.cols == 0 {
            return None;
        }
        Some([rows.div_ceil(self.rows), cols.div_ceil(self.cols)])
    }
}

impl fmt::Display for Fp8Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{}", self.rows, self.cols)
    }
}

/// Every code's value (NaN for `0x7f` and `0xff`).
static E4M3_VALUES: [f32; 256] = {
    let mut t = [0.0f32; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = e4m3_to_f32(c as u8);
        c += 1;
    }
    t
};

/// The value of an E4M3 code (exact: every code is an f32).
pub const fn e4m3_to_f32(code: u8) -> f32 {
    let sign = ((code >> 7) as u32) << 31;
    let exp = ((code >> 3) & 0xf) as u32;
    let mant = (code & 0x7) as u32;
    if exp == 0xf && mant == 0x7 {
        return f32::from_bits(sign | 0x7fc0_0000);
    }
    if exp == 0 {
        // Subnormal: mant · 2⁻⁹.
        let v = mant as f32 * (1.0 / 512.0);
        return if sign != 0 { -v } else { v };
    }
    // Normal: rebias the exponent (7 → 127) and widen the mantissa (3 → 23 bits).
    f32::from_bits(sign | ((exp + 120) << 23) | (mant << 20))
}

/// The value of an E4M3 code, from the table.
#[inline]
pub fn e4m3_value(code: u8) -> f32 {
    E4M3_VALUES[code as usize]
}

/// Whether a code is NaN (`0x7f`, `0xff`).
#[inline]
pub const fn e4m3_is_nan(code: u8) -> bool {
    code & 0x7f == 0x7f
}

/// `x` as an E4M3 code, exactly as torch converts f32 to `float8_e4m3fn`: round to nearest,
/// ties to even, saturating (magnitudes past 448 and infinities give ±448); NaN gives the NaN code
/// of its sign.
pub fn f32_to_e4m3(x: f32) -> u8 {
    let bits = x.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let mag = bits & 0x7fff_ffff;
    if mag > 0x7f80_0000 {
        return 0x7f | sign;
    }
    // 480 = 1.111 × 2⁸: the first magnitude past the last code (the NaN code's place).
    const FIRST_OUT: u32 = 0x43f0_0000;
    // 2⁻⁶: the smallest normal code.
    const MIN_NORMAL: u32 = 121 << 23;
    let code = if mag >= FIRST_OUT {
        0x7e
    } else if mag < MIN_NORMAL {
        // Subnormal (or rounding up to the smallest normal): adding 2¹⁴, whose f32 ulp is the
        // subnormal step 2⁻⁹, leaves `x / 2⁻⁹` rounded to nearest even in the low mantissa bits.
        // 2¹⁴'s biased exponent is (127 − 7) + (23 − 3) + 1 = 141.
        const MAGIC: u32 = 141 << 23;
        let shifted = f32::from_bits(mag) + f32::from_bits(MAGIC);
        (shifted.to_bits() - MAGIC) as u8
    } else {
        // Normal: rebias, then round the 20 dropped mantissa bits to nearest even.
        let odd = (mag >> 20) & 1;
        let r = mag
            .wrapping_add((7u32.wrapping_sub(127)) << 23)
            .wrapping_add(0x7_ffff + odd);
        // Past the midpoint above 448 the rounding reaches the NaN code's place: saturate.
        ((r >> 20) as u8).min(0x7e)
    };
    code | sign
}

/// A `[rows, cols]` FP8 matrix as stored: its codes and its scale grid. `row0` is the offset of
/// row 0 inside its block row of the grid (non-zero for a row slice that starts mid-block).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fp8Matrix<'a> {
    /// The block shape.
    pub block: Fp8Block,
    /// Rows before row 0 in the first block row of `scales`.
    pub row0: usize,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    pub codes: &'a [u8],   // [rows, cols]
    pub scales: &'a [f32], // [ceil((row0 + rows) / bo), ceil(cols / bi)]
}

impl Fp8Matrix<'_> {
    /// Scale columns (blocks per row).
    pub fn grid_cols(&self) -> usize {
        self.cols.div_ceil(self.block.cols)
    }

    /// The codes of row `r`.
    pub fn row_codes(&self, r: usize) -> &[u8] {
        &self.codes[r * self.cols..(r + 1) * self.cols]
    }

    /// The scales of row `r`, one per column block.
    pub fn row_scales(&self, r: usize) -> &[f32] {
        let g = self.grid_cols();
        let br = (self.row0 + r) / self.block.rows;
        &self.scales[br * g..(br + 1) * g]
    }

    /// `out[cols] = ` row `r`, dequantized: `e4m3(code) · scale`, one f32 product per weight.
    pub fn dequantize_row(&self, out: &mut [f32], r: usize) {
        dequantize_row(out, self.row_codes(r), self.row_scales(r), self.block.cols);
    }
}

/// `out[k] = e4m3(codes[k]) · scales[j / bi]`: one row, its scales one per `bi` columns.
///
/// # Panics
/// If the lengths disagree.
pub fn dequantize_row(out: &mut [f32], codes: &[u8], scales: &[f32], bi: usize) {
    assert_eq!(out.len(), codes.len(), "fp8 dequantize_row: out and codes");
    assert_eq!(
        scales.len(),
        codes.len().div_ceil(bi.max(1)),
        "fp8 dequantize_row: one scale per {bi} columns"
    );
    for ((o, c), &s) in out.chunks_mut(bi).zip(codes.chunks(bi)).zip(scales.iter()) {
        for (o, &c) in o.iter_mut().zip(c) {
            *o = e4m3_value(c) * s;
        }
    }
}

/// The reference quantizer: `x[rows, cols]` → `(codes [rows, cols], scales [grid])`, each block's
/// scale `amax / 448` (1 for an all-zero block) and each code `e4m3(clamp(x / scale, ±448))`. The
/// values must be finite.
///
/// # Panics
/// If `x.len() != rows · cols` or the block shape is empty.
pub fn quantize(x: &[f32], rows: usize, cols: usize, block: Fp8Block) -> (Vec<u8>, Vec<f32>) {
    assert_eq!(Some(x.len()), rows.checked_mul(cols), "fp8 quantize: x");
    let [gr, gc] = block.grid(rows, cols).expect("fp8 quantize: empty block");
    let mut scales = vec![0.0f32; gr * gc];
    for (r, row) in x.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (b, chunk) in row.chunks(block.cols).enumerate() {
            let s = &mut scales[(r / block.rows) * gc + b];
            *s = chunk.iter().fold(*s, |m, v| m.max(v.abs()));
        }
    }
    for s in &mut scales {
        *s = if *s > 0.0 { *s / E4M3_MAX } else { 1.0 };
    }
    let mut codes = vec![0u8; x.len()];
    for (r, (row, out)) in x
        .chunks_exact(cols.max(1))
        .zip(codes.chunks_exact_mut(cols.max(1)))
        .enumerate()
        .take(rows)
    {
        let srow = &scales[(r / block.rows) * gc..(r / block.rows + 1) * gc];
        for ((chunk, out), &s) in row
            .chunks(block.cols)
            .zip(out.chunks_mut(block.cols))
            .zip(srow)
        {
            for (o, &v) in out.iter_mut().zip(chunk) {
                *o = f32_to_e4m3((v / s).clamp(-E4M3_MAX, E4M3_MAX));
            }
        }
    }
    (codes, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_the_table_is_the_function() {
        for c in 0..=255u8 {
            let v = e4m3_to_f32(c);
            assert_eq!(v.to_bits(), e4m3_value(c).to_bits(), "{c:#x}");
            if e4m3_is_nan(c) {
                assert!(v.is_nan());
                assert_eq!(f32_to_e4m3(v), c);
            } else {
                // -0 keeps its sign.
                assert_eq!(f32_to_e4m3(v), c, "{c:#x} = {v}");
            }
        }
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x08), 2f32.powi(-6));
    }

    #[test]
    fn rounding_is_to_nearest_even_and_saturates() {
        assert_eq!(f32_to_e4m3(464.0), 0x7e); // the tie between 448 and "480" goes to even
        assert_eq!(f32_to_e4m3(465.0), 0x7e); // saturated
        assert_eq!(f32_to_e4m3(-1e6), 0xfe);
        assert_eq!(f32_to_e4m3(f32::INFINITY), 0x7e);
        assert_eq!(f32_to_e4m3(-f32::NAN), 0xff);
        assert_eq!(f32_to_e4m3(1.0625), 0x38); // 1 + 1/16: tie → 1.0 (even)
        assert_eq!(f32_to_e4m3(1.1875), 0x3a); // 1 + 3/16: tie → 1.25 (even)
        assert_eq!(f32_to_e4m3(2f32.powi(-10)), 0x00); // half the smallest subnormal: tie → 0
        assert_eq!(f32_to_e4m3(3.0 * 2f32.powi(-10)), 0x02); // 1.5 subnormal steps: tie → 2
    }

    #[test]
    fn the_quantizer_keeps_each_block_within_its_step() {
        let (rows, cols, block) = (5, 7, Fp8Block { rows: 2, cols: 3 });
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0)
            .collect();
        let (codes, scales) = quantize(&x, rows, cols, block);
        assert_eq!(scales.len(), 3 * 3);
        let m = Fp8Matrix {
            block,
            row0: 0,
            rows,
            cols,
            codes: &codes,
            scales: &scales,
        };
        let mut row = vec![0.0; cols];
        for r in 0..rows {
            m.dequantize_row(&mut row, r);
            for (c, (&a, &b)) in x[r * cols..(r + 1) * cols].iter().zip(&row).enumerate() {
                // 3 mantissa bits: within 1/16 of the value (relative), or of the block's step.
                let s = m.row_scales(r)[c / block.cols];
                assert!(
                    (a - b).abs() <= a.abs() / 16.0 + s,
                    "({r}, {c}): {a} vs {b}"
                );
            }
        }
        let zero = quantize(&[0.0; 4], 2, 2, block);
        assert_eq!(zero, (vec![0; 4], vec![1.0]));
    }
}
