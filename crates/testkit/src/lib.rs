//! # deepblocks-testkit
//!
//! Test helpers shared by the deepblocks crates (a dev-dependency only):
//!
//! - [`Golden`]: fixtures in `testdata/*.safetensors`, written by `scripts/golden/*.py` from
//!   Hugging Face transformers, read back as f32 with their shapes and metadata.
//! - [`assert_close`] / [`close_report`]: elementwise `|a − b| ≤ atol + rtol·|b|` with a report of
//!   the maximum absolute and relative differences and where they occur.
//! - [`strategies`]: proptest strategies for shapes and data.
//! - [`read_f32_tensors`] / [`write_f32_tensors`]: a checkpoint's f32 tensors, to rewrite
//!   fixtures with a fault in them.
//!
//! ```
//! use deepblocks_testkit::{assert_close, close_report};
//! assert_close(&[1.0, 2.0], &[1.0, 2.000_001], 1e-5, 0.0);
//! let r = close_report(&[1.0, 2.5], &[1.0, 2.0], 1e-3, 0.0);
//! assert_eq!((r.max_abs, r.max_abs_at, r.violations), (0.5, 1, 1));
//! ```

#![deny(missing_docs)]

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

/// A tensor as `(name, shape, values)`.
pub type F32Tensor = (String, Vec<usize>, Vec<f32>);

/// Every tensor of an f32 safetensors file, in the file's order.
///
/// # Panics
/// If the file cannot be read or holds a tensor of another dtype.
pub fn read_f32_tensors(path: &Path) -> Vec<F32Tensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{name} in {}", path.display());
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, view.shape().to_vec(), values)
        })
        .collect()
}

/// Writes `tensors` as an f32 safetensors file.
///
/// # Panics
/// If a tensor's values do not fill its shape or the file cannot be written.
pub fn write_f32_tensors(path: &Path, tensors: &[F32Tensor]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), data)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The workspace's `testdata/` folder.
pub fn testdata_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// A golden fixture: a safetensors file of named tensors plus string metadata.
pub struct Golden {
    path: PathBuf,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>, Dtype)>,
    metadata: HashMap<String, String>,
}

impl Golden {
    /// Loads `testdata/{name}.safetensors`.
    ///
    /// # Panics
    /// If the file is missing or unreadable, with a message saying which script makes it.
    pub fn load(name: &str) -> Golden {
        Golden::load_path(&testdata_dir().join(format!("{name}.safetensors")))
    }

    /// Loads a fixture from an explicit path.
    ///
    /// # Panics
    /// If the file is missing or not safetensors.
    pub fn load_path(path: &Path) -> Golden {
        let bytes = std::fs::read(path).unwrap_or_else(|e| {
            panic!(
                "golden fixture {}: {e}; regenerate with scripts/golden (see docs/testing.md)",
                path.display()
            )
        });
        let st = SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("golden fixture {}: {e}", path.display()));
        let (_, meta) = SafeTensors::read_metadata(&bytes).expect("parsed above");
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let data = to_f32(view.dtype(), view.data()).unwrap_or_else(|| {
                panic!("{}: {name} has dtype {:?}", path.display(), view.dtype())
            });
            tensors.insert(name, (view.shape().to_vec(), data, view.dtype()));
        }
        Golden {
            path: path.to_path_buf(),
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        }
    }

    /// Tensor `name` as f32 (bf16/f16 exactly; f64 and integers rounded), with its shape.
    ///
    /// # Panics
    /// If there is no such tensor.
    pub fn get(&self, name: &str) -> (&[usize], &[f32]) {
        let (shape, data, _) = self.entry(name);
        (shape, data)
    }

    /// Tensor `name`'s data only.
    ///
    /// # Panics
    /// If there is no such tensor.
    pub fn data(&self, name: &str) -> &[f32] {
        self.get(name).1
    }

    /// Tensor `name`'s shape only.
    ///
    /// # Panics
    /// If there is no such tensor.
    pub fn shape(&self, name: &str) -> &[usize] {
        self.get(name).0
    }

    /// The dtype tensor `name` was stored in.
    ///
    /// # Panics
    /// If there is no such tensor.
    pub fn dtype(&self, name: &str) -> Dtype {
        self.entry(name).2
    }

    /// Whether tensor `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Metadata value `key` parsed as `T`.
    ///
    /// # Panics
    /// If the key is missing or does not parse.
    pub fn meta<T: std::str::FromStr>(&self, key: &str) -> T {
        let v = self
            .metadata
            .get(key)
            .unwrap_or_else(|| panic!("{}: no metadata {key:?}", self.path.display()));
        v.parse().unwrap_or_else(|_| {
            panic!(
                "{}: metadata {key:?} = {v:?} does not parse",
                self.path.display()
            )
        })
    }

    fn entry(&self, name: &str) -> &(Vec<usize>, Vec<f32>, Dtype) {
        self.tensors.get(name).unwrap_or_else(|| {
            let mut names: Vec<_> = self.tensors.keys().collect();
            names.sort();
            panic!(
                "{}: no tensor {name:?}; it has {names:?}",
                self.path.display()
            )
        })
    }
}

fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::I32 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as f32)
            .collect(),
        _ => return None,
    })
}

/// `len` deterministic pseudo-random values in `[-1, 1)` (xorshift32 from `seed`): fixed data for
/// benches and tests, the same on every run and platform, without a random-number dependency.
///
/// ```
/// let a = deepblocks_testkit::det_values(5, 7);
/// assert_eq!(a, deepblocks_testkit::det_values(5, 7));
/// assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
/// ```
pub fn det_values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// How two arrays differ.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseReport {
    /// Number of elements compared.
    pub len: usize,
    /// Largest `|a − b|`.
    pub max_abs: f32,
    /// Where it occurs.
    pub max_abs_at: usize,
    /// Largest `|a − b| / |b|` over elements with `b ≠ 0`.
    pub max_rel: f32,
    /// Where it occurs.
    pub max_rel_at: usize,
    /// Elements outside `atol + rtol·|b|` (NaN on either side counts unless both are NaN).
    pub violations: usize,
    /// The first of them: (index, actual, expected).
    pub first_violation: Option<(usize, f32, f32)>,
}

impl fmt::Display for CloseReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} elements out of tolerance; max |Δ| = {:e} at {}, max rel = {:e} at {}",
            self.violations, self.len, self.max_abs, self.max_abs_at, self.max_rel, self.max_rel_at
        )?;
        if let Some((i, a, e)) = self.first_violation {
            write!(f, "; first at {i}: actual {a} vs expected {e}")?;
        }
        Ok(())
    }
}

/// Compares `actual` with `expected` elementwise under `|a − b| ≤ atol + rtol·|b|`.
///
/// # Panics
/// If the lengths differ.
pub fn close_report(actual: &[f32], expected: &[f32], atol: f32, rtol: f32) -> CloseReport {
    assert_eq!(
        actual.len(),
        expected.len(),
        "close_report: actual has {} elements, expected {}",
        actual.len(),
        expected.len()
    );
    let mut r = CloseReport {
        len: actual.len(),
        max_abs: 0.0,
        max_abs_at: 0,
        max_rel: 0.0,
        max_rel_at: 0,
        violations: 0,
        first_violation: None,
    };
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let both_nan = a.is_nan() && e.is_nan();
        let diff = if both_nan { 0.0 } else { (a - e).abs() };
        let diff_cmp = if diff.is_nan() { f32::INFINITY } else { diff };
        if diff_cmp > r.max_abs {
            r.max_abs = diff_cmp;
            r.max_abs_at = i;
        }
        if e != 0.0 && !both_nan {
            let rel = diff_cmp / e.abs();
            if rel > r.max_rel {
                r.max_rel = rel;
                r.max_rel_at = i;
            }
        }
        let ok = both_nan || (a == e) || diff <= atol + rtol * e.abs();
        if !ok {
            r.violations += 1;
            if r.first_violation.is_none() {
                r.first_violation = Some((i, a, e));
            }
        }
    }
    r
}

/// Asserts `|a − b| ≤ atol + rtol·|b|` everywhere, panicking with a [`CloseReport`] otherwise.
///
/// # Panics
/// If any element is out of tolerance or the lengths differ.
#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f32], atol: f32, rtol: f32) {
    let r = close_report(actual, expected, atol, rtol);
    assert!(
        r.violations == 0,
        "assert_close(atol {atol:e}, rtol {rtol:e}): {r}"
    );
}

/// proptest strategies for kernel tests.
pub mod strategies {
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// A dimension in `1..=max`.
    pub fn dim(max: usize) -> impl Strategy<Value = usize> {
        1..=max
    }

    /// `len` finite f32 values in `[-scale, scale]`.
    pub fn values(len: usize, scale: f32) -> impl Strategy<Value = Vec<f32>> {
        vec(-scale..=scale, len)
    }

    /// A `(rows, cols)` shape with each dimension in `1..=max`, plus row-major data for it in
    /// `[-scale, scale]`.
    pub fn matrix(max: usize, scale: f32) -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
        (dim(max), dim(max)).prop_flat_map(move |(r, c)| (Just(r), Just(c), values(r * c, scale)))
    }

    /// The shape of `y[t, n] = x[t, k] · w[n, k]ᵀ` with `t ≤ max_t`, `k ≤ max_k`, `n ≤ max_n`,
    /// plus data for `x` and `w` in `[-1, 1]`.
    pub fn linear_case(
        max_t: usize,
        max_k: usize,
        max_n: usize,
    ) -> impl Strategy<Value = (usize, usize, usize, Vec<f32>, Vec<f32>)> {
        (dim(max_t), dim(max_k), dim(max_n)).prop_flat_map(|(t, k, n)| {
            (
                Just(t),
                Just(k),
                Just(n),
                values(t * k, 1.0),
                values(n * k, 1.0),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_finds_the_worst_element_and_counts_violations() {
        let r = close_report(&[0.0, 1.0, 3.0, f32::NAN], &[0.0, 1.1, 2.0, 1.0], 0.2, 0.0);
        assert_eq!(r.violations, 2);
        assert_eq!(r.first_violation, Some((2, 3.0, 2.0)));
        assert_eq!(r.max_abs, f32::INFINITY); // the NaN
        assert_eq!(r.max_abs_at, 3);
    }

    #[test]
    #[should_panic(expected = "1 of 2 elements out of tolerance")]
    fn assert_close_panics_with_the_report() {
        assert_close(&[1.0, 2.0], &[1.0, 2.1], 1e-3, 1e-3);
    }

    #[test]
    fn rtol_scales_with_the_expected_value() {
        assert_eq!(close_report(&[101.0], &[100.0], 0.0, 0.011).violations, 0);
        assert_eq!(close_report(&[101.0], &[100.0], 0.0, 0.009).violations, 1);
    }
}
