//! The chunked long-text policy: a text's windows (see [`crate::inference::chunk`]),
//! embedded in micro-batches and pooled by a token-weighted mean.

use super::batching::check_text_count;
use super::{BatchLimits, Embedder};
use crate::error::{Error, ErrorKind, Result};
use crate::inference::chunk::{ChunkOptions, Window, WindowPooling};
use crate::inference::tokenize::Encoded;

impl Embedder {
    /// The windows of `text` (see [`crate::inference::chunk`]) with their vectors, in
    /// text order, run in micro-batches like [`Embedder::embed_batch`].
    pub fn embed_windows(
        &mut self,
        text: &str,
        opts: ChunkOptions,
        limits: &BatchLimits,
        mut check_interrupts: impl FnMut(),
    ) -> Result<Vec<(Window, Vec<f32>)>> {
        let specials = self.encoder.specials();
        opts.check(specials, self.info.max_length)?;
        let tokens = self.encoder.tokens(text, &mut check_interrupts)?;
        if tokens.ids.len() > limits.max_tokens {
            return Err(
                Error::new(ErrorKind::LimitExceeded, "text too long to chunk")
                    .detail(format!(
                        "The text has {} tokens; the limit is {}.",
                        tokens.ids.len(),
                        limits.max_tokens
                    ))
                    .hint("Raise clinembed.batch_max_tokens, or split the text."),
            );
        }
        let windows = crate::inference::chunk::windows(&tokens, specials, opts);
        let rows: Vec<&Encoded> = windows.iter().map(|w| &w.encoded).collect();
        let vectors = self.run_micro_batches(&rows, limits, &mut check_interrupts)?;
        Ok(windows.into_iter().zip(vectors).collect())
    }

    /// [`Embedder::embed_batch`] under the chunked policy: each text's
    /// windows, pooled by [`Embedder::embed_chunked`].
    pub fn embed_batch_chunked(
        &mut self,
        texts: &[Option<&str>],
        opts: ChunkOptions,
        limits: &BatchLimits,
        mut check_interrupts: impl FnMut(),
    ) -> Result<Vec<Option<Vec<f32>>>> {
        check_text_count(texts.len(), limits)?;
        texts
            .iter()
            .map(|t| {
                t.map(|t| self.embed_chunked(t, opts, limits, &mut check_interrupts))
                    .transpose()
            })
            .collect()
    }

    /// One vector for a text by the chunked policy: the token-weighted mean
    /// of its windows' vectors, L2-normalized again if the model normalizes.
    pub fn embed_chunked(
        &mut self,
        text: &str,
        opts: ChunkOptions,
        limits: &BatchLimits,
        check_interrupts: impl FnMut(),
    ) -> Result<Vec<f32>> {
        let parts = self.embed_windows(text, opts, limits, check_interrupts)?;
        let weights: Vec<usize> = parts.iter().map(|(w, _)| w.tokens.max(1)).collect();
        let vectors: Vec<Vec<f32>> = parts.into_iter().map(|(_, v)| v).collect();
        Ok(WindowPooling::Mean.pool(&vectors, &weights, self.info.normalize))
    }
}
