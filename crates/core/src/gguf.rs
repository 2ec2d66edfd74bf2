//! The GGUF container (version 3, llama.cpp's `gguf.h`/`gguf.md`): a header of typed metadata
//! and tensor descriptions, then the tensors' bytes, each at an offset that is a multiple of the
//! file's alignment. [`GgufFile`] reads the header, checking every length against the bytes
//! that are there before it allocates (a header is user input), and hands out each tensor's
//! bytes from the memory map without copying. What the metadata means for a model (llama.cpp's
//! `deepseek2` keys) is the loader's business, not this module's.
//!
//! ```text
//! "GGUF"  version: u32 (3)  tensor_count: u64  metadata_kv_count: u64
//! metadata_kv_count × { key: string, type: u32, value }      string = u64 length + UTF-8 bytes
//! tensor_count × { name: string, n_dims: u32, ne: n_dims × u64, ggml_type: u32, offset: u64 }
//! padding to `general.alignment` (default 32), then the tensor data
//! ```
//!
//! `ne[0]` is the innermost (contiguous) dimension: a weight `[out, in]` is `ne = [in, out]`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::quant::BlockFormat;
use crate::region::{Access, Region};
use crate::{Buffer, Weight, WeightData};

/// The file's magic, `GGUF`.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The version read.
pub const VERSION: u32 = 3;
/// `general.alignment` when the file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A GGUF file that cannot be read, naming the file and what is wrong (the field, the key or
/// the tensor, and the offset).
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file cannot be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The header is not a GGUF header we read.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field, key or tensor.
        reason: String,
    },
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `UINT8`.
    U8(u8),
    /// `INT8`.
    I8(i8),
    /// `UINT16`.
    U16(u16),
    /// `INT16`.
    I16(i16),
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `FLOAT32`.
    F32(f32),
    /// `BOOL`.
    Bool(bool),
    /// `STRING`.
    String(String),
    /// `ARRAY` of values of one type.
    Array(Vec<GgufValue>),
    /// `UINT64`.
    U64(u64),
    /// `INT64`.
    I64(i64),
    /// `FLOAT64`.
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// ggml's tensor types with a fixed block layout: `(name, elements per block, bytes per
/// block)`, indexed by the type's number (llama.cpp's `ggml_type`); `None` for numbers that are
/// not such a type (retired ones, IQ types with lookup grids are listed too: their sizes are
/// known even though no kernel here reads them).
const GGML_TYPES: &[Option<(&str, u64, u64)>] = &[
    Some(("F32", 1, 4)),
    Some(("F16", 1, 2)),
    Some(("Q4_0", 32, 18)),
    Some(("Q4_1", 32, 20)),
    None,
    None,
    Some(("Q5_0", 32, 22)),
    Some(("Q5_1", 32, 24)),
    Some(("Q8_0", 32, 34)),
    Some(("Q8_1", 32, 36)),
    Some(("Q2_K", 256, 84)),
    Some(("Q3_K", 256, 110)),
    Some(("Q4_K", 256, 144)),
    Some(("Q5_K", 256, 176)),
    Some(("Q6_K", 256, 210)),
    Some(("Q8_K", 256, 292)),
    Some(("IQ2_XXS", 256, 66)),
    Some(("IQ2_XS", 256, 74)),
    Some(("IQ3_XXS", 256, 98)),
    Some(("IQ1_S", 256, 50)),
    Some(("IQ4_NL", 32, 18)),
    Some(("IQ3_S", 256, 110)),
    Some(("IQ2_S", 256, 82)),
    Some(("IQ4_XS", 256, 136)),
    Some(("I8", 1, 1)),
    Some(("I16", 1, 2)),
    Some(("I32", 1, 4)),
    Some(("I64", 1, 8)),
    Some(("F64", 1, 8)),
    Some(("IQ1_M", 256, 56)),
    Some(("BF16", 1, 2)),
];

/// The name of ggml type number `t` (`"type 99"` when unknown).
pub fn ggml_type_name(t: u32) -> String {
    match GGML_TYPES.get(t as usize).copied().flatten() {
        Some((name, _, _)) => name.to_string(),
        None => format!("type {t}"),
    }
}

/// One tensor's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    /// The name (llama.cpp's, e.g. `blk.0.attn_kv_a_mqa.weight`).
    pub name: String,
    /// The dimensions, innermost first (`ne`).
    pub ne: Vec<u64>,
    /// The ggml type number.
    pub ggml_type: u32,
    /// Byte offset from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub bytes: u64,
}

impl GgufTensorInfo {
    /// The type's name (`Q4_K`, `F32`, ...).
    pub fn type_name(&self) -> String {
        ggml_type_name(self.ggml_type)
    }

    /// The element count.
    pub fn numel(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// A GGUF file: its metadata, its tensors' descriptions, and their bytes, memory-mapped.
pub struct GgufFile {
    path: PathBuf,
    region: Arc<Region>,
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensorInfo>,
    alignment: u64,
    data_start: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and reads the header of `path`, memory-mapped.
    ///
    /// # Errors
    /// [`GgufError::Io`]; [`GgufError::Malformed`] naming what is wrong: not GGUF, another
    /// version, a length or offset past the end of the file, tensors that overlap or are not
    /// aligned, an unknown value type.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        Self::open_with(path, Access::Map)
    }

    /// [`Self::open`] with a choice of how the bytes are reached.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_with(path: impl AsRef<Path>, access: Access) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let file = File::open(&path).map_err(io)?;
        let region = Region::open(&file, access).map_err(io)?;
        Self::parse(path, region)
    }

    /// Reads a GGUF file held in memory (`location` names it in errors).
    ///
    /// # Errors
    /// As [`Self::open`], without the I/O.
    pub fn from_bytes(location: impl AsRef<Path>, bytes: &[u8]) -> Result<Self, GgufError> {
        Self::parse(location.as_ref().to_path_buf(), Region::from_bytes(bytes))
    }

    fn parse(path: PathBuf, region: Region) -> Result<Self, GgufError> {
        let bad = |reason: String| GgufError::Malformed {
            path: path.clone(),
            reason,
        };
        let mut r = Reader {
            bytes: &region,
            pos: 0,
        };
        let magic = r.take(4, "the magic").map_err(&bad)?;
        if magic != MAGIC {
            return Err(bad(format!(
                "not a GGUF file (it starts with {magic:02x?}, not \"GGUF\")"
            )));
        }
        let version = r.u32("the version").map_err(&bad)?;
        if version != VERSION {
            return Err(bad(format!(
                "GGUF version {version}; only version {VERSION} is read"
            )));
        }
        let n_tensors = r.u64("the tensor count").map_err(&bad)?;
        let n_kv = r.u64("the metadata count").map_err(&bad)?;
        // Every entry takes at least 8 + 4 bytes (tensors: 8 + 4 + 4 + 8): counts beyond what
        // the file can hold are refused before anything is reserved for them.
        let remaining = |r: &Reader<'_>| (r.bytes.len() - r.pos) as u64;
        if n_kv > remaining(&r) / 12 || n_tensors > remaining(&r) / 24 {
            return Err(bad(format!(
                "{n_kv} metadata entries and {n_tensors} tensors cannot fit in {} bytes",
                r.bytes.len()
            )));
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        for i in 0..n_kv {
            let key = r.string(&format!("metadata key {i}")).map_err(&bad)?;
            let t = r.u32(&format!("the type of {key:?}")).map_err(&bad)?;
            let value = r.value(t, &key, 0).map_err(&bad)?;
            metadata.push((key, value));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(bad(format!(
                        "general.alignment = {v:?}: not a power of two"
                    )));
                }
            },
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = r.string(&format!("the name of tensor {i}")).map_err(&bad)?;
            let n_dims = r.u32(&format!("{name}: n_dims")).map_err(&bad)?;
            if n_dims == 0 || n_dims > 4 {
                return Err(bad(format!(
                    "{name}: {n_dims} dimensions (GGUF has 1 to 4)"
                )));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                ne.push(r.u64(&format!("{name}: ne[{d}]")).map_err(&bad)?);
            }
            let ggml_type = r.u32(&format!("{name}: type")).map_err(&bad)?;
            let offset = r.u64(&format!("{name}: offset")).map_err(&bad)?;
            let bytes = tensor_bytes(&ne, ggml_type).map_err(|e| bad(format!("{name}: {e}")))?;
            if !offset.is_multiple_of(alignment) {
                return Err(bad(format!(
                    "{name}: offset {offset} is not a multiple of the alignment {alignment}"
                )));
            }
            tensors.push(GgufTensorInfo {
                name,
                ne,
                ggml_type,
                offset,
                bytes,
            });
        }
        let data_start = (r.pos as u64).next_multiple_of(alignment);
        let len = region.len() as u64;
        for t in &tensors {
            let end = data_start
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.bytes));
            if end.is_none_or(|e| e > len) {
                return Err(bad(format!(
                    "tensor {:?} ({} bytes at data offset {}) runs past the end of the {len}-byte file",
                    t.name, t.bytes, t.offset
                )));
            }
        }
        let mut by_offset: Vec<&GgufTensorInfo> = tensors.iter().collect();
        by_offset.sort_by_key(|t| t.offset);
        for pair in by_offset.windows(2) {
            if pair[0].offset + pair[0].bytes > pair[1].offset {
                return Err(bad(format!(
                    "tensors {:?} and {:?} overlap",
                    pair[0].name, pair[1].name
                )));
            }
        }
        let mut names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(format!("tensor {:?} appears twice", w[0])));
        }
        Ok(GgufFile {
            path,
            region: Arc::new(region),
            version,
            metadata,
            tensors,
            alignment,
            data_start,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The metadata, in file order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The metadata value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensors' descriptions, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// The description of tensor `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The bytes of tensor `name`, borrowed from the file.
    pub fn tensor_data(&self, name: &str) -> Option<&[u8]> {
        let t = self.tensor(name)?;
        let start = (self.data_start + t.offset) as usize; // checked at open
        Some(&self.region[start..start + t.bytes as usize])
    }
}

impl GgufFile {
    /// Tensor `name` as a `[rows, cols]` weight in its stored format, borrowed from the map (no
    /// conversion, no copy): F32, F16 and BF16 as themselves, Q8_0, Q4_0, Q5_0, Q4_K and Q6_K as
    /// the block formats of the same bytes. `cols` is the innermost dimension `ne[0]`; a tensor
    /// of more dimensions is viewed as `rows = ne[1]·ne[2]·…`.
    ///
    /// # Errors
    /// [`GgufError::Malformed`] naming the tensor: absent, another shape, or a type deepblocks
    /// does not compute with (named, e.g. `Q5_K`).
    pub fn weight(&self, name: &str, rows: usize, cols: usize) -> Result<Weight, GgufError> {
        let bad = |reason: String| GgufError::Malformed {
            path: self.path.clone(),
            reason: format!("tensor {name:?}: {reason}"),
        };
        let t = self
            .tensor(name)
            .ok_or_else(|| bad("not in the file".into()))?;
        if t.ne[0] != cols as u64 || Some(t.numel()) != (rows as u64).checked_mul(cols as u64) {
            return Err(bad(format!(
                "shape (ne) {:?}, not [{cols}, {rows}] ([rows {rows}, cols {cols}])",
                t.ne
            )));
        }
        let start = (self.data_start + t.offset) as usize;
        let len = t.bytes as usize;
        let region = Arc::clone(&self.region);
        let data: WeightData = match t.ggml_type {
            0 => Buffer::<f32>::in_file(region, start, len / 4)
                .ok_or_else(|| bad("misaligned F32 data".into()))?
                .into(),
            1 => Buffer::<half::f16>::in_file(region, start, len / 2)
                .ok_or_else(|| bad("misaligned F16 data".into()))?
                .into(),
            30 => Buffer::<half::bf16>::in_file(region, start, len / 2)
                .ok_or_else(|| bad("misaligned BF16 data".into()))?
                .into(),
            t @ (2 | 6 | 8 | 12 | 14) => {
                let format = match t {
                    2 => BlockFormat::Q4_0,
                    6 => BlockFormat::Q5_0,
                    8 => BlockFormat::Q8_0,
                    12 => BlockFormat::Q4_K,
                    _ => BlockFormat::Q6_K,
                };
                WeightData::Blocks {
                    format,
                    data: Buffer::<u8>::in_file(region, start, len)
                        .ok_or_else(|| bad("data out of the file".into()))?,
                }
            }
            other => {
                return Err(bad(format!(
                    "type {} is not one deepblocks computes with (F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q4_K, Q6_K)",
                    ggml_type_name(other)
                )));
            }
        };
        Weight::new(data, rows, cols).map_err(|e| bad(e.to_string()))
    }

    /// Tensor `name` (of `len` elements, F32, F16 or BF16) widened to f32.
    ///
    /// # Errors
    /// As [`Self::weight`].
    pub fn vector_f32(&self, name: &str, len: usize) -> Result<Vec<f32>, GgufError> {
        Ok(self.weight(name, 1, len)?.to_f32_vec())
    }
}

/// The byte size of a tensor of `ne` in type `t`.
fn tensor_bytes(ne: &[u64], t: u32) -> Result<u64, String> {
    let Some((name, block, block_bytes)) = GGML_TYPES.get(t as usize).copied().flatten() else {
        return Err(format!("unknown ggml type {t}"));
    };
    if !ne[0].is_multiple_of(block) {
        return Err(format!(
            "{name} rows of {} elements are not whole blocks of {block}",
            ne[0]
        ));
    }
    ne[1..]
        .iter()
        .try_fold((ne[0] / block).checked_mul(block_bytes), |acc, &d| {
            Some(acc?.checked_mul(d))
        })
        .flatten()
        .ok_or_else(|| format!("the shape {ne:?} overflows 64 bits"))
}

/// A cursor over the header that never reads past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], String> {
        let left = self.bytes.len() - self.pos;
        if n > left as u64 {
            return Err(format!(
                "{what}: {n} bytes at offset {} run past the end of the {}-byte file",
                self.pos,
                self.bytes.len()
            ));
        }
        let s = &self.bytes[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, String> {
        let n = self.u64(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("{what}: not UTF-8"))
    }

    /// A value of type `t` of key `key`; arrays nest at most a few deep.
    fn value(&mut self, t: u32, key: &str, depth: usize) -> Result<GgufValue, String> {
        Ok(match t {
            0 => GgufValue::U8(self.array::<1>(key)?[0]),
            1 => GgufValue::I8(self.array::<1>(key)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => GgufValue::U32(self.u32(key)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(format!("{key:?}: {b} is not a boolean")),
            },
            8 => GgufValue::String(self.string(key)?),
            9 => {
                if depth >= 4 {
                    return Err(format!("{key:?}: arrays nested too deep"));
                }
                let inner = self.u32(key)?;
                let n = self.u64(key)?;
                // Each element takes at least its smallest encoding: a count the bytes left
                // cannot hold is refused before anything is reserved, and no more is reserved
                // than a few pages' worth (the vector grows only with elements actually read).
                let smallest: u64 = match inner {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 => 8,
                    9 => 12,
                    _ => 8,
                };
                let left = (self.bytes.len() - self.pos) as u64;
                if n.checked_mul(smallest).is_none_or(|need| need > left) {
                    return Err(format!(
                        "{key:?}: an array of {n} elements cannot fit in the {left} bytes left"
                    ));
                }
                let mut items = Vec::with_capacity((n as usize).min(4096));
                for _ in 0..n {
                    items.push(self.value(inner, key, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            other => return Err(format!("{key:?}: unknown value type {other}")),
        })
    }
}

/// The ggml type number of a weight format that GGUF holds (F32, F16, BF16 and the block
/// formats); `None` for FP8, which GGUF has no type for.
pub fn ggml_type_of(format: crate::WeightFormat) -> Option<u32> {
    use crate::{DType, WeightFormat};
    Some(match format {
        WeightFormat::Float(DType::F32) => 0,
        WeightFormat::Float(DType::F16) => 1,
        WeightFormat::Float(DType::BF16) => 30,
        WeightFormat::Blocks(BlockFormat::Q4_0) => 2,
        WeightFormat::Blocks(BlockFormat::Q5_0) => 6,
        WeightFormat::Blocks(BlockFormat::Q8_0) => 8,
        WeightFormat::Blocks(BlockFormat::Q4_K) => 12,
        WeightFormat::Blocks(BlockFormat::Q6_K) => 14,
        WeightFormat::Fp8(_) => return None,
    })
}

/// A tensor to write: its dimensions (innermost first), type, and the weights whose bytes,
/// one after the other, are its data (several for llama.cpp's stacked experts).
struct PendingTensor {
    name: String,
    ne: Vec<u64>,
    ggml_type: u32,
    parts: Vec<Weight>,
    bytes: u64,
}

/// Writes a GGUF file (version 3): metadata in the order set, then the tensor descriptions and
/// the data, each tensor at a multiple of the alignment (`general.alignment` when set, else
/// 32), padded with zeros as llama.cpp's writer pads.
///
/// The data is not copied until [`GgufWriter::write`]: a tensor holds the [`Weight`]s (cheap
/// clones of shared or mapped buffers) whose bytes it is.
///
/// ```
/// use deepblocks_core::gguf::{GgufFile, GgufValue, GgufWriter};
/// use deepblocks_core::Weight;
/// let mut out = GgufWriter::new();
/// out.set("general.architecture", GgufValue::String("deepseek2".into()));
/// let w = Weight::from_f32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3)?; // [rows 2, cols 3]
/// out.add_weight("output.weight", &w)?;
/// let mut bytes = Vec::new();
/// out.write(&mut bytes)?;
/// let file = GgufFile::from_bytes("mem.gguf", &bytes)?;
/// assert_eq!(file.tensor("output.weight").unwrap().ne, vec![3, 2]);
/// assert_eq!(file.weight("output.weight", 2, 3)?.to_f32_vec(), w.to_f32_vec());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
}

impl std::fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("metadata", &self.metadata.len())
            .field(
                "tensors",
                &self
                    .tensors
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (replacing an earlier value of it, in its place).
    pub fn set(&mut self, key: &str, value: GgufValue) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Adds a `[rows, cols]` weight as a tensor of `ne = [cols, rows]` in its own format.
    ///
    /// # Errors
    /// As [`GgufWriter::add_stacked`].
    pub fn add_weight(&mut self, name: &str, w: &Weight) -> Result<(), GgufError> {
        self.add_stacked(
            name,
            &[w.cols() as u64, w.rows() as u64],
            std::slice::from_ref(w),
        )
    }

    /// Adds tensor `name` of dimensions `ne` (innermost first) whose data is the bytes of
    /// `parts` one after the other (all in one format): llama.cpp's stacked experts
    /// (`ne = [cols, rows, experts]`, one part per expert), or a weight seen in a different shape
    /// (`ne = [d, c, n]` for `attn_k_b`).
    ///
    /// # Errors
    /// [`GgufError::Malformed`] naming the tensor: no parts, parts in different formats, a format
    /// GGUF has no type for (FP8), a size that is not `ne`'s, or a name already added.
    pub fn add_stacked(
        &mut self,
        name: &str,
        ne: &[u64],
        parts: &[Weight],
    ) -> Result<(), GgufError> {
        let bad = |reason: String| GgufError::Malformed {
            path: PathBuf::from("<gguf writer>"),
            reason: format!("tensor {name:?}: {reason}"),
        };
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(bad("added twice".into()));
        }
        let first = parts.first().ok_or_else(|| bad("no data".into()))?;
        let format = first.format();
        if let Some(other) = parts.iter().find(|p| p.format() != format) {
            return Err(bad(format!("parts in {format} and {}", other.format())));
        }
        let ggml_type =
            ggml_type_of(format).ok_or_else(|| bad(format!("{format} has no GGUF type")))?;
        if ne.is_empty() || ne.len() > 4 {
            return Err(bad(format!("{} dimensions (GGUF has 1 to 4)", ne.len())));
        }
        let bytes = tensor_bytes(ne, ggml_type).map_err(bad)?;
        let held: u64 = parts.iter().map(|p| p.bytes() as u64).sum();
        if held != bytes {
            return Err(bad(format!(
                "ne {ne:?} in {format} is {bytes} bytes; the parts hold {held}"
            )));
        }
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            ne: ne.to_vec(),
            ggml_type,
            parts: parts.to_vec(),
            bytes,
        });
        Ok(())
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .filter(|a| *a > 0 && a.is_power_of_two())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Writes the file to `out`.
    ///
    /// # Errors
    /// The writer's I/O errors.
    pub fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let align = self.alignment();
        let mut header = Vec::new();
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            put_string(&mut header, key);
            header.extend_from_slice(&value_type(value).to_le_bytes());
            put_value(&mut header, value);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            put_string(&mut header, &t.name);
            header.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&t.ggml_type.to_le_bytes());
            header.extend_from_slice(&offset.to_le_bytes());
            offset = (offset + t.bytes).next_multiple_of(align);
        }
        header.resize((header.len() as u64).next_multiple_of(align) as usize, 0);
        out.write_all(&header)?;
        for t in &self.tensors {
            for part in &t.parts {
                write_weight_bytes(out, part)?;
            }
            let pad = t.bytes.next_multiple_of(align) - t.bytes;
            out.write_all(&vec![0u8; pad as usize])?;
        }
        out.flush()
    }

    /// Writes the file at `path`.
    ///
    /// # Errors
    /// [`GgufError::Io`] naming the file.
    pub fn write_file(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(io)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        self.write(&mut out).map_err(io)
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn value_type(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

/// A value's bytes (without its type). An array's elements take the first one's type (an empty
/// array is written as one of u32).
fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::Array(items) => {
            let t = items.first().map_or(4, value_type);
            out.extend_from_slice(&t.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                debug_assert_eq!(value_type(item), t, "a GGUF array holds one type");
                put_value(out, item);
            }
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// A weight's stored bytes, little-endian.
fn write_weight_bytes(out: &mut impl std::io::Write, w: &Weight) -> std::io::Result<()> {
    fn elements<T: Copy>(
        out: &mut impl std::io::Write,
        xs: &[T],
        le: impl Fn(&mut Vec<u8>, T),
    ) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1 << 16);
        for chunk in xs.chunks(1 << 14) {
            buf.clear();
            for &x in chunk {
                le(&mut buf, x);
            }
            out.write_all(&buf)?;
        }
        Ok(())
    }
    match w.data() {
        WeightData::F32(b) => elements(out, b, |v, x| v.extend_from_slice(&x.to_le_bytes())),
        WeightData::BF16(b) => elements(out, b, |v, x| v.extend_from_slice(&x.to_le_bytes())),
        WeightData::F16(b) => elements(out, b, |v, x| v.extend_from_slice(&x.to_le_bytes())),
        WeightData::Blocks { data, .. } => out.write_all(data),
        WeightData::Fp8(_) => Err(std::io::Error::other("FP8 has no GGUF type")),
    }
}
