//! Every path that writes vectors beside their rows: the row trigger, the
//! statement trigger, the backfill, and the queue's trigger and functions
//! (whose workers are in `bgworker/`), over one write step (`engine`) and
//! the catalog reads and checks they share (`columns`).

pub(crate) mod backfill;
pub(crate) mod batch_trigger;
pub(crate) mod chunks;
pub(crate) mod columns;
pub(crate) mod engine;
pub(crate) mod enqueue;
pub(crate) mod queue;
pub(crate) mod row_trigger;
pub(crate) mod trigger;
