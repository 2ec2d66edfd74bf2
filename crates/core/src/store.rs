//! A memory-mapped safetensors store: one `model.safetensors`, or a sharded set listed by
//! `model.safetensors.index.json`, behind one name → tensor map.
//!
//! Tensors already in the wanted dtype are borrowed from the map (no copy) whenever their offset is
//! aligned for the element type, which every file written by the `safetensors` libraries is; a
//! misaligned tensor from some other writer is copied instead, silently and correctly.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::{SafeTensorError, SafeTensors};

use crate::quant::fp8::Fp8Block;
use crate::region::{Access, Region};
use crate::{Buffer, DType, Element, Error, Result, Weight};

#[cfg(target_endian = "big")]
compile_error!("deepblocks-core reads little-endian safetensors data in place");

/// The file name of a single-file checkpoint inside a model folder.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The file name of a sharded checkpoint's index inside a model folder.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Where one tensor lives and what it holds.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The checkpoint name, e.g. `model.layers.0.self_attn.kv_b_proj.weight`.
    pub name: String,
    /// The dtype as the file names it (`BF16`, `I64`, ...).
    pub dtype_name: String,
    /// The dtype, when it is one deepblocks computes with.
    pub dtype: Option<DType>,
    /// The shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// The file holding it.
    pub file: PathBuf,
    shard: usize,
    /// Absolute byte offset of the data in the shard's map.
    offset: usize,
    /// Byte length of the data.
    bytes: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Shard {
    map: Arc<Region>,
}

/// A read-only view of the tensors of a safetensors checkpoint, memory-mapped.
///
/// ```no_run
/// use deepblocks_core::{DType, SafeTensorsStore};
/// let store = SafeTensorsStore::open("path/to/model-folder")?;
/// let w = store.weight("model.layers.0.self_attn.o_proj.weight", [2048, 2048])?;
/// assert_eq!(w.format(), DType::BF16.into()); // a bf16 checkpoint stays bf16, borrowed from the map
/// # Ok::<(), deepblocks_core::Error>(())
/// ```
///
/// # Safety of the mapping
/// Like every memory-mapped reader, the store (opened with [`Access::Map`], the default) assumes
/// the files are not modified while it, or a weight read from it, is alive: a rewrite in place
/// changes the weights, and truncating a mapped file kills the process with SIGBUS.
/// [`SafeTensorsStore::open_with`] and [`Access::Read`] read the files into memory instead.
pub struct SafeTensorsStore {
    /// The file or index the store was opened from (used in error messages).
    location: PathBuf,
    shards: Vec<Shard>,
    tensors: HashMap<String, TensorInfo>,
    metadata: Option<HashMap<String, String>>,
}

impl std::fmt::Debug for SafeTensorsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensorsStore")
            .field("location", &self.location)
            .field("shards", &self.shards.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SafeTensorsStore {
    /// Opens a model folder (its `model.safetensors.index.json` if present, else its
    /// `model.safetensors`), an index file (`*.json`), or a single `.safetensors` file.
    ///
    /// # Errors
    /// [`Error::NoWeights`] for a folder with neither file; otherwise as [`Self::open_file`] and
    /// [`Self::open_index`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, Access::Map)
    }

    /// [`Self::open`] with the files memory-mapped ([`Access::Map`]) or read into memory
    /// ([`Access::Read`], for files that may change while the store is in use).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_with(path: impl AsRef<Path>, access: Access) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            let index = path.join(INDEX_FILE);
            if index.is_file() {
                return Self::open_index_with(index, access);
            }
            let single = path.join(SINGLE_FILE);
            if single.is_file() {
                return Self::open_file_with(single, access);
            }
            return Err(Error::NoWeights {
                dir: path.to_path_buf(),
            });
        }
        if path.extension().is_some_and(|e| e == "json") {
            Self::open_index_with(path, access)
        } else {
            Self::open_file_with(path, access)
        }
    }

    /// Opens one `.safetensors` file.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or mapped, [`Error::Header`] when it is
    /// truncated or its header is corrupt.
    pub fn open_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_file_with(path, Access::Map)
    }

    /// A store over the bytes of one safetensors file held in memory (copied once), named
    /// `location` in errors.
    ///
    /// ```
    /// let err = deepblocks_core::SafeTensorsStore::from_bytes("in-memory", b"not safetensors")
    ///     .unwrap_err();
    /// assert!(err.to_string().starts_with("in-memory: not a valid safetensors file"));
    /// ```
    ///
    /// # Errors
    /// [`Error::Header`] when the bytes are not a valid safetensors file.
    pub fn from_bytes(location: impl AsRef<Path>, bytes: &[u8]) -> Result<Self> {
        let path = location.as_ref();
        let (map, tensors, metadata) = shard_contents(path, Region::from_bytes(bytes), 0)?;
        Ok(SafeTensorsStore {
            location: path.to_path_buf(),
            shards: vec![Shard { map }],
            tensors,
            metadata,
        })
    }

    fn open_file_with(path: impl AsRef<Path>, access: Access) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let (map, tensors, metadata) = read_shard(path, &file, 0, access)?;
        Ok(SafeTensorsStore {
            location: path.to_path_buf(),
            shards: vec![Shard { map }],
            tensors,
            metadata,
        })
    }

    /// Opens a sharded checkpoint through its `model.safetensors.index.json`; shard names are
    /// resolved relative to the index's folder.
    ///
    /// # Errors
    /// [`Error::Io`] when the index cannot be read, [`Error::Index`] when it is not an index,
    /// [`Error::MissingShard`] when a shard it names cannot be opened, [`Error::Header`] when a
    /// shard is corrupt, and [`Error::IndexMismatch`] when a shard lacks a tensor the index maps to
    /// it.
    pub fn open_index(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_index_with(path, Access::Map)
    }

    fn open_index_with(path: impl AsRef<Path>, access: Access) -> Result<Self> {
        let index = path.as_ref();
        let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
        let weight_map = parse_index(index, &text)?;
        let dir = index.parent().unwrap_or(Path::new("."));

        // Open each distinct shard once, in name order.
        let mut shard_ids: BTreeMap<&str, usize> = BTreeMap::new();
        for shard in weight_map.values() {
            let next = shard_ids.len();
            shard_ids.entry(shard.as_str()).or_insert(next);
        }
        let mut shards = Vec::with_capacity(shard_ids.len());
        let mut shard_tensors = Vec::with_capacity(shard_ids.len());
        let mut ordered: Vec<(&str, usize)> = shard_ids.iter().map(|(k, v)| (*k, *v)).collect();
        ordered.sort_by_key(|&(_, id)| id);
        for (name, id) in ordered {
            let shard_path = dir.join(name);
            let file = File::open(&shard_path).map_err(|source| Error::MissingShard {
                index: index.to_path_buf(),
                shard: name.to_string(),
                source,
            })?;
            let (map, tensors, _) = read_shard(&shard_path, &file, id, access)?;
            shards.push(Shard { map });
            shard_tensors.push(tensors);
        }

        let mut tensors = HashMap::with_capacity(weight_map.len());
        for (tensor, shard) in &weight_map {
            let id = shard_ids[shard.as_str()];
            let info = shard_tensors[id]
                .remove(tensor)
                .ok_or_else(|| Error::IndexMismatch {
                    index: index.to_path_buf(),
                    tensor: tensor.clone(),
                    shard: shard.clone(),
                })?;
            tensors.insert(tensor.clone(), info);
        }
        Ok(SafeTensorsStore {
            location: index.to_path_buf(),
            shards,
            tensors,
            metadata: None,
        })
    }

    /// The file or index this store was opened from.
    pub fn location(&self) -> &Path {
        &self.location
    }

    /// Number of files mapped.
    pub fn num_shards(&self) -> usize {
        self.shards.len()
    }

    /// The `__metadata__` map of a single-file checkpoint, if it has one.
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.metadata.as_ref()
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Whether a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Every tensor's info (in no particular order).
    pub fn infos(&self) -> impl Iterator<Item = &TensorInfo> {
        self.tensors.values()
    }

    /// Tells the operating system that tensor `name`'s bytes are no longer needed: with a memory
    /// map, its pages leave this process's resident memory (a later read brings them back from
    /// the file); with [`Access::Read`] nothing happens. The loader calls it after converting a
    /// tensor into a copy, so that quantizing a checkpoint never holds all of it.
    pub fn release(&self, name: &str) {
        if let Some(info) = self.tensors.get(name) {
            self.shards[info.shard].map.release(info.offset, info.bytes);
        }
    }

    /// The info of tensor `name`.
    ///
    /// # Errors
    /// [`Error::TensorNotFound`] naming it and this store's location.
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| Error::TensorNotFound {
            name: name.to_string(),
            expected_shape: None,
            location: self.location.display().to_string(),
        })
    }

    /// Tensor `name` as a `Buffer<T>`, borrowed from the map (no copy) when aligned. Its shape must
    /// be `shape` and its dtype exactly `T`'s.
    ///
    /// # Errors
    /// [`Error::TensorNotFound`], [`Error::Shape`] (expected vs found),
    /// [`Error::UnsupportedDType`], or [`Error::DTypeMismatch`] when it is stored as another
    /// supported dtype (use [`Self::tensor_f32`] to widen).
    pub fn tensor<T: Element>(&self, name: &str, shape: &[usize]) -> Result<Buffer<T>> {
        let info = self.checked(name, shape)?;
        let dtype = supported(info)?;
        if dtype != T::DTYPE {
            return Err(Error::DTypeMismatch {
                tensor: name.to_string(),
                expected: T::DTYPE,
                found: dtype,
            });
        }
        Ok(self.buffer::<T>(info))
    }

    /// Tensor `name` as f32: borrowed when stored as f32, widened (a copy) from bf16/f16.
    ///
    /// # Errors
    /// As [`Self::tensor`], without the dtype mismatch.
    pub fn tensor_f32(&self, name: &str, shape: &[usize]) -> Result<Buffer<f32>> {
        let info = self.checked(name, shape)?;
        Ok(match supported(info)? {
            DType::F32 => self.buffer::<f32>(info),
            DType::BF16 => Buffer::from_vec(self.buffer::<half::bf16>(info).to_f32_vec()),
            DType::F16 => Buffer::from_vec(self.buffer::<half::f16>(info).to_f32_vec()),
        })
    }

    /// The 2-D weight `name` of shape `[rows, cols]` (`[out, in]`), in its stored dtype.
    ///
    /// # Errors
    /// As [`Self::tensor`], without the dtype mismatch.
    pub fn weight(&self, name: &str, shape: [usize; 2]) -> Result<Weight> {
        let info = self.checked(name, &shape)?;
        let [rows, cols] = shape;
        match supported(info)? {
            DType::F32 => Weight::new(self.buffer::<f32>(info), rows, cols),
            DType::BF16 => Weight::new(self.buffer::<half::bf16>(info), rows, cols),
            DType::F16 => Weight::new(self.buffer::<half::f16>(info), rows, cols),
        }
    }

    /// The FP8 E4M3 weight `name` of shape `[rows, cols]` with the f32 (or bf16/f16) block
    /// scales `scales` (a DeepSeek-V3 checkpoint's `weight_scale_inv`, `[ceil(rows / bo),
    /// ceil(cols / bi)]`): one byte per weight, borrowed from the map.
    ///
    /// # Errors
    /// As [`Self::tensor`] for either tensor; [`Error::NotFp8`] when `name` is not stored as
    /// `F8_E4M3`; [`Error::Fp8ScaleGrid`] when `scales` is not the grid `block` needs;
    /// [`Error::NonFinite`] at a NaN code.
    pub fn fp8_weight(
        &self,
        name: &str,
        shape: [usize; 2],
        block: Fp8Block,
        scales: &str,
    ) -> Result<Weight> {
        let info = self.checked(name, &shape)?;
        if info.dtype_name != "F8_E4M3" {
            return Err(Error::NotFp8 {
                tensor: name.to_string(),
                scales: scales.to_string(),
                dtype: info.dtype_name.clone(),
            });
        }
        let scale_info = self.info(scales)?;
        let grid = match scale_info.shape[..] {
            [a, b] => [a, b],
            _ => {
                return Err(Error::Fp8ScaleGrid {
                    what: name.to_string(),
                    rows: shape[0],
                    cols: shape[1],
                    block,
                    expected: block
                        .grid(shape[0], shape[1])
                        .map(|g| g.to_vec())
                        .unwrap_or_default(),
                    found: scale_info.shape.clone(),
                });
            }
        };
        let shape_of_scales = scale_info.shape.clone();
        let scale_values = self.tensor_f32(scales, &shape_of_scales)?;
        let map = &self.shards[info.shard].map;
        let codes =
            Buffer::in_file(Arc::clone(map), info.offset, info.bytes).unwrap_or_else(|| {
                Buffer::from_vec(map[info.offset..info.offset + info.bytes].to_vec())
            });
        Weight::from_fp8(block, codes, scale_values, grid, shape[0], shape[1], name)
    }

    /// The weight `name` viewed as `[rows, cols]` from a tensor of any rank with
    /// `rows · cols` elements, whose shape must be `shape` (e.g. transformers-5's packed experts
    /// `[e, 2·i, h]` viewed as `[e·2·i, h]`), in its stored dtype.
    ///
    /// # Errors
    /// As [`Self::weight`]; [`Error::Length`] when `rows · cols` is not the element count.
    pub fn weight_reshaped(
        &self,
        name: &str,
        shape: &[usize],
        rows: usize,
        cols: usize,
    ) -> Result<Weight> {
        let info = self.checked(name, shape)?;
        match supported(info)? {
            DType::F32 => Weight::new(self.buffer::<f32>(info), rows, cols),
            DType::BF16 => Weight::new(self.buffer::<half::bf16>(info), rows, cols),
            DType::F16 => Weight::new(self.buffer::<half::f16>(info), rows, cols),
        }
    }

    fn checked(&self, name: &str, shape: &[usize]) -> Result<&TensorInfo> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::TensorNotFound {
                name: name.to_string(),
                expected_shape: Some(shape.to_vec()),
                location: self.location.display().to_string(),
            })?;
        if info.shape != shape {
            return Err(Error::shape(name, shape, &info.shape));
        }
        Ok(info)
    }

    /// The tensor's elements; the caller checked `T` matches its dtype.
    fn buffer<T: Element>(&self, info: &TensorInfo) -> Buffer<T> {
        let map = &self.shards[info.shard].map;
        let len = info.bytes / std::mem::size_of::<T>();
        if let Some(b) = Buffer::in_file(Arc::clone(map), info.offset, len) {
            return b;
        }
        // Misaligned (a writer that does not pad): copy element by element.
        let bytes = &map[info.offset..info.offset + info.bytes];
        let v: Vec<T> = bytes
            .chunks_exact(std::mem::size_of::<T>())
            .map(|c| match T::DTYPE {
                DType::F32 => T::from_f32(f32::from_le_bytes(c.try_into().expect("4-byte chunk"))),
                DType::BF16 => T::from_f32(
                    half::bf16::from_le_bytes(c.try_into().expect("2-byte chunk")).to_f32(),
                ),
                DType::F16 => T::from_f32(
                    half::f16::from_le_bytes(c.try_into().expect("2-byte chunk")).to_f32(),
                ),
            })
            .collect();
        Buffer::from_vec(v)
    }
}

fn supported(info: &TensorInfo) -> Result<DType> {
    info.dtype.ok_or_else(|| Error::UnsupportedDType {
        tensor: info.name.clone(),
        dtype: info.dtype_name.clone(),
    })
}

type ShardContents = (
    Arc<Region>,
    HashMap<String, TensorInfo>,
    Option<HashMap<String, String>>,
);

fn read_shard(path: &Path, file: &File, shard: usize, access: Access) -> Result<ShardContents> {
    let map = Region::open(file, access).map_err(|e| Error::io(path, e))?;
    shard_contents(path, map, shard)
}

/// The tensors of one file's bytes, checked.
fn shard_contents(path: &Path, map: Region, shard: usize) -> Result<ShardContents> {
    let (header_len, meta) = SafeTensors::read_metadata(&map).map_err(|e| Error::Header {
        path: path.to_path_buf(),
        reason: header_reason(e, &map),
    })?;
    let data_start = 8 + header_len;
    let mut tensors = HashMap::new();
    for (name, info) in meta.tensors() {
        let (start, end) = info.data_offsets;
        tensors.insert(
            name.clone(),
            TensorInfo {
                name,
                dtype_name: format!("{:?}", info.dtype),
                dtype: DType::from_safetensors(info.dtype),
                shape: info.shape.clone(),
                file: path.to_path_buf(),
                shard,
                offset: data_start + start,
                bytes: end - start,
            },
        );
    }
    let metadata = meta.metadata().clone();
    Ok((Arc::new(map), tensors, metadata))
}

/// A sentence for a header error, saying what a user would check; for offset and size errors,
/// the tensor at fault, found by reading the header again ([`diagnose_offsets`]).
fn header_reason(e: SafeTensorError, bytes: &[u8]) -> String {
    let file_len = bytes.len();
    if matches!(
        e,
        SafeTensorError::MetadataIncompleteBuffer
            | SafeTensorError::InvalidOffset(_)
            | SafeTensorError::TensorInvalidInfo
    ) && let Some(reason) = diagnose_offsets(bytes)
    {
        return reason;
    }
    match e {
        SafeTensorError::HeaderTooSmall => {
            format!("the file is {file_len} bytes, shorter than the 8-byte header length")
        }
        SafeTensorError::InvalidHeaderLength => format!(
            "the header length runs past the end of the file ({file_len} bytes): truncated?"
        ),
        SafeTensorError::HeaderTooLarge => "the header length is implausibly large".to_string(),
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "the tensor data does not end where the file ends ({file_len} bytes): truncated?"
        ),
        SafeTensorError::InvalidHeader(u) => format!("the header is not UTF-8: {u}"),
        SafeTensorError::InvalidHeaderDeserialization(j) => {
            format!("the header is not valid safetensors JSON: {j}")
        }
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor {name:?} has data offsets that overlap or leave gaps")
        }
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's byte length does not match its shape and dtype".to_string()
        }
        other => other.to_string(),
    }
}

/// The first tensor whose data offsets are wrong, and how, from the header JSON: a byte length
/// that does not match its shape and dtype, a range that ends before it starts or runs past the
/// data, two ranges that overlap, or a gap. `None` when the header cannot be read this way.
fn diagnose_offsets(bytes: &[u8]) -> Option<String> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let data_len = bytes.len() - 8 - n;
    let json: serde_json::Value = serde_json::from_slice(header).ok()?;
    // (start, end, name, expected bytes)
    let mut ranges: Vec<(usize, usize, &str, Option<u128>)> = Vec::new();
    for (name, t) in json.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let offsets = t.get("data_offsets")?.as_array()?;
        let (start, end) = (offsets.first()?.as_u64()?, offsets.get(1)?.as_u64()?);
        let bits: Option<u128> = t.get("dtype")?.as_str().and_then(|d| {
            Some(match d {
                "F64" | "I64" | "U64" => 64,
                "F32" | "I32" | "U32" => 32,
                "F16" | "BF16" | "I16" | "U16" => 16,
                "F8_E4M3" | "F8_E5M2" | "I8" | "U8" | "BOOL" => 8,
                _ => return None,
            })
        });
        let elements = t.get("shape")?.as_array()?.iter().try_fold(1u128, |a, d| {
            Some(a.saturating_mul(u128::from(d.as_u64()?)))
        });
        let expected = bits.zip(elements).map(|(b, e)| e.saturating_mul(b) / 8);
        ranges.push((
            usize::try_from(start).ok()?,
            usize::try_from(end).ok()?,
            name,
            expected,
        ));
    }
    ranges.sort();
    let mut previous: Option<(usize, &str)> = None;
    for &(start, end, name, expected) in &ranges {
        if end < start {
            return Some(format!(
                "tensor {name:?}: data offsets [{start}, {end}) end before they start"
            ));
        }
        if let Some(bytes) = expected
            && bytes != (end - start) as u128
        {
            return Some(format!(
                "tensor {name:?}: data offsets [{start}, {end}) hold {} bytes, but its shape and dtype need {bytes}",
                end - start
            ));
        }
        if end > data_len {
            return Some(format!(
                "tensor {name:?}: data offsets [{start}, {end}) run past the {data_len} bytes of data in the file: truncated?"
            ));
        }
        match previous {
            Some((prev_end, prev)) if start < prev_end => {
                return Some(format!(
                    "tensors {prev:?} and {name:?} overlap (bytes {start}..{prev_end} of the data)"
                ));
            }
            Some((prev_end, prev)) if start > prev_end => {
                return Some(format!(
                    "a gap of {} bytes between tensors {prev:?} and {name:?}",
                    start - prev_end
                ));
            }
            None if start > 0 => {
                return Some(format!("a gap of {start} bytes before tensor {name:?}"));
            }
            _ => {}
        }
        previous = Some((end, name));
    }
    match previous {
        Some((end, last)) if end < data_len => Some(format!(
            "{} bytes of data after the last tensor {last:?}",
            data_len - end
        )),
        _ => None,
    }
}

/// The `weight_map` of an index file.
fn parse_index(path: &Path, text: &str) -> Result<BTreeMap<String, String>> {
    let bad = |reason: String| Error::Index {
        path: path.to_path_buf(),
        reason,
    };
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no \"weight_map\" object".to_string()))?;
    let mut out = BTreeMap::new();
    for (tensor, shard) in map {
        let shard = shard
            .as_str()
            .ok_or_else(|| bad(format!("weight_map[{tensor:?}] is not a file name")))?;
        if Path::new(shard).components().count() != 1 {
            return Err(bad(format!(
                "weight_map[{tensor:?}] = {shard:?} is not a plain file name"
            )));
        }
        out.insert(tensor.clone(), shard.to_string());
    }
    Ok(out)
}
