//! Tokenization with the model's own `tokenizer.json`, the way the notebook's
//! `tokenizer(texts, truncation=True, max_length=512)` does it: special tokens
//! added, truncation at `max_length` tokens (special tokens included), and no
//! padding of a single text.  Truncation and padding stored in the file are
//! always overridden; one tokenizer seen in the wild pads and truncates to 128.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, ErrorKind, Result};

/// Inputs larger than this many bytes are tokenized on a whitespace-aligned
/// prefix first; see [`Encoder::encode`].
pub const PREFIX_BYTES: usize = 64 * 1024;

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
    max_length: usize,
    pad_id: i64,
    /// Computed once: the chunked policy wraps every window in them.
    specials: crate::chunk::Specials,
}

impl Encoder {
    /// Loads `tokenizer.json` and sets truncation to `max_length`, padding off.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::new(ErrorKind::NotFound, "tokenizer.json not found")
                .detail(format!("No readable file at \"{}\".", path.display()))
                .hint("A model directory holds model.onnx and tokenizer.json."));
        }
        let tok = Tokenizer::from_file(path).map_err(|e| {
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
            max_length,
            pad_id,
            specials,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    /// Tokenizes one text, truncated to `max_length` tokens.
    ///
    /// A text over [`PREFIX_BYTES`] is first tokenized on a prefix that ends
    /// just before a whitespace character, doubling the prefix until it yields
    /// more tokens than fit.  Pre-tokenizers split at whitespace, so the tokens
    /// of such a prefix are a prefix of the whole text's tokens, and the
    /// truncated result is the same; a megabyte note costs no more than a
    /// 64 KiB one.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let mut want = PREFIX_BYTES;
        while want < text.len() {
            let Some(cut) = whitespace_cut(text, want) else {
                break;
            };
            let enc = self.raw_encode(&self.truncating, &text[..cut])?;
            if !enc.get_overflowing().is_empty() {
                return Ok(to_encoded(&enc));
            }
            want = want.saturating_mul(2);
        }
        let enc = self.raw_encode(&self.truncating, text)?;
        Ok(to_encoded(&enc))
    }

    /// Number of tokens the whole text has, special tokens included, before
    /// truncation.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.raw_encode(&self.counting, text)?.get_ids().len())
    }

    /// The whole text's tokens without special tokens, with word indexes and
    /// character offsets, for cutting into windows.
    pub fn tokens(&self, text: &str) -> Result<crate::chunk::Tokens> {
        let enc = self
            .counting
            .encode_char_offsets(text, false)
            .map_err(|_| tokenize_error(text))?;
        Ok(crate::chunk::Tokens {
            ids: enc.get_ids().iter().map(|&i| i64::from(i)).collect(),
            word_ids: enc.get_word_ids().to_vec(),
            offsets: enc.get_offsets().to_vec(),
        })
    }

    /// The special tokens the tokenizer puts around one sequence.
    pub fn specials(&self) -> &crate::chunk::Specials {
        &self.specials
    }

    fn raw_encode(&self, tok: &Tokenizer, text: &str) -> Result<tokenizers::Encoding> {
        tok.encode_fast(text, true)
            .map_err(|_| tokenize_error(text))
    }
}

/// The special tokens `tok` puts around one sequence: those of "a" with
/// special tokens, less those of "a" without.
fn find_specials(tok: &Tokenizer) -> Result<crate::chunk::Specials> {
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
    Ok(crate::chunk::Specials {
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

/// The byte offset of the first whitespace character at or after `at`, if any.
fn whitespace_cut(text: &str, at: usize) -> Option<usize> {
    let mut start = at;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..]
        .char_indices()
        .find(|(_, c)| c.is_whitespace())
        .map(|(i, _)| start + i)
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
            enc.count_tokens("chest pain , no fever , no cough")
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
    fn whitespace_cut_respects_char_boundaries() {
        let t = "ééé éé";
        assert_eq!(whitespace_cut(t, 1), Some(6));
        assert_eq!(whitespace_cut(t, 7), None);
    }
}
