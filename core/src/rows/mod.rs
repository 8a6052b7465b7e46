//! Rows: what the write paths decide about a table's rows, free of
//! Postgres.  The one rule and the column checks (`columns`), the
//! backfill's walk (`backfill`), the queue's decisions (`queue`), and every
//! statement they run (`statements`).

pub mod backfill;
pub mod chunks;
pub mod columns;
pub mod queue;
pub mod statements;
