//! Memory that comes back: after a call that ran large micro-batches, the
//! backend's private memory returns near what it was before.  Alone in its
//! test binary, so no other test's allocations move the figures.

mod common;

use clinembed_core::memory::of_this_process;
use clinembed_core::BatchLimits;

fn private_mb() -> i64 {
    of_this_process().expect("smaps_rollup readable").private_kb / 1024
}

#[test]
fn a_large_batch_leaves_no_arena_peak_behind() {
    let mut e = common::load();
    let note = "Patient admitted with chest pain radiating to the left arm, troponin negative twice, ECG without acute changes. ".repeat(12);
    e.embed("chest pain").unwrap();
    e.embed(&note).unwrap();
    let before = private_mb();
    let texts: Vec<Option<&str>> = (0..64).map(|_| Some(note.as_str())).collect();
    for _ in 0..2 {
        e.embed_batch(&texts, &BatchLimits::default(), || {})
            .unwrap();
    }
    let after = private_mb();
    e.embed("chest pain").unwrap();
    let idle = private_mb();
    eprintln!("private MB: before {before}, after batches {after}, after a short text {idle}");
    assert!(
        after - before <= 16,
        "private memory grew by {} MB over a large batch",
        after - before
    );
}
