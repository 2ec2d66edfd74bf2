//! The error type of deepblocks-core.

use std::path::PathBuf;

use crate::DType;

/// Everything that can go wrong in deepblocks-core. Each variant carries the thing at fault: the
/// file, the tensor, the shapes or the value, so that the message alone tells the user what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened, read or memory-mapped.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A model folder holds neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error("{}: no model.safetensors or model.safetensors.index.json in this folder", dir.display())]
    NoWeights {
        /// The folder that was searched.
        dir: PathBuf,
    },

    /// A safetensors file is truncated or its header is corrupt.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Header {
        /// The file at fault.
        path: PathBuf,
        /// What the parser found wrong (header too small or too large, bad JSON, bad offsets,
        /// data shorter than the header says).
        reason: String,
    },

    /// A `model.safetensors.index.json` file is not valid.
    #[error("{}: invalid safetensors index: {reason}", path.display())]
    Index {
        /// The index file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The index names a shard file that cannot be opened.
    #[error("{}: shard {shard:?} is listed in the index but cannot be opened: {source}", index.display())]
    MissingShard {
        /// The index file.
        index: PathBuf,
        /// The shard file name as the index gives it.
        shard: String,
        /// Why it could not be opened.
        #[source]
        source: std::io::Error,
    },

    /// The index maps a tensor to a shard that does not contain it.
    #[error("{}: tensor {tensor:?} is mapped to shard {shard:?}, which does not contain it", index.display())]
    IndexMismatch {
        /// The index file.
        index: PathBuf,
        /// The tensor name.
        tensor: String,
        /// The shard the index points to.
        shard: String,
    },

    /// A tensor was asked for by a name the store does not hold.
    #[error(
        "tensor {name:?}{} not found in {location}",
        expected_shape.as_ref().map(|s| format!(" (expected shape {s:?})")).unwrap_or_default()
    )]
    TensorNotFound {
        /// The requested name.
        name: String,
        /// The shape the caller wanted, when it asked for one.
        expected_shape: Option<Vec<usize>>,
        /// Where it was looked for (file or index path).
        location: String,
    },

    /// A tensor or array does not have the expected shape.
    #[error("{tensor}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// The tensor (checkpoint name) or argument at fault.
        tensor: String,
        /// The shape the caller needs.
        expected: Vec<usize>,
        /// The shape that is there.
        found: Vec<usize>,
    },

    /// A buffer's length does not match the shape it should hold.
    #[error("{what}: {found} elements cannot hold shape {shape:?} ({expected} elements)")]
    Length {
        /// The buffer at fault.
        what: String,
        /// The intended shape.
        shape: Vec<usize>,
        /// The element count of that shape.
        expected: usize,
        /// The buffer's actual length.
        found: usize,
    },

    /// A matrix cannot be stored in a block format: its rows are not whole blocks.
    #[error("{what}: rows of {cols} weights are not whole {format} blocks of {block_len}")]
    NotWholeBlocks {
        /// The matrix at fault.
        what: String,
        /// The format asked for.
        format: crate::quant::BlockFormat,
        /// Its row length.
        cols: usize,
        /// The format's block length.
        block_len: usize,
    },

    /// An FP8 weight's scale grid is not `ceil(rows / bo) × ceil(cols / bi)`.
    #[error(
        "{what}: an FP8 [{rows}, {cols}] matrix in blocks of {block} needs a scale grid of {expected:?}, found {found:?}"
    )]
    Fp8ScaleGrid {
        /// The matrix at fault.
        what: String,
        /// Its rows.
        rows: usize,
        /// Its columns.
        cols: usize,
        /// The block shape.
        block: crate::quant::fp8::Fp8Block,
        /// The grid that shape needs (empty for an empty block shape).
        expected: Vec<usize>,
        /// The scale tensor's shape.
        found: Vec<usize>,
    },

    /// A weight to be quantized holds a NaN or an infinity.
    #[error("{what}: element {index} is {value}, which cannot be quantized")]
    NonFinite {
        /// The matrix at fault.
        what: String,
        /// The flat index of the first such element.
        index: usize,
        /// Its value.
        value: f32,
    },

    /// A tensor is stored in a dtype deepblocks cannot compute with.
    #[error("tensor {tensor:?}: dtype {dtype} is not supported (F32, BF16 and F16 are)")]
    UnsupportedDType {
        /// The tensor name.
        tensor: String,
        /// The dtype as the file names it (`I64`, `F8_E4M3`, ...).
        dtype: String,
    },

    /// A tensor read as FP8 E4M3 (it has a block-scale tensor beside it) is stored otherwise.
    #[error(
        "tensor {tensor:?} has FP8 block scales ({scales:?}) but is stored as {dtype}, not F8_E4M3"
    )]
    NotFp8 {
        /// The tensor name.
        tensor: String,
        /// Its scale tensor.
        scales: String,
        /// The dtype as the file names it.
        dtype: String,
    },

    /// A tensor is stored in a supported dtype, but not the one asked for.
    #[error("tensor {tensor:?}: expected dtype {expected}, found {found}")]
    DTypeMismatch {
        /// The tensor name.
        tensor: String,
        /// The dtype the caller asked for.
        expected: DType,
        /// The dtype in the file.
        found: DType,
    },

    /// A name for [`Bf16Products`](crate::Bf16Products) that is neither `f32` nor `bf16`.
    #[error("bf16 products {name:?} are not known: use f32 or bf16")]
    Bf16Products {
        /// The name given.
        name: String,
    },
}

/// `Result` with deepblocks-core's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::Shape`].
    pub fn shape(tensor: impl Into<String>, expected: &[usize], found: &[usize]) -> Self {
        Error::Shape {
            tensor: tensor.into(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        }
    }

    /// [`Error::Length`] for a buffer `what` of `found` elements that should hold `shape`.
    pub fn length(what: impl Into<String>, shape: &[usize], found: usize) -> Self {
        Error::Length {
            what: what.into(),
            shape: shape.to_vec(),
            expected: shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .unwrap_or(usize::MAX),
            found,
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
