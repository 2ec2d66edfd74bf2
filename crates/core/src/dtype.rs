//! Element types: [`DType`] names them, [`Element`] computes with them.

use std::fmt;

use half::{bf16, f16};

use crate::{Buffer, WeightData};

/// The floating-point formats deepblocks stores weights in. Computation always accumulates in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// bfloat16: the top 16 bits of an f32 (8 exponent bits, 7 mantissa bits).
    BF16,
    /// IEEE 754 binary16.
    F16,
}

impl DType {
    /// Bytes per element.
    pub const fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// The name safetensors uses: `F32`, `BF16`, `F16`.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::BF16 => "BF16",
            DType::F16 => "F16",
        }
    }

    /// The dtype named `name`, case-insensitively (`f32`, `bf16`, `f16`, as command lines
    /// write them, or safetensors' `F32`, ...).
    ///
    /// ```
    /// use deepblocks_core::DType;
    /// assert_eq!(DType::from_name("bf16"), Some(DType::BF16));
    /// assert_eq!(DType::from_name("F32"), Some(DType::F32));
    /// assert_eq!(DType::from_name("fp8"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<DType> {
        [DType::F32, DType::BF16, DType::F16]
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The deepblocks dtype for a safetensors dtype, or `None` when it is not one we compute with.
    pub fn from_safetensors(dtype: safetensors::Dtype) -> Option<DType> {
        match dtype {
            safetensors::Dtype::F32 => Some(DType::F32),
            safetensors::Dtype::BF16 => Some(DType::BF16),
            safetensors::Dtype::F16 => Some(DType::F16),
            _ => None,
        }
    }

    /// The safetensors dtype with the same layout.
    pub fn to_safetensors(self) -> safetensors::Dtype {
        match self {
            DType::F32 => safetensors::Dtype::F32,
            DType::BF16 => safetensors::Dtype::BF16,
            DType::F16 => safetensors::Dtype::F16,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    use crate::linear::{Kernels, bf16_kernels, f16_kernels, f32_kernels};

    /// Seals [`super::Element`], and gives each element type its kernel table (chosen once).
    pub trait Sealed: Sized + 'static {
        fn kernels() -> &'static Kernels<Self>;
    }
    impl Sealed for f32 {
        fn kernels() -> &'static Kernels<f32> {
            f32_kernels()
        }
    }
    impl Sealed for half::bf16 {
        fn kernels() -> &'static Kernels<half::bf16> {
            bf16_kernels()
        }
    }
    impl Sealed for half::f16 {
        fn kernels() -> &'static Kernels<half::f16> {
            f16_kernels()
        }
    }
}

mod plain {
    /// Seals [`super::Plain`].
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
    impl Sealed for u8 {}
    impl Sealed for i8 {}
}

/// A type a [`crate::Buffer`] can hold: the [`Element`] types, `u8` for the bytes of
/// block-quantized weights and `i8` for signed codes. Every bit pattern is a valid value of each
/// of these types and they have no padding, which is what lets a buffer view memory-mapped bytes
/// as a typed slice (and [`crate::aligned::AlignedVec`] view its lines). The trait is sealed.
pub trait Plain: Copy + Send + Sync + fmt::Debug + 'static + plain::Sealed {}
impl Plain for f32 {}
impl Plain for bf16 {}
impl Plain for f16 {}
impl Plain for u8 {}
impl Plain for i8 {}

/// A scalar type weights can be stored in: `f32`, [`half::bf16`] or [`half::f16`]. The trait
/// is sealed.
pub trait Element: Plain + PartialEq + sealed::Sealed {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Widen to f32 (exact for all three types).
    fn to_f32(self) -> f32;
    /// Narrow from f32, rounding to nearest even (as torch's `.to(dtype)` does).
    fn from_f32(x: f32) -> Self;
    /// Wraps a buffer of this type in the matching [`WeightData`] variant.
    fn into_weight_data(buffer: Buffer<Self>) -> WeightData;
    /// `out[i] = x[i]` widened, as fast as the CPU allows (what [`crate::widen_into`] runs;
    /// lengths checked by it).
    #[doc(hidden)]
    fn widen_slice(out: &mut [f32], x: &[Self]);
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn widen_slice(out: &mut [f32], x: &[Self]) {
        out.copy_from_slice(x);
    }
    fn into_weight_data(buffer: Buffer<Self>) -> WeightData {
        WeightData::F32(buffer)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn widen_slice(out: &mut [f32], x: &[Self]) {
        crate::ops::widen_bf16(out, x);
    }
    fn into_weight_data(buffer: Buffer<Self>) -> WeightData {
        WeightData::BF16(buffer)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // bf16 is the high half of an f32: widening is a shift.
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn widen_slice(out: &mut [f32], x: &[Self]) {
        // half converts with F16C where the CPU has it.
        half::slice::HalfFloatSliceExt::convert_to_f32_slice(x, out);
    }
    fn into_weight_data(buffer: Buffer<Self>) -> WeightData {
        WeightData::F16(buffer)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_widening_is_exact_and_narrowing_rounds_to_even() {
        for bits in [0u16, 0x3f80, 0xbf80, 0x7f7f, 0x0001, 0x7f80, 0xff80] {
            let b = bf16::from_bits(bits);
            assert_eq!(<bf16 as Element>::to_f32(b).to_bits(), b.to_f32().to_bits());
        }
        // 1 + 2^-8 lies exactly between two bf16 values: ties go to the even one (1.0).
        let halfway = 1.0f32 + f32::powi(2.0, -8);
        assert_eq!(<bf16 as Element>::from_f32(halfway).to_bits(), 0x3f80);
    }

    #[test]
    fn dtype_names_round_trip_through_safetensors() {
        for d in [DType::F32, DType::BF16, DType::F16] {
            assert_eq!(DType::from_safetensors(d.to_safetensors()), Some(d));
            assert_eq!(d.to_string(), d.name());
        }
        assert_eq!(DType::from_safetensors(safetensors::Dtype::I64), None);
        assert_eq!(DType::BF16.size_bytes(), 2);
    }
}
