//! llama.cpp's `deepseek2` GGUF metadata read into the architecture description, on a tiny
//! golden checkpoint converted by llama.cpp's own `convert_hf_to_gguf.py`
//! (`scripts/gguf_fixtures.sh`): the same description as its `config.json` gives, but for what
//! GGUF does not carry.

use deepblocks_config::{Architecture, RopeScaling};
use deepblocks_core::gguf::GgufFile;
use deepblocks_deepseek::{Error, architecture_from_gguf};
use deepblocks_testkit::testdata_dir;

#[test]
fn a_converted_file_describes_the_checkpoint_it_came_from() {
    let file = GgufFile::open(testdata_dir().join("gguf/a_lowrank_group_yarn.gguf")).unwrap();
    let got = architecture_from_gguf(&file).unwrap();
    let mut want =
        Architecture::from_file(testdata_dir().join("deepseek/a_lowrank_group_yarn/config.json"))
            .unwrap()
            .architecture;
    // --no-vocab writes no special token ids.
    assert_eq!(
        (got.bos_token_id, got.eos_token_ids.clone()),
        (None, vec![])
    );
    want.bos_token_id = None;
    want.eos_token_ids.clear();
    // llama.cpp keeps 0.1 · mscale_all_dim as an f32 and uses it for mscale too.
    let (RopeScaling::Yarn(g), RopeScaling::Yarn(w)) = (got.rope.scaling, &mut want.rope.scaling)
    else {
        panic!("YaRN on both sides: {:?}", got.rope.scaling);
    };
    for (a, b) in [(g.mscale, w.mscale), (g.mscale_all_dim, w.mscale_all_dim)] {
        assert!((a.unwrap() - b.unwrap()).abs() < 1e-7, "{a:?} vs {b:?}");
    }
    (w.mscale, w.mscale_all_dim) = (g.mscale, g.mscale_all_dim);
    assert_eq!(got, want);
}

#[test]
fn another_architecture_is_refused_by_name() {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    let key = "general.architecture";
    b.extend((key.len() as u64).to_le_bytes());
    b.extend(key.as_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend(5u64.to_le_bytes());
    b.extend(b"llama");
    let file = GgufFile::from_bytes("llama.gguf", &b).unwrap();
    let err = architecture_from_gguf(&file).unwrap_err();
    assert!(
        matches!(&err, Error::GgufMetadata { key, .. } if key == "general.architecture"),
        "{err}"
    );
    assert!(
        err.to_string().contains("\"llama\"") && err.to_string().contains("llama.gguf"),
        "{err}"
    );
}
