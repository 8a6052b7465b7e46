//! The per-backend model cache.
//!
//! One `Embedder` per backend process, created lazily on the first call and
//! reused until the settings that shaped it change or the model directory
//! holds other files (checked once per statement).  It lives in a
//! `thread_local!`: only the backend's main thread ever calls into Postgres or
//! this module, so no lock is needed, and ONNX Runtime's own worker threads
//! never see it.  The ONNX Runtime environment is cached apart from it, in the
//! core, so a failed model load leaves the next attempt a clean slate.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;

use clinembed_core::{runtime, Embedder, SessionOptions};

use crate::errors::OrReport;
use crate::{gucs, paths};

#[derive(Clone, PartialEq, Eq)]
struct Key {
    dir: PathBuf,
    library: PathBuf,
    options: SessionOptions,
}

struct Loaded {
    key: Key,
    embedder: Embedder,
}

thread_local! {
    static CACHE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
    /// Start time of the statement that last checked the model files.
    static CHECKED: Cell<i64> = const { Cell::new(i64::MIN) };
}

/// Whether the model files should be checked for replacement: once per
/// statement, so that within one statement (a batched trigger, a whole
/// backfill CALL) every vector and the identity stored beside it come from
/// one session, and the next statement picks up a replaced directory.
fn new_statement() -> bool {
    // SAFETY: reads a backend-local timestamp; main thread only.
    let now = unsafe { pgrx::pg_sys::GetCurrentStatementStartTimestamp() };
    CHECKED.with(|c| c.replace(now) != now)
}

/// Runs `f` with the embedder for the current settings, loading it first if
/// this backend has none or the settings changed since it was loaded.
pub fn with_embedder<R>(f: impl FnOnce(&mut Embedder) -> R) -> R {
    let key = Key {
        dir: paths::resolve_model(&gucs::model_setting()),
        library: gucs::ort_library(),
        options: gucs::session_options(),
    };
    CACHE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let fresh = new_statement();
        let stale = slot
            .as_ref()
            .is_none_or(|l| l.key != key || (fresh && l.embedder.files_replaced()));
        if stale {
            // Drop the old session before loading the new one, so two models
            // never sit in memory at once.
            *slot = None;
            let env = runtime::environment(&key.library).or_report();
            let embedder = Embedder::load(env, &key.dir, &key.options).or_report();
            *slot = Some(Loaded { key, embedder });
        }
        f(&mut slot.as_mut().expect("loaded above").embedder)
    })
}

/// Runs `f` with the embedder this backend has loaded, if any, without
/// loading one.
pub fn with_loaded<R>(f: impl FnOnce(Option<&mut Embedder>) -> R) -> R {
    CACHE.with(|cell| f(cell.borrow_mut().as_mut().map(|l| &mut l.embedder)))
}

/// Resident memory of this backend process in kB, from /proc/self/status.
pub fn rss_kb() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
