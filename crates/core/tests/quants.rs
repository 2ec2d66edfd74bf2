//! The block formats against ggml and gguf-py (`testdata/quants.safetensors`, written by
//! `scripts/golden/quants.py`): the quantizers write ggml's reference quantizers' bytes, the
//! dequantizers give gguf-py's values bit for bit.

use deepblocks_core::quant::BlockFormat;
use deepblocks_testkit::testdata_dir;

struct Fixture {
    x: Vec<f32>,
    q: Vec<u8>,
    deq: Vec<f32>,
}

fn fixture(f: BlockFormat) -> Fixture {
    let bytes = std::fs::read(testdata_dir().join("quants.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: String| -> Vec<f32> {
        st.tensor(&name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    Fixture {
        x: f32s(format!("x_{f}")),
        q: st.tensor(&format!("q_{f}")).unwrap().data().to_vec(),
        deq: f32s(format!("deq_{f}")),
    }
}

#[test]
fn dequantizers_match_gguf_py_bit_for_bit() {
    for f in BlockFormat::ALL {
        let fx = fixture(f);
        let mut got = vec![f32::NAN; fx.x.len()];
        f.dequantize_row(&mut got, &fx.q);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&fx.deq), "{f}");
    }
}

#[test]
fn quantizers_write_ggmls_reference_bytes() {
    for f in BlockFormat::ALL {
        let fx = fixture(f);
        let mut got = vec![0u8; fx.q.len()];
        f.quantize_row(&mut got, &fx.x);
        let b = f.block_bytes();
        let differing: Vec<usize> = got
            .chunks_exact(b)
            .zip(fx.q.chunks_exact(b))
            .enumerate()
            .filter(|(_, (g, w))| g != w)
            .map(|(i, _)| i)
            .collect();
        assert!(
            differing.is_empty(),
            "{f}: blocks {differing:?} differ from ggml's"
        );
    }
}

#[test]
fn the_fixture_covers_every_kind_of_block() {
    // Thirteen kinds of block (scripts/golden/quants.py), zero and constant ones included.
    for f in BlockFormat::ALL {
        let fx = fixture(f);
        assert_eq!(fx.x.len(), 13 * f.block_len(), "{f}");
        let zero = &fx.x[9 * f.block_len()..10 * f.block_len()];
        assert!(zero.iter().all(|&v| v == 0.0));
        assert!(fx.deq.iter().any(|&v| v != 0.0));
    }
}
