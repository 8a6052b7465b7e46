//! The queue's background workers: which run (`registry`, in shared
//! memory), and the launcher and workers themselves with their
//! transaction and signal plumbing (`worker`).

pub(crate) mod registry;
pub(crate) mod worker;
