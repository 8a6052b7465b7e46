//! Search: finding notes for a query, free of Postgres.  What
//! `embed_search` and `embed_eval` decide: the modes and their legs
//! (`Mode`), how deep each leg looks (`leg_depth`), how chunk rows become
//! notes (`collapse`), reciprocal rank fusion (`fuse`), the retrieval
//! measures (`metrics`) and every statement the legs run (`statements`).

pub mod metrics;
pub mod statements;

use std::collections::HashMap;

use crate::error::{Error, ErrorKind, Result};

/// Reciprocal rank fusion's constant: a note at rank `r` of a leg adds
/// `weight / (RRF_K + r)` to its score (Cormack, Clarke and Büttcher, 2009;
/// what every client library uses).
pub const DEFAULT_RRF_K: f64 = 60.0;
/// Each leg's weight in the fusion unless the caller gives one.
pub const DEFAULT_LEG_WEIGHT: f64 = 1.0;
/// The text search configuration of the lexical leg unless the caller names
/// one.
pub const DEFAULT_LANGUAGE: &str = "english";
/// How many notes a search returns unless the caller says.
pub const DEFAULT_K: usize = 10;
/// The mode unless the caller names one.
pub const DEFAULT_MODE: Mode = Mode::Hybrid;
/// The most notes one search returns, and the most it reranks.
pub const MAX_K: usize = 10_000;
/// Each leg brings this many notes per note asked for, and at least
/// [`MIN_LEG_DEPTH`]: fusion needs candidates past `k` from both legs (a
/// note ranked 30th by one leg and 2nd by the other belongs in the top 10).
pub const LEG_DEPTH_PER_RESULT: usize = 4;
pub const MIN_LEG_DEPTH: usize = 40;
/// The vector leg over chunk rows first reads this many chunk rows per
/// note it needs; fewer distinct notes than needed reads more
/// ([`next_chunk_limit`]).
pub const CHUNKS_PER_NOTE_GUESS: usize = 8;

/// What a search runs: the vector leg, the lexical leg, or both fused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Vector,
    Lexical,
    Hybrid,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Vector, Mode::Lexical, Mode::Hybrid];

    pub fn parse(s: &str) -> Result<Mode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vector" => Ok(Mode::Vector),
            "lexical" => Ok(Mode::Lexical),
            "hybrid" => Ok(Mode::Hybrid),
            _ => Err(
                Error::new(ErrorKind::InvalidArgument, "unknown search mode")
                    .detail(format!("Mode has {} characters.", s.chars().count()))
                    .hint("Use 'vector', 'lexical' or 'hybrid'."),
            ),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Vector => "vector",
            Mode::Lexical => "lexical",
            Mode::Hybrid => "hybrid",
        }
    }

    pub fn uses_vectors(self) -> bool {
        matches!(self, Mode::Vector | Mode::Hybrid)
    }

    pub fn uses_text(self) -> bool {
        matches!(self, Mode::Lexical | Mode::Hybrid)
    }
}

/// The fusion's settings: the constant and each leg's weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fusion {
    pub rrf_k: f64,
    pub vector_weight: f64,
    pub lexical_weight: f64,
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion {
            rrf_k: DEFAULT_RRF_K,
            vector_weight: DEFAULT_LEG_WEIGHT,
            lexical_weight: DEFAULT_LEG_WEIGHT,
        }
    }
}

impl Fusion {
    /// Checked: a constant and weights that are finite and not negative.
    pub fn new(rrf_k: f64, vector_weight: f64, lexical_weight: f64) -> Result<Fusion> {
        let ok = |x: f64| x.is_finite() && x >= 0.0;
        if !ok(rrf_k) || !ok(vector_weight) || !ok(lexical_weight) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "fusion constant and weights must be finite and not negative",
            )
            .detail(format!(
                "rrf_k = {rrf_k}, vector_weight = {vector_weight}, lexical_weight = {lexical_weight}."
            ))
            .hint(format!(
                "The defaults are rrf_k = {DEFAULT_RRF_K} and weights of {DEFAULT_LEG_WEIGHT}."
            )));
        }
        Ok(Fusion {
            rrf_k,
            vector_weight,
            lexical_weight,
        })
    }
}

/// `k` and `rerank` checked: `k` from 1 to [`MAX_K`], `rerank` from 0 to
/// [`MAX_K`].
pub fn check_k(k: i64, rerank: i64) -> Result<(usize, usize)> {
    let max = MAX_K as i64;
    if !(1..=max).contains(&k) || !(0..=max).contains(&rerank) {
        return Err(
            Error::new(ErrorKind::InvalidArgument, "k or rerank out of range")
                .detail(format!("k = {k}, rerank = {rerank}."))
                .hint(format!(
                    "k goes from 1 to {MAX_K}, rerank from 0 (none) to {MAX_K}."
                )),
        );
    }
    Ok((k as usize, rerank as usize))
}

/// How many notes each leg brings before fusion, for `k` results of which
/// the first `rerank` are reranked.
pub fn leg_depth(k: usize, rerank: usize) -> usize {
    (k.max(rerank) * LEG_DEPTH_PER_RESULT).max(MIN_LEG_DEPTH)
}

/// The vector leg over chunk rows reads chunk rows best first, `limit` at a
/// time, until `depth` distinct notes are among them: after a read of
/// `limit` that gave `rows` rows and `notes` distinct notes, the next limit,
/// or `None` when it is enough (the depth reached, or every matching row
/// read).
pub fn next_chunk_limit(limit: usize, rows: usize, notes: usize, depth: usize) -> Option<usize> {
    if notes >= depth || rows < limit {
        None
    } else {
        Some(limit.saturating_mul(4))
    }
}

/// The first chunk-row limit for `depth` notes.
pub fn first_chunk_limit(depth: usize) -> usize {
    depth.saturating_mul(CHUNKS_PER_NOTE_GUESS)
}

/// A chunk row's place in its note: its number, section and character span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub chunk: i32,
    pub section: Option<String>,
    pub char_start: i32,
    pub char_end: i32,
}

/// One row a leg found: a note's key (as text, one element per key
/// column), its leg score (a distance for the vector leg, lower is better;
/// a text rank for the lexical leg, higher is better), and the chunk row's
/// span when the leg read chunk rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub key: Vec<Option<String>>,
    pub score: f64,
    pub span: Option<Span>,
}

/// Candidates best first, each note once, with its best row: chunk rows
/// collapsed to notes.  `lower_is_better` for distances.  Ties keep the
/// order the rows came in.
pub fn collapse(mut rows: Vec<Candidate>, lower_is_better: bool) -> Vec<Candidate> {
    rows.sort_by(|a, b| {
        let o = a.score.total_cmp(&b.score);
        if lower_is_better {
            o
        } else {
            o.reverse()
        }
    });
    let mut seen = std::collections::HashSet::new();
    rows.into_iter()
        .filter(|c| seen.insert(c.key.clone()))
        .collect()
}

/// One note a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub key: Vec<Option<String>>,
    /// The fused score: the sum over legs of `weight / (rrf_k + rank)`.
    pub score: f64,
    pub vector_rank: Option<usize>,
    pub lexical_rank: Option<usize>,
    /// The cosine distance of the note's best row to the query.
    pub distance: Option<f64>,
    /// The best chunk row's span: the vector leg's best chunk, or the
    /// lexical leg's where the vector leg did not find the note.
    pub span: Option<Span>,
    /// The cross-encoder's score when the note was reranked.
    pub rerank_score: Option<f32>,
}

/// Reciprocal rank fusion of two legs, each collapsed to notes and best
/// first: every note either leg found, once, by fused score, best first.
/// Ties go to the better best rank, then to the vector leg's order, then
/// to the key.  A leg with weight 0 still gives its rank but no score.
pub fn fuse(vector: &[Candidate], lexical: &[Candidate], fusion: &Fusion) -> Vec<Found> {
    let mut by_key: HashMap<Vec<Option<String>>, Found> = HashMap::new();
    let mut order: Vec<Vec<Option<String>>> = Vec::new();
    let mut add = |c: &Candidate, rank: usize, vector_leg: bool| {
        let weight = if vector_leg {
            fusion.vector_weight
        } else {
            fusion.lexical_weight
        };
        let f = by_key.entry(c.key.clone()).or_insert_with(|| {
            order.push(c.key.clone());
            Found {
                key: c.key.clone(),
                score: 0.0,
                vector_rank: None,
                lexical_rank: None,
                distance: None,
                span: None,
                rerank_score: None,
            }
        });
        f.score += weight / (fusion.rrf_k + rank as f64);
        if vector_leg {
            f.vector_rank = Some(rank);
            f.distance = Some(c.score);
            f.span = c.span.clone();
        } else {
            f.lexical_rank = Some(rank);
            if f.span.is_none() {
                f.span = c.span.clone();
            }
        }
    };
    for (i, c) in vector.iter().enumerate() {
        add(c, i + 1, true);
    }
    for (i, c) in lexical.iter().enumerate() {
        add(c, i + 1, false);
    }
    let mut found: Vec<(usize, Found)> = order
        .into_iter()
        .enumerate()
        .map(|(i, k)| (i, by_key.remove(&k).expect("every key was added")))
        .collect();
    let best_rank = |f: &Found| {
        f.vector_rank
            .unwrap_or(usize::MAX)
            .min(f.lexical_rank.unwrap_or(usize::MAX))
    };
    found.sort_by(|(ia, a), (ib, b)| {
        b.score
            .total_cmp(&a.score)
            .then(best_rank(a).cmp(&best_rank(b)))
            .then(ia.cmp(ib))
    });
    found.into_iter().map(|(_, f)| f).collect()
}

/// Notes reordered by their cross-encoder scores, best first; notes
/// without one (past the reranked head) keep their order after them.
pub fn rerank_order(mut found: Vec<Found>, head: usize, scores: &[f32]) -> Vec<Found> {
    let head = head.min(found.len()).min(scores.len());
    for (f, s) in found.iter_mut().zip(scores.iter()).take(head) {
        f.rerank_score = Some(*s);
    }
    found[..head].sort_by(|a, b| {
        b.rerank_score
            .unwrap_or(f32::NEG_INFINITY)
            .total_cmp(&a.rerank_score.unwrap_or(f32::NEG_INFINITY))
    });
    found
}

/// The text a reranker reads for a note: its best chunk's span (character
/// offsets, end exclusive), or the whole text for a note without one.
pub fn span_text<'a>(text: &'a str, span: Option<&Span>) -> &'a str {
    let Some(s) = span else {
        return text;
    };
    let at = |chars: i32| {
        text.char_indices()
            .nth(chars.max(0) as usize)
            .map_or(text.len(), |(i, _)| i)
    };
    let (start, end) = (at(s.char_start), at(s.char_end));
    &text[start..end.max(start)]
}

/// The name `embed_eval` gives hybrid search reranked.
pub const RERANKED_MODE: &str = "hybrid+rerank";

/// Checks that every vector the leg read was made by the model the query
/// was embedded with: `models` are the rows' identities (NULL where the
/// relation keeps none).
pub fn check_models<'a>(
    expected: &str,
    models: impl IntoIterator<Item = Option<&'a str>>,
    relation: &str,
) -> Result<()> {
    let mut other: Option<&str> = None;
    let mut n = 0usize;
    for m in models.into_iter().flatten() {
        if m != expected {
            other.get_or_insert(m);
            n += 1;
        }
    }
    match other {
        None => Ok(()),
        Some(m) => Err(Error::new(
            ErrorKind::IdentityMismatch,
            "the relation holds vectors of more than one model",
        )
        .detail(format!(
            "The query was embedded with {expected}, and {n} of the rows found in {relation} carry {m}."
        ))
        .hint(
            "Finish re-embedding (embed_backfill or embed_queue_enqueue), or pass model_id => to search the rows of one model only.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(key: &str, score: f64, chunk: Option<i32>) -> Candidate {
        Candidate {
            key: vec![Some(key.to_string())],
            score,
            span: chunk.map(|n| Span {
                chunk: n,
                section: None,
                char_start: n * 10,
                char_end: n * 10 + 9,
            }),
        }
    }

    fn keys(f: &[Found]) -> Vec<&str> {
        f.iter().map(|x| x.key[0].as_deref().unwrap()).collect()
    }

    #[test]
    fn modes_parse_and_name() {
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.name()).unwrap(), m);
        }
        assert_eq!(Mode::parse(" Hybrid ").unwrap(), Mode::Hybrid);
        let e = Mode::parse("semantic").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(!e.detail.unwrap().contains("semantic"));
    }

    #[test]
    fn collapse_keeps_each_note_once_with_its_best_chunk() {
        let rows = vec![
            c("a", 0.30, Some(2)),
            c("b", 0.10, Some(1)),
            c("a", 0.05, Some(7)),
            c("b", 0.20, Some(3)),
            c("c", 0.40, Some(1)),
        ];
        let notes = collapse(rows, true);
        let got: Vec<_> = notes
            .iter()
            .map(|n| (n.key[0].clone().unwrap(), n.span.as_ref().unwrap().chunk))
            .collect();
        assert_eq!(got, vec![("a".into(), 7), ("b".into(), 1), ("c".into(), 1)]);
        // Higher is better for text ranks.
        let notes = collapse(vec![c("a", 0.1, Some(1)), c("a", 0.9, Some(2))], false);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].span.as_ref().unwrap().chunk, 2);
    }

    #[test]
    fn fusion_sums_reciprocal_ranks() {
        let v = vec![c("a", 0.1, None), c("b", 0.2, None), c("c", 0.3, None)];
        let l = vec![c("c", 9.0, None), c("d", 8.0, None)];
        let f = fuse(&v, &l, &Fusion::default());
        // c: 1/63 + 1/61 beats a: 1/61; b and d tie at 1/62, both second
        // in a leg, and the vector leg's goes first.
        assert_eq!(keys(&f), vec!["c", "a", "b", "d"]);
        let cnote = &f[0];
        assert_eq!(cnote.vector_rank, Some(3));
        assert_eq!(cnote.lexical_rank, Some(1));
        assert!((cnote.score - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12);
        assert!(f[1].score > f[2].score);
        assert_eq!(f[2].score, f[3].score);
        // A tie on score goes to the better best rank, then the vector leg.
        let f = fuse(
            &[c("x", 0.1, None)],
            &[c("y", 1.0, None)],
            &Fusion::default(),
        );
        assert_eq!(keys(&f), vec!["x", "y"]);
    }

    #[test]
    fn weights_move_a_leg_and_zero_keeps_its_rank() {
        let v = vec![c("a", 0.1, None), c("b", 0.2, None)];
        let l = vec![c("b", 9.0, None), c("a", 8.0, None)];
        let f = fuse(&v, &l, &Fusion::new(60.0, 1.0, 2.0).unwrap());
        assert_eq!(keys(&f), vec!["b", "a"]);
        let f = fuse(&v, &l, &Fusion::new(60.0, 1.0, 0.0).unwrap());
        assert_eq!(keys(&f), vec!["a", "b"]);
        assert_eq!(f[0].lexical_rank, Some(2));
        assert!((f[0].score - 1.0 / 61.0).abs() < 1e-12);
        assert!(Fusion::new(-1.0, 1.0, 1.0).is_err());
        assert!(Fusion::new(60.0, f64::NAN, 1.0).is_err());
    }

    #[test]
    fn the_vector_legs_span_wins_and_the_lexical_fills_in() {
        let v = vec![c("a", 0.1, Some(4))];
        let l = vec![c("a", 3.0, Some(9)), c("b", 2.0, Some(2))];
        let f = fuse(&v, &l, &Fusion::default());
        assert_eq!(f[0].span.as_ref().unwrap().chunk, 4);
        assert_eq!(f[0].distance, Some(0.1));
        assert_eq!(f[1].span.as_ref().unwrap().chunk, 2);
        assert_eq!(f[1].distance, None);
    }

    #[test]
    fn one_leg_is_that_legs_order() {
        let v = vec![c("a", 0.1, None), c("b", 0.2, None), c("c", 0.3, None)];
        assert_eq!(
            keys(&fuse(&v, &[], &Fusion::default())),
            vec!["a", "b", "c"]
        );
        assert_eq!(
            keys(&fuse(&[], &v, &Fusion::default())),
            vec!["a", "b", "c"]
        );
    }

    #[test]
    fn depth_and_chunk_limits() {
        assert_eq!(leg_depth(1, 0), MIN_LEG_DEPTH);
        assert_eq!(leg_depth(100, 0), 400);
        assert_eq!(leg_depth(10, 50), 200);
        assert_eq!(first_chunk_limit(40), 320);
        assert_eq!(next_chunk_limit(320, 320, 12, 40), Some(1280));
        assert_eq!(next_chunk_limit(320, 200, 12, 40), None);
        assert_eq!(next_chunk_limit(320, 320, 40, 40), None);
        assert!(check_k(0, 0).is_err());
        assert!(check_k(10, -1).is_err());
        assert_eq!(check_k(10, 20).unwrap(), (10, 20));
    }

    #[test]
    fn rerank_reorders_the_head_only() {
        let v = vec![c("a", 0.1, None), c("b", 0.2, None), c("c", 0.3, None)];
        let f = fuse(&v, &[], &Fusion::default());
        let r = rerank_order(f, 2, &[0.1, 0.9]);
        assert_eq!(keys(&r), vec!["b", "a", "c"]);
        assert_eq!(r[0].rerank_score, Some(0.9));
        assert_eq!(r[2].rerank_score, None);
    }

    #[test]
    fn a_span_is_cut_by_characters() {
        let span = |a, b| Span {
            chunk: 1,
            section: None,
            char_start: a,
            char_end: b,
        };
        let t = "Café: 患者 chest pain";
        assert_eq!(span_text(t, Some(&span(6, 8))), "患者");
        assert_eq!(span_text(t, Some(&span(9, 99))), "chest pain");
        assert_eq!(span_text(t, Some(&span(5, 2))), "");
        assert_eq!(span_text(t, None), t);
    }

    #[test]
    fn mixed_models_are_refused_without_naming_text() {
        assert!(check_models("m@1", [Some("m@1"), None], "notes").is_ok());
        let e = check_models("m@1", [Some("m@1"), Some("m@2"), Some("m@2")], "notes").unwrap_err();
        assert_eq!(e.kind, ErrorKind::IdentityMismatch);
        assert!(e.detail.unwrap().contains("2 of the rows"));
    }
}
