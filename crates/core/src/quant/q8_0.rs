//! `Q8_0`: `[d: f16][q: 32 × i8]`, weight `i` is `d · q_i`.

use super::{read_f16, write_f16};

pub(super) fn dequantize_block(out: &mut [f32], b: &[u8]) {
    let d = read_f16(b);
    for (o, &q) in out.iter_mut().zip(&b[2..34]) {
        *o = q as i8 as f32 * d;
    }
}

/// ggml's `quantize_row_q8_0_ref`: `d = max|x| / 127`, `q = round(x / d)` (halves away from 0).
pub(super) fn quantize_block(b: &mut [u8], x: &[f32]) {
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    write_f16(b, d);
    for (q, &v) in b[2..34].iter_mut().zip(x) {
        *q = round_half_away(v * id) as i8 as u8;
    }
}

/// `v` rounded to the nearest integer, halves away from zero (C's `roundf`), for `|v| < 2³¹`:
/// the truncating conversion and the exact remainder, without a call into libm.
#[inline]
fn round_half_away(v: f32) -> i32 {
    let i = v as i32;
    let frac = v - i as f32; // exact: |v| < 2²³ whenever it has a fraction
    if frac >= 0.5 {
        i + 1
    } else if frac <= -0.5 {
        i - 1
    } else {
        i
    }
}

#[cfg(test)]
mod tests {
    use super::round_half_away;

    #[test]
    fn rounding_is_c_roundf() {
        for v in [
            0.5f32,
            1.5,
            2.5,
            -0.5,
            -2.5,
            0.499_999_97,
            -0.499_999_97,
            126.7,
            -127.0,
            3.0,
        ] {
            assert_eq!(round_half_away(v), v.round() as i32, "{v}");
        }
    }
}
