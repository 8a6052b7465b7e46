//! clinembed: transformer embeddings for clinical notes, inside PostgreSQL.
//!
//! This crate is the thin pgrx layer: argument handling, settings, errors.
//! Everything that computes lives in `clinembed-core` (the `core/` crate).

use pgrx::prelude::*;

mod backend;
mod columns;
mod errors;
mod gucs;
mod paths;

use errors::OrReport;

::pgrx::pg_module_magic!(name, version);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Only settings here: the model loads lazily in each backend, never in the
    // postmaster, whose forked children would inherit ONNX Runtime threads.
    gucs::init();
}

/// The embedding of one text: tokenized with the model's tokenizer, truncated
/// to the model's maximum length, run through the model, and pooled
/// (attention-mask mean by default).  STABLE: the result depends on the
/// configured model, not only on the argument.
#[pg_extern(stable, parallel_safe, strict)]
fn embed_text(text: &str) -> Vec<f32> {
    backend::with_embedder(|e| e.embed(text)).or_report()
}

/// Embeddings of many texts in one call, as `(ord, embedding)` rows where
/// `ord` is the 1-based position in `texts`; a NULL element gives a NULL
/// embedding.  Texts are sorted by token count and run in micro-batches of at
/// most `clinembed.batch_tokens` padded tokens, each padded only to its own
/// longest text; the query can be cancelled between micro-batches.
#[pg_extern(stable, parallel_safe, strict)]
fn embed_texts(
    texts: Array<'_, &str>,
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    let items: Vec<Option<&str>> = texts.iter().collect();
    let limits = gucs::batch_limits();
    let vectors = backend::with_embedder(|e| {
        e.embed_batch(&items, &limits, || {
            pg_sys::check_for_interrupts!();
        })
    })
    .or_report();
    TableIterator::new(
        vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as i32 + 1, v)),
    )
}

/// Number of tokens of `text` before truncation, special tokens included.
/// Compare with `max_length` from `embed_model_info()` to find notes that are
/// truncated.
#[pg_extern(stable, parallel_safe, strict)]
fn embed_token_count(text: &str) -> i32 {
    let n = backend::with_embedder(|e| e.encoder().count_tokens(text)).or_report();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The model this session embeds with, loading it if needed.
// pgrx reads the column names from this signature, so it cannot be a type alias.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
fn embed_model_info() -> TableIterator<
    'static,
    (
        name!(model, String),
        name!(path, String),
        name!(dimensions, i32),
        name!(max_length, i32),
        name!(pooling, String),
        name!(normalize, bool),
        name!(inputs, Vec<String>),
        name!(output, String),
        name!(onnxruntime_version, String),
        name!(intra_op_threads, i32),
        name!(batch_invariant, bool),
    ),
> {
    let info = backend::with_embedder(|e| e.info().clone());
    let ort = clinembed_core::runtime::loaded()
        .map(|(v, _)| v)
        .unwrap_or_default();
    TableIterator::once((
        gucs::model_setting(),
        info.dir.display().to_string(),
        info.dimensions as i32,
        info.max_length as i32,
        info.pooling.as_str().to_string(),
        info.normalize,
        info.inputs,
        info.output,
        ort,
        gucs::session_options().intra_threads as i32,
        info.batch_invariant,
    ))
}

/// The identity of the model this session embeds with: `name@hash`, where the
/// hash covers the graph, the tokenizer and the pooling settings.  Triggers
/// and `embed_backfill` store it beside each vector, so vectors from another
/// model can be found and re-embedded.
#[pg_extern(stable, parallel_safe)]
fn embed_model_id() -> String {
    backend::with_embedder(|e| e.identity().map(str::to_string)).or_report()
}

/// What this backend has loaded and done with it: the model, its identity,
/// how long it took to load, and the texts, tokens and ONNX Runtime runs
/// since.  No row when this backend has not loaded a model yet.  `runs`
/// counts inferences: a row-at-a-time trigger adds one per row, a batched
/// call one per micro-batch.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe)]
fn embed_stats() -> TableIterator<
    'static,
    (
        name!(model, String),
        name!(model_id, String),
        name!(load_ms, f64),
        name!(texts, i64),
        name!(tokens, i64),
        name!(runs, i64),
        name!(rss_kb, Option<i64>),
    ),
> {
    let row = backend::with_loaded(|loaded| {
        loaded.map(|e| {
            let id = e.identity().map(str::to_string).or_report();
            let u = e.usage();
            (
                e.info().dir.display().to_string(),
                id,
                u.load_seconds * 1000.0,
                u.texts as i64,
                u.tokens as i64,
                u.runs as i64,
            )
        })
    });
    TableIterator::new(row.map(|(m, id, ms, t, k, r)| (m, id, ms, t, k, r, backend::rss_kb())))
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // The defaults point at what scripts/setup.sh installs; nothing to set.
        vec![]
    }
}
