//! The byte-level tokenizer: 256 ids, one per byte, plus special tokens.

use serde_json::{Map, Value, json};

use crate::{Error, Result, Tokenizer};

/// GPT-2's byte-to-character map, which `tokenizers`' ByteLevel steps use: the printable bytes
/// `!`..`~`, `¡`..`¬`, `®`..`ÿ` stand for themselves, the other 68 map to U+0100 onwards in order.
pub fn byte_to_char() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 0u32;
    for (b, slot) in map.iter_mut().enumerate() {
        let b = b as u32;
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            b
        } else {
            next += 1;
            0x100 + next - 1
        };
        *slot = char::from_u32(c).expect("U+0021..U+0143 are characters");
    }
    map
}

impl Tokenizer {
    /// A byte-level tokenizer for toy models and tests: id `b` is byte `b` (0..256), and the
    /// special tokens follow as ids `256, 257, ...` in the order given. Encoding writes every
    /// UTF-8 byte of the text as its id (special tokens written in the text are recognised);
    /// decoding turns the bytes back into text, U+FFFD for invalid UTF-8.
    ///
    /// It is a real `tokenizers` tokenizer (a BPE without merges over GPT-2's byte alphabet, with
    /// ByteLevel pre-tokenizer and decoder), so [`Self::to_json`] writes a `tokenizer.json` that
    /// can ship beside a toy model.
    ///
    /// ```
    /// use deepblocks_tokenize::Tokenizer;
    /// let tok = Tokenizer::byte_level(&["<s>", "</s>"])?;
    /// assert_eq!(tok.vocab_size(), 258);
    /// assert_eq!(tok.encode("<s>A", false)?, [256, 65]);
    /// assert_eq!(tok.decode(&[0xe4, 0xbd, 0xa0, 257], false)?, "你</s>");
    /// # Ok::<(), deepblocks_tokenize::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::BadSpecialToken`] for an empty or repeated special token.
    pub fn byte_level(specials: &[&str]) -> Result<Self> {
        for (i, s) in specials.iter().enumerate() {
            if s.is_empty() {
                return Err(Error::BadSpecialToken {
                    token: s.to_string(),
                    reason: "empty",
                });
            }
            if specials[..i].contains(s) {
                return Err(Error::BadSpecialToken {
                    token: s.to_string(),
                    reason: "given twice",
                });
            }
        }
        let mut vocab = Map::new();
        for (b, c) in byte_to_char().iter().enumerate() {
            vocab.insert(c.to_string(), json!(b));
        }
        let added: Vec<Value> = specials
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "id": 256 + i, "content": s, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true
                })
            })
            .collect();
        let byte_level = json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
            "use_regex": false
        });
        let json = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": byte_level,
            "post_processor": null,
            "decoder": byte_level,
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": []
            }
        });
        Tokenizer::from_json_bytes(json.to_string().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_map_is_a_bijection_onto_gpt2s_alphabet() {
        let map = byte_to_char();
        let mut seen = std::collections::HashSet::new();
        for c in map {
            assert!(seen.insert(c));
        }
        assert_eq!(map[b'A' as usize], 'A');
        assert_eq!(map[b' ' as usize], 'Ġ'); // U+0120, GPT-2's space
        assert_eq!(map[b'\n' as usize], 'Ċ');
        assert_eq!(map[0], '\u{100}');
        assert_eq!(map[0xad], '\u{143}');
    }

    #[test]
    fn every_byte_round_trips() {
        let tok = Tokenizer::byte_level(&["<bos>"]).unwrap();
        assert_eq!(tok.vocab_size(), 257);
        let text = "\0\t\n\r ~\u{7f}é中😀";
        let ids = tok.encode(text, false).unwrap();
        let want: Vec<u32> = text.bytes().map(u32::from).collect();
        assert_eq!(ids, want);
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        for b in 0..256u32 {
            assert_eq!(
                tok.id_to_token(b).unwrap(),
                byte_to_char()[b as usize].to_string()
            );
        }
    }

    #[test]
    fn bad_special_tokens_are_errors_naming_them() {
        let err = Tokenizer::byte_level(&["<a>", ""]).unwrap_err();
        assert!(
            matches!(err, Error::BadSpecialToken { ref token, reason: "empty" } if token.is_empty())
        );
        let err = Tokenizer::byte_level(&["<a>", "<b>", "<a>"]).unwrap_err();
        assert!(
            matches!(err, Error::BadSpecialToken { ref token, .. } if token == "<a>"),
            "{err}"
        );
    }
}
