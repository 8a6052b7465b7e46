//! The core of clinembed, free of Postgres, in two domains: inference
//! (`inference`: load a model, tokenize, chunk, batch, run and pool,
//! identities, settings) and rows (`rows`: the rule, column checks, the
//! backfill's walk, the queue's decisions, and every statement the write
//! paths run); errors (`error`) are shared.  The extension crate is a thin
//! layer over this one, so plain `cargo test` and benchmarks cover
//! everything that computes and decides.

pub mod error;
pub mod inference;
pub mod rows;
pub mod search;

/// The installed model used when nothing is configured, as a literal for
/// `concat!`.  Defined here once: the extension's setting default, the tests
/// and `scripts/lib.sh` (which reads this line) take it from here.
#[macro_export]
macro_rules! default_model {
    () => {
        "all-minilm-l6-v2"
    };
}

/// The ONNX Runtime release `scripts/setup.sh` installs and the library file
/// name's version, as a literal for `concat!`.  Defined here once, like
/// [`default_model`].
#[macro_export]
macro_rules! ort_version {
    () => {
        "1.31.1"
    };
}

/// See [`default_model`].
pub const DEFAULT_MODEL: &str = default_model!();
/// See [`ort_version`].
pub const ORT_VERSION: &str = ort_version!();
/// The ONNX Runtime library's file name.
pub const ORT_LIBRARY_FILE: &str = concat!("libonnxruntime.so.", ort_version!());

/// The `search_path` every statement of clinembed's own runs under, in
/// triggers, functions and queue workers alike: the system catalog, then
/// temporary tables (which are never searched for functions or operators).
pub const PINNED_SEARCH_PATH: &str = "pg_catalog, pg_temp";

/// Settings of other extensions that change what catalog reads see, and
/// the values clinembed's own statements run with, set beside
/// [`PINNED_SEARCH_PATH`] wherever the server defines them.  Citus hides its
/// shards from `pg_class` reads of client backends and of background
/// workers not its own: a queue worker on a Citus worker node would find a
/// shard's queued keys naming no table, and a backfill run on a shard would
/// find no primary key.
pub const PINNED_VISIBILITY: &[(&str, &str)] = &[("citus.override_table_visibility", "off")];

/// The name clinembed's own error reports carry as the function that raised
/// them: a caught error with this name was written by clinembed, and its
/// message holds no note text (see [`rows::queue::failure_message`]).
pub const ERROR_SOURCE: &str = "clinembed";

pub use error::{Error, ErrorKind, Result};
pub use inference::model::{
    intra_op_threads, micro_batch_budget, BatchLimits, Embedder, ModelInfo, SessionOptions, Usage,
    Weights, WeightsForm, ARENA_KEEP_TOKENS, DEFAULT_MAX_TEXTS, DEFAULT_MAX_TOKENS,
    DEFAULT_MICRO_BATCH_TOKENS,
};
pub use inference::settings::Pooling;
pub use inference::tokenize::Encoded;
