//! The SQL functions a session calls, by what they are for.  The triggers,
//! the backfill and the queue's functions are in `write/`.

pub(crate) mod embed;
mod models;
pub(crate) mod rerank;
mod search;
pub(crate) mod sections;
