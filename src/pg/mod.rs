//! Helpers over PostgreSQL's own machinery that the rest of the crate
//! shares: catalog reads (`catalog`), security contexts and pinned settings
//! (`security`), SPI reads, writes and their failure (`spi`), and reading a
//! trigger's tuples (`tuple`).

pub(crate) mod catalog;
pub(crate) mod security;
pub(crate) mod spi;
pub(crate) mod tuple;
