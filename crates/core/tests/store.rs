//! The safetensors store: single file, sharded index, zero-copy views, and every error the issue
//! names (missing file, truncated or corrupt header, tensor not found, shape mismatch, unsupported
//! dtype, absent shard).

use std::path::{Path, PathBuf};

use deepblocks_core::half::bf16;
use deepblocks_core::{DType, Error, SafeTensorsStore, linear};
use safetensors::Dtype;
use safetensors::tensor::TensorView;

/// A fresh, empty folder for one test under cargo's per-target temp dir.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("store-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
        .collect()
}

/// Writes a safetensors file of (name, dtype, shape, bytes).
fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn sample_model(dir: &Path) -> PathBuf {
    let path = dir.join("model.safetensors");
    write(
        &path,
        &[
            (
                "w.f32",
                Dtype::F32,
                vec![2, 3],
                f32_bytes(&[1., 2., 3., 4., 5., 6.]),
            ),
            (
                "w.bf16",
                Dtype::BF16,
                vec![3, 2],
                bf16_bytes(&[1., -1., 0.5, 2., 4., 8.]),
            ),
            ("ids", Dtype::I64, vec![2], vec![0u8; 16]),
        ],
    );
    path
}

#[test]
fn single_file_weights_are_borrowed_from_the_map_in_their_stored_dtype() {
    let dir = scratch("single");
    sample_model(&dir);
    let store = SafeTensorsStore::open(&dir).unwrap();
    assert_eq!(store.names(), vec!["ids", "w.bf16", "w.f32"]);
    assert_eq!(store.num_shards(), 1);

    let w = store.weight("w.bf16", [3, 2]).unwrap();
    assert_eq!(w.format(), DType::BF16.into());
    assert!(
        w.is_mapped(),
        "a bf16 weight must be a view of the file, not a copy"
    );
    assert_eq!(w.bytes(), 12);
    let mut y = [0.0; 3];
    linear(&mut y, &[1.0, 1.0], &w, 1);
    assert_eq!(y, [0.0, 2.5, 12.0]);

    let b = store.tensor::<f32>("w.f32", &[2, 3]).unwrap();
    assert!(b.is_mapped());
    assert_eq!(&b[..], &[1., 2., 3., 4., 5., 6.]);

    // Widening on request copies; the stored f32 is borrowed.
    let wide = store.tensor_f32("w.bf16", &[3, 2]).unwrap();
    assert!(!wide.is_mapped());
    assert_eq!(&wide[..], &[1., -1., 0.5, 2., 4., 8.]);
    assert!(store.tensor_f32("w.f32", &[2, 3]).unwrap().is_mapped());

    // A 2-D view of a tensor of other rank (the packed-experts case).
    let flat = store.weight_reshaped("w.f32", &[2, 3], 1, 6).unwrap();
    assert_eq!(flat.shape(), [1, 6]);
}

#[test]
fn missing_file_names_the_path() {
    let dir = scratch("missing");
    let path = dir.join("nope.safetensors");
    let err = SafeTensorsStore::open(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path: p, .. } if p == &path),
        "{err}"
    );
    assert!(err.to_string().contains("nope.safetensors"), "{err}");

    let err = SafeTensorsStore::open(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::NoWeights { dir: d } if d == &dir),
        "{err}"
    );
}

#[test]
fn truncated_file_is_a_header_error_naming_the_file() {
    let dir = scratch("truncated");
    let path = sample_model(&dir);
    let bytes = std::fs::read(&path).unwrap();

    // Cut inside the data section.
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let err = SafeTensorsStore::open(&path).unwrap_err();
    assert!(
        matches!(&err, Error::Header { path: p, .. } if p == &path),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");

    // Cut inside the header.
    std::fs::write(&path, &bytes[..20]).unwrap();
    let err = SafeTensorsStore::open(&path).unwrap_err();
    assert!(matches!(err, Error::Header { .. }), "{err}");

    // Shorter than the 8-byte length prefix, and empty.
    for len in [3, 0] {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = SafeTensorsStore::open(&path).unwrap_err();
        assert!(matches!(err, Error::Header { .. }), "{len} bytes: {err}");
        assert!(err.to_string().contains("8-byte"), "{err}");
    }
}

#[test]
fn corrupt_header_is_a_header_error() {
    let dir = scratch("corrupt");
    let path = dir.join("model.safetensors");
    let header = br#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]"#; // unclosed
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(&path, &bytes).unwrap();
    let err = SafeTensorsStore::open(&path).unwrap_err();
    assert!(matches!(err, Error::Header { .. }), "{err}");
    assert!(err.to_string().contains("JSON"), "{err}");

    // Valid JSON, but offsets that disagree with the shape.
    let header = br#"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(&path, &bytes).unwrap();
    let err = SafeTensorsStore::open(&path).unwrap_err();
    assert!(matches!(err, Error::Header { .. }), "{err}");

    // A header length beyond the file.
    let mut bytes = 1_000_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&path, &bytes).unwrap();
    let err = SafeTensorsStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("past the end"), "{err}");
}

#[test]
fn tensor_not_found_names_the_tensor_and_the_file() {
    let dir = scratch("notfound");
    sample_model(&dir);
    let store = SafeTensorsStore::open(&dir).unwrap();
    let err = store
        .weight("model.layers.0.mlp.gate_proj.weight", [2, 2])
        .unwrap_err();
    assert!(
        matches!(&err, Error::TensorNotFound { name, location, expected_shape: Some(s) }
            if name == "model.layers.0.mlp.gate_proj.weight" && location.ends_with("model.safetensors") && s == &[2, 2]),
        "{err}"
    );
    assert!(err.to_string().contains("(expected shape [2, 2])"), "{err}");
    let err = store.info("nope").unwrap_err();
    assert!(
        matches!(
            &err,
            Error::TensorNotFound {
                expected_shape: None,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn shape_mismatch_reports_expected_and_found() {
    let dir = scratch("shape");
    sample_model(&dir);
    let store = SafeTensorsStore::open(&dir).unwrap();
    let err = store.weight("w.f32", [3, 2]).unwrap_err();
    assert!(
        matches!(&err, Error::Shape { tensor, expected, found }
            if tensor == "w.f32" && expected == &[3, 2] && found == &[2, 3]),
        "{err}"
    );
    assert!(
        err.to_string().contains("[3, 2]") && err.to_string().contains("[2, 3]"),
        "{err}"
    );
}

#[test]
fn unsupported_and_mismatched_dtypes_are_errors() {
    let dir = scratch("dtype");
    sample_model(&dir);
    let store = SafeTensorsStore::open(&dir).unwrap();
    let err = store.tensor_f32("ids", &[2]).unwrap_err();
    assert!(
        matches!(&err, Error::UnsupportedDType { tensor, dtype } if tensor == "ids" && dtype == "I64"),
        "{err}"
    );
    let err = store.tensor::<bf16>("w.f32", &[2, 3]).unwrap_err();
    assert!(
        matches!(&err, Error::DTypeMismatch { tensor, expected: DType::BF16, found: DType::F32 } if tensor == "w.f32"),
        "{err}"
    );
}

fn write_sharded(dir: &Path) -> PathBuf {
    write(
        &dir.join("model-00001-of-00002.safetensors"),
        &[("a", Dtype::F32, vec![2], f32_bytes(&[1., 2.]))],
    );
    write(
        &dir.join("model-00002-of-00002.safetensors"),
        &[
            ("b", Dtype::BF16, vec![1, 2], bf16_bytes(&[3., 4.])),
            ("unlisted", Dtype::F32, vec![1], f32_bytes(&[0.])),
        ],
    );
    let index = dir.join("model.safetensors.index.json");
    std::fs::write(
        &index,
        r#"{"metadata": {"total_size": 12}, "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    index
}

#[test]
fn sharded_checkpoint_opens_through_its_index() {
    let dir = scratch("sharded");
    write_sharded(&dir);
    // A folder with an index prefers it.
    let store = SafeTensorsStore::open(&dir).unwrap();
    assert_eq!(store.num_shards(), 2);
    assert_eq!(store.names(), vec!["a", "b"]);
    assert_eq!(&store.tensor::<f32>("a", &[2]).unwrap()[..], &[1., 2.]);
    let b = store.weight("b", [1, 2]).unwrap();
    assert!(b.is_mapped());
    assert_eq!(b.to_f32_vec(), vec![3., 4.]);
    assert!(
        store
            .info("b")
            .unwrap()
            .file
            .ends_with("model-00002-of-00002.safetensors")
    );
}

#[test]
fn index_naming_an_absent_shard_is_an_error_naming_it() {
    let dir = scratch("absent-shard");
    let index = write_sharded(&dir);
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = SafeTensorsStore::open(&index).unwrap_err();
    assert!(
        matches!(&err, Error::MissingShard { shard, index: i, .. }
            if shard == "model-00002-of-00002.safetensors" && i == &index),
        "{err}"
    );
}

#[test]
fn index_pointing_a_tensor_at_the_wrong_shard_is_an_error() {
    let dir = scratch("wrong-shard");
    let index = write_sharded(&dir);
    std::fs::write(
        &index,
        r#"{"weight_map": {"a": "model-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let err = SafeTensorsStore::open(&index).unwrap_err();
    assert!(
        matches!(&err, Error::IndexMismatch { tensor, shard, .. }
            if tensor == "a" && shard == "model-00002-of-00002.safetensors"),
        "{err}"
    );
}

#[test]
fn malformed_index_is_an_index_error() {
    let dir = scratch("bad-index");
    let index = dir.join("model.safetensors.index.json");
    for (text, needle) in [
        ("not json", "not JSON"),
        (r#"{"metadata": {}}"#, "weight_map"),
        (r#"{"weight_map": {"a": 3}}"#, "not a file name"),
        (
            r#"{"weight_map": {"a": "../outside.safetensors"}}"#,
            "plain file name",
        ),
    ] {
        std::fs::write(&index, text).unwrap();
        let err = SafeTensorsStore::open(&index).unwrap_err();
        assert!(matches!(err, Error::Index { .. }), "{text}: {err}");
        assert!(err.to_string().contains(needle), "{text}: {err}");
    }
}

#[test]
fn metadata_of_a_single_file_is_exposed() {
    let dir = scratch("metadata");
    let path = dir.join("model.safetensors");
    let data = f32_bytes(&[1.0]);
    let view = TensorView::new(Dtype::F32, vec![1], &data).unwrap();
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file([("x", view)], Some(meta), &path).unwrap();
    let store = SafeTensorsStore::open(&path).unwrap();
    assert_eq!(store.metadata().unwrap()["format"], "pt");
}

#[test]
fn misaligned_tensor_is_copied_correctly() {
    // A writer that does not pad its header to 8 bytes can leave f32 data at an odd offset; the
    // store must still read the right values (by copying).
    let dir = scratch("misaligned");
    let path = dir.join("model.safetensors");
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    assert!(
        !header.len().is_multiple_of(4),
        "the test needs an unaligned data start"
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&f32_bytes(&[1.5, -2.25]));
    std::fs::write(&path, &bytes).unwrap();
    let store = SafeTensorsStore::open(&path).unwrap();
    let b = store.tensor::<f32>("w", &[2]).unwrap();
    assert!(!b.is_mapped());
    assert_eq!(&b[..], &[1.5, -2.25]);
}

/// `Access::Read` holds the bytes in memory: the weights are the same, not mapped, and a file
/// rewritten (or truncated) afterwards changes nothing.
#[test]
fn read_access_copies_the_file_so_it_may_change() {
    let dir = scratch("read-access");
    let path = sample_model(&dir);
    let store =
        deepblocks_core::SafeTensorsStore::open_with(&dir, deepblocks_core::Access::Read).unwrap();
    let w = store.weight("w.bf16", [3, 2]).unwrap();
    assert!(!w.is_mapped());
    assert_eq!(w.to_f32_vec(), vec![1., -1., 0.5, 2., 4., 8.]);
    std::fs::write(&path, b"overwritten").unwrap();
    assert_eq!(w.to_f32_vec(), vec![1., -1., 0.5, 2., 4., 8.]);
    assert_eq!(
        store.weight("w.f32", [2, 3]).unwrap().to_f32_vec(),
        vec![1., 2., 3., 4., 5., 6.]
    );
    // The default maps the file.
    sample_model(&dir);
    let mapped = SafeTensorsStore::open(&dir).unwrap();
    assert!(mapped.weight("w.bf16", [3, 2]).unwrap().is_mapped());
}

/// A header whose offsets are wrong names the tensor at fault: past the end of the data, two
/// that overlap (both named), a byte length that is not its shape's.
#[test]
fn bad_offsets_name_the_tensor() {
    let dir = scratch("offsets");
    let path = dir.join("model.safetensors");
    let write_raw = |header: &str, data: usize| {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data));
        std::fs::write(&path, &bytes).unwrap();
        SafeTensorsStore::open(&path).unwrap_err().to_string()
    };
    let err = write_raw(
        r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}"#,
        12,
    );
    assert!(err.contains("\"b\"") && err.contains("run past"), "{err}");
    let err = write_raw(
        r#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#,
        12,
    );
    assert!(
        err.contains("\"a\"") && err.contains("\"b\"") && err.contains("overlap"),
        "{err}"
    );
    let err = write_raw(
        r#"{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#,
        8,
    );
    assert!(err.contains("\"a\"") && err.contains("need 12"), "{err}");
}
