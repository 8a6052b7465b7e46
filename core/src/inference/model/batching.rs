//! Many texts in one call: their bounds, and the one micro-batch loop that
//! every batched path runs.

use super::Embedder;
use crate::error::{Error, ErrorKind, Result};
use crate::inference::tokenize::Encoded;

/// Bounds for one batched call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Padded tokens (rows × longest row) per micro-batch.
    pub micro_batch_tokens: usize,
    /// Texts per call.
    pub max_texts: usize,
    /// Tokens per call, after truncation.
    pub max_tokens: usize,
}

/// Padded tokens per micro-batch unless configured otherwise: on BERT-base
/// as fast as any budget from 512 to 8192, with less memory than larger ones,
/// and short enough for a cancel to land within about a second.
pub const DEFAULT_MICRO_BATCH_TOKENS: usize = 2048;
/// Texts per call at most, by default: over it a call fails with a hint
/// instead of exhausting memory.
pub const DEFAULT_MAX_TEXTS: usize = 100_000;
/// Tokens per call after truncation at most, by default (about 64 MB of
/// token ids).
pub const DEFAULT_MAX_TOKENS: usize = 4_000_000;

/// The padded tokens per micro-batch for a session that asks for `requested`
/// under a server's ceiling `ceiling`: the smaller, and at least one.
pub fn micro_batch_budget(requested: i32, ceiling: i32) -> usize {
    requested.min(ceiling).max(1) as usize
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            micro_batch_tokens: DEFAULT_MICRO_BATCH_TOKENS,
            max_texts: DEFAULT_MAX_TEXTS,
            max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

/// How often, in texts, tokenizing a large call stops to run the caller's
/// check (for interrupts), at most.
const TOKENIZE_CHECK_EVERY: usize = 256;
/// How much text, in bytes, tokenizing runs between two of the caller's
/// checks, at most (before the text that passes it): tokenizing takes about
/// 0.45 s per MiB here, so a cancel lands within a few tens of milliseconds
/// after texts of ordinary length, and right after the text being tokenized
/// when each text is larger than this.  Counting texts alone let a call of
/// 100 texts of 1 MiB run 44 s past a statement_timeout of 2 s.
pub const TOKENIZE_CHECK_BYTES: usize = 64 * 1024;

/// When tokenizing stops to run the caller's check: before the first text,
/// then whenever [`TOKENIZE_CHECK_EVERY`] texts or [`TOKENIZE_CHECK_BYTES`]
/// bytes have been tokenized since the last check.
#[derive(Debug, Default)]
pub struct CheckByWork {
    texts: usize,
    bytes: usize,
    started: bool,
}

impl CheckByWork {
    /// Whether to check before tokenizing a text of `len` bytes.
    pub fn before(&mut self, len: usize) -> bool {
        let due = !self.started
            || self.texts >= TOKENIZE_CHECK_EVERY
            || self.bytes >= TOKENIZE_CHECK_BYTES;
        if due {
            self.started = true;
            self.texts = 0;
            self.bytes = 0;
        }
        self.texts += 1;
        self.bytes += len;
        due
    }
}

impl Embedder {
    /// Embeds many texts: tokenizes them, sorts them by token count, runs
    /// micro-batches bounded by `limits.micro_batch_tokens` padded tokens, and
    /// returns the vectors in input order, `None` for `None` inputs.
    /// `check_interrupts` runs before each micro-batch and periodically while
    /// tokenizing; the extension checks for query cancel there.
    pub fn embed_batch(
        &mut self,
        texts: &[Option<&str>],
        limits: &BatchLimits,
        mut check_interrupts: impl FnMut(),
    ) -> Result<Vec<Option<Vec<f32>>>> {
        self.require(crate::inference::settings::ModelKind::Embedding)?;
        check_text_count(texts.len(), limits)?;
        let mut encoded: Vec<Option<Encoded>> = Vec::with_capacity(texts.len());
        let mut total = 0usize;
        let mut check = CheckByWork::default();
        for (i, text) in texts.iter().enumerate() {
            if check.before(text.map_or(0, str::len)) {
                check_interrupts();
            }
            let enc = text.map(|t| self.encode(t)).transpose()?;
            total += enc.as_ref().map_or(0, Encoded::len);
            if total > limits.max_tokens {
                return Err(Error::new(ErrorKind::LimitExceeded, "too many tokens in one call")
                    .detail(format!(
                        "The first {} of {} texts already have {total} tokens after truncation; the limit is {}.",
                        i + 1,
                        texts.len(),
                        limits.max_tokens
                    ))
                    .hint("Embed the texts in several calls, or raise clinembed.batch_max_tokens."));
            }
            encoded.push(enc);
        }
        let present: Vec<usize> = (0..texts.len()).filter(|&i| encoded[i].is_some()).collect();
        let rows: Vec<&Encoded> = encoded.iter().flatten().collect();
        let vectors = self.run_micro_batches(&rows, limits, &mut check_interrupts)?;
        let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        for (i, v) in present.into_iter().zip(vectors) {
            out[i] = Some(v);
        }
        Ok(out)
    }

    /// Runs `rows` in micro-batches of at most `limits.micro_batch_tokens`
    /// padded tokens, grouped by length (see [`crate::inference::plan`]), one row at a
    /// time for a model that is not batch-invariant, with `check_interrupts` before
    /// each; returns their vectors in the order of `rows`.
    pub(super) fn run_micro_batches(
        &mut self,
        rows: &[&Encoded],
        limits: &BatchLimits,
        check_interrupts: &mut impl FnMut(),
    ) -> Result<Vec<Vec<f32>>> {
        let lengths: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let max_rows = if self.info.batch_invariant {
            usize::MAX
        } else {
            1
        };
        let mut out = vec![Vec::new(); rows.len()];
        let batches =
            crate::inference::plan::micro_batches(&lengths, limits.micro_batch_tokens, max_rows);
        let padded =
            |b: &Vec<usize>| crate::inference::plan::padded_tokens(b.iter().map(|&i| lengths[i]));
        let shrink = super::onnx::shrink_after(batches.iter().map(padded).max().unwrap_or(0));
        let last = batches.len().saturating_sub(1);
        for (n, batch) in batches.iter().enumerate() {
            check_interrupts();
            let picked: Vec<&Encoded> = batch.iter().map(|&i| rows[i]).collect();
            let pooled = self.run_encoded(&picked, shrink && n == last)?;
            for (r, &i) in batch.iter().enumerate() {
                out[i] = pooled.row(r).to_vec();
            }
        }
        Ok(out)
    }
}

pub(super) fn check_text_count(n: usize, limits: &BatchLimits) -> Result<()> {
    if n <= limits.max_texts {
        return Ok(());
    }
    Err(
        Error::new(ErrorKind::LimitExceeded, "too many texts in one call")
            .detail(format!(
                "The call has {n} texts; the limit is {}.",
                limits.max_texts
            ))
            .hint("Embed the texts in several calls, or raise clinembed.batch_max_texts."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizing_checks_by_bytes_as_well_as_by_texts() {
        // short texts: the first, then every 256th
        let mut c = CheckByWork::default();
        let due: Vec<usize> = (0..600).filter(|_| c.before(100)).collect();
        assert_eq!(due, vec![0, 256, 512]);
        // texts of 1 MiB: before every one of them
        let mut c = CheckByWork::default();
        assert!((0..100).all(|_| c.before(1 << 20)));
        // 64 KiB passed after 16 texts of 4 KiB: the 17th is checked first
        let mut c = CheckByWork::default();
        let due: Vec<usize> = (0..40).filter(|_| c.before(4096)).collect();
        assert_eq!(due, vec![0, 16, 32]);
        // empty (NULL) texts still count as texts
        let mut c = CheckByWork::default();
        assert_eq!((0..300).filter(|_| c.before(0)).count(), 2);
    }

    #[test]
    fn micro_batch_budget_never_passes_the_ceiling() {
        assert_eq!(micro_batch_budget(1 << 20, 2048), 2048);
        assert_eq!(micro_batch_budget(512, 2048), 512);
        assert_eq!(micro_batch_budget(8192, 8192), 8192);
        assert_eq!(micro_batch_budget(0, 2048), 1);
        assert_eq!(
            BatchLimits::default().micro_batch_tokens,
            DEFAULT_MICRO_BATCH_TOKENS
        );
    }
}
