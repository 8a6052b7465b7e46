//! The inference core of clinembed, free of Postgres: load a model, tokenize,
//! batch, run and pool.  The extension crate is a thin layer over this one, so
//! plain `cargo test` and benchmarks cover everything that computes.

pub mod batch;
pub mod chunk;
pub mod error;
pub mod identity;
pub mod model;
pub mod plan;
pub mod pool;
pub mod runtime;
pub mod settings;
pub mod signals;
pub mod tokenize;

pub use error::{Error, ErrorKind, Result};
pub use model::{
    micro_batch_budget, BatchLimits, Embedder, ModelInfo, SessionOptions, Usage,
    DEFAULT_MICRO_BATCH_TOKENS,
};
pub use settings::Pooling;
pub use tokenize::Encoded;
