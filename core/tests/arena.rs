//! Memory that comes back: a call that ran large micro-batches hands the
//! arena's peak back when it ends.  Alone in its test binary, so no other
//! test's allocations move the figures.
//!
//! What is asserted is relative to the batch itself, never a fixed number of
//! megabytes: the private memory the call held at its peak (sampled between
//! micro-batches, when the arena still holds the largest activations it ran)
//! against what it still holds after it returns.  Without the shrink at the
//! end of the call, nearly all of that growth stays; with it, most is given
//! back, whatever else the machine (or the allocator) is doing.

mod common;

use clinembed_core::inference::memory::of_this_process;
use clinembed_core::BatchLimits;

fn private_kb() -> i64 {
    of_this_process().expect("smaps_rollup readable").private_kb
}

/// The least share of a call's peak growth that the call must hand back.
const HANDED_BACK_AT_LEAST: f64 = 0.5;

#[test]
fn a_large_batch_leaves_no_arena_peak_behind() {
    let mut e = common::load();
    let note = "Patient admitted with chest pain radiating to the left arm, troponin negative twice, ECG without acute changes. ".repeat(12);
    e.embed("chest pain").unwrap();
    e.embed(&note).unwrap();
    let texts: Vec<Option<&str>> = (0..64).map(|_| Some(note.as_str())).collect();
    for round in 1..=2 {
        let before = private_kb();
        let mut peak = before;
        e.embed_batch(&texts, &BatchLimits::default(), || {
            peak = peak.max(private_kb())
        })
        .unwrap();
        let after = private_kb();
        let grown = peak - before;
        let handed_back = peak - after;
        eprintln!(
            "round {round}: private kB before {before}, peak {peak} (+{grown}), after {after} (handed back {handed_back})"
        );
        // The batch needed an arena larger than it keeps: otherwise this
        // test would check nothing.
        assert!(
            grown > 0,
            "the batch's micro-batches grew no private memory (round {round})"
        );
        assert!(
            handed_back as f64 >= HANDED_BACK_AT_LEAST * grown as f64,
            "round {round}: the call kept {} of the {grown} kB its micro-batches grew (handed back {handed_back} kB)",
            grown - handed_back
        );
    }
}
