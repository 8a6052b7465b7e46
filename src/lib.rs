//! clinembed: transformer embeddings for clinical notes, inside PostgreSQL.
//!
//! This crate is the thin pgrx layer: argument handling, settings, errors.
//! Everything that computes lives in `clinembed-core` (the `core/` crate).

use pgrx::prelude::*;

mod backend;
mod backfill;
mod batch_trigger;
mod columns;
mod engine;
mod errors;
mod gucs;
mod paths;
mod queue;
mod registry;
mod row_trigger;
mod security;
mod server_dirs;
mod trigger;
mod tuple;
mod upgrade;
mod worker;

use clinembed_core::chunk::ChunkOptions;
use clinembed_core::identity::{check_pin, parse_pin};
use errors::OrReport;

::pgrx::pg_module_magic!(name, version);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // Only settings here: the model loads lazily in each backend, never in the
    // postmaster, whose forked children would inherit ONNX Runtime threads.
    gucs::init();
    // Preloaded, the queue workers' registry gets shared memory reserved at
    // startup; otherwise it takes a few kilobytes of the server's spare.
    // SAFETY: reads and chains the postmaster's hook during library load.
    unsafe {
        if pg_sys::process_shared_preload_libraries_in_progress {
            PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
            pg_sys::shmem_request_hook = Some(request_shared_memory);
            worker::register_launcher();
        }
    }
    // pgrx appends a Rust backtrace to every error's detail when the server's
    // environment has RUST_BACKTRACE set; a detail sent to clients carries
    // code paths, not help.  RUST_LIB_BACKTRACE takes precedence for captured
    // backtraces, and is read once, at the first capture; _PG_init runs before
    // any, on the process's only thread.
    std::env::set_var("RUST_LIB_BACKTRACE", "0");
}

static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;

#[pg_guard]
unsafe extern "C-unwind" fn request_shared_memory() {
    // SAFETY: the previous hook, called as PostgreSQL chains hooks.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            prev();
        }
    }
    registry::request_memory();
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
    one_vector(text, None, gucs::long_text())
}

/// A text's vector with the configured model or installed model `model`,
/// truncated, or chunked when `long_text` has window settings.
fn one_vector(text: &str, model: Option<&str>, long_text: Option<ChunkOptions>) -> Vec<f32> {
    using_model(model, |e| backend::vector_of(e, text, long_text))
}

/// Runs `f` with the configured model or installed model `model`, raising its
/// error.
fn using_model<T>(
    model: Option<&str>,
    f: impl FnOnce(&mut clinembed_core::Embedder) -> clinembed_core::Result<T>,
) -> T {
    match model {
        None => backend::with_embedder(f),
        Some(m) => backend::with_named(m, f),
    }
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
    let opts = chunk_args(window_tokens, overlap_tokens);
    one_vector(text, None, Some(opts))
}

/// `embed_text_chunked` with an installed model chosen for this call.
#[pg_extern(
    stable,
    parallel_safe,
    strict,
    cost = 10000,
    name = "embed_text_chunked"
)]
fn embed_text_chunked_model(
    text: &str,
    model: &str,
    window_tokens: default!(i32, 128),
    overlap_tokens: default!(i32, 32),
) -> Vec<f32> {
    let opts = chunk_args(window_tokens, overlap_tokens);
    one_vector(text, Some(model), Some(opts))
}

/// Window options from a function's arguments (negative values count as 0).
fn chunk_args(window: i32, overlap: i32) -> ChunkOptions {
    ChunkOptions {
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
    windows(text, None, window_tokens, overlap_tokens)
}

/// `embed_chunks` with an installed model chosen for this call.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe, strict, cost = 10000, name = "embed_chunks")]
fn embed_chunks_model(
    text: &str,
    model: &str,
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
    windows(text, Some(model), window_tokens, overlap_tokens)
}

/// `(chunk, char_start, char_end, tokens, embedding)` rows.
type Windows = TableIterator<'static, (i32, i32, i32, i32, Vec<f32>)>;

/// The windows of a text with their vectors, numbered from 1.
fn windows(text: &str, model: Option<&str>, window: i32, overlap: i32) -> Windows {
    let opts = chunk_args(window, overlap);
    let limits = gucs::batch_limits();
    let parts = using_model(model, |e| {
        e.embed_windows(text, opts, &limits, backend::check_interrupts)
    });
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
    many_vectors(texts, None)
}

/// `(ord, embedding)` rows; pgrx reads column names from each function's own
/// signature, so the functions spell this type out.
type Ordered = TableIterator<'static, (i32, Option<Vec<f32>>)>;

/// Vectors of many texts, in micro-batches, under the long-text policy.
fn many_vectors(texts: Array<'_, &str>, model: Option<&str>) -> Ordered {
    let items: Vec<Option<&str>> = texts.iter().collect();
    let long_text = gucs::long_text();
    ordered(using_model(model, |e| {
        backend::vectors_of(e, &items, long_text)
    }))
}

/// `(ord, embedding)` rows, `ord` the 1-based position of each text.
fn ordered(vectors: Vec<Option<Vec<f32>>>) -> Ordered {
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
    token_count(text, None)
}

/// `embed_token_count` with an installed model's tokenizer.
#[pg_extern(stable, parallel_safe, strict, cost = 1000, name = "embed_token_count")]
fn embed_token_count_model(text: &str, model: &str) -> i32 {
    token_count(text, Some(model))
}

fn token_count(text: &str, model: Option<&str>) -> i32 {
    let n = using_model(model, |e| {
        e.encoder().count_tokens(text, backend::check_interrupts)
    });
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
    truncation(text, None)
}

/// `embed_truncation` under an installed model chosen for this call.
#[pg_extern(stable, parallel_safe, strict, cost = 1000, name = "embed_truncation")]
fn embed_truncation_model(
    text: &str,
    model: &str,
) -> TableIterator<
    'static,
    (
        name!(tokens, i32),
        name!(max_length, i32),
        name!(truncated, bool),
    ),
> {
    truncation(text, Some(model))
}

fn truncation(text: &str, model: Option<&str>) -> TableIterator<'static, (i32, i32, bool)> {
    let (tokens, max) = using_model(model, |e| {
        e.encoder()
            .count_tokens(text, backend::check_interrupts)
            .map(|n| (n, e.info().max_length))
    });
    TableIterator::once((
        i32::try_from(tokens).unwrap_or(i32::MAX),
        max as i32,
        tokens > max,
    ))
}

/// The model this session embeds with, loading it if needed.  `weights` is
/// `shared` when its weights are mapped from the server's derived form
/// (`weights_detail` names the file) or `private` (`weights_detail` says why
/// when sharing was asked for).
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
        name!(weights, String),
        name!(weights_detail, Option<String>),
    ),
> {
    let info = backend::with_embedder(|e| e.info().clone());
    let ort = clinembed_core::runtime::loaded_version().unwrap_or_default();
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
        info.weights.as_str().to_string(),
        info.weights.detail(),
    ))
}

/// The identity of the model this session embeds with: `name@hash`, where the
/// hash covers the graph, the tokenizer and the pooling settings.  Triggers
/// and `embed_backfill` store it beside each vector, so vectors from another
/// model can be found and re-embedded.
#[pg_extern(stable, parallel_safe)]
fn embed_model_id() -> String {
    backend::model_id()
}

/// What this backend has loaded and done with each model, least recently
/// used first: the name it was asked for, its directory and identity, how
/// long it took to load, and the SQL calls, texts, tokens and ONNX Runtime
/// runs since.
/// `runs` counts inferences: a row-at-a-time trigger adds one per row, a
/// batched call one per micro-batch.  The memory columns are the whole
/// backend's, from /proc/self/smaps_rollup: `rss_kb` resident, `pss_kb`
/// proportional (shared pages divided among the processes that map them),
/// `private_kb` what this backend alone holds (what one more connection
/// costs), `shared_kb` what it shares with others; `weights` is the model's
/// `shared` or `private` (see `embed_model_info`).  No row before the first
/// load.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe)]
fn embed_stats() -> TableIterator<
    'static,
    (
        name!(model, String),
        name!(path, String),
        name!(model_id, String),
        name!(load_ms, f64),
        name!(calls, i64),
        name!(texts, i64),
        name!(tokens, i64),
        name!(runs, i64),
        name!(rss_kb, Option<i64>),
        name!(pss_kb, Option<i64>),
        name!(private_kb, Option<i64>),
        name!(shared_kb, Option<i64>),
        name!(weights, String),
    ),
> {
    let long_text = gucs::long_text();
    let memory = backend::memory();
    let rows = backend::for_each_loaded(|l| {
        let id = l.embedder.identity(long_text).or_report();
        let u = l.embedder.usage();
        (
            l.name.clone(),
            l.embedder.info().dir.display().to_string(),
            id,
            u.load_seconds * 1000.0,
            l.calls as i64,
            u.texts as i64,
            u.tokens as i64,
            u.runs as i64,
            memory.map(|m| m.rss_kb),
            memory.map(|m| m.pss_kb),
            memory.map(|m| m.private_kb),
            memory.map(|m| m.shared_kb),
            l.embedder.info().weights.as_str().to_string(),
        )
    });
    TableIterator::new(rows)
}

/// The models installed under `clinembed.models_root`, read without
/// loading them: name, directory, dimensions (from `config.json`, or from
/// the loaded model), maximum length, pooling, normalization, the SHA-256 of
/// `model.onnx` recorded in `clinembed.json` (checked at every load), and
/// whether this backend has it loaded.  A directory whose settings cannot be
/// read is listed with `error` set instead.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe)]
fn embed_models() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(path, String),
        name!(dimensions, Option<i32>),
        name!(max_length, Option<i32>),
        name!(pooling, Option<String>),
        name!(normalize, Option<bool>),
        name!(sha256, Option<String>),
        name!(loaded, bool),
        name!(error, Option<String>),
    ),
> {
    let root = paths::models_dir();
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    // (directory, dimensions) of the models this backend holds
    let loaded = backend::for_each_loaded(|l| {
        (
            l.embedder.info().dir.clone(),
            l.embedder.info().dimensions as i32,
        )
    });
    let rows: Vec<_> = names
        .into_iter()
        .map(|name| {
            let dir = root.join(&name);
            let held = loaded.iter().find(|(d, _)| *d == dir).map(|&(_, n)| n);
            match clinembed_core::settings::describe(&dir) {
                Ok(d) => (
                    name,
                    dir.display().to_string(),
                    held.or(d.dimensions.map(|n| n as i32)),
                    Some(d.max_length as i32),
                    Some(d.pooling.map_or("mean", |p| p.as_str()).to_string()),
                    Some(d.normalize),
                    d.sha256,
                    held.is_some(),
                    None,
                ),
                Err(e) => (
                    name,
                    dir.display().to_string(),
                    None,
                    None,
                    None,
                    None,
                    None,
                    held.is_some(),
                    Some(e.message),
                ),
            }
        })
        .collect();
    TableIterator::new(rows)
}

/// `embed_text` with an installed model chosen for this call
/// (`embed_text(exp_text, model => 'bio_clinicalbert')`).  Only installed
/// names: pointing at files is what the superuser-only `clinembed.model`
/// setting is for.  Up to `clinembed.max_loaded_models` models stay loaded.
#[pg_extern(stable, parallel_safe, strict, cost = 10000, name = "embed_text")]
fn embed_text_model(text: &str, model: &str) -> Vec<f32> {
    one_vector(text, Some(model), gucs::long_text())
}

/// `embed_texts` with an installed model chosen for this call.
#[pg_extern(stable, parallel_safe, strict, cost = 10000, name = "embed_texts")]
fn embed_texts_model(
    texts: Array<'_, &str>,
    model: &str,
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    many_vectors(texts, Some(model))
}

/// The identity of installed model `model` (see `embed_model_id()`).
#[pg_extern(stable, parallel_safe, strict, name = "embed_model_id")]
fn embed_model_id_model(model: &str) -> String {
    let long_text = gucs::long_text();
    using_model(Some(model), |e| e.identity(long_text))
}

/// `embed_text` pinned to one model identity, IMMUTABLE: the vector of
/// `text` by the installed model that `model_id` names (`name@hash`, as
/// `embed_model_id('name')` returns it), under the long-text policy it names
/// (`+chunkW/O`, or truncation without it), whatever this session's
/// settings say.  Every call checks that the installed files still have that
/// identity and raises an error naming both if not, so no other vector can
/// come back under the same arguments: that is what makes IMMUTABLE honest,
/// and what lets generated columns, expression indexes and postgres_fdw
/// (which ships only immutable functions to remote servers) use it.
#[pg_extern(immutable, parallel_safe, strict, cost = 10000)]
fn embed_text_pinned(text: &str, model_id: &str) -> Vec<f32> {
    with_pinned(model_id, |e, long_text| {
        backend::vector_of(e, text, long_text)
    })
}

/// `embed_texts` pinned to one model identity, IMMUTABLE (see
/// `embed_text_pinned`).
#[pg_extern(immutable, parallel_safe, strict, cost = 10000)]
fn embed_texts_pinned(
    texts: Array<'_, &str>,
    model_id: &str,
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    let items: Vec<Option<&str>> = texts.iter().collect();
    ordered(with_pinned(model_id, |e, long_text| {
        backend::vectors_of(e, &items, long_text)
    }))
}

/// Runs `f` with the installed model that `model_id` names and the long-text
/// policy it names, once the model's identity is checked to be `model_id`.
fn with_pinned<T>(
    model_id: &str,
    f: impl FnOnce(&mut clinembed_core::Embedder, Option<ChunkOptions>) -> clinembed_core::Result<T>,
) -> T {
    let pin = parse_pin(model_id).or_report();
    using_model(Some(pin.name), |e| {
        check_pin(model_id, &e.identity(pin.long_text)?)?;
        f(e, pin.long_text)
    })
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
