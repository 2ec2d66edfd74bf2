//! Activations quantized for the integer dot products (as llama.cpp does): once per input row
//! and linear, to 8-bit codes in blocks that line up with the weight blocks — `Q8_0`'s 32 for the
//! 32-block formats, `Q8_K`'s 256 (with the sum of each 16 codes) for the k-quants.

use super::k_quants::nearest_int;
use super::signed_absmax;

/// 32 activations as `d · q`: the `Q8_0` quantizer's block, its f16 scale kept widened.
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct ActQ8_0 {
    /// The scale, an f16 value (as ggml stores it) widened to f32.
    pub d: f32,
    /// The codes.
    pub qs: [i8; 32],
}

/// 256 activations as `d · q`, ggml's `block_q8_K`: `d = max / −127` in f32, and the sums of
/// each 16 codes (the k-quants' minimums multiply them).
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C)]
pub struct ActQ8K {
    /// The scale.
    pub d: f32,
    /// The codes.
    pub qs: [i8; 256],
    /// `bsums[j] = Σ qs[16j .. 16j + 16]`.
    pub bsums: [i16; 16],
}

/// A block of quantized activations.
pub trait ActBlock: Copy + Send + Sync + 'static {
    /// Activations per block.
    const LEN: usize;
    /// The block of `x` (`x.len() == LEN`, finite values).
    fn quantize(x: &[f32]) -> Self;
    /// The dequantized values, for tests.
    fn dequantize(&self) -> Vec<f32>;
}

impl ActBlock for ActQ8_0 {
    const LEN: usize = 32;

    /// ggml's `quantize_row_q8_0`: `d = max|x| / 127` (stored as f16), `q = round(x / d)`.
    fn quantize(x: &[f32]) -> Self {
        let mut bytes = [0u8; 34];
        super::BlockFormat::Q8_0.quantize_row(&mut bytes, x);
        ActQ8_0 {
            d: super::read_f16(&bytes),
            qs: std::array::from_fn(|i| bytes[2 + i] as i8),
        }
    }

    fn dequantize(&self) -> Vec<f32> {
        self.qs.iter().map(|&q| q as f32 * self.d).collect()
    }
}

impl ActBlock for ActQ8K {
    const LEN: usize = 256;

    /// ggml's `quantize_row_q8_K_ref`: `d = 1 / (−127 / max)` for the signed value of largest
    /// magnitude, `q = min(127, round(x / d))` (ties to even).
    fn quantize(x: &[f32]) -> Self {
        let max = signed_absmax(x);
        let mut b = ActQ8K {
            d: 0.0,
            qs: [0; 256],
            bsums: [0; 16],
        };
        if max == 0.0 {
            return b;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
        b
    }

    fn dequantize(&self) -> Vec<f32> {
        self.qs.iter().map(|&q| q as f32 * self.d).collect()
    }
}

/// The blocks of each of `t` rows of `k` activations, row after row (`k / A::LEN` per row).
pub fn quantize_rows<A: ActBlock>(x: &[f32], t: usize, k: usize) -> Vec<A> {
    debug_assert!(k.is_multiple_of(A::LEN) && x.len() == t * k);
    x.chunks_exact(A::LEN).map(A::quantize).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_k_blocks_keep_their_sums_and_round_trip() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 29 % 83) as f32 - 41.0) / 9.0)
            .collect();
        let b = ActQ8K::quantize(&x);
        for (j, s) in b.bsums.iter().enumerate() {
            assert_eq!(
                *s,
                b.qs[16 * j..16 * j + 16]
                    .iter()
                    .map(|&q| q as i16)
                    .sum::<i16>()
            );
        }
        let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        for (a, b) in x.iter().zip(b.dequantize()) {
            assert!((a - b).abs() <= amax / 254.0 * 1.0001, "{a} {b}");
        }
        assert_eq!(ActQ8K::quantize(&[0.0; 256]).d, 0.0);
    }
}
