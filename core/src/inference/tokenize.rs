//! Tokenization with the model's own `tokenizer.json`, the way the notebook's
//! `tokenizer(texts, truncation=True, max_length=512)` does it: special tokens
//! added, truncation at `max_length` tokens (special tokens included), and no
//! padding of a single text.  Truncation and padding stored in the file are
//! always overridden; one tokenizer seen in the wild pads and truncates to 128.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, ErrorKind, Result};

/// A whole text tokenized without special tokens: ids, type ids, word index
/// and character span per token.
pub struct Tokens {
    pub ids: Vec<i64>,
    pub word_ids: Vec<Option<u32>>,
    pub offsets: Vec<(usize, usize)>,
}

/// The special tokens a model wraps one sequence in.
#[derive(Debug, Clone, Default)]
pub struct Specials {
    pub prefix: Vec<i64>,
    pub suffix: Vec<i64>,
}

/// Inputs larger than this many bytes are tokenized a piece at a time: on a
/// prefix first when truncating ([`Encoder::encode`]), in whitespace-aligned
/// pieces when counting or chunking ([`Encoder::count_tokens`],
/// [`Encoder::tokens`]).  The tokenizer's working memory is a few hundred
/// bytes per input byte, so it is bounded by the piece, not by the text.
pub const PREFIX_BYTES: usize = 64 * 1024;

/// The most bytes of one text that [`Encoder::encode`] tokenizes.  A text
/// whose first mebibyte holds fewer than `max_length` tokens (only possible
/// with words of thousands of characters) is embedded from that mebibyte.
pub const MAX_PREFIX_BYTES: usize = 1024 * 1024;

/// One tokenized text.  The attention mask is all ones over `ids`, so it is
/// not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

pub struct Encoder {
    truncating: Tokenizer,
    counting: Tokenizer,
    pad_id: i64,
    /// Computed once: the chunked policy wraps every window in them.
    specials: Specials,
}

impl Encoder {
    /// Loads `tokenizer.json` and sets truncation to `max_length`, padding off.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        Self::from_file_as(path, path, max_length)
    }

    /// [`from_file`](Self::from_file) of the file at `read` (a path through
    /// a pinned directory), whose errors name `path`.
    pub fn from_file_as(read: &Path, path: &Path, max_length: usize) -> Result<Self> {
        if !read.is_file() {
            return Err(Error::new(ErrorKind::NotFound, "tokenizer.json not found")
                .detail(format!("No readable file at \"{}\".", path.display()))
                .hint("A model directory holds model.onnx and tokenizer.json."));
        }
        let tok = Tokenizer::from_file(read).map_err(|e| {
            Error::new(ErrorKind::InvalidModel, "could not parse tokenizer.json")
                .detail(format!("{}: {e}", path.display()))
                .hint("Export the tokenizer with a recent Hugging Face tokenizers or transformers (save_pretrained writes tokenizer.json).")
        })?;
        Self::new(tok, max_length)
    }

    pub fn new(mut tok: Tokenizer, max_length: usize) -> Result<Self> {
        // Never use rayon threads inside a database backend.
        tokenizers::utils::parallelism::set_parallelism(false);
        let pad_id = tok
            .get_padding()
            .map(|p| p.pad_id as i64)
            .or_else(|| {
                ["[PAD]", "<pad>", "<PAD>"]
                    .iter()
                    .find_map(|t| tok.token_to_id(t))
                    .map(i64::from)
            })
            .unwrap_or(0);
        tok.with_padding(None);
        let mut counting = tok.clone();
        counting.with_truncation(None).map_err(invalid)?;
        tok.with_truncation(Some(TruncationParams {
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(invalid)?;
        let specials = find_specials(&counting)?;
        Ok(Encoder {
            truncating: tok,
            counting,
            pad_id,
            specials,
        })
    }

    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// Tokenizes one text, truncated to `max_length` tokens.
    ///
    /// A text over [`PREFIX_BYTES`] is first tokenized on a prefix that ends
    /// at a word boundary, doubling the prefix until it yields more tokens
    /// than fit.  Pre-tokenizers split at whitespace, so the tokens of such a
    /// prefix are a prefix of the whole text's tokens, and the truncated
    /// result is the same.  A prefix that would split a word (a text without
    /// whitespace) ends where that word starts instead.  No more than
    /// [`MAX_PREFIX_BYTES`] are tokenized, whatever the text's size.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let mut want = PREFIX_BYTES;
        while want < text.len() && want <= MAX_PREFIX_BYTES {
            if let Some(enc) = self.encode_prefix(text, want)? {
                return Ok(enc);
            }
            want = want.saturating_mul(2);
        }
        let end = floor_char_boundary(text, MAX_PREFIX_BYTES);
        let enc = self.raw_encode(&self.truncating, &text[..end])?;
        Ok(to_encoded(&enc))
    }

    /// The truncated tokens of `text` from a word-aligned prefix of at most
    /// `want` bytes, if that prefix has more tokens than fit.
    fn encode_prefix(&self, text: &str, want: usize) -> Result<Option<Encoded>> {
        let (mut cut, at_space) = piece_end(text, 0, want);
        if !at_space {
            // The cut splits a word: end the prefix where that word starts.
            // `encode`, not `encode_fast`: it keeps word ids and byte offsets.
            let enc = self
                .counting
                .encode(&text[..cut], false)
                .map_err(|_| tokenize_error(text))?;
            let last = enc.get_word_ids().iter().flatten().max().copied();
            cut = enc
                .get_word_ids()
                .iter()
                .zip(enc.get_offsets())
                .find(|(w, _)| w.is_some() && **w == last)
                .map_or(0, |(_, &(start, _))| start);
        }
        let enc = self.raw_encode(&self.truncating, &text[..cut])?;
        Ok((!enc.get_overflowing().is_empty()).then(|| to_encoded(&enc)))
    }

    /// Number of tokens the whole text has, special tokens included, before
    /// truncation.  A long text is counted in whitespace-aligned pieces of at
    /// most [`PREFIX_BYTES`], with `check_interrupts` called between pieces; the
    /// count is exact unless a single word is longer than a piece.
    pub fn count_tokens(&self, text: &str, mut check_interrupts: impl FnMut()) -> Result<usize> {
        let mut n = self.specials.prefix.len() + self.specials.suffix.len();
        for (start, end) in pieces(text) {
            check_interrupts();
            n += self
                .counting
                .encode_fast(&text[start..end], false)
                .map_err(|_| tokenize_error(text))?
                .get_ids()
                .len();
        }
        Ok(n)
    }

    /// The whole text's tokens without special tokens, with word indexes and
    /// character offsets, for cutting into windows.  Tokenized in pieces like
    /// [`Encoder::count_tokens`].
    pub fn tokens(&self, text: &str, mut check_interrupts: impl FnMut()) -> Result<Tokens> {
        let mut out = Tokens {
            ids: Vec::new(),
            word_ids: Vec::new(),
            offsets: Vec::new(),
        };
        let (mut chars_before, mut words_before, mut last_end) = (0usize, 0u32, 0usize);
        for (start, end) in pieces(text) {
            check_interrupts();
            chars_before += text[last_end..start].chars().count();
            last_end = start;
            let enc = self
                .counting
                .encode_char_offsets(&text[start..end], false)
                .map_err(|_| tokenize_error(text))?;
            out.ids.extend(enc.get_ids().iter().map(|&i| i64::from(i)));
            out.word_ids.extend(
                enc.get_word_ids()
                    .iter()
                    .map(|w| w.map(|w| w + words_before)),
            );
            out.offsets.extend(
                enc.get_offsets()
                    .iter()
                    .map(|&(a, b)| (a + chars_before, b + chars_before)),
            );
            if let Some(max) = enc.get_word_ids().iter().flatten().max() {
                words_before += max + 1;
            }
        }
        Ok(out)
    }

    /// A query and a text tokenized as one pair (`[CLS] query [SEP] text
    /// [SEP]` for BERT, type ids 0 then 1), truncated together to
    /// `max_length` tokens, the longer of the two first, as a cross-encoder
    /// reads them.  Each is tokenized from at most [`PREFIX_BYTES`] bytes
    /// (a word boundary's worth of them): more never fits in a pair.
    pub fn encode_pair(&self, query: &str, text: &str) -> Result<Encoded> {
        let cut = |s: &str| {
            if s.len() <= PREFIX_BYTES {
                s.len()
            } else {
                piece_end(s, 0, PREFIX_BYTES).0
            }
        };
        let (q, t) = (&query[..cut(query)], &text[..cut(text)]);
        let enc = self
            .truncating
            .encode_fast((q, t), true)
            .map_err(|_| tokenize_error(text))?;
        Ok(to_encoded(&enc))
    }

    /// The special tokens the tokenizer puts around one sequence.
    pub fn specials(&self) -> &Specials {
        &self.specials
    }

    fn raw_encode(&self, tok: &Tokenizer, text: &str) -> Result<tokenizers::Encoding> {
        tok.encode_fast(text, true)
            .map_err(|_| tokenize_error(text))
    }
}

/// The special tokens `tok` puts around one sequence: those of "a" with
/// special tokens, less those of "a" without.
fn find_specials(tok: &Tokenizer) -> Result<Specials> {
    let encode = |special| {
        tok.encode_fast("a", special)
            .map_err(|_| tokenize_error("a"))
    };
    let (with, without) = (encode(true)?, encode(false)?);
    let (w, c) = (with.get_ids(), without.get_ids());
    let at = (0..=w.len().saturating_sub(c.len()))
        .find(|&i| w[i..].starts_with(c))
        .unwrap_or(0);
    let ids = |s: &[u32]| s.iter().map(|&i| i64::from(i)).collect();
    Ok(Specials {
        prefix: ids(&w[..at]),
        suffix: ids(&w[(at + c.len()).min(w.len())..]),
    })
}

/// The tokenizer's own message may quote the input: keep it out.
fn tokenize_error(text: &str) -> Error {
    Error::new(ErrorKind::InvalidArgument, "could not tokenize text")
        .detail(format!("The text is {} bytes long.", text.len()))
}

fn invalid(e: tokenizers::Error) -> Error {
    Error::new(ErrorKind::InvalidModel, "could not configure the tokenizer").detail(e.to_string())
}

fn to_encoded(enc: &tokenizers::Encoding) -> Encoded {
    Encoded {
        ids: enc.get_ids().iter().map(|&i| i64::from(i)).collect(),
        type_ids: enc.get_type_ids().iter().map(|&i| i64::from(i)).collect(),
    }
}

/// The largest char boundary at or below `at`, or the text's length.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    let mut end = at;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// Where a piece of `text` that starts at `start` ends, taking at most `max`
/// bytes: where the last whitespace run inside it begins, so that no word is
/// split (`true`), or, without one, at a char boundary (`false`).  The whole
/// rest of the text when it fits.
fn piece_end(text: &str, start: usize, max: usize) -> (usize, bool) {
    let limit = start.saturating_add(max);
    if limit >= text.len() {
        return (text.len(), true);
    }
    let end = floor_char_boundary(text, limit);
    let window = &text[start..end];
    let mut run_start = None;
    let mut prev_space = true;
    for (i, c) in window.char_indices() {
        let space = c.is_whitespace();
        if space && !prev_space {
            run_start = Some(start + i);
        }
        prev_space = space;
    }
    match run_start {
        Some(at) => (at, true),
        None if end > start => (end, false),
        // a single character wider than `max`
        None => (
            start + text[start..].chars().next().map_or(0, char::len_utf8),
            false,
        ),
    }
}

/// The `(start, end)` byte ranges of the pieces a long text is tokenized in,
/// each at most [`PREFIX_BYTES`] long, cut where whitespace begins.
fn pieces(text: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        (start < text.len()).then(|| {
            let (end, _) = piece_end(text, start, PREFIX_BYTES);
            let piece = (start, end);
            start = end;
            piece
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny BERT WordPiece tokenizer whose file asks for truncation at 4 and
    /// padding to 8, both of which the encoder must override.
    pub fn tiny_tokenizer() -> Tokenizer {
        let vocab = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "chest", "pain", "patient", "denies", "fever",
            "##s", "cough", ".", ",", "no", "acute", "distress",
        ];
        let vocab_json: Vec<String> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| format!("\"{t}\":{i}"))
            .collect();
        let json = format!(
            r###"{{"version":"1.0",
            "truncation":{{"direction":"Right","max_length":4,"strategy":"LongestFirst","stride":0}},
            "padding":{{"strategy":{{"Fixed":8}},"direction":"Right","pad_to_multiple_of":null,"pad_id":0,"pad_type_id":0,"pad_token":"[PAD]"}},
            "added_tokens":[],
            "normalizer":{{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true}},
            "pre_tokenizer":{{"type":"BertPreTokenizer"}},
            "post_processor":{{"type":"BertProcessing","sep":["[SEP]",3],"cls":["[CLS]",2]}},
            "decoder":null,
            "model":{{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,"vocab":{{{}}}}}}}"###,
            vocab_json.join(",")
        );
        json.parse::<Tokenizer>().expect("tiny tokenizer parses")
    }

    #[test]
    fn adds_special_tokens_and_ignores_file_padding() {
        let enc = Encoder::new(tiny_tokenizer(), 512).unwrap();
        let e = enc.encode("Patient denies fevers").unwrap();
        assert_eq!(e.ids, vec![2, 6, 7, 8, 9, 3]);
        assert_eq!(e.type_ids, vec![0; 6]);
        assert_eq!(enc.pad_id(), 0);
    }

    #[test]
    fn empty_text_is_cls_sep() {
        let enc = Encoder::new(tiny_tokenizer(), 512).unwrap();
        assert_eq!(enc.encode("").unwrap().ids, vec![2, 3]);
        assert_eq!(enc.encode("  \t\n ").unwrap().ids, vec![2, 3]);
    }

    #[test]
    fn truncates_to_max_length_including_specials() {
        let enc = Encoder::new(tiny_tokenizer(), 5).unwrap();
        let e = enc.encode("chest pain , no fever , no cough").unwrap();
        assert_eq!(e.ids, vec![2, 4, 5, 12, 3]);
        assert_eq!(
            enc.count_tokens("chest pain , no fever , no cough", || ())
                .unwrap(),
            10
        );
    }

    #[test]
    fn huge_text_prefix_gives_same_tokens_as_whole() {
        let enc = Encoder::new(tiny_tokenizer(), 16).unwrap();
        let unit = "chest pain , patient denies fevers , no acute distress . ";
        let text = unit.repeat(PREFIX_BYTES * 3 / unit.len());
        assert!(text.len() > PREFIX_BYTES * 2);
        let fast = enc.encode(&text).unwrap();
        let whole = to_encoded(&enc.raw_encode(&enc.truncating, &text).unwrap());
        assert_eq!(fast, whole);
        assert_eq!(fast.len(), 16);
        // A huge text of one unbroken word falls back to the whole text.
        let word = "x".repeat(PREFIX_BYTES * 2);
        assert_eq!(enc.encode(&word).unwrap().ids, vec![2, 1, 3]);
    }

    #[test]
    fn a_huge_text_without_whitespace_is_cut_where_a_word_starts() {
        let enc = Encoder::new(tiny_tokenizer(), 16).unwrap();
        // "chest," repeated: no whitespace, but a word at every comma.
        let text = "chest,".repeat(PREFIX_BYTES * 3 / 6);
        let whole = to_encoded(&enc.raw_encode(&enc.truncating, &text).unwrap());
        assert_eq!(enc.encode(&text).unwrap(), whole);
        assert_eq!(whole.len(), 16);
        // ... from the first prefix, not from the whole text
        let first = enc.encode_prefix(&text, PREFIX_BYTES).unwrap();
        assert_eq!(first, Some(whole));
    }

    #[test]
    fn no_more_than_max_prefix_bytes_are_tokenized() {
        let enc = Encoder::new(tiny_tokenizer(), 16).unwrap();
        // One word of a mebibyte, then words: only the first mebibyte counts.
        let text = format!("{} chest pain", "x".repeat(MAX_PREFIX_BYTES));
        assert_eq!(enc.encode(&text).unwrap().ids, vec![2, 1, 3]);
        let short = format!("{} chest pain", "x".repeat(1000));
        assert_eq!(enc.encode(&short).unwrap().ids, vec![2, 1, 4, 5, 3]);
    }

    #[test]
    fn pieces_give_the_whole_texts_count_and_tokens() {
        let enc = Encoder::new(tiny_tokenizer(), 16).unwrap();
        let unit = "chest  pain ,\tpatient denies fevers\n\n no acute distress . ";
        let text = unit.repeat(PREFIX_BYTES * 3 / unit.len() + 7);
        let whole = enc
            .counting
            .encode_char_offsets(text.as_str(), false)
            .unwrap();
        let mut calls = 0;
        assert_eq!(
            enc.count_tokens(&text, || calls += 1).unwrap(),
            whole.get_ids().len() + 2
        );
        assert!(calls >= 3, "interrupts are checked between pieces");
        let t = enc.tokens(&text, || ()).unwrap();
        let ids: Vec<i64> = whole.get_ids().iter().map(|&i| i64::from(i)).collect();
        assert_eq!(t.ids, ids);
        assert_eq!(t.word_ids, whole.get_word_ids());
        assert_eq!(t.offsets, whole.get_offsets());
        assert_eq!(enc.count_tokens("", || ()).unwrap(), 2);
    }

    #[test]
    fn pieces_end_where_whitespace_begins_and_respect_char_boundaries() {
        let t = "ééé éé  é";
        assert_eq!(piece_end(t, 0, 100), (t.len(), true));
        assert_eq!(piece_end(t, 0, 9), (6, true));
        assert_eq!(piece_end(t, 0, 5), (4, false));
        assert_eq!(piece_end(t, 7, 4), (11, false));
        let ranges: Vec<_> = pieces("ab cd").collect();
        assert_eq!(ranges, vec![(0, 5)]);
    }
}
