//! Reranking: a cross-encoder's score of a query with each of many texts.

use pgrx::prelude::*;

use crate::errors::report;
use crate::{backend, gucs};
use clinembed_core::{Error, ErrorKind};

/// The cross-encoder `model` names, or `clinembed.rerank_model`; raises
/// when neither names one.
pub(crate) fn reranker(model: Option<&str>) -> String {
    model
        .map(str::to_string)
        .or_else(gucs::rerank_model)
        .unwrap_or_else(|| {
            report(
                Error::new(ErrorKind::InvalidArgument, "no reranking model")
                    .detail("The call names none and clinembed.rerank_model is empty.")
                    .hint("Install a cross-encoder (scripts/export-model.sh --cross-encoder) and SET clinembed.rerank_model, or pass model => 'name'."),
            )
        })
}

/// The scores of `query` with each text by the cross-encoder `model`, in
/// input order, NULL for a NULL text.
pub(crate) fn scores(model: &str, query: &str, texts: &[Option<&str>]) -> Vec<Option<f32>> {
    let limits = gucs::batch_limits();
    backend::using_model(Some(model), |e| {
        e.score_pairs(query, texts, &limits, backend::check_interrupts)
    })
}

/// The score a cross-encoder gives `query` with each of `texts`, in input
/// order (higher: more relevant; a NULL text gives NULL), with
/// `clinembed.rerank_model`.  Each pair is tokenized together and
/// truncated to the model's maximum length; pairs run in micro-batches
/// bounded like `embed_texts`, with a cancel landing between them.
#[pg_extern(stable, parallel_safe, strict, cost = 10000)]
fn embed_rerank(query: &str, texts: Array<'_, &str>) -> Vec<Option<f32>> {
    let items: Vec<Option<&str>> = texts.iter().collect();
    scores(&reranker(None), query, &items)
}

/// `embed_rerank` with an installed cross-encoder named for this call.
#[pg_extern(stable, parallel_safe, strict, cost = 10000, name = "embed_rerank")]
fn embed_rerank_model(query: &str, texts: Array<'_, &str>, model: &str) -> Vec<Option<f32>> {
    let items: Vec<Option<&str>> = texts.iter().collect();
    scores(model, query, &items)
}
