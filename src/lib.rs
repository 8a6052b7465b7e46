//! clinembed: transformer embeddings for clinical notes, inside PostgreSQL.
//!
//! This crate is the thin pgrx layer: the SQL functions (`api/`), the paths
//! that write vectors (`write/`), the queue's background workers
//! (`bgworker/`), helpers over PostgreSQL (`pg/`), the per-backend model
//! service (`backend`), settings, errors.  Everything that computes lives in
//! `clinembed-core` (the `core/` crate).

use pgrx::prelude::*;

mod api;
mod backend;
mod bgworker;
mod errors;
mod gucs;
mod paths;
mod pg;
mod server_dirs;
mod upgrade;
mod write;

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
            bgworker::worker::register_launcher();
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
    bgworker::registry::request_memory();
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
