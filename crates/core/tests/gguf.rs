//! The GGUF container reader against a file gguf-py wrote (`scripts/golden/gguf_container.py`),
//! and its bad inputs: each an `Err` naming the culprit, never a panic or an allocation the
//! file's size does not justify.

use std::path::PathBuf;

use deepblocks_core::gguf::{GgufFile, GgufValue};
use serde_json::Value;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/gguf")
        .join(rel)
}

fn json_of(v: &GgufValue) -> Value {
    match v {
        GgufValue::U8(x) => (*x).into(),
        GgufValue::I8(x) => (*x).into(),
        GgufValue::U16(x) => (*x).into(),
        GgufValue::I16(x) => (*x).into(),
        GgufValue::U32(x) => (*x).into(),
        GgufValue::I32(x) => (*x).into(),
        GgufValue::F32(x) => (*x as f64).into(),
        GgufValue::Bool(x) => (*x).into(),
        GgufValue::String(x) => x.clone().into(),
        GgufValue::Array(items) => Value::Array(items.iter().map(json_of).collect()),
        GgufValue::U64(x) => (*x).into(),
        GgufValue::I64(x) => (*x).into(),
        GgufValue::F64(x) => (*x).into(),
    }
}

fn type_names(v: &GgufValue) -> Vec<&'static str> {
    let name = |v: &GgufValue| match v {
        GgufValue::U8(_) => "UINT8",
        GgufValue::I8(_) => "INT8",
        GgufValue::U16(_) => "UINT16",
        GgufValue::I16(_) => "INT16",
        GgufValue::U32(_) => "UINT32",
        GgufValue::I32(_) => "INT32",
        GgufValue::F32(_) => "FLOAT32",
        GgufValue::Bool(_) => "BOOL",
        GgufValue::String(_) => "STRING",
        GgufValue::Array(_) => "ARRAY",
        GgufValue::U64(_) => "UINT64",
        GgufValue::I64(_) => "INT64",
        GgufValue::F64(_) => "FLOAT64",
    };
    match v {
        GgufValue::Array(items) => vec!["ARRAY", items.first().map_or("?", name)],
        other => vec![name(other)],
    }
}

#[test]
fn reads_what_gguf_py_wrote() {
    let f = GgufFile::open(testdata("container.gguf")).unwrap();
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(testdata("container.json")).unwrap())
            .unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 64);
    let meta = want["metadata"].as_object().unwrap();
    assert_eq!(f.metadata().len(), meta.len());
    for (key, value) in f.metadata() {
        let w = &meta[key.as_str()];
        assert_eq!(json_of(value), w["value"], "{key}");
        let types: Vec<&str> = w["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(type_names(value), types, "{key}");
    }
    assert_eq!(
        f.get("general.architecture").and_then(GgufValue::as_str),
        Some("deepseek2")
    );
    let tensors = want["tensors"].as_array().unwrap();
    assert_eq!(f.tensors().len(), tensors.len());
    for w in tensors {
        let name = w["name"].as_str().unwrap();
        let t = f.tensor(name).unwrap();
        let ne: Vec<u64> = w["ne"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.ne, ne, "{name}");
        assert_eq!(t.type_name(), w["type"].as_str().unwrap(), "{name}");
        assert_eq!(t.offset, w["offset"].as_u64().unwrap(), "{name}");
        let hex: String = f
            .tensor_data(name)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, w["hex"].as_str().unwrap(), "{name}");
    }
}

/// A GGUF header built by hand: `kv` entries then tensors `(name, ne, type, offset)`, padded
/// to 32, then `data` bytes.
fn build(
    version: u32,
    kv: &[(&str, u32, Vec<u8>)],
    tensors: &[(&str, &[u64], u32, u64)],
    data: usize,
) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(version.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kv.len() as u64).to_le_bytes());
    let string = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    for (key, t, value) in kv {
        string(&mut b, key);
        b.extend(t.to_le_bytes());
        b.extend(value);
    }
    for (name, ne, t, offset) in tensors {
        string(&mut b, name);
        b.extend((ne.len() as u32).to_le_bytes());
        for d in *ne {
            b.extend(d.to_le_bytes());
        }
        b.extend(t.to_le_bytes());
        b.extend(offset.to_le_bytes());
    }
    b.resize(b.len().next_multiple_of(32) + data, 0);
    b
}

fn err(bytes: &[u8]) -> String {
    GgufFile::from_bytes("bad.gguf", bytes)
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_files_are_errors_naming_the_culprit() {
    let ok = build(3, &[], &[("w", &[32, 2], 8, 0)], 68);
    assert!(GgufFile::from_bytes("ok.gguf", &ok).is_ok());
    for (bytes, says) in [
        (b"PK\x03\x04 not a gguf file".to_vec(), "not a GGUF file"),
        (
            build(2, &[], &[], 0),
            "GGUF version 2; only version 3 is read",
        ),
        (
            build(3, &[], &[("w", &[32, 2], 8, 0)], 67),
            "tensor \"w\" (68 bytes at data offset 0) runs past the end",
        ),
        (
            build(3, &[], &[("a", &[32], 8, 0), ("b", &[32], 8, 32)], 128),
            "overlap",
        ),
        (
            build(3, &[], &[("a", &[32], 8, 0), ("a", &[32], 8, 64)], 128),
            "tensor \"a\" appears twice",
        ),
        (
            build(3, &[], &[("w", &[30, 2], 8, 0)], 64),
            "w: Q8_0 rows of 30 elements are not whole blocks of 32",
        ),
        (
            build(3, &[], &[("w", &[32], 99, 0)], 64),
            "w: unknown ggml type 99",
        ),
        (
            build(3, &[], &[("w", &[32], 8, 8)], 64),
            "w: offset 8 is not a multiple of the alignment 32",
        ),
        (
            build(3, &[], &[("w", &[u64::MAX, 2], 0, 0)], 64),
            "overflows 64 bits",
        ),
        (
            build(3, &[("k", 8, u64::MAX.to_le_bytes().to_vec())], &[], 0),
            "k: 18446744073709551615 bytes at offset",
        ),
        (
            build(
                3,
                &[(
                    "k",
                    9,
                    [
                        4u32.to_le_bytes().to_vec(),
                        (1u64 << 60).to_le_bytes().to_vec(),
                    ]
                    .concat(),
                )],
                &[],
                0,
            ),
            "an array of 1152921504606846976 elements cannot fit",
        ),
        (
            build(3, &[("k", 13, vec![0; 8])], &[], 0),
            "\"k\": unknown value type 13",
        ),
        (
            build(
                3,
                &[("general.alignment", 4, 3u32.to_le_bytes().to_vec())],
                &[],
                0,
            ),
            "not a power of two",
        ),
    ] {
        let e = err(&bytes);
        assert!(e.contains(says), "expected {says:?} in {e:?}");
        assert!(e.contains("bad.gguf"), "names the file: {e}");
    }
    // Counts the file cannot hold are refused before any reservation.
    let mut huge = b"GGUF".to_vec();
    huge.extend(3u32.to_le_bytes());
    huge.extend(u64::MAX.to_le_bytes());
    huge.extend(u64::MAX.to_le_bytes());
    assert!(err(&huge).contains("cannot fit"), "{}", err(&huge));
}

/// Every truncation of a valid file is an error (never a panic), but for cuts into the padding
/// after the last tensor's data (under one alignment, 64 bytes).
#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let bytes = std::fs::read(testdata("container.gguf")).unwrap();
    for len in 0..bytes.len() {
        let r = GgufFile::from_bytes("cut.gguf", &bytes[..len]);
        assert!(
            r.is_err() || len + 64 > bytes.len(),
            "a {len}-byte prefix opened"
        );
    }
}

/// Tensors come out as weights in their stored formats; a type deepblocks does not compute with
/// is an error naming the tensor and the type, and so is a shape the caller did not expect.
#[test]
fn tensors_become_weights_in_place_or_errors_naming_them() {
    let f = GgufFile::open(testdata("container.gguf")).unwrap();
    let w = f.weight("c.q8_0", 2, 64).unwrap();
    assert_eq!(w.format().to_string(), "Q8_0");
    assert_eq!(w.bytes(), 2 * 2 * 34);
    let a = f.weight("a.f32", 3, 5).unwrap().to_f32_vec();
    let bytes = f.tensor_data("a.f32").unwrap();
    assert_eq!(a[1], f32::from_le_bytes(bytes[4..8].try_into().unwrap()));
    let e = f.weight("a.f32", 5, 3).unwrap_err().to_string();
    assert!(e.contains("\"a.f32\"") && e.contains("shape"), "{e}");
    let q5k = build(3, &[], &[("blk.0.ffn_down.weight", &[256], 13, 0)], 176);
    let g = GgufFile::from_bytes("q5k.gguf", &q5k).unwrap();
    let e = g
        .weight("blk.0.ffn_down.weight", 1, 256)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("blk.0.ffn_down.weight") && e.contains("Q5_K"),
        "{e}"
    );
}

/// What `GgufWriter` writes reads back as written: the container fixture gguf-py wrote, rebuilt
/// value by value and tensor by tensor, is the same file byte for byte; a custom alignment puts
/// every tensor at a multiple of it; sizes, formats and names are checked before anything is
/// written.
#[test]
fn the_writer_writes_what_the_reader_reads() {
    use deepblocks_core::gguf::GgufWriter;
    use deepblocks_core::quant::BlockFormat;
    use deepblocks_core::{DType, Weight};
    let original = std::fs::read(testdata("container.gguf")).unwrap();
    let file = GgufFile::from_bytes("container.gguf", &original).unwrap();
    let mut out = GgufWriter::new();
    for (k, v) in file.metadata() {
        out.set(k, v.clone());
    }
    for t in file.tensors() {
        let rows = t.ne[1..].iter().product::<u64>() as usize;
        let w = file.weight(&t.name, rows, t.ne[0] as usize).unwrap();
        out.add_stacked(&t.name, &t.ne, &[w]).unwrap();
    }
    let mut bytes = Vec::new();
    out.write(&mut bytes).unwrap();
    assert_eq!(bytes, original);

    let w = Weight::from_f32((0..64).map(|i| i as f32 / 7.0).collect(), 2, 32).unwrap();
    let q = w.quantize(BlockFormat::Q8_0, "q").unwrap();
    let mut out = GgufWriter::new();
    out.set("general.alignment", GgufValue::U32(64));
    out.add_weight("a", &w.to_dtype(DType::BF16)).unwrap();
    out.add_weight("b", &q).unwrap();
    // One tensor of two parts: [32, 2, 2].
    out.add_stacked("c", &[32, 2, 2], &[q.clone(), q.clone()])
        .unwrap();
    let mut bytes = Vec::new();
    out.write(&mut bytes).unwrap();
    let back = GgufFile::from_bytes("mem.gguf", &bytes).unwrap();
    assert_eq!(back.alignment(), 64);
    for t in back.tensors() {
        assert_eq!(t.offset % 64, 0, "{}", t.name);
    }
    assert_eq!(
        back.tensor_data("b").unwrap(),
        &back.tensor_data("c").unwrap()[..68]
    );
    assert_eq!(
        back.weight("b", 2, 32).unwrap().to_f32_vec(),
        q.to_f32_vec()
    );

    let msg = |r: Result<(), deepblocks_core::gguf::GgufError>| r.unwrap_err().to_string();
    let e = msg(out.add_weight("a", &w));
    assert!(e.contains("\"a\"") && e.contains("twice"), "{e}");
    let e = msg(out.add_stacked("d", &[32, 3], std::slice::from_ref(&q)));
    assert!(e.contains("\"d\"") && e.contains("bytes"), "{e}");
    let e = msg(out.add_stacked("e", &[32, 4], &[q.clone(), w.clone()]));
    assert!(e.contains("\"e\"") && e.contains("parts"), "{e}");
    let fp8 = w
        .quantize_fp8(deepblocks_core::quant::fp8::Fp8Block::DEEPSEEK_V3, "f")
        .unwrap();
    let e = msg(out.add_weight("f", &fp8));
    assert!(e.contains("\"f\"") && e.contains("no GGUF type"), "{e}");
}
