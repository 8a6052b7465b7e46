//! What a model is for: a cross-encoder scores (query, text) pairs, an
//! embedding model makes vectors, and each refuses the other's work; and
//! how a search query is written for an embedding model that wants a
//! prefix.

use std::borrow::Cow;

use super::batching::{check_text_count, CheckByWork};
use super::{BatchLimits, Embedder};
use crate::error::{Error, ErrorKind, Result};
use crate::inference::settings::ModelKind;
use crate::inference::tokenize::Encoded;

impl Embedder {
    /// What the model computes.
    pub fn kind(&self) -> ModelKind {
        self.info.kind
    }

    /// Refuses work of another kind than the model's.
    pub(crate) fn require(&self, kind: ModelKind) -> Result<()> {
        if self.info.kind == kind {
            return Ok(());
        }
        let name = self
            .info
            .dir
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
        let (message, hint) = match kind {
            ModelKind::Embedding => (
                "a cross-encoder makes scores, not vectors",
                "Rerank with it (embed_rerank, embed_search's rerank =>); embed with an embedding model.",
            ),
            ModelKind::CrossEncoder => (
                "an embedding model makes vectors, not pair scores",
                "Name a cross-encoder (embed_models() lists each model's kind).",
            ),
        };
        Err(Error::new(ErrorKind::InvalidArgument, message)
            .detail(format!(
                "Model \"{name}\" is of kind {}.",
                self.info.kind.as_str()
            ))
            .hint(hint))
    }

    /// A search query as the model wants it embedded: with its
    /// `query_prefix` from `clinembed.json` in front (e5-style models are
    /// trained with `"query: "`), or as it is.
    pub fn query_text<'a>(&self, query: &'a str) -> Cow<'a, str> {
        match &self.info.query_prefix {
            Some(p) if !p.is_empty() => Cow::Owned(format!("{p}{query}")),
            _ => Cow::Borrowed(query),
        }
    }

    /// The cross-encoder's score of `query` with each text, in input order
    /// (`None` for a `None` text): each pair tokenized together and
    /// truncated to the model's maximum length, the pairs sorted by length
    /// and run in micro-batches bounded by `limits` like
    /// [`Embedder::embed_batch`], `check_interrupts` before each.
    pub fn score_pairs(
        &mut self,
        query: &str,
        texts: &[Option<&str>],
        limits: &BatchLimits,
        mut check_interrupts: impl FnMut(),
    ) -> Result<Vec<Option<f32>>> {
        self.require(ModelKind::CrossEncoder)?;
        check_text_count(texts.len(), limits)?;
        let mut encoded: Vec<Option<Encoded>> = Vec::with_capacity(texts.len());
        let mut total = 0usize;
        let mut check = CheckByWork::default();
        for text in texts {
            if check.before(text.map_or(0, str::len) + query.len()) {
                check_interrupts();
            }
            let enc = text
                .map(|t| self.encoder.encode_pair(query, t))
                .transpose()?;
            total += enc.as_ref().map_or(0, Encoded::len);
            if total > limits.max_tokens {
                return Err(
                    Error::new(ErrorKind::LimitExceeded, "too many tokens in one call")
                        .detail(format!(
                            "The pairs have more than {} tokens after truncation.",
                            limits.max_tokens
                        ))
                        .hint(
                            "Rerank fewer texts in one call, or raise clinembed.batch_max_tokens.",
                        ),
                );
            }
            encoded.push(enc);
        }
        let present: Vec<usize> = (0..texts.len()).filter(|&i| encoded[i].is_some()).collect();
        let rows: Vec<&Encoded> = encoded.iter().flatten().collect();
        let scores = self.run_micro_batches(&rows, limits, &mut check_interrupts)?;
        let mut out = vec![None; texts.len()];
        for (i, s) in present.into_iter().zip(scores) {
            out[i] = s.first().copied();
        }
        Ok(out)
    }
}
