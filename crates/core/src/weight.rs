//! Weight storage: [`Buffer`] (owned or memory-mapped elements) and [`Weight`] (a row-major
//! `[out, in]` matrix that keeps its checkpoint dtype).

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

use half::{bf16, f16};

use crate::quant::BlockFormat;
use crate::quant::fp8::{self, Fp8Block};
use crate::region::Region;
use crate::{DType, Element, Error, Plain, Result};

/// A read-only, cheaply clonable run of elements, either owned or borrowed from a checkpoint file's
/// bytes (memory-mapped, or read into memory once). Dereferences to `&[T]`.
///
/// Cloning and [`Buffer::slice`] share the underlying memory; nothing is copied.
#[derive(Clone)]
pub struct Buffer<T: Plain> {
    backing: Backing<T>,
    /// For `Owned`: element offset into the vector. For `File`: byte offset into the file.
    start: usize,
    /// Number of elements.
    len: usize,
}

#[derive(Clone)]
enum Backing<T> {
    Owned(Arc<[T]>),
    File(Arc<Region>),
}

impl<T: Plain> Buffer<T> {
    /// A buffer that owns `data`.
    pub fn from_vec(data: Vec<T>) -> Self {
        let len = data.len();
        Buffer {
            backing: Backing::Owned(data.into()),
            start: 0,
            len,
        }
    }

    /// A view of `len` elements of a file's bytes starting at byte `offset`, without copying, or
    /// `None` when the range is out of bounds or not aligned for `T` (the caller then copies).
    pub(crate) fn in_file(map: Arc<Region>, offset: usize, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let end = offset.checked_add(bytes)?;
        if end > map.len() {
            return None;
        }
        let addr = map.as_ptr() as usize + offset;
        if !addr.is_multiple_of(std::mem::align_of::<T>()) {
            return None;
        }
        Some(Buffer {
            backing: Backing::File(map),
            start: offset,
            len,
        })
    }

    /// The sub-buffer `range` (in elements), sharing memory with `self`.
    ///
    /// # Panics
    /// If `range` is not within `0..self.len()`.
    pub fn slice(&self, range: Range<usize>) -> Self {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "Buffer::slice: range {range:?} out of bounds for length {}",
            self.len
        );
        let start = match self.backing {
            Backing::Owned(_) => self.start + range.start,
            Backing::File(_) => self.start + range.start * std::mem::size_of::<T>(),
        };
        Buffer {
            backing: self.backing.clone(),
            start,
            len: range.end - range.start,
        }
    }

    /// Whether the elements live in a memory-mapped file (no copy was made).
    pub fn is_mapped(&self) -> bool {
        match &self.backing {
            Backing::File(region) => region.is_mapped(),
            Backing::Owned(_) => false,
        }
    }
}

impl<T: Element> Buffer<T> {
    /// The elements widened to f32 (a copy).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.iter().map(|x| x.to_f32()).collect()
    }
}

impl<T: Plain> Deref for Buffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.backing {
            Backing::Owned(v) => &v[self.start..self.start + self.len],
            Backing::File(map) => {
                // SAFETY: `in_file` checked that `start .. start + len * size_of::<T>()` lies in the
                // map and that `map.as_ptr() + start` is aligned for `T`; `slice` only narrows that
                // range by whole elements. `T` is f32, bf16, f16 or u8 (`Plain` is sealed): plain
                // data for which every bit pattern is valid. The bytes are read-only and live as
                // long as `self` holds the `Arc`.
                unsafe {
                    std::slice::from_raw_parts(map.as_ptr().add(self.start).cast::<T>(), self.len)
                }
            }
        }
    }
}

impl<T: Plain> fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Buffer")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.len)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

/// How a [`Weight`]'s values are stored: one scalar per element, or blocks of a block format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// One f32, bf16 or f16 per element.
    Float(DType),
    /// Rows of blocks of a [`BlockFormat`].
    Blocks(BlockFormat),
    /// FP8 E4M3 codes with an f32 scale per block of this shape ([`crate::quant::fp8`]).
    Fp8(Fp8Block),
}

impl WeightFormat {
    /// Bytes of a `[rows, cols]` matrix in this format, or `None` when its rows are not whole
    /// blocks or the count overflows.
    pub fn bytes(self, rows: usize, cols: usize) -> Option<usize> {
        match self {
            WeightFormat::Float(d) => rows.checked_mul(cols)?.checked_mul(d.size_bytes()),
            WeightFormat::Blocks(f) => rows.checked_mul(f.row_bytes(cols)?),
            WeightFormat::Fp8(b) => {
                let [gr, gc] = b.grid(rows, cols)?;
                rows.checked_mul(cols)?
                    .checked_add(gr.checked_mul(gc)?.checked_mul(4)?)
            }
        }
    }
}

impl From<DType> for WeightFormat {
    fn from(d: DType) -> Self {
        WeightFormat::Float(d)
    }
}

impl From<BlockFormat> for WeightFormat {
    fn from(f: BlockFormat) -> Self {
        WeightFormat::Blocks(f)
    }
}

impl fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightFormat::Float(d) => d.fmt(f),
            WeightFormat::Blocks(b) => b.fmt(f),
            WeightFormat::Fp8(b) => write!(f, "FP8_E4M3 ({b} blocks)"),
        }
    }
}

/// The values of a [`Weight`], as they were stored.
#[derive(Clone, Debug)]
pub enum WeightData {
    /// f32 elements.
    F32(Buffer<f32>),
    /// bf16 elements (half the bytes of f32; widened inside the kernels).
    BF16(Buffer<bf16>),
    /// f16 elements.
    F16(Buffer<f16>),
    /// The blocks of `format`, row after row (each row `format.row_bytes(cols)` bytes).
    Blocks {
        /// The block format.
        format: BlockFormat,
        /// The bytes.
        data: Buffer<u8>,
    },
    /// FP8 E4M3 codes, one byte per weight, with one f32 scale per block of weights (boxed:
    /// the other variants are one buffer).
    Fp8(Box<Fp8Data>),
}

/// The parts of an FP8 [`WeightData`].
#[derive(Clone, Debug)]
pub struct Fp8Data {
    /// The block shape.
    pub block: Fp8Block,
    /// Rows before the weight's row 0 in the first block row of `scales` (non-zero for a row
    /// slice that starts inside a block).
    pub row0: usize,
    /// The codes.
    pub codes: Buffer<u8>, // [rows, cols]
    /// The scales.
    pub scales: Buffer<f32>, // [ceil((row0 + rows) / bo), ceil(cols / bi)]
}

impl WeightData {
    /// How the values are stored.
    pub fn format(&self) -> WeightFormat {
        match self {
            WeightData::F32(_) => WeightFormat::Float(DType::F32),
            WeightData::BF16(_) => WeightFormat::Float(DType::BF16),
            WeightData::F16(_) => WeightFormat::Float(DType::F16),
            WeightData::Blocks { format, .. } => WeightFormat::Blocks(*format),
            WeightData::Fp8(d) => WeightFormat::Fp8(d.block),
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            WeightData::F32(b) => b.len(),
            WeightData::BF16(b) => b.len(),
            WeightData::F16(b) => b.len(),
            WeightData::Blocks { format, data } => {
                data.len() / format.block_bytes() * format.block_len()
            }
            WeightData::Fp8(d) => d.codes.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the values occupy.
    pub fn bytes(&self) -> usize {
        match self {
            WeightData::F32(b) => 4 * b.len(),
            WeightData::BF16(b) => 2 * b.len(),
            WeightData::F16(b) => 2 * b.len(),
            WeightData::Blocks { data, .. } => data.len(),
            WeightData::Fp8(d) => d.codes.len() + 4 * d.scales.len(),
        }
    }

    fn is_mapped(&self) -> bool {
        match self {
            WeightData::F32(b) => b.is_mapped(),
            WeightData::BF16(b) => b.is_mapped(),
            WeightData::F16(b) => b.is_mapped(),
            WeightData::Blocks { data, .. } => data.is_mapped(),
            WeightData::Fp8(d) => d.codes.is_mapped(),
        }
    }
}

impl<T: Element> From<Buffer<T>> for WeightData {
    fn from(b: Buffer<T>) -> Self {
        T::into_weight_data(b)
    }
}

/// A weight matrix in the layout checkpoints store `nn.Linear` weights: row-major `[out, in]`
/// (`rows = out`, `cols = in`), kept in its source dtype.
///
/// `y = x · Wᵀ` is [`crate::linear`]. Cloning is cheap (the data is shared).
///
/// ```
/// use deepblocks_core::{DType, Weight};
/// let w = Weight::from_f32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3)?; // [out 2, in 3]
/// assert_eq!((w.rows(), w.cols(), w.format()), (2, 3, DType::F32.into()));
/// let w16 = w.to_dtype(DType::BF16);
/// assert_eq!(w16.bytes(), 12); // half of f32's 24
/// assert_eq!(w16.row_f32(1), vec![4.0, 5.0, 6.0]);
/// # Ok::<(), deepblocks_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Weight {
    rows: usize,
    cols: usize,
    data: WeightData, // [rows, cols]
    products: Bf16Products,
}

/// How [`linear`](crate::linear) multiplies a bf16 weight with its f32 input rows. Weights of
/// other formats ignore it (the block formats' integer kernels quantize their inputs on their
/// own terms).
///
/// ```
/// use deepblocks_core::{Bf16Products, DType, Weight, linear};
/// let w = Weight::from_f32(vec![1.0, 1.0], 1, 2)?.to_dtype(DType::BF16);
/// let x = [1.0f32 + 1.0 / 1024.0, 0.0]; // not a bf16 value: it rounds to 1.0
/// let mut y = [0.0f32];
/// linear(&mut y, &x, &w, 1);
/// assert_eq!(y[0], x[0]); // F32, the default: the input as given
/// linear(&mut y, &x, &w.with_bf16_products(Bf16Products::Bf16), 1);
/// assert_eq!(y[0], 1.0);
/// # Ok::<(), deepblocks_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Bf16Products {
    /// The input rows stay f32 and the weights are widened to f32: every product is that of the
    /// values given (the default).
    #[default]
    F32,
    /// The input rows are rounded to bf16 first (to nearest even), as llama.cpp's bf16 path and
    /// a framework computing in bf16 round them. Where [`crate::bf16_dot`] holds (AVX512-BF16)
    /// the products run on `vdpbf16ps`, twice the f32 FMAs' rate, with the weights read in
    /// place ([`crate::matmul_bt_bf16_inputs`]); elsewhere the rounded rows take the f32 kernels.
    Bf16,
}

impl Bf16Products {
    /// The products named `f32` or `bf16` (any case, surrounding spaces ignored), as the
    /// examples' `--bf16-products` takes them; [`Error::Bf16Products`] naming anything else.
    ///
    /// ```
    /// use deepblocks_core::Bf16Products;
    /// assert_eq!(Bf16Products::from_name("bf16")?, Bf16Products::Bf16);
    /// assert!(Bf16Products::from_name("int8").is_err());
    /// # Ok::<(), deepblocks_core::Error>(())
    /// ```
    pub fn from_name(name: &str) -> Result<Bf16Products> {
        match name.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Bf16Products::F32),
            "bf16" => Ok(Bf16Products::Bf16),
            _ => Err(Error::Bf16Products {
                name: name.to_string(),
            }),
        }
    }

    /// [`Bf16Products::Bf16`] where this process multiplies bf16 on `vdpbf16ps`
    /// ([`crate::bf16_dot`]), where rounding the inputs buys speed; [`Bf16Products::F32`]
    /// elsewhere, where it would only cost precision.
    pub fn auto() -> Bf16Products {
        if crate::bf16_dot() {
            Bf16Products::Bf16
        } else {
            Bf16Products::F32
        }
    }
}

impl Weight {
    /// A `[rows, cols]` weight over `data`; `Err(Error::Length)` when the element count differs,
    /// `Err(Error::NotWholeBlocks)` when block-format rows are not whole blocks.
    pub fn new(data: impl Into<WeightData>, rows: usize, cols: usize) -> Result<Self> {
        let data = data.into();
        if let WeightData::Blocks {
            format,
            data: bytes,
        } = &data
        {
            let Some(row_bytes) = format.row_bytes(cols) else {
                return Err(Error::NotWholeBlocks {
                    what: "weight data".into(),
                    format: *format,
                    cols,
                    block_len: format.block_len(),
                });
            };
            if rows.checked_mul(row_bytes) != Some(bytes.len()) {
                return Err(Error::Length {
                    what: format!("{format} weight bytes"),
                    shape: vec![rows, row_bytes],
                    expected: rows.saturating_mul(row_bytes),
                    found: bytes.len(),
                });
            }
            return Ok(Weight {
                rows,
                cols,
                data,
                products: Bf16Products::F32,
            });
        }
        if let WeightData::Fp8(d) = data {
            let Fp8Data {
                block,
                row0,
                codes,
                scales,
            } = *d;
            // Only whole grids here: row slices that start inside a block come from `slice_rows`.
            let grid = block.grid(rows, cols).unwrap_or([0, 0]);
            if row0 != 0 {
                return Err(Error::Fp8ScaleGrid {
                    what: format!(
                        "weight data starting {row0} rows into its first block (use Weight::slice_rows)"
                    ),
                    rows,
                    cols,
                    block,
                    expected: grid.to_vec(),
                    found: vec![scales.len()],
                });
            }
            return Weight::from_fp8(block, codes, scales, grid, rows, cols, "weight data");
        }
        let expected = rows.checked_mul(cols);
        if expected != Some(data.len()) {
            return Err(Error::Length {
                what: "weight data".into(),
                shape: vec![rows, cols],
                expected: expected.unwrap_or(usize::MAX),
                found: data.len(),
            });
        }
        Ok(Weight {
            rows,
            cols,
            data,
            products: Bf16Products::F32,
        })
    }

    /// A `[rows, cols]` weight of `format` blocks owning `bytes` (each row
    /// `format.row_bytes(cols)` bytes).
    ///
    /// # Errors
    /// As [`Weight::new`].
    pub fn from_blocks(
        format: BlockFormat,
        bytes: Vec<u8>,
        rows: usize,
        cols: usize,
    ) -> Result<Self> {
        let data = WeightData::Blocks {
            format,
            data: Buffer::from_vec(bytes),
        };
        Weight::new(data, rows, cols)
    }

    /// A `[rows, cols]` FP8 weight: `codes` (E4M3, row-major) and `scales`, a
    /// `scale_shape = [ceil(rows / bo), ceil(cols / bi)]` grid of f32 (a checkpoint's
    /// `weight_scale_inv`), for blocks of `block`. The codes are scanned once for NaN codes
    /// (`0x7f`, `0xff`), which the kernels do not expect.
    ///
    /// # Errors
    /// [`Error::Length`] when `codes` is not `rows · cols` long; [`Error::Fp8ScaleGrid`] when the
    /// block shape is empty or the scale grid is not the one it needs (or `scales` does not
    /// hold `scale_shape`); [`Error::NonFinite`] at the first NaN code. `what` names the matrix.
    pub fn from_fp8(
        block: Fp8Block,
        codes: Buffer<u8>,
        scales: Buffer<f32>,
        scale_shape: [usize; 2],
        rows: usize,
        cols: usize,
        what: &str,
    ) -> Result<Self> {
        use rayon::prelude::*;
        let expected = rows.checked_mul(cols);
        if expected != Some(codes.len()) {
            return Err(Error::Length {
                what: format!("{what}: FP8 codes"),
                shape: vec![rows, cols],
                expected: expected.unwrap_or(usize::MAX),
                found: codes.len(),
            });
        }
        let grid = block.grid(rows, cols);
        if grid != Some(scale_shape)
            || scale_shape[0].checked_mul(scale_shape[1]) != Some(scales.len())
        {
            return Err(Error::Fp8ScaleGrid {
                what: what.into(),
                rows,
                cols,
                block,
                expected: grid.map(|g| g.to_vec()).unwrap_or_default(),
                found: if scale_shape[0].checked_mul(scale_shape[1]) == Some(scales.len()) {
                    scale_shape.to_vec()
                } else {
                    vec![scales.len()]
                },
            });
        }
        /// Codes per parallel task.
        const CHUNK: usize = 1 << 16;
        let nan = codes
            .par_chunks(CHUNK)
            .enumerate()
            .find_map_first(|(c, chunk)| {
                chunk
                    .iter()
                    .position(|&b| fp8::e4m3_is_nan(b))
                    .map(|i| c * CHUNK + i)
            });
        if let Some(index) = nan {
            return Err(Error::NonFinite {
                what: format!("{what} (an FP8 NaN code)"),
                index,
                value: f32::NAN,
            });
        }
        Ok(Weight {
            rows,
            cols,
            data: WeightData::Fp8(Box::new(Fp8Data {
                block,
                row0: 0,
                codes,
                scales,
            })),
            products: Bf16Products::F32,
        })
    }

    /// The FP8 view of the weight, when it is one.
    pub(crate) fn fp8_matrix(&self) -> Option<fp8::Fp8Matrix<'_>> {
        match &self.data {
            WeightData::Fp8(d) => Some(fp8::Fp8Matrix {
                block: d.block,
                row0: d.row0,
                rows: self.rows,
                cols: self.cols,
                codes: &d.codes,
                scales: &d.scales,
            }),
            _ => None,
        }
    }

    /// An f32 weight that owns `data` (row-major `[rows, cols]`).
    pub fn from_f32(data: Vec<f32>, rows: usize, cols: usize) -> Result<Self> {
        Weight::new(Buffer::from_vec(data), rows, cols)
    }

    /// A bf16 weight that owns `data` (row-major `[rows, cols]`).
    pub fn from_bf16(data: Vec<bf16>, rows: usize, cols: usize) -> Result<Self> {
        Weight::new(Buffer::from_vec(data), rows, cols)
    }

    /// An f16 weight that owns `data` (row-major `[rows, cols]`).
    pub fn from_f16(data: Vec<f16>, rows: usize, cols: usize) -> Result<Self> {
        Weight::new(Buffer::from_vec(data), rows, cols)
    }

    /// Output features (`out`).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features (`in`).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// How the values are stored.
    pub fn format(&self) -> WeightFormat {
        self.data.format()
    }

    /// The elements, row-major, in the stored dtype.
    pub fn data(&self) -> &WeightData {
        &self.data
    }

    /// Bytes the values occupy.
    pub fn bytes(&self) -> usize {
        self.data.bytes()
    }

    /// Whether the values are borrowed from a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        self.data.is_mapped()
    }

    /// How [`linear`](crate::linear) multiplies this weight if it is bf16 ([`Bf16Products::F32`]
    /// unless set by [`Weight::with_bf16_products`]).
    pub fn bf16_products(&self) -> Bf16Products {
        self.products
    }

    /// The same weight (sharing its values), multiplied as `products` says when it is bf16. Rows
    /// sliced from it and its conversions to other dtypes keep the setting.
    pub fn with_bf16_products(mut self, products: Bf16Products) -> Weight {
        self.products = products;
        self
    }

    /// Rows `range` as a `[range.len(), cols]` weight sharing memory with `self` (no copy). This is
    /// how a fused checkpoint matrix (e.g. `kv_b_proj`, or transformers-5's packed experts) is
    /// split.
    ///
    /// # Panics
    /// If `range` is not within `0..rows`.
    pub fn slice_rows(&self, range: Range<usize>) -> Weight {
        assert!(
            range.start <= range.end && range.end <= self.rows,
            "Weight::slice_rows: {range:?} out of 0..{}",
            self.rows
        );
        let elems = range.start * self.cols..range.end * self.cols;
        let data = match &self.data {
            WeightData::F32(b) => WeightData::F32(b.slice(elems)),
            WeightData::BF16(b) => WeightData::BF16(b.slice(elems)),
            WeightData::F16(b) => WeightData::F16(b.slice(elems)),
            WeightData::Blocks { format, data } => {
                let rb = self.bytes() / self.rows.max(1);
                WeightData::Blocks {
                    format: *format,
                    data: data.slice(range.start * rb..range.end * rb),
                }
            }
            WeightData::Fp8(d) => {
                let (bo, g) = (d.block.rows, self.cols.div_ceil(d.block.cols));
                let (first, last) = (d.row0 + range.start, d.row0 + range.end);
                let blocks = first / bo..last.div_ceil(bo).max(first / bo);
                WeightData::Fp8(Box::new(Fp8Data {
                    block: d.block,
                    row0: first % bo,
                    codes: d.codes.slice(elems),
                    scales: d.scales.slice(blocks.start * g..blocks.end * g),
                }))
            }
        };
        Weight {
            rows: range.end - range.start,
            cols: self.cols,
            data,
            products: self.products,
        }
    }

    /// Row `r` widened to f32.
    ///
    /// # Panics
    /// If `r >= rows`.
    pub fn row_f32(&self, r: usize) -> Vec<f32> {
        let mut out = vec![0.0; self.cols];
        self.read_row_f32(&mut out, r);
        out
    }

    /// Writes row `r`, widened to f32, into `out` (`out.len() == cols`). Used by embedding lookup.
    ///
    /// # Panics
    /// If `r >= rows` or `out.len() != cols`.
    pub fn read_row_f32(&self, out: &mut [f32], r: usize) {
        assert!(r < self.rows, "row {r} out of 0..{}", self.rows);
        assert_eq!(out.len(), self.cols, "output row length");
        let span = r * self.cols..(r + 1) * self.cols;
        match &self.data {
            WeightData::F32(b) => out.copy_from_slice(&b[span]),
            WeightData::BF16(b) => widen_into(out, &b[span]),
            WeightData::F16(b) => widen_into(out, &b[span]),
            WeightData::Blocks { format, data } => {
                let rb = data.len() / self.rows;
                format.dequantize_row(out, &data[r * rb..(r + 1) * rb]);
            }
            WeightData::Fp8(_) => {
                if let Some(m) = self.fp8_matrix() {
                    m.dequantize_row(out, r)
                }
            }
        }
    }

    /// The first NaN or infinite element, as `(flat index, value)`: one parallel pass over the
    /// stored elements (the bit patterns of bf16/f16 are tested without widening; blocks are
    /// dequantized row by row).
    pub fn first_non_finite(&self) -> Option<(usize, f32)> {
        use rayon::prelude::*;
        /// Elements per parallel task.
        const CHUNK: usize = 1 << 16;
        fn scan<T: Element>(x: &[T], bad: impl Fn(&T) -> bool + Sync) -> Option<(usize, f32)> {
            x.par_chunks(CHUNK)
                .enumerate()
                .find_map_first(|(c, chunk)| {
                    chunk
                        .iter()
                        .position(&bad)
                        .map(|i| (c * CHUNK + i, chunk[i].to_f32()))
                })
        }
        match &self.data {
            WeightData::F32(b) => scan(b, |v| !v.is_finite()),
            // Exponent bits all ones: infinite or NaN.
            WeightData::BF16(b) => scan(b, |v| v.to_bits() & 0x7f80 == 0x7f80),
            WeightData::F16(b) => scan(b, |v| v.to_bits() & 0x7c00 == 0x7c00),
            WeightData::Blocks { .. } | WeightData::Fp8(_) => {
                (0..self.rows).into_par_iter().find_map_first(|r| {
                    let row = self.row_f32(r);
                    crate::first_non_finite(&row).map(|i| (r * self.cols + i, row[i]))
                })
            }
        }
    }

    /// All elements widened to f32 (a copy), row-major.
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            WeightData::F32(b) => b.to_vec(),
            WeightData::BF16(b) => b.to_f32_vec(),
            WeightData::F16(b) => b.to_f32_vec(),
            WeightData::Blocks { .. } | WeightData::Fp8(_) => {
                let mut out = vec![0.0; self.rows * self.cols];
                for (r, row) in out.chunks_exact_mut(self.cols.max(1)).enumerate() {
                    self.read_row_f32(row, r);
                }
                out
            }
        }
    }

    /// The same matrix in `format`'s blocks, quantized with its reference quantizer (a copy; the
    /// same weight when it already is).
    ///
    /// # Errors
    /// [`Error::NotWholeBlocks`] when the rows are not whole blocks; [`Error::NonFinite`] at the
    /// first NaN or infinite value. `what` names the matrix in both.
    pub fn quantize(&self, format: BlockFormat, what: &str) -> Result<Weight> {
        use rayon::prelude::*;
        if self.format() == WeightFormat::Blocks(format) {
            return Ok(self.clone());
        }
        let Some(rb) = format.row_bytes(self.cols) else {
            return Err(Error::NotWholeBlocks {
                what: what.into(),
                format,
                cols: self.cols,
                block_len: format.block_len(),
            });
        };
        if let Some((index, value)) = self.first_non_finite() {
            return Err(Error::NonFinite {
                what: what.into(),
                index,
                value,
            });
        }
        let mut bytes = vec![0u8; self.rows * rb];
        bytes
            .par_chunks_mut(rb.max(1))
            .enumerate()
            .for_each(|(r, out)| format.quantize_row(out, &self.row_f32(r)));
        Ok(Weight::from_blocks(format, bytes, self.rows, self.cols)?
            .with_bf16_products(self.products))
    }

    /// The same matrix in FP8 E4M3 with one scale per `block` (the reference quantizer of
    /// [`fp8::quantize`]; a copy, or the same weight when it already is).
    ///
    /// # Errors
    /// [`Error::Fp8ScaleGrid`] for an empty block shape; [`Error::NonFinite`] at the first NaN or
    /// infinite value. `what` names the matrix.
    pub fn quantize_fp8(&self, block: Fp8Block, what: &str) -> Result<Weight> {
        if self.format() == WeightFormat::Fp8(block) {
            return Ok(self.clone());
        }
        let Some(grid) = block.grid(self.rows, self.cols) else {
            return Err(Error::Fp8ScaleGrid {
                what: what.into(),
                rows: self.rows,
                cols: self.cols,
                block,
                expected: vec![],
                found: vec![],
            });
        };
        if let Some((index, value)) = self.first_non_finite() {
            return Err(Error::NonFinite {
                what: what.into(),
                index,
                value,
            });
        }
        // Block rows are independent: quantized in parallel, concatenated in order.
        let x = self.to_f32_vec();
        let (codes, scales) = if self.rows == 0 || self.cols == 0 {
            fp8::quantize(&x, self.rows, self.cols, block)
        } else {
            use rayon::prelude::*;
            let parts: Vec<(Vec<u8>, Vec<f32>)> = x
                .par_chunks(block.rows.saturating_mul(self.cols))
                .map(|rows| fp8::quantize(rows, rows.len() / self.cols, self.cols, block))
                .collect();
            parts.into_iter().fold(
                (Vec::with_capacity(x.len()), Vec::new()),
                |(mut c, mut s), (pc, ps)| {
                    c.extend_from_slice(&pc);
                    s.extend_from_slice(&ps);
                    (c, s)
                },
            )
        };
        Ok(Weight::from_fp8(
            block,
            Buffer::from_vec(codes),
            Buffer::from_vec(scales),
            grid,
            self.rows,
            self.cols,
            what,
        )?
        .with_bf16_products(self.products))
    }

    /// The same matrix in `format` ([`Weight::to_dtype`], [`Weight::quantize`] or
    /// [`Weight::quantize_fp8`]).
    ///
    /// # Errors
    /// As the one it calls.
    pub fn to_format(&self, format: WeightFormat, what: &str) -> Result<Weight> {
        match format {
            WeightFormat::Float(d) => Ok(self.to_dtype(d)),
            WeightFormat::Blocks(f) => self.quantize(f, what),
            WeightFormat::Fp8(b) => self.quantize_fp8(b, what),
        }
    }

    /// The same matrix in `dtype`: shared when it already is, otherwise converted (rounding to
    /// nearest even when narrowing).
    pub fn to_dtype(&self, dtype: DType) -> Weight {
        if self.format() == WeightFormat::Float(dtype) {
            return self.clone();
        }
        let f = self.to_f32_vec();
        let data = match dtype {
            DType::F32 => WeightData::F32(Buffer::from_vec(f)),
            DType::BF16 => WeightData::BF16(Buffer::from_vec(narrow(&f))),
            DType::F16 => WeightData::F16(Buffer::from_vec(narrow(&f))),
        };
        Weight {
            rows: self.rows,
            cols: self.cols,
            data,
            products: self.products,
        }
    }
}

/// `out[i] = x[i]` widened to f32.
///
/// # Panics
/// If the lengths differ.
pub fn widen_into<T: Element>(out: &mut [f32], x: &[T]) {
    assert_eq!(out.len(), x.len(), "widen_into: length mismatch");
    T::widen_slice(out, x);
}

/// `x` narrowed to `T`, rounding to nearest even.
pub fn narrow<T: Element>(x: &[f32]) -> Vec<T> {
    x.iter().map(|&v| T::from_f32(v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fast widening (eight lanes on AVX2, F16C for f16) gives every bit pattern's exact
    /// value, NaNs and infinities included, at lengths off the vector width.
    #[test]
    fn widening_is_exact_for_every_bit_pattern() {
        let bits: Vec<u16> = (0..=u16::MAX).collect();
        for len in [0, 1, 7, 9, 65_536] {
            let b: Vec<bf16> = bits[..len].iter().map(|&x| bf16::from_bits(x)).collect();
            let h: Vec<f16> = bits[..len].iter().map(|&x| f16::from_bits(x)).collect();
            let mut out = vec![0.0f32; len];
            widen_into(&mut out, &b);
            for (o, v) in out.iter().zip(&b) {
                assert_eq!(o.to_bits(), Element::to_f32(*v).to_bits(), "{v:?}");
            }
            widen_into(&mut out, &h);
            for (o, v) in out.iter().zip(&h) {
                // NaN payloads may differ between conversions; NaN stays NaN.
                let w = Element::to_f32(*v);
                assert!(
                    o.to_bits() == w.to_bits() || (o.is_nan() && w.is_nan()),
                    "{v:?}"
                );
            }
        }
    }

    #[test]
    fn wrong_length_is_an_error_naming_the_shape() {
        let err = Weight::from_f32(vec![0.0; 5], 2, 3).unwrap_err();
        assert!(
            matches!(&err, Error::Length { shape, expected: 6, found: 5, .. } if shape == &[2, 3]),
            "{err}"
        );
        assert!(err.to_string().contains("[2, 3]"), "{err}");
    }

    #[test]
    fn non_finite_elements_are_found_in_every_dtype() {
        let mut v = vec![0.5f32; 200_000];
        let w = Weight::from_f32(v.clone(), 1000, 200).unwrap();
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            assert_eq!(w.to_dtype(dtype).first_non_finite(), None);
        }
        v[150_001] = f32::NEG_INFINITY;
        v[170_000] = f32::NAN;
        let w = Weight::from_f32(v, 1000, 200).unwrap();
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            assert_eq!(
                w.to_dtype(dtype).first_non_finite(),
                Some((150_001, f32::NEG_INFINITY)),
                "{dtype:?}"
            );
        }
    }

    #[test]
    fn slice_rows_shares_memory_and_reads_the_right_rows() {
        let w = Weight::from_f32((0..12).map(|v| v as f32).collect(), 4, 3).unwrap();
        let s = w.slice_rows(1..3);
        assert_eq!(s.shape(), [2, 3]);
        assert_eq!(s.to_f32_vec(), vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        let b = w.to_dtype(DType::BF16).slice_rows(3..4);
        assert_eq!(b.row_f32(0), vec![9.0, 10.0, 11.0]);
    }

    #[test]
    fn weight_data_from_buffer_keeps_the_dtype() {
        let d: WeightData = Buffer::from_vec(vec![f16::from_f32(1.5)]).into();
        assert_eq!(d.format(), WeightFormat::Float(DType::F16));
        let d: WeightData = Buffer::from_vec(vec![bf16::from_f32(1.5)]).into();
        assert_eq!(d.format(), WeightFormat::Float(DType::BF16));
    }
}
