//! [`AlignedVec`]: a growable buffer whose first element sits on a 64-byte boundary (one cache
//! line, one 512-bit register).
//!
//! A `Vec<T>` is aligned to `T` only, and a large one from the system allocator typically starts
//! 16 bytes past a cache line: then every 64-byte load of it spans two lines. Rows of the latent
//! cache (576 bf16 values: 18 lines) and the query rows of the attention kernels stay on line
//! boundaries when their buffer starts on one. On an Ice Lake-SP the AVX-512 scores of a 64-key
//! block took 14.5 µs with both 16 bytes past a line and 11.4 µs with both on lines, and the mix
//! about 10% less with its rows and output on lines (`docs/performance.md`).

use crate::Plain;
use std::fmt;
use std::marker::PhantomData;

/// Bytes of a line: the alignment of an [`AlignedVec`].
pub const LINE: usize = 64;

/// One line of storage.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; LINE]);

const ZERO: Line = Line([0; LINE]);

/// A growable buffer of `T` that starts on a 64-byte boundary; it dereferences to `[T]`.
///
/// ```
/// use deepblocks_core::aligned::AlignedVec;
/// let mut v = AlignedVec::<f32>::zeros(3);
/// v[1] = 2.0;
/// v.extend([4.0, 5.0]);
/// assert_eq!(&v[..], &[0.0, 2.0, 0.0, 4.0, 5.0]);
/// assert_eq!(v.as_ptr() as usize % 64, 0);
/// ```
#[derive(Clone)]
pub struct AlignedVec<T: Plain> {
    lines: Vec<Line>, // ⌈len · size_of::<T>() / 64⌉ lines, zeros past len
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Plain> AlignedVec<T> {
    /// Elements of `T` in a line (`T` is 1, 2 or 4 bytes: [`Plain`]).
    const PER_LINE: usize = LINE / size_of::<T>();

    /// An empty buffer (no allocation).
    pub fn new() -> Self {
        AlignedVec {
            lines: Vec::new(),
            len: 0,
            _t: PhantomData,
        }
    }

    /// `len` zeros (all-zero bits: `0.0` for the float types).
    pub fn zeros(len: usize) -> Self {
        AlignedVec {
            lines: vec![ZERO; len.div_ceil(Self::PER_LINE)],
            len,
            _t: PhantomData,
        }
    }

    /// Elements held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no elements are held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements there is room for before the buffer reallocates.
    pub fn capacity(&self) -> usize {
        self.lines.capacity() * Self::PER_LINE
    }

    /// Room for at least `more` more elements, or `Err` when the allocator refuses (or the size
    /// overflows) — so a caller can report it instead of aborting.
    pub fn try_reserve_exact(
        &mut self,
        more: usize,
    ) -> Result<(), std::collections::TryReserveError> {
        let lines = self.len.saturating_add(more).div_ceil(Self::PER_LINE);
        self.lines
            .try_reserve_exact(lines.saturating_sub(self.lines.len()))
    }

    /// `len` elements: the first `len` kept, or zeros appended.
    pub fn resize_zeroed(&mut self, len: usize) {
        if len < self.len {
            self.truncate(len);
        } else {
            self.lines.resize(len.div_ceil(Self::PER_LINE), ZERO);
            self.len = len;
        }
    }

    /// Keeps the first `len` elements (no effect when `len ≥ self.len()`); the room stays.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            // Clear the dropped part of the last line kept: a line holds zeros past `len`.
            let end = (len.div_ceil(Self::PER_LINE) * Self::PER_LINE).min(self.len);
            self.bytes_mut(len, end).fill(0);
            self.lines.truncate(len.div_ceil(Self::PER_LINE));
            self.len = len;
        }
    }

    /// Appends one element.
    pub fn push(&mut self, x: T) {
        if self.len == self.lines.len() * Self::PER_LINE {
            self.lines.push(ZERO);
        }
        self.len += 1;
        let last = self.len - 1;
        self[last] = x;
    }

    /// Bytes of elements `start .. end` (within the lines held).
    fn bytes_mut(&mut self, start: usize, end: usize) -> &mut [u8] {
        let size = size_of::<T>();
        // SAFETY: the lines are plain bytes; start ≤ end ≤ lines · PER_LINE.
        let all = unsafe {
            std::slice::from_raw_parts_mut(
                self.lines.as_mut_ptr().cast::<u8>(),
                self.lines.len() * LINE,
            )
        };
        &mut all[start * size..end * size]
    }
}

impl<T: Plain> Default for AlignedVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Plain> std::ops::Deref for AlignedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the lines hold ≥ len elements' bytes, 64-aligned (≥ align_of::<T>()), and every
        // bit pattern is a valid T (`Plain`).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Plain> std::ops::DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Plain> Extend<T> for AlignedVec<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        let (lower, _) = iter.size_hint();
        self.lines
            .reserve(self.len.saturating_add(lower).div_ceil(Self::PER_LINE) - self.lines.len());
        for x in iter {
            self.push(x);
        }
    }
}

impl<T: Plain> FromIterator<T> for AlignedVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v = AlignedVec::new();
        v.extend(iter);
        v
    }
}

impl<T: Plain> fmt::Debug for AlignedVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Plain + PartialEq> PartialEq for AlignedVec<T> {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn starts_on_a_line_and_keeps_its_values() {
        let mut v = AlignedVec::<bf16>::new();
        assert!(v.is_empty());
        v.extend((0..100).map(|i| bf16::from_f32(i as f32)));
        assert_eq!(v.len(), 100);
        assert_eq!(v.as_ptr() as usize % LINE, 0);
        assert!(v.iter().enumerate().all(|(i, x)| x.to_f32() == i as f32));
        v.truncate(33);
        assert_eq!(v.len(), 33);
        v.resize_zeroed(40); // what truncate dropped comes back as zeros
        assert!(v[33..].iter().all(|x| x.to_f32() == 0.0));
        assert_eq!(v[32].to_f32(), 32.0);
        assert!(v.capacity() >= 40);
    }

    #[test]
    fn reserving_too_much_is_an_error() {
        let mut v = AlignedVec::<f32>::zeros(1);
        assert!(v.try_reserve_exact(usize::MAX / 2).is_err());
        assert!(v.try_reserve_exact(1000).is_ok());
        assert!(v.capacity() >= 1001);
        assert_eq!(v.len(), 1);
    }

    #[test]
    fn bytes_and_floats_alike() {
        let v: AlignedVec<u8> = (0..=255u8).collect();
        assert_eq!(v.len(), 256);
        assert_eq!(v[255], 255);
        let mut w = v.clone();
        w.push(7);
        assert_eq!(w.len(), 257);
        assert_ne!(v, w);
        assert_eq!(format!("{:?}", AlignedVec::<f32>::zeros(2)), "[0.0, 0.0]");
    }
}
