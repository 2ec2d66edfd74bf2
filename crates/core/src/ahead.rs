//! Memory brought into the L2 cache while a kernel works on other data: the next block of a
//! latent cache while the mix of this one runs, so that the next scores find their rows in
//! cache. The lines are spread over the kernel's steps (issued all at once they stall the
//! kernel's own loads: docs/performance.md).

use std::ops::Range;

/// Cache lines (64 bytes each) `lines` from `at` that one tile of a kernel prefetches as it goes.
pub(crate) struct Ahead {
    at: *const u8,
    lines: Range<usize>,
}

impl Ahead {
    /// The cache lines of `data` cut into `parts` equal shares (the last ones shorter or
    /// empty), in order; all empty when `data` is.
    pub(crate) fn shares<T>(data: &[T], parts: usize) -> impl Iterator<Item = Ahead> + '_ {
        let lines = std::mem::size_of_val(data).div_ceil(64);
        let per = lines.div_ceil(parts.max(1)).max(1);
        (0..parts).map(move |i| Ahead {
            at: data.as_ptr().cast(),
            lines: (i * per).min(lines)..((i + 1) * per).min(lines),
        })
    }

    /// How many lines to prefetch at each of `steps` steps to cover them all.
    pub(crate) fn per_step(&self, steps: usize) -> usize {
        self.lines.len().div_ceil(steps.max(1))
    }

    /// Prefetches the next `n` lines into L2 (fewer at the end; nothing off x86-64).
    #[inline(always)]
    pub(crate) fn step(&mut self, n: usize) {
        for _ in 0..n {
            if let Some(_line) = self.lines.next() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: a prefetch reads nothing (and the line is inside the slice given to
                // `shares`).
                unsafe {
                    use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
                    _mm_prefetch::<_MM_HINT_T1>(self.at.wrapping_add(64 * _line).cast());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ahead;

    #[test]
    fn shares_cover_every_line_once_in_order() {
        let bytes = vec![0u8; 64 * 37 + 5]; // 38 lines
        let shares: Vec<Ahead> = Ahead::shares(&bytes, 8).collect();
        assert_eq!(shares.len(), 8);
        let lines: Vec<usize> = shares.iter().flat_map(|s| s.lines.clone()).collect();
        assert_eq!(lines, (0..38).collect::<Vec<_>>());
        assert!(Ahead::shares::<u8>(&[], 4).all(|s| s.lines.is_empty()));
        let mut first = Ahead::shares(&bytes, 8).next().expect("a share");
        assert_eq!(first.per_step(2), 3); // 5 lines over 2 steps
        first.step(3);
        first.step(3);
        assert!(first.lines.is_empty());
    }
}
