//! FP8 E4M3 against torch's `float8_e4m3fn` (`testdata/fp8.safetensors`, written by
//! `scripts/golden/fp8.py`): code values, f32 → code conversion, the block-absmax quantizer and
//! dequantization, bit for bit; and a quantized `Weight` through `linear`.

use deepblocks_core::quant::fp8::{Fp8Block, e4m3_to_f32, f32_to_e4m3};
use deepblocks_core::{Buffer, Error, Weight, WeightFormat, linear, linear_naive};
use deepblocks_testkit::testdata_dir;

struct Fixture(Vec<u8>);

impl Fixture {
    fn load() -> Fixture {
        Fixture(std::fs::read(testdata_dir().join("fp8.safetensors")).unwrap())
    }
    fn st(&self) -> safetensors::SafeTensors<'_> {
        safetensors::SafeTensors::deserialize(&self.0).unwrap()
    }
    fn f32s(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = self.st();
        let t = st.tensor(name).unwrap();
        let v = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        (t.shape().to_vec(), v)
    }
    fn bytes(&self, name: &str) -> Vec<u8> {
        self.st().tensor(name).unwrap().data().to_vec()
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn every_code_has_torchs_value() {
    let fx = Fixture::load();
    let (_, values) = fx.f32s("values");
    for (c, &want) in values.iter().enumerate() {
        let got = e4m3_to_f32(c as u8);
        if want.is_nan() {
            assert!(got.is_nan(), "{c:#x}");
        } else {
            assert_eq!(got.to_bits(), want.to_bits(), "{c:#x}");
        }
    }
}

#[test]
fn f32_to_e4m3_is_torchs_conversion() {
    let fx = Fixture::load();
    let (_, x) = fx.f32s("x");
    let want = fx.bytes("x_codes");
    assert!(x.len() > 30_000);
    let differing: Vec<(f32, u8, u8)> = x
        .iter()
        .zip(&want)
        .map(|(&v, &w)| (v, f32_to_e4m3(v), w))
        .filter(|&(_, g, w)| g != w)
        .collect();
    assert!(
        differing.is_empty(),
        "{} of {} differ, e.g. (x, ours, torch's) {:?}",
        differing.len(),
        x.len(),
        &differing[..differing.len().min(5)]
    );
}

fn blocks() -> [(&'static str, Fp8Block); 2] {
    [
        ("128x128", Fp8Block::DEEPSEEK_V3),
        ("7x20", Fp8Block { rows: 7, cols: 20 }),
    ]
}

#[test]
fn the_quantizer_and_dequantizer_are_torchs() {
    let fx = Fixture::load();
    for (name, block) in blocks() {
        let (shape, w) = fx.f32s(&format!("w_{name}"));
        let (rows, cols) = (shape[0], shape[1]);
        let weight = Weight::from_f32(w, rows, cols).unwrap();
        let q = weight.quantize_fp8(block, name).unwrap();
        assert_eq!(q.format(), WeightFormat::Fp8(block));
        let (grid, scales) = fx.f32s(&format!("scales_{name}"));
        assert_eq!(grid, block.grid(rows, cols).unwrap(), "{name}");
        assert_eq!(q.bytes(), rows * cols + 4 * scales.len());
        let deepblocks_core::WeightData::Fp8(d) = q.data() else {
            panic!("not FP8")
        };
        let (codes, ours) = (&d.codes, &d.scales);
        assert_eq!(bits(ours), bits(&scales), "{name}: scales");
        assert_eq!(
            &codes[..],
            &fx.bytes(&format!("codes_{name}"))[..],
            "{name}: codes"
        );
        let (_, deq) = fx.f32s(&format!("deq_{name}"));
        assert_eq!(bits(&q.to_f32_vec()), bits(&deq), "{name}: dequantized");
    }
}

#[test]
fn a_checkpoints_codes_and_scales_make_the_same_weight() {
    let fx = Fixture::load();
    let (name, block) = blocks()[1];
    let (shape, deq) = fx.f32s(&format!("deq_{name}"));
    let (grid, scales) = fx.f32s(&format!("scales_{name}"));
    let codes = fx.bytes(&format!("codes_{name}"));
    let w = Weight::from_fp8(
        block,
        Buffer::from_vec(codes.clone()),
        Buffer::from_vec(scales.clone()),
        [grid[0], grid[1]],
        shape[0],
        shape[1],
        "w",
    )
    .unwrap();
    assert_eq!(bits(&w.to_f32_vec()), bits(&deq));
    // Row slices that start inside a block row keep their scales.
    let s = w.slice_rows(3..17);
    assert_eq!(
        bits(&s.to_f32_vec()),
        bits(&deq[3 * shape[1]..17 * shape[1]])
    );
    // linear over the FP8 weight equals linear over its dequantized f32 copy, on every path.
    let (n, k) = (shape[0], shape[1]);
    let f = Weight::from_f32(deq, n, k).unwrap();
    for t in [1, 3, 4, 9, 40] {
        let x: Vec<f32> = (0..t * k)
            .map(|i| ((i * 31 % 17) as f32 - 8.0) / 5.0)
            .collect();
        let (mut got, mut want) = (vec![0.0; t * n], vec![0.0; t * n]);
        linear(&mut got, &x, &w, t);
        linear_naive(&mut want, &x, &f, t);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "t {t}: {g} vs {w}");
        }
    }

    // A scale grid of the wrong shape names the matrix and both grids.
    let err = Weight::from_fp8(
        block,
        Buffer::from_vec(codes.clone()),
        Buffer::from_vec(scales[..scales.len() - grid[1]].to_vec()),
        [grid[0] - 1, grid[1]],
        shape[0],
        shape[1],
        "model.layers.0.mlp.down_proj.weight",
    )
    .unwrap_err();
    assert!(matches!(err, Error::Fp8ScaleGrid { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "model.layers.0.mlp.down_proj.weight: an FP8 [30, 50] matrix in blocks of 7×20 needs a \
         scale grid of [5, 3], found [4, 3]"
    );
    // A NaN code is refused where the weight is made.
    let mut bad = codes;
    bad[61] = 0xff;
    let err = Weight::from_fp8(
        block,
        Buffer::from_vec(bad),
        Buffer::from_vec(scales),
        [grid[0], grid[1]],
        shape[0],
        shape[1],
        "w",
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "w (an FP8 NaN code): element 61 is NaN, which cannot be quantized"
    );
}

#[test]
fn weight_new_takes_whole_fp8_grids_only() {
    use deepblocks_core::{Fp8Data, WeightData};
    let block = Fp8Block { rows: 4, cols: 4 };
    let data = |row0| {
        WeightData::Fp8(Box::new(Fp8Data {
            block,
            row0,
            codes: Buffer::from_vec(vec![0x38; 6 * 5]), // 1.0 each
            scales: Buffer::from_vec(vec![0.5; 4]),     // [2, 2]
        }))
    };
    let w = Weight::new(data(0), 6, 5).unwrap();
    assert_eq!(w.to_f32_vec(), vec![0.5; 30]);
    let err = Weight::new(data(3), 6, 5).unwrap_err().to_string();
    assert!(err.contains("use Weight::slice_rows"), "{err}");
}

/// How many cases of [`from_fp8_never_panics`] built a weight.
static OKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Any codes, scales, grid and block shape: an `Err` or a weight that dequantizes, slices
    /// and multiplies — never a panic.
    #[test]
    fn from_fp8_never_panics(
        rows in 0usize..20,
        cols in 0usize..40,
        bo in 0usize..24,
        bi in 0usize..48,
        g0 in 0usize..6,
        g1 in 0usize..6,
        extra_codes in 0usize..3,
        extra_scales in 0usize..3,
        code in proptest::prelude::any::<u8>(),
        fit in proptest::prelude::any::<bool>(),
    ) {
        let block = Fp8Block { rows: bo, cols: bi };
        // Half the cases with the grid the shape needs, so the Ok side is exercised too.
        let [g0, g1] = match block.grid(rows, cols) {
            Some(g) if fit => g,
            _ => [g0, g1],
        };
        let codes = vec![code; rows * cols + extra_codes % 2];
        let scales = vec![0.25f32; g0 * g1 + extra_scales % 2];
        match Weight::from_fp8(block, Buffer::from_vec(codes), Buffer::from_vec(scales), [g0, g1], rows, cols, "w") {
            Err(e) => proptest::prop_assert!(!e.to_string().is_empty()),
            Ok(w) => {
                OKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let v = w.to_f32_vec();
                proptest::prop_assert_eq!(v.len(), rows * cols);
                if rows > 1 {
                    let s = w.slice_rows(1..rows);
                    proptest::prop_assert_eq!(s.to_f32_vec(), v[cols..].to_vec());
                }
                let x = vec![1.0f32; 3 * cols];
                let mut y = vec![f32::NAN; 3 * rows];
                linear(&mut y, &x, &w, 3);
                for i in 0..3 * rows {
                    let want: f32 = v[(i % rows) * cols..(i % rows + 1) * cols].iter().sum();
                    proptest::prop_assert!((y[i] - want).abs() <= 1e-4 * (1.0 + want.abs()));
                }
            }
        }
    }
}

#[test]
fn from_fp8_never_panics_builds_weights_too() {
    // Runs the property here too so the count is this thread's to read.
    from_fp8_never_panics();
    assert!(OKS.load(std::sync::atomic::Ordering::Relaxed) > 20);
}
