//! Retrieval measures over labelled queries, with binary relevance: a
//! query's relevant notes are those its labels name.  Each measure is of
//! one query's ranking; `Totals` averages them over queries (a query with
//! no relevant note is not counted).

use std::collections::HashSet;
use std::hash::Hash;

/// The share of the relevant notes found in the first `k`.
pub fn recall_at<K: Eq + Hash>(ranked: &[K], relevant: &HashSet<K>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let hits = ranked
        .iter()
        .take(k)
        .filter(|r| relevant.contains(r))
        .count();
    hits as f64 / relevant.len() as f64
}

/// The reciprocal of the first relevant note's rank, 0 when none is in the
/// first `k`.
pub fn mrr_at<K: Eq + Hash>(ranked: &[K], relevant: &HashSet<K>, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|r| relevant.contains(r))
        .map_or(0.0, |i| 1.0 / (i + 1) as f64)
}

/// Normalized discounted cumulative gain at `k` with binary gains: the
/// sum of `1 / log2(rank + 1)` over relevant notes in the first `k`, over
/// the same sum for the ideal ranking.
pub fn ndcg_at<K: Eq + Hash>(ranked: &[K], relevant: &HashSet<K>, k: usize) -> f64 {
    let gain = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, r)| relevant.contains(r))
        .map(|(i, _)| gain(i))
        .sum();
    let ideal: f64 = (0..relevant.len().min(k)).map(gain).sum();
    if ideal == 0.0 {
        0.0
    } else {
        dcg / ideal
    }
}

/// The three measures averaged over queries.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub queries: usize,
    recall: f64,
    mrr: f64,
    ndcg: f64,
}

impl Totals {
    /// Adds one query's ranking; a query without relevant notes is left out.
    pub fn add<K: Eq + Hash>(&mut self, ranked: &[K], relevant: &HashSet<K>, k: usize) {
        if relevant.is_empty() {
            return;
        }
        self.queries += 1;
        self.recall += recall_at(ranked, relevant, k);
        self.mrr += mrr_at(ranked, relevant, k);
        self.ndcg += ndcg_at(ranked, relevant, k);
    }

    fn mean(&self, sum: f64) -> Option<f64> {
        (self.queries > 0).then(|| sum / self.queries as f64)
    }

    pub fn recall(&self) -> Option<f64> {
        self.mean(self.recall)
    }

    pub fn mrr(&self) -> Option<f64> {
        self.mean(self.mrr)
    }

    pub fn ndcg(&self) -> Option<f64> {
        self.mean(self.ndcg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(xs: &[u32]) -> HashSet<u32> {
        xs.iter().copied().collect()
    }

    #[test]
    fn recall_counts_relevant_notes_in_the_first_k() {
        let ranked = [5, 1, 7, 2, 9];
        assert_eq!(recall_at(&ranked, &set(&[1, 2]), 5), 1.0);
        assert_eq!(recall_at(&ranked, &set(&[1, 2]), 2), 0.5);
        assert_eq!(recall_at(&ranked, &set(&[3]), 5), 0.0);
        assert_eq!(recall_at(&ranked, &set(&[]), 5), 0.0);
    }

    #[test]
    fn mrr_is_the_first_hit() {
        let ranked = [5, 1, 7, 2];
        assert_eq!(mrr_at(&ranked, &set(&[7, 2]), 4), 1.0 / 3.0);
        assert_eq!(mrr_at(&ranked, &set(&[7]), 2), 0.0);
        assert_eq!(mrr_at(&ranked, &set(&[5]), 1), 1.0);
    }

    #[test]
    fn ndcg_against_hand_computed_values() {
        // Relevant at ranks 1 and 3, two relevant notes.
        let ranked = [1, 9, 2];
        let dcg = 1.0 + 1.0 / 4f64.log2();
        let ideal = 1.0 + 1.0 / 3f64.log2();
        assert!((ndcg_at(&ranked, &set(&[1, 2]), 3) - dcg / ideal).abs() < 1e-12);
        assert_eq!(ndcg_at(&[1, 2], &set(&[1, 2]), 10), 1.0);
        assert_eq!(ndcg_at(&[9, 8], &set(&[1]), 10), 0.0);
        // More relevant notes than k: the ideal has k gains.
        assert_eq!(ndcg_at(&[1, 2], &set(&[1, 2, 3]), 2), 1.0);
    }

    #[test]
    fn totals_average_over_queries_with_labels() {
        let mut t = Totals::default();
        t.add(&[1, 2], &set(&[1]), 10);
        t.add(&[2, 1], &set(&[1]), 10);
        t.add(&[2, 1], &set(&[]), 10);
        assert_eq!(t.queries, 2);
        assert_eq!(t.recall(), Some(1.0));
        assert_eq!(t.mrr(), Some(0.75));
        assert_eq!(Totals::default().recall(), None);
    }
}
