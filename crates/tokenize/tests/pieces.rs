//! `encode_in_pieces` gives the ids of `encode` whatever the piece size: on the test tokenizer
//! (DeepSeek-like pre-tokenizer), the shipped model's (plain byte-level) and a Metaspace one that
//! prefixes every piece (where no boundary is safe, so the text stays in one piece).

use std::path::PathBuf;

use deepblocks_tokenize::Tokenizer;
use proptest::prelude::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tokenizers() -> Vec<(&'static str, Tokenizer)> {
    vec![
        (
            "testdata/tokenize",
            Tokenizer::from_dir(root().join("testdata/tokenize")).unwrap(),
        ),
        (
            "models/tiny-shakespeare",
            Tokenizer::from_dir(root().join("models/tiny-shakespeare")).unwrap(),
        ),
        ("metaspace", metaspace()),
    ]
}

/// A word-level tokenizer whose Metaspace pre-tokenizer puts `▁` before the first word of every
/// text it is given: encoding two pieces apart differs from encoding them together.
fn metaspace() -> Tokenizer {
    let vocab: Vec<String> = ["[UNK]", "▁a", "a", "▁b", "b", "\n", "▁\n", "▁", "1"]
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{:?}: {i}", t))
        .collect();
    let json = format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": {{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}},
            "post_processor": null, "decoder": null,
            "model": {{"type": "WordLevel", "vocab": {{{}}}, "unk_token": "[UNK]"}}}}"#,
        vocab.join(", ")
    );
    Tokenizer::from_json_bytes(json.as_bytes()).unwrap()
}

/// Texts from pieces that meet at every kind of boundary: line breaks before letters, spaces,
/// more breaks, digits, CJK, a special token.
fn text() -> impl Strategy<Value = String> {
    let parts = prop::sample::select(vec![
        "a",
        "b",
        " ",
        "\n",
        "\n\n",
        " a",
        "1",
        "12",
        "世界",
        "Hello",
        " world",
        ".",
        "'s",
        "<｜end▁of▁sentence｜>",
        "\t",
        "é",
    ]);
    prop::collection::vec(parts, 0..80).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn pieces_give_the_ids_of_the_whole(text in text(), piece in 1usize..40) {
        for (name, tok) in tokenizers() {
            let whole = tok.encode(&text, false).unwrap();
            let pieces = tok.encode_in_pieces(&text, piece).unwrap();
            prop_assert_eq!(pieces, whole, "{} piece {} text {:?}", name, piece, text);
        }
    }
}

#[test]
fn a_long_text_in_small_pieces_gives_the_ids_of_the_whole() {
    let text = std::fs::read_to_string(root().join("README.md"))
        .unwrap()
        .repeat(4);
    for (name, tok) in tokenizers() {
        let whole = tok.encode(&text, false).unwrap();
        // Byte-level BPE splits at every line break before a word; Metaspace at none.
        let ends = tok.piece_ends(&text, 100).unwrap();
        if name == "metaspace" {
            assert_eq!(ends, [text.len()], "{name}");
        } else {
            assert!(
                ends.len() > text.len() / 400,
                "{name}: {} pieces",
                ends.len()
            );
        }
        for piece in [1, 100, 4096] {
            assert_eq!(
                tok.encode_in_pieces(&text, piece).unwrap(),
                whole,
                "{name} piece {piece}"
            );
        }
    }
}
