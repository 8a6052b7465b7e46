//! The per-backend model cache.
//!
//! Each backend keeps up to `clinembed.max_loaded_models` loaded models, created
//! lazily on first use and reused; the least recently used one is dropped to
//! make room.  A model is reloaded when the settings that shaped it change or
//! when its directory holds other files (checked once per statement, so one
//! statement never mixes two versions).  The cache lives in a
//! `thread_local!`: only the backend's main thread ever calls into Postgres
//! or this module, so no lock is needed, and ONNX Runtime's own worker
//! threads never see it.  The ONNX Runtime environment is cached apart from
//! it, in the core, so a failed model load leaves the next attempt a clean
//! slate.

use std::cell::RefCell;
use std::path::PathBuf;

use clinembed_core::inference::chunk::ChunkOptions;
use clinembed_core::{inference::runtime, Embedder, SessionOptions, Weights};

use crate::errors::OrReport;
use crate::{gucs, paths};

#[derive(Clone, PartialEq, Eq)]
struct Key {
    dir: PathBuf,
    library: PathBuf,
    options: SessionOptions,
    weights: Weights,
}

pub struct Loaded {
    key: Key,
    /// The name it was asked for: an installed name or a path.
    pub name: String,
    pub embedder: Embedder,
    /// SQL calls that used it.
    pub calls: u64,
    /// Statement start time of the last freshness check.
    checked: i64,
}

thread_local! {
    /// Most recently used last.
    static CACHE: RefCell<Vec<Loaded>> = const { RefCell::new(Vec::new()) };
}

fn statement_start() -> i64 {
    // SAFETY: reads a backend-local timestamp; main thread only.
    unsafe { pgrx::pg_sys::GetCurrentStatementStartTimestamp() }
}

/// Runs `f` with the embedder of the configured model (`clinembed.model`).
pub fn with_embedder<R>(f: impl FnOnce(&mut Embedder) -> R) -> R {
    let name = gucs::model_setting();
    let dir = paths::resolve_model(&name);
    with_model(name, dir, f)
}

/// The configured model's identity under the session's long-text policy:
/// what the write paths store beside each vector (`embed_model_id()`).
pub fn model_id() -> String {
    let long_text = gucs::long_text();
    with_embedder(|e| e.identity(long_text)).or_report()
}

/// A text's vector with a loaded model, truncated or chunked.
pub fn vector_of(
    e: &mut Embedder,
    text: &str,
    long_text: Option<ChunkOptions>,
) -> clinembed_core::Result<Vec<f32>> {
    match long_text {
        None => e.embed(text),
        Some(opts) => e.embed_chunked(text, opts, &gucs::batch_limits(), check_interrupts),
    }
}

/// Vectors of many texts with a loaded model, in micro-batches.
pub fn vectors_of(
    e: &mut Embedder,
    items: &[Option<&str>],
    long_text: Option<ChunkOptions>,
) -> clinembed_core::Result<Vec<Option<Vec<f32>>>> {
    let limits = gucs::batch_limits();
    match long_text {
        None => e.embed_batch(items, &limits, check_interrupts),
        Some(opts) => e.embed_batch_chunked(items, opts, &limits, check_interrupts),
    }
}

/// Runs `f` with the configured model or installed model `model`, raising its
/// error.
pub fn using_model<T>(
    model: Option<&str>,
    f: impl FnOnce(&mut Embedder) -> clinembed_core::Result<T>,
) -> T {
    match model {
        None => with_embedder(f),
        Some(m) => with_named(m, f),
    }
    .or_report()
}

/// Lets a cancel or `statement_timeout` land between pieces of work.
pub fn check_interrupts() {
    pgrx::pg_sys::check_for_interrupts!();
}

/// Runs `f` with the embedder of installed model `name`, given per call.
/// Only installed names are accepted: pointing at files is what the
/// superuser-only `clinembed.model` setting is for.
pub fn with_named<R>(name: &str, f: impl FnOnce(&mut Embedder) -> R) -> R {
    let dir = paths::resolve_installed(name);
    with_model(name.to_string(), dir, f)
}

fn with_model<R>(name: String, dir: PathBuf, f: impl FnOnce(&mut Embedder) -> R) -> R {
    let key = Key {
        dir,
        library: gucs::ort_library(),
        options: gucs::session_options(),
        weights: gucs::weights(),
    };
    let now = statement_start();
    CACHE.with(|cell| {
        let mut cache = cell.borrow_mut();
        // One session per model directory: a session built with other
        // settings (threads, arena, library) is replaced, not kept beside.
        let found = cache.iter().position(|l| l.key.dir == key.dir);
        let reuse = found.filter(|&i| {
            let l = &mut cache[i];
            if l.key != key {
                return false;
            }
            if l.checked == now {
                return true;
            }
            l.checked = now;
            !l.embedder.files_replaced()
        });
        let loaded = match reuse {
            Some(i) => cache.remove(i),
            None => {
                // Drop a stale or differently built copy, and the least recently used models
                // beyond the cap, before loading, so memory never holds more
                // than the cap.
                if let Some(i) = found {
                    cache.remove(i);
                }
                let cap = gucs::max_loaded_models();
                while cache.len() >= cap {
                    cache.remove(0);
                }
                paths::check_inside_root(&key.dir).or_report();
                let env = runtime::environment(&key.library).or_report();
                let embedder =
                    Embedder::load(env, &key.dir, &key.options, &key.weights).or_report();
                report_weights(&embedder, &key.weights, &name);
                Loaded {
                    key,
                    name,
                    embedder,
                    calls: 0,
                    checked: now,
                }
            }
        };
        // Most recently used last.  `f` runs on it in place: if it raises an
        // error (a cancel, a limit), the model stays cached.
        cache.push(loaded);
        // A lowered cap takes effect now, not only at the next load.
        let cap = gucs::max_loaded_models();
        while cache.len() > cap {
            cache.remove(0);
        }
        let last = cache.len() - 1;
        cache[last].calls += 1;
        f(&mut cache[last].embedder)
    })
}

/// Logs the derivation of a model's shared form (once per server and
/// model), and warns when shared weights were asked for and the model loaded
/// privately: the vectors are right, but this backend holds a whole copy.
fn report_weights(embedder: &Embedder, asked: &Weights, name: &str) {
    let info = embedder.info();
    match (asked, &info.weights) {
        (_, clinembed_core::WeightsForm::Mapped(path)) if info.weights_built => {
            pgrx::log!(
                "clinembed: derived the shared weights of model \"{name}\" into \"{}\" ({:.0} ms load)",
                path.display(),
                embedder.usage().load_seconds * 1000.0
            );
        }
        (Weights::Shared(_), clinembed_core::WeightsForm::Private(Some(why))) => {
            crate::errors::warn(
                "model weights are not shared: this backend holds its own copy",
                why,
                "Check clinembed.weights_cache, or set clinembed.shared_weights = off for this model.",
            );
        }
        _ => {}
    }
}

/// Runs `f` over every model this backend has loaded, least recently used
/// first, without loading any.
pub fn for_each_loaded<R>(mut f: impl FnMut(&mut Loaded) -> R) -> Vec<R> {
    CACHE.with(|cell| cell.borrow_mut().iter_mut().map(&mut f).collect())
}

/// This backend process's memory (see [`clinembed_core::inference::memory`]).
pub fn memory() -> Option<clinembed_core::inference::memory::Memory> {
    clinembed_core::inference::memory::of_this_process()
}
