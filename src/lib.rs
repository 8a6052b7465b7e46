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
/// configured model, not only on the argument.  COST 10000: a call takes
/// milliseconds, thousands of times a default function's cost, and the
/// planner must know it, or it may sort a table by
/// `embedding <=> embed_text(...)` computing the query vector once per row
/// instead of using the vector index, which computes it once.
#[pg_extern(stable, parallel_safe, strict, cost = 10000)]
fn embed_text(text: &str) -> Vec<f32> {
    match gucs::long_text() {
        None => backend::with_embedder(|e| e.embed(text)).or_report(),
        Some(opts) => embed_chunked(text, opts),
    }
}

fn embed_chunked(text: &str, opts: clinembed_core::chunk::ChunkOptions) -> Vec<f32> {
    let limits = gucs::batch_limits();
    backend::with_embedder(|e| {
        e.embed_chunked(text, opts, &limits, || {
            pg_sys::check_for_interrupts!();
        })
    })
    .or_report()
}

/// One vector for a text by the chunked long-text policy, whatever
/// `clinembed.long_text` says: windows of `window_tokens` tokens (special
/// tokens included) overlapping by at most `overlap_tokens`, never splitting
/// a word, pooled by a token-weighted mean.
#[pg_extern(stable, parallel_safe, strict, cost = 10000)]
fn embed_text_chunked(
    text: &str,
    window_tokens: default!(i32, 128),
    overlap_tokens: default!(i32, 32),
) -> Vec<f32> {
    embed_chunked(text, chunk_options(window_tokens, overlap_tokens))
}

fn chunk_options(window: i32, overlap: i32) -> clinembed_core::chunk::ChunkOptions {
    clinembed_core::chunk::ChunkOptions {
        window: window.max(0) as usize,
        overlap: overlap.max(0) as usize,
    }
}

/// The windows of a text, for storing long notes as chunk rows: each
/// window's character span in the text (`substr(text, char_start + 1,
/// char_end - char_start)` is its text), its token count without special
/// tokens, and its vector.  Windows hold `window_tokens` tokens at most,
/// special tokens included, overlap by at most `overlap_tokens`, and never
/// split a word.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe, strict, cost = 10000)]
fn embed_chunks(
    text: &str,
    window_tokens: default!(i32, 128),
    overlap_tokens: default!(i32, 32),
) -> TableIterator<
    'static,
    (
        name!(chunk, i32),
        name!(char_start, i32),
        name!(char_end, i32),
        name!(tokens, i32),
        name!(embedding, Vec<f32>),
    ),
> {
    let opts = chunk_options(window_tokens, overlap_tokens);
    let limits = gucs::batch_limits();
    let parts = backend::with_embedder(|e| {
        e.embed_windows(text, opts, &limits, || {
            pg_sys::check_for_interrupts!();
        })
    })
    .or_report();
    TableIterator::new(parts.into_iter().enumerate().map(|(i, (w, v))| {
        (
            i as i32 + 1,
            i32::try_from(w.char_start).unwrap_or(i32::MAX),
            i32::try_from(w.char_end).unwrap_or(i32::MAX),
            w.tokens as i32,
            v,
        )
    }))
}

/// Embeddings of many texts in one call, as `(ord, embedding)` rows where
/// `ord` is the 1-based position in `texts`; a NULL element gives a NULL
/// embedding.  Texts are sorted by token count and run in micro-batches of at
/// most `clinembed.batch_tokens` padded tokens, each padded only to its own
/// longest text; the query can be cancelled between micro-batches.
#[pg_extern(stable, parallel_safe, strict, cost = 10000)]
fn embed_texts(
    texts: Array<'_, &str>,
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    let items: Vec<Option<&str>> = texts.iter().collect();
    let limits = gucs::batch_limits();
    if let Some(opts) = gucs::long_text() {
        if items.len() > limits.max_texts {
            errors::report(
                clinembed_core::Error::new(
                    clinembed_core::ErrorKind::LimitExceeded,
                    "too many texts in one call",
                )
                .detail(format!(
                    "The call has {} texts; the limit is {}.",
                    items.len(),
                    limits.max_texts
                ))
                .hint("Embed the texts in several calls, or raise clinembed.batch_max_texts."),
            );
        }
        let vectors: Vec<Option<Vec<f32>>> = items
            .iter()
            .map(|t| t.map(|t| embed_chunked(t, opts)))
            .collect();
        return TableIterator::new(
            vectors
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i as i32 + 1, v)),
        );
    }
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
/// truncated.  COST 1000: tokenizing is cheaper than embedding but far from
/// free.
#[pg_extern(stable, parallel_safe, strict, cost = 1000)]
fn embed_token_count(text: &str) -> i32 {
    let n = backend::with_embedder(|e| e.encoder().count_tokens(text)).or_report();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Whether `embed_text` would truncate `text` under the current model: its
/// token count (special tokens included), the model's maximum length, and
/// whether the first exceeds the second.  Truncation is the default, as in
/// the notebook, but never silent: this tells which notes lose text.
#[pg_extern(stable, parallel_safe, strict, cost = 1000)]
fn embed_truncation(
    text: &str,
) -> TableIterator<
    'static,
    (
        name!(tokens, i32),
        name!(max_length, i32),
        name!(truncated, bool),
    ),
> {
    let (tokens, max) = backend::with_embedder(|e| {
        e.encoder()
            .count_tokens(text)
            .map(|n| (n, e.info().max_length))
    })
    .or_report();
    TableIterator::once((
        i32::try_from(tokens).unwrap_or(i32::MAX),
        max as i32,
        tokens > max,
    ))
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
    let long_text = gucs::long_text();
    backend::with_embedder(|e| e.identity(long_text)).or_report()
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
            let id = e.identity(gucs::long_text()).or_report();
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
