//! What a session can learn about models: the configured model's
//! description and identity, the installed models, and this backend's
//! statistics.

use clinembed_core::inference::settings::ModelKind;
use pgrx::prelude::*;

use crate::errors::OrReport;
use crate::{backend, gucs, paths};

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
    let ort = clinembed_core::inference::runtime::loaded_version().unwrap_or_default();
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
/// whether this backend has it loaded, and its kind (`embedding`, or
/// `cross-encoder` for a reranker, which has no dimensions or pooling).  A
/// directory whose settings cannot be read is listed with `error` set
/// instead.
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
        name!(kind, Option<String>),
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
            match clinembed_core::inference::settings::describe(&dir) {
                // A cross-encoder makes one score per pair: no vector
                // width, no pooling.
                Ok(d) if d.kind == ModelKind::CrossEncoder => (
                    name,
                    dir.display().to_string(),
                    None,
                    Some(d.max_length as i32),
                    None,
                    None,
                    d.sha256,
                    held.is_some(),
                    None,
                    Some(d.kind.as_str().to_string()),
                ),
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
                    Some(d.kind.as_str().to_string()),
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
                    None,
                ),
            }
        })
        .collect();
    TableIterator::new(rows)
}

/// The identity of installed model `model` (see `embed_model_id()`).
#[pg_extern(stable, parallel_safe, strict, name = "embed_model_id")]
fn embed_model_id_model(model: &str) -> String {
    let long_text = gucs::long_text();
    backend::using_model(Some(model), |e| e.identity(long_text))
}
