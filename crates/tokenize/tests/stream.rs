//! The streaming decoder's contract, as properties: only complete characters come out, and the
//! pieces concatenate to the decode of all ids at once.

use std::path::PathBuf;
use std::sync::OnceLock;

use deepblocks_tokenize::{DEEPSEEK_BOS, DEEPSEEK_EOS, Tokenizer};
use proptest::prelude::*;

fn fixture() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/tokenize");
        Tokenizer::from_dir(dir).unwrap()
    })
}

fn bytes() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::byte_level(&[DEEPSEEK_BOS, DEEPSEEK_EOS]).unwrap())
}

/// Streams `ids`, checking every piece; returns the concatenation.
fn stream(tok: &Tokenizer, ids: &[u32], skip: bool, complete_only: bool) -> String {
    let mut s = tok.stream(skip);
    let mut out = String::new();
    for &id in ids {
        if let Some(piece) = s.push(id).unwrap() {
            if complete_only {
                assert!(!piece.contains('\u{FFFD}'), "broken character in {piece:?}");
            }
            out.push_str(&piece);
        }
    }
    out + &s.finish().unwrap()
}

/// Multilingual text: ASCII, accents, Cyrillic, CJK, Hangul, emoji with modifiers and ZWJ.
fn text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "a",
        "Hello",
        " world",
        "\n",
        "  ",
        "123",
        "é",
        "façade",
        "Привет",
        "Γειά",
        "深度",
        "求索",
        "東京",
        "ひらがな",
        "안녕",
        "😀",
        "👍🏽",
        "🇺🇸",
        "👨\u{200d}👩\u{200d}👧",
        "❤\u{fe0f}",
        "龘",
        "𠀀",
        "𝔘",
        "！",
        "。",
        "\t",
        DEEPSEEK_EOS,
    ]);
    prop::collection::vec(pieces, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn multilingual_text_streams_to_its_decode(t in text(), skip in any::<bool>()) {
        for tok in [fixture(), bytes()] {
            let ids = tok.encode(&t, false).unwrap();
            let all = tok.decode(&ids, skip).unwrap();
            if !skip {
                prop_assert_eq!(&all, &t);
            }
            prop_assert_eq!(stream(tok, &ids, skip, true), all);
        }
    }

    #[test]
    fn random_ids_stream_to_their_decode(seed in prop::collection::vec(any::<u32>(), 0..40), skip in any::<bool>()) {
        // Random ids make invalid UTF-8 too: pieces may hold U+FFFD for bytes that can never
        // complete, but the concatenation still equals the decode of all ids.
        for tok in [fixture(), bytes()] {
            let v = tok.vocab_size() as u32;
            let ids: Vec<u32> = seed.iter().map(|s| s % v).collect();
            prop_assert_eq!(stream(tok, &ids, skip, false), tok.decode(&ids, skip).unwrap());
        }
    }

    #[test]
    fn random_bytes_never_emit_a_split_character(raw in prop::collection::vec(any::<u8>(), 0..40)) {
        // Valid UTF-8 from random chars, fed byte by byte: every piece is whole characters.
        let t: String = String::from_utf8_lossy(&raw).into_owned();
        let ids: Vec<u32> = t.bytes().map(u32::from).collect();
        prop_assert_eq!(stream(bytes(), &ids, false, false), t);
    }

    #[test]
    fn byte_level_encode_is_the_utf8_bytes(t in "\\PC*") {
        let ids = bytes().encode(&t, false).unwrap();
        let want: Vec<u32> = t.bytes().map(u32::from).collect();
        prop_assert_eq!(ids, want);
    }
}

#[test]
fn an_emoji_split_over_four_byte_tokens_comes_out_once_whole() {
    let tok = bytes();
    let mut s = tok.stream(false);
    let got: Vec<Option<String>> = "深😀".bytes().map(|b| s.push(b as u32).unwrap()).collect();
    assert_eq!(
        got,
        [
            None,
            None,
            Some("深".into()),
            None,
            None,
            None,
            Some("😀".into())
        ]
    );
}

#[test]
fn an_incomplete_character_at_the_end_is_flushed_by_finish() {
    let tok = bytes();
    let mut s = tok.stream(false);
    assert_eq!(s.push(b'a' as u32).unwrap().as_deref(), Some("a"));
    assert_eq!(s.push(0xe6).unwrap(), None);
    assert_eq!(s.finish().unwrap(), "\u{FFFD}");
    // An invalid byte followed by valid text is emitted with that text.
    let mut s = tok.stream(false);
    assert_eq!(s.push(0xff).unwrap(), None);
    assert_eq!(s.push(b'b' as u32).unwrap().as_deref(), Some("\u{FFFD}b"));
}
