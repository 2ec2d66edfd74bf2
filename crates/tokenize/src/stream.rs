//! [`StreamDecoder`]: decode ids one at a time, emitting only complete text.

use crate::{Result, Tokenizer};

/// Decodes ids one at a time and hands back text only once it is complete: a character split
/// across byte-level tokens (a CJK character is 3 UTF-8 bytes, an emoji 4) is held until its last
/// byte arrives, so no broken character is ever emitted.
///
/// The concatenation of everything [`Self::push`] returns followed by [`Self::finish`] equals
/// [`Tokenizer::decode`] of all the ids at once.
///
/// How: the decoder keeps a window of ids; each push decodes the window and compares it with the
/// decode of the window's already-emitted part. New text is emitted when it does not end in
/// U+FFFD (the replacement character of an incomplete UTF-8 sequence); the window then slides, keeping
/// the previous piece as context so that decoders that look at neighbouring tokens stay
/// consistent. Text that never completes (invalid bytes) is emitted, as U+FFFD, by the next
/// piece that does, or by `finish`.
///
/// ```
/// use deepblocks_tokenize::Tokenizer;
/// let tok = Tokenizer::byte_level(&[])?;
/// let mut s = tok.stream(false);
/// let mut out = Vec::new();
/// for &b in "a😀".as_bytes() {
///     out.push(s.push(b as u32)?);
/// }
/// // 'a' at once; the emoji's four bytes only when the last one arrives.
/// assert_eq!(out, [Some("a".to_string()), None, None, None, Some("😀".to_string())]);
/// assert_eq!(s.finish()?, "");
/// # Ok::<(), deepblocks_tokenize::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    skip_special_tokens: bool,
    /// The window: ids from the context start on.
    ids: Vec<u32>,
    /// `ids[..read]` is decoded and emitted (`ids[..context]` is context only).
    read: usize,
    /// The decode of `ids[..read]`.
    read_text: String,
}

impl<'t> StreamDecoder<'t> {
    /// A decoder over `tokenizer`, leaving special tokens out of the text if
    /// `skip_special_tokens`.
    pub fn new(tokenizer: &'t Tokenizer, skip_special_tokens: bool) -> Self {
        StreamDecoder {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            read: 0,
            read_text: String::new(),
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, self.skip_special_tokens)
    }

    /// Feeds one id; returns the new complete text, if any.
    ///
    /// # Errors
    /// [`crate::Error::IdOutOfVocab`] for an id the vocabulary lacks (the decoder's state is then
    /// unchanged), [`crate::Error::Decode`] if `tokenizers` fails.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.tokenizer.check_ids(&[id])?;
        self.ids.push(id);
        let text = self.decode(&self.ids)?;
        if text.len() <= self.read_text.len()
            || text.ends_with('\u{FFFD}')
            || !text.starts_with(&self.read_text)
        {
            // Nothing new, an incomplete character at the end, or a decoder whose earlier text
            // changed with the new id: wait (finish() flushes whatever is left).
            return Ok(None);
        }
        let new = text[self.read_text.len()..].to_string();
        // Slide the window: the piece just emitted becomes the context of the next one.
        self.ids.drain(..self.read);
        self.read = self.ids.len();
        self.read_text = self.decode(&self.ids)?;
        Ok(Some(new))
    }

    /// Ends the stream: the text not emitted yet (an incomplete character at the very end comes
    /// out as U+FFFD, as [`Tokenizer::decode`] gives it).
    ///
    /// # Errors
    /// [`crate::Error::Decode`] if `tokenizers` fails.
    pub fn finish(self) -> Result<String> {
        let text = self.decode(&self.ids)?;
        Ok(match text.strip_prefix(self.read_text.as_str()) {
            Some(rest) => rest.to_string(),
            None => text,
        })
    }
}
