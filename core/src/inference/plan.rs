//! Length-bucketed micro-batches.
//!
//! The notebook pads each batch of 100 notes to its longest note; with short
//! nursing notes beside long discharge summaries most of that compute is
//! padding.  Here texts are sorted by token count and cut into micro-batches
//! whose padded size (rows × longest row) stays within a token budget, so each
//! micro-batch is padded only to its own, similar, lengths.

/// Groups of input indices, each a micro-batch.  Every index appears exactly
/// once.  A micro-batch's padded size, `rows × longest`, is at most `budget`,
/// except that a single text longer than the budget forms a micro-batch alone.
/// Within a micro-batch, and across them, texts are in ascending length.
pub fn micro_batches(lengths: &[usize], budget: usize, max_rows: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted ascending, so the newest text is the longest of the batch.
        let padded = (current.len() + 1) * lengths[i];
        if !current.is_empty() && (padded > budget || current.len() >= max_rows.max(1)) {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Tokens one micro-batch of rows this long computes on, padding included:
/// rows × the longest.
pub fn padded_tokens(lengths: impl Iterator<Item = usize> + Clone) -> usize {
    lengths.clone().count() * lengths.max().unwrap_or(0)
}

/// Tokens a whole plan computes on, padding included.
pub fn plan_padded_tokens(lengths: &[usize], batches: &[Vec<usize>]) -> usize {
    batches
        .iter()
        .map(|b| padded_tokens(b.iter().map(|&i| lengths[i])))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_invariants(lengths: &[usize], budget: usize, max_rows: usize) {
        let plan = micro_batches(lengths, budget, max_rows);
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(
            seen,
            (0..lengths.len()).collect::<Vec<_>>(),
            "each index exactly once"
        );
        for b in &plan {
            let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(b.len() <= max_rows);
            assert!(
                b.len() == 1 || b.len() * longest <= budget,
                "batch {b:?} over budget"
            );
        }
    }

    #[test]
    fn sorts_and_respects_budget() {
        let lengths = [512, 12, 40, 300, 12, 90, 512, 7];
        let plan = micro_batches(&lengths, 1024, 64);
        assert_eq!(plan, vec![vec![7, 1, 4, 2, 5], vec![3, 0], vec![6]]);
        check_invariants(&lengths, 1024, 64);
    }

    #[test]
    fn oversize_text_gets_its_own_batch() {
        let plan = micro_batches(&[10, 5000, 10], 256, 64);
        assert_eq!(plan, vec![vec![0, 2], vec![1]]);
    }

    #[test]
    fn row_cap_and_empty_input() {
        assert!(micro_batches(&[], 100, 4).is_empty());
        let plan = micro_batches(&[3; 10], 1000, 4);
        assert_eq!(plan.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
    }

    #[test]
    fn pseudo_random_inputs_keep_invariants() {
        let mut x: u64 = 42;
        for round in 0..200 {
            let n = (round % 37) + 1;
            let lengths: Vec<usize> = (0..n)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    2 + (x >> 33) as usize % 511
                })
                .collect();
            check_invariants(&lengths, 512 + round * 13, 1 + round % 50);
        }
    }

    #[test]
    fn bucketing_beats_notebook_padding() {
        // 100 notes: mostly short, a few long, as in the note stream.
        let lengths: Vec<usize> = (0..100)
            .map(|i| if i % 7 == 0 { 512 } else { 40 + i })
            .collect();
        let notebook = 100 * 512;
        let ours = plan_padded_tokens(&lengths, &micro_batches(&lengths, 4096, 256));
        let real: usize = lengths.iter().sum();
        assert!(ours < notebook / 2, "{ours} vs {notebook}");
        assert!(ours as f64 <= real as f64 * 1.15, "{ours} vs {real}");
    }
}
