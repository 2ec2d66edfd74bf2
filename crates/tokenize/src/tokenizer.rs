//! [`Tokenizer`]: a `tokenizers` tokenizer plus its `tokenizer_config.json`.

use std::path::Path;

use crate::chat::{DEEPSEEK_BOS, DEEPSEEK_EOS, Message, deepseek_v2_chat};
use crate::error::excerpt;
use crate::template::{ChatTemplate, messages_json};
use crate::{Error, Result, StreamDecoder, TokenizerConfig};

/// The file name of a tokenizer inside a model folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The file name of a tokenizer's configuration inside a model folder.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// The chat template transformers 5 saves beside them (it wins over the config's).
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";

/// A Hugging Face tokenizer (`tokenizer.json`, through the `tokenizers` crate) and its
/// configuration (`tokenizer_config.json`: bos/eos, chat template).
///
/// ```
/// use deepblocks_tokenize::Tokenizer;
/// let tok = Tokenizer::byte_level(&["<bos>", "<eos>"])?;
/// let ids = tok.encode("hé", false)?;
/// assert_eq!(ids, [104, 0xc3, 0xa9]); // one id per UTF-8 byte
/// assert_eq!(tok.decode(&ids, false)?, "hé");
/// assert_eq!(tok.special_token_id("<eos>")?, 257);
/// # Ok::<(), deepblocks_tokenize::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    config: TokenizerConfig,
}

impl Tokenizer {
    /// Loads a `tokenizer.json`, and the `tokenizer_config.json` beside it when there is one.
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be read, [`Error::Malformed`] when the tokenizer is not
    /// valid, [`Error::Config`] when the config is not.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let inner = parse(&bytes, &path.display().to_string())?;
        let config_path = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(TOKENIZER_CONFIG_FILE);
        let mut config = if config_path.is_file() {
            TokenizerConfig::from_file(config_path)?
        } else {
            TokenizerConfig::default()
        };
        // transformers 5 saves the template in its own file, which wins over the config's.
        let jinja = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(CHAT_TEMPLATE_FILE);
        if jinja.is_file() {
            config.chat_template =
                Some(std::fs::read_to_string(&jinja).map_err(|source| Error::Io {
                    path: jinja.clone(),
                    source,
                })?);
        }
        Ok(Tokenizer { inner, config })
    }

    /// Loads `tokenizer.json` (and `tokenizer_config.json` when present) from a model folder.
    ///
    /// # Errors
    /// As [`Self::from_file`].
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(dir.as_ref().join(TOKENIZER_FILE))
    }

    /// Parses the bytes of a `tokenizer.json` (no config).
    ///
    /// # Errors
    /// [`Error::Malformed`] when they are not a valid tokenizer.
    pub fn from_json_bytes(json: &[u8]) -> Result<Self> {
        Ok(Tokenizer {
            inner: parse(json, "tokenizer JSON")?,
            config: TokenizerConfig::default(),
        })
    }

    /// The same tokenizer with `config` instead of its current configuration.
    pub fn with_config(mut self, config: TokenizerConfig) -> Self {
        self.config = config;
        self
    }

    /// The configuration (from `tokenizer_config.json`, or default).
    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// The wrapped `tokenizers` tokenizer, for anything this crate does not cover.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// The tokenizer as `tokenizer.json` text (e.g. to save a [`Self::byte_level`] tokenizer
    /// beside a toy model).
    ///
    /// # Errors
    /// [`Error::Malformed`] if `tokenizers` cannot serialise it.
    pub fn to_json(&self, pretty: bool) -> Result<String> {
        self.inner
            .to_string(pretty)
            .map_err(|source| Error::Malformed {
                what: "tokenizer".into(),
                source,
            })
    }

    /// The vocabulary size, added tokens included (ids run below it, possibly with gaps).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The ids of `text`. With `add_special_tokens`, the tokenizer's post-processor adds its
    /// special tokens (DeepSeek's adds bos), and then, as transformers does, bos/eos are added
    /// if `tokenizer_config.json` asks for them (`add_bos_token`, `add_eos_token`) and they are
    /// not already there. Special tokens written in the text are recognised either way.
    ///
    /// # Errors
    /// [`Error::Encode`] if `tokenizers` fails on the text; [`Error::UnknownSpecialToken`] if
    /// the config asks for a bos/eos the vocabulary lacks.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|source| Error::Encode {
                text: excerpt(text),
                source,
            })?;
        let mut ids = encoding.get_ids().to_vec();
        if add_special_tokens {
            if self.config.add_bos_token == Some(true) {
                let bos = self.special_token_id("bos")?;
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
            if self.config.add_eos_token == Some(true) {
                let eos = self.special_token_id("eos")?;
                if ids.last() != Some(&eos) {
                    ids.push(eos);
                }
            }
        }
        Ok(ids)
    }

    /// The ids of `text` as [`Tokenizer::encode`]`(text, false)` gives them, computed a piece of
    /// about `piece_bytes` at a time so that memory stays bounded for long texts (`tokenizers`
    /// holds some 100 bytes per token while it encodes; here only one piece's worth, plus the 4
    /// bytes per id of the result). Each piece ends at a line break followed by a non-space
    /// character, and only where encoding the lines on either side together gives the same ids
    /// as encoding them apart: a boundary this tokenizer's pre-tokenizer also splits at (as
    /// byte-level BPE does), so the ids do not depend on the pieces. Text without such a
    /// boundary is encoded in one piece.
    ///
    /// ```
    /// # let tokenizer = deepblocks_tokenize::Tokenizer::byte_level(&[])?;
    /// let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n".repeat(50);
    /// assert_eq!(tokenizer.encode_in_pieces(&text, 256)?, tokenizer.encode(&text, false)?);
    /// # Ok::<(), deepblocks_tokenize::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Tokenizer::encode`].
    pub fn encode_in_pieces(&self, text: &str, piece_bytes: usize) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let end = self.piece_end(text, start, piece_bytes.max(1))?;
            ids.extend(self.encode(&text[start..end], false)?);
            start = end;
        }
        Ok(ids)
    }

    /// The byte offsets where [`Tokenizer::encode_in_pieces`] ends its pieces (the last is
    /// `text.len()`; none for an empty text).
    ///
    /// # Errors
    /// As [`Tokenizer::encode`].
    pub fn piece_ends(&self, text: &str, piece_bytes: usize) -> Result<Vec<usize>> {
        let mut ends = Vec::new();
        let mut start = 0;
        while start < text.len() {
            start = self.piece_end(text, start, piece_bytes.max(1))?;
            ends.push(start);
        }
        Ok(ends)
    }

    /// Where the piece starting at `start` ends: the first verified boundary at least
    /// `piece_bytes` in, or the end of the text.
    fn piece_end(&self, text: &str, start: usize, piece_bytes: usize) -> Result<usize> {
        /// Bytes of context on each side of a boundary when checking it.
        const WINDOW: usize = 256;
        let mut from = start + piece_bytes;
        loop {
            if from >= text.len() {
                return Ok(text.len());
            }
            // The next line break at or after `from` that a non-space character follows.
            let Some(b) = text.as_bytes()[from..]
                .windows(2)
                .position(|w| w[0] == b'\n' && !w[1].is_ascii_whitespace())
                .map(|i| from + i + 1)
            else {
                return Ok(text.len());
            };
            let lo = floor_char_boundary(text, b.saturating_sub(WINDOW).max(start));
            let hi = floor_char_boundary(text, (b + WINDOW).min(text.len()));
            let (left, right) = (&text[lo..b], &text[b..hi]);
            let mut apart = self.encode(left, false)?;
            apart.extend(self.encode(right, false)?);
            if apart == self.encode(&text[lo..hi], false)? {
                return Ok(b);
            }
            from = b;
        }
    }

    /// Checks that every id is in the vocabulary.
    ///
    /// # Errors
    /// [`Error::IdOutOfVocab`] naming the first id that is not.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| self.inner.id_to_token(id).is_none()) {
            Some(&id) => Err(Error::IdOutOfVocab {
                id,
                vocab: self.vocab_size(),
            }),
            None => Ok(()),
        }
    }

    /// The text of `ids`, leaving out special tokens when `skip_special_tokens`. Bytes that do
    /// not form valid UTF-8 come out as U+FFFD, as in `tokenizers`.
    ///
    /// # Errors
    /// [`Error::IdOutOfVocab`] for an id the vocabulary lacks (`tokenizers` would silently skip
    /// it), [`Error::Decode`] if `tokenizers` fails.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.check_ids(ids)?;
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|source| Error::Decode { source })
    }

    /// The token string of `id` (in the model's alphabet, e.g. `Ġthe` for byte-level BPE).
    ///
    /// # Errors
    /// [`Error::IdOutOfVocab`].
    pub fn id_to_token(&self, id: u32) -> Result<String> {
        self.inner.id_to_token(id).ok_or(Error::IdOutOfVocab {
            id,
            vocab: self.vocab_size(),
        })
    }

    /// The id of a token string, special or not, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Every special token with its id, by id.
    pub fn special_tokens(&self) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (t.content, id))
            .collect();
        v.sort_by_key(|&(_, id)| id);
        v
    }

    /// The token string of a special token named by its role — `bos`, `eos`, `pad`, `unk`, from
    /// the config — or by itself (`<｜end▁of▁sentence｜>`).
    ///
    /// # Errors
    /// [`Error::UnknownSpecialToken`] when the config does not name that role or the tokenizer
    /// has no such special token.
    pub fn special_token(&self, name: &str) -> Result<String> {
        let unknown = || Error::UnknownSpecialToken {
            name: name.to_string(),
        };
        let by_role = match name {
            "bos" => Some(&self.config.bos_token),
            "eos" => Some(&self.config.eos_token),
            "pad" => Some(&self.config.pad_token),
            "unk" => Some(&self.config.unk_token),
            _ => None,
        };
        let token = match by_role {
            Some(t) => t.clone().ok_or_else(unknown)?,
            None => name.to_string(),
        };
        let is_special = self
            .inner
            .get_added_tokens_decoder()
            .values()
            .any(|t| t.content == token);
        if is_special || (by_role.is_some() && self.token_to_id(&token).is_some()) {
            Ok(token)
        } else {
            Err(unknown())
        }
    }

    /// The id of a special token, named as in [`Self::special_token`].
    ///
    /// # Errors
    /// As [`Self::special_token`].
    pub fn special_token_id(&self, name: &str) -> Result<u32> {
        let token = self.special_token(name)?;
        self.token_to_id(&token).ok_or(Error::UnknownSpecialToken {
            name: name.to_string(),
        })
    }

    /// The bos id, if the config names a bos the vocabulary has.
    pub fn bos_id(&self) -> Option<u32> {
        self.special_token_id("bos").ok()
    }

    /// The eos id, if the config names an eos the vocabulary has (generation stops on it).
    pub fn eos_id(&self) -> Option<u32> {
        self.special_token_id("eos").ok()
    }

    /// The folder's chat template, verbatim: `chat_template.jinja` when there is one, else
    /// `tokenizer_config.json`'s `chat_template` (a string, or the `default` of a list of named
    /// templates).
    pub fn chat_template(&self) -> Option<&str> {
        self.config.chat_template.as_deref()
    }

    /// Renders `messages` (a JSON list of `{"role", "content", ...}` objects, as transformers
    /// takes them) with the folder's chat template and its bos and eos tokens, as
    /// transformers' `apply_chat_template(tokenize=False)` does (see [`ChatTemplate`]).
    ///
    /// # Errors
    /// [`Error::NoChatTemplate`] without a template; as [`ChatTemplate::new`] and
    /// [`ChatTemplate::render`].
    pub fn render_chat(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let source = self.chat_template().ok_or(Error::NoChatTemplate)?;
        let token = |t: &Option<String>| t.clone().unwrap_or_default();
        ChatTemplate::new(source)?.render(
            messages,
            &token(&self.config.bos_token),
            &token(&self.config.eos_token),
            add_generation_prompt,
        )
    }

    /// The bos and eos strings for chat prompts: the config's, else DeepSeek-V2's when the
    /// vocabulary has them.
    fn chat_bos_eos(&self) -> Result<(String, String)> {
        let pick = |role: &str, deepseek: &str| {
            self.special_token(role).or_else(|e| {
                if self.token_to_id(deepseek).is_some() {
                    Ok(deepseek.to_string())
                } else {
                    Err(e)
                }
            })
        };
        Ok((pick("bos", DEEPSEEK_BOS)?, pick("eos", DEEPSEEK_EOS)?))
    }

    /// The prompt text of a conversation: the folder's chat template when it has one
    /// ([`Self::render_chat`]), else DeepSeek-V2-Chat's format ([`deepseek_v2_chat`], the
    /// fallback for a folder without a template) with this tokenizer's bos and eos.
    ///
    /// # Errors
    /// As [`Self::render_chat`]; without a template, [`Error::UnknownSpecialToken`] naming
    /// `bos` or `eos` when neither the config nor the vocabulary provides it.
    pub fn chat_prompt(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        if self.chat_template().is_some() {
            return self.render_chat(&messages_json(messages), add_generation_prompt);
        }
        let (bos, eos) = self.chat_bos_eos()?;
        Ok(deepseek_v2_chat(
            messages,
            &bos,
            &eos,
            add_generation_prompt,
        ))
    }

    /// The ids of [`Self::chat_prompt`], encoded without adding special tokens (the prompt
    /// already holds its bos), as transformers' `apply_chat_template(tokenize=True)` does.
    ///
    /// # Errors
    /// As [`Self::chat_prompt`] and [`Self::encode`].
    pub fn encode_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        self.encode(&self.chat_prompt(messages, add_generation_prompt)?, false)
    }

    /// A streaming decoder over this tokenizer (see [`StreamDecoder`]).
    pub fn stream(&self, skip_special_tokens: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, skip_special_tokens)
    }
}

fn parse(bytes: &[u8], what: &str) -> Result<tokenizers::Tokenizer> {
    tokenizers::Tokenizer::from_bytes(bytes).map_err(|source| Error::Malformed {
        what: what.to_string(),
        source,
    })
}

/// The largest char boundary of `text` at or below `i`.
fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}
