//! The chunked long-text policy: a text's windows (see [`crate::inference::chunk`]),
//! embedded in micro-batches and pooled by a token-weighted mean.

use super::batching::check_text_count;
use super::{BatchLimits, Embedder};
use crate::error::{Error, ErrorKind, Result};
use crate::inference::chunk::{windows, windows_in_sections, ChunkOptions, Window};
use crate::inference::sections::Sectionizer;
use crate::inference::settings::ModelKind;
use crate::inference::tokenize::Encoded;

/// One window of a note: its section's canonical name (None before the
/// first header, or without sections), the window, and its vector.
#[derive(Debug, Clone)]
pub struct NoteWindow {
    pub section: Option<String>,
    pub window: Window,
    pub vector: Vec<f32>,
}

impl Embedder {
    /// The windows of `text` (see [`crate::inference::chunk`]) with their vectors, in
    /// text order, run in micro-batches like [`Embedder::embed_batch`].
    pub fn embed_windows(
        &mut self,
        text: &str,
        opts: ChunkOptions,
        limits: &BatchLimits,
        check_interrupts: impl FnMut(),
    ) -> Result<Vec<(Window, Vec<f32>)>> {
        Ok(self
            .embed_note_windows(text, opts, None, false, limits, check_interrupts)?
            .into_iter()
            .map(|w| (w.window, w.vector))
            .collect())
    }

    /// The windows of `text` with their vectors; with `sections`, windows
    /// that never cross a section of the text
    /// ([`crate::inference::chunk::windows_in_sections`]), each with its
    /// section's canonical name, and with `header_context` each window of a
    /// section after its first led by the section's header and a colon.  A
    /// text without tokens is one empty window.
    pub fn embed_note_windows(
        &mut self,
        text: &str,
        opts: ChunkOptions,
        sections: Option<&Sectionizer>,
        header_context: bool,
        limits: &BatchLimits,
        mut check_interrupts: impl FnMut(),
    ) -> Result<Vec<NoteWindow>> {
        self.require(ModelKind::Embedding)?;
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
        let mut cut: Vec<(Option<String>, Window)> = match sections {
            Some(s) => {
                let found = s.sections(text);
                let spans: Vec<(usize, usize)> =
                    found.iter().map(|s| (s.char_start, s.char_end)).collect();
                let mut headers = Vec::new();
                if header_context {
                    for s in &found {
                        headers.push(match &s.header {
                            Some(h) => {
                                self.encoder
                                    .tokens(&format!("{h}:"), &mut check_interrupts)?
                                    .ids
                            }
                            None => Vec::new(),
                        });
                    }
                }
                windows_in_sections(&tokens, specials, opts, &spans, &headers)
                    .into_iter()
                    .map(|(i, w)| (found[i].name.clone(), w))
                    .collect()
            }
            None => Vec::new(),
        };
        if cut.is_empty() {
            cut = windows(&tokens, specials, opts)
                .into_iter()
                .map(|w| (None, w))
                .collect();
        }
        let rows: Vec<&Encoded> = cut.iter().map(|(_, w)| &w.encoded).collect();
        let vectors = self.run_micro_batches(&rows, limits, &mut check_interrupts)?;
        Ok(cut
            .into_iter()
            .zip(vectors)
            .map(|((section, window), vector)| NoteWindow {
                section,
                window,
                vector,
            })
            .collect())
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

    /// One vector for a text by the chunked policy: its windows' vectors
    /// pooled by `opts.pooling` (the token-weighted mean by default),
    /// L2-normalized again if the model normalizes.
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
        Ok(opts.pooling.pool(&vectors, &weights, self.info.normalize))
    }
}
