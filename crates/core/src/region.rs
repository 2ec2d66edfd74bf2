//! The bytes of a checkpoint file: memory-mapped (the default: nothing is copied, pages come in as
//! the kernels read them) or read into memory (for files that may change while the model lives).

use std::fs::File;
use std::io::Read;
use std::ops::Deref;

use memmap2::Mmap;

/// How a store reaches the bytes of its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Memory-map each file, read-only: no copy, and the files must not be modified (or
    /// truncated) while anything loaded from them is alive — the map reads them in place, so a
    /// rewrite changes the weights and a truncation kills the process (SIGBUS).
    #[default]
    Map,
    /// Read each file into memory once: the files may change afterwards, at the cost of holding
    /// every byte in RAM (and reading it all up front).
    Read,
}

/// A file's bytes, mapped or owned. Owned bytes live in `u64` words, so every tensor offset a
/// safetensors writer aligns for its dtype is aligned in memory too.
pub(crate) enum Region {
    Map(Mmap),
    Heap { words: Vec<u64>, len: usize },
}

impl Region {
    /// The bytes of `file`, as `access` says.
    pub(crate) fn open(file: &File, access: Access) -> std::io::Result<Region> {
        match access {
            // SAFETY: the map is read-only; `Access::Map` documents that the file must not change
            // underneath it.
            Access::Map => Ok(Region::Map(unsafe { Mmap::map(file) }?)),
            Access::Read => {
                let len = usize::try_from(file.metadata()?.len()).map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::FileTooLarge, "file larger than memory")
                })?;
                let mut words = vec![0u64; len.div_ceil(8)];
                // SAFETY: the words are `8 · words.len() ≥ len` initialised bytes; any byte
                // pattern is a valid u64.
                let bytes =
                    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) };
                (&*file).read_exact(bytes)?;
                Ok(Region::Heap { words, len })
            }
        }
    }

    /// A copy of `bytes`, word-aligned.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Region {
        let len = bytes.len();
        let mut words = vec![0u64; len.div_ceil(8)];
        // SAFETY: the words hold `8 · words.len() ≥ len` initialised bytes.
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
            .copy_from_slice(bytes);
        Region::Heap { words, len }
    }

    /// Drops the mapped pages wholly inside `offset .. offset + len` from this process's memory
    /// (they are read from the file again if touched); a no-op for owned bytes.
    pub(crate) fn release(&self, offset: usize, len: usize) {
        const PAGE: usize = 4096;
        #[cfg(unix)]
        if let Region::Map(m) = self {
            let start = offset.next_multiple_of(PAGE);
            let end = (offset + len) / PAGE * PAGE;
            if end > start {
                // SAFETY: the map is a read-only, file-backed private mapping that is never
                // written, so dropping its pages loses nothing: a later read faults them in from
                // the file again (which `Access::Map` requires to stay unchanged). The range lies
                // inside the map.
                let _ = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
                };
            }
        }
        #[cfg(not(unix))]
        let _ = (offset, len, PAGE);
    }

    /// Whether the bytes are memory-mapped.
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self, Region::Map(_))
    }
}

impl Deref for Region {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Region::Map(m) => m,
            // SAFETY: `words` holds at least `len` initialised bytes (see `open`).
            Region::Heap { words, len } => unsafe {
                std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), *len)
            },
        }
    }
}
