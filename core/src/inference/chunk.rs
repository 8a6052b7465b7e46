//! Long notes as overlapping windows.
//!
//! A text is tokenized whole (no truncation), then cut into windows of at
//! most `window` tokens, special tokens included, that overlap by at most
//! `overlap` tokens.  Every window starts and ends at a word boundary as the
//! tokenizer sees words (the first token of a word, never a `##` piece), so
//! no WordPiece is split; only a single word longer than a whole window is
//! cut inside, at the window size.  Each window keeps the character span of
//! the source text it covers, so it can be stored beside its vector.
//!
//! Windows are what the model sees: `[CLS]`, the window's tokens, `[SEP]`
//! (or the model's own special tokens).  For a BERT WordPiece tokenizer,
//! where words are tokenized independently, a window's tokens are exactly
//! the tokens of its character span tokenized alone.

use crate::error::{Error, ErrorKind, Result};
use crate::inference::tokenize::{Encoded, Specials, Tokens};

/// Window settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkOptions {
    /// Tokens per window, special tokens included.
    pub window: usize,
    /// Tokens shared by consecutive windows, at most.
    pub overlap: usize,
    /// How the windows' vectors make a note's one vector (the chunked
    /// policy; a chunk row is one window and is not pooled).
    pub pooling: WindowPooling,
}

/// Tokens per window by default: the sequence length Bio_ClinicalBERT was
/// trained at.
pub const DEFAULT_WINDOW_TOKENS: usize = 128;
/// Tokens shared by consecutive windows by default: a quarter of a window.
pub const DEFAULT_OVERLAP_TOKENS: usize = 32;
/// Whether a section's header leads its later windows by default
/// ([`windows_in_sections`]): no, so that a window's vector is its span's
/// (measured in bench/RESULTS.md, "A section's header as context").
pub const DEFAULT_HEADER_CONTEXT: bool = false;

impl Default for ChunkOptions {
    fn default() -> Self {
        ChunkOptions {
            window: DEFAULT_WINDOW_TOKENS,
            overlap: DEFAULT_OVERLAP_TOKENS,
            pooling: WindowPooling::Mean,
        }
    }
}

/// One window of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// What the model runs: special tokens around the window's tokens.
    pub encoded: Encoded,
    /// The window's tokens without special tokens.
    pub tokens: usize,
    /// Character offsets into the source text, `[start, end)`.
    pub char_start: usize,
    pub char_end: usize,
}

impl ChunkOptions {
    pub fn check(&self, specials: &Specials, max_length: usize) -> Result<()> {
        let extra = specials.prefix.len() + specials.suffix.len();
        let ok =
            self.window > extra && self.window <= max_length && self.overlap < self.window - extra;
        if ok {
            Ok(())
        } else {
            Err(
                Error::new(ErrorKind::InvalidArgument, "invalid chunk window")
                    .detail(format!(
                        "Window {} tokens with overlap {}; the model allows windows of {} to {} tokens, and the overlap must be smaller than the window less its {extra} special tokens.",
                        self.window, self.overlap, extra + 1, max_length
                    ))
                    .hint("Use, for example, window 128 and overlap 32."),
            )
        }
    }
}

/// Cuts `tokens` into windows; at least one window, even for an empty text.
pub fn windows(tokens: &Tokens, specials: &Specials, opts: ChunkOptions) -> Vec<Window> {
    let n = tokens.ids.len();
    let content = opts.window - specials.prefix.len() - specials.suffix.len();
    // A token starts a word unless it continues the previous token's word.
    let starts_word = |i: usize| {
        i == 0
            || i >= n
            || tokens.word_ids[i].is_none()
            || tokens.word_ids[i] != tokens.word_ids[i - 1]
    };
    let make = |a: usize, b: usize| {
        let mut ids = specials.prefix.clone();
        ids.extend_from_slice(&tokens.ids[a..b]);
        ids.extend_from_slice(&specials.suffix);
        let len = ids.len();
        Window {
            encoded: Encoded {
                ids,
                type_ids: vec![0; len],
            },
            tokens: b - a,
            char_start: if a < b { tokens.offsets[a].0 } else { 0 },
            char_end: if a < b { tokens.offsets[b - 1].1 } else { 0 },
        }
    };
    if n <= content {
        return vec![make(0, n)];
    }
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let mut end = (start + content).min(n);
        if end < n {
            // Back to the last word start inside the window; a word longer
            // than the window is cut at the window size.
            if let Some(b) = (start + 1..=end).rev().find(|&b| starts_word(b)) {
                end = b;
            }
        }
        out.push(make(start, end));
        if end >= n {
            return out;
        }
        // The next window starts at the first word start that keeps the
        // overlap within `overlap` tokens, and always moves forward.
        let earliest = end.saturating_sub(opts.overlap).max(start + 1);
        start = (earliest..=end).find(|&b| starts_word(b)).unwrap_or(end);
    }
}

/// Cuts `tokens` into windows that never cross a section boundary: each
/// section's tokens (those that start inside its character span, `spans`
/// in order and not overlapping, as `sections::Sectionizer` gives them) are
/// cut as [`windows`] cuts a whole text.  Each window comes with its
/// section's index in `spans`; a section without tokens has no window.
///
/// `headers[i]`, where given and not empty, are the tokens of section `i`'s
/// header, as context: the section's windows are cut that many tokens
/// shorter, and every window after its first (which starts with the header
/// itself) is led by them, right after the model's prefix.  For a BERT
/// WordPiece tokenizer such a window is what the model sees for the text
/// `header: window`.  A header too long to leave a valid window is left out.
pub fn windows_in_sections(
    tokens: &Tokens,
    specials: &Specials,
    opts: ChunkOptions,
    spans: &[(usize, usize)],
    headers: &[Vec<i64>],
) -> Vec<(usize, Window)> {
    let extra = specials.prefix.len() + specials.suffix.len();
    let mut out = Vec::new();
    let mut a = 0;
    for (section, &(start, end)) in spans.iter().enumerate() {
        while a < tokens.ids.len() && tokens.offsets[a].0 < start {
            a += 1;
        }
        let mut b = a;
        while b < tokens.ids.len() && tokens.offsets[b].0 < end {
            b += 1;
        }
        if b > a {
            let part = Tokens {
                ids: tokens.ids[a..b].to_vec(),
                word_ids: tokens.word_ids[a..b].to_vec(),
                offsets: tokens.offsets[a..b].to_vec(),
            };
            let header = headers.get(section).map_or(&[][..], Vec::as_slice);
            let short = ChunkOptions {
                window: opts.window.saturating_sub(header.len()),
                ..opts
            };
            let led =
                !header.is_empty() && short.window > extra && short.overlap < short.window - extra;
            let cut = if led { short } else { opts };
            for (n, mut w) in windows(&part, specials, cut).into_iter().enumerate() {
                if led && n > 0 {
                    let at = specials.prefix.len();
                    w.encoded.ids.splice(at..at, header.iter().copied());
                    w.encoded.type_ids.resize(w.encoded.ids.len(), 0);
                }
                out.push((section, w));
            }
        }
        a = b;
    }
    out
}

/// How many of a text's tokens (their character spans `offsets`, in text
/// order) lie inside some window's span (`spans`, any order): the tokens a
/// note's chunk rows embed.
pub fn tokens_covered(offsets: &[(usize, usize)], spans: &[(usize, usize)]) -> usize {
    let mut spans = spans.to_vec();
    spans.sort_unstable();
    let (mut next, mut reach) = (0, None::<usize>);
    offsets
        .iter()
        .filter(|&&(start, end)| {
            while next < spans.len() && spans[next].0 <= start {
                reach = Some(reach.map_or(spans[next].1, |r| r.max(spans[next].1)));
                next += 1;
            }
            reach.is_some_and(|r| end <= r)
        })
        .count()
}

/// How a note's one vector is made of its windows' vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WindowPooling {
    /// The token-weighted mean ([`weighted_mean`]).
    #[default]
    Mean,
    /// The element-wise maximum.
    Max,
    /// The mean and the maximum one after the other: twice the model's
    /// dimensions (the best note vector of arXiv 2503.24006).
    MeanMax,
}

impl WindowPooling {
    /// By its SQL name: `mean`, `max` or `mean_max`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "mean" => Ok(WindowPooling::Mean),
            "max" => Ok(WindowPooling::Max),
            "mean_max" => Ok(WindowPooling::MeanMax),
            _ => Err(
                Error::new(ErrorKind::InvalidArgument, "unknown window pooling")
                    .detail(format!(
                        "Windows are pooled by mean, max or mean_max; this name has {} characters.",
                        name.chars().count()
                    ))
                    .hint("Use pooling => 'mean', 'max' or 'mean_max'."),
            ),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            WindowPooling::Mean => "mean",
            WindowPooling::Max => "max",
            WindowPooling::MeanMax => "mean_max",
        }
    }

    /// The note's vector's length for a model of `dims` dimensions.
    pub fn dims(self, dims: usize) -> usize {
        match self {
            WindowPooling::MeanMax => 2 * dims,
            _ => dims,
        }
    }

    /// Pools window vectors (`weights`: each window's tokens).  With
    /// `normalize` (a model that L2-normalizes its vectors) the result has
    /// unit length; for `mean_max` each half is normalized and both are
    /// scaled by 1/sqrt(2), so the two weigh the same in a cosine or inner
    /// product.
    pub fn pool(self, vectors: &[Vec<f32>], weights: &[usize], normalize: bool) -> Vec<f32> {
        let unit = |mut v: Vec<f32>, scale: f64| {
            let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            if normalize && norm > 0.0 {
                v.iter_mut()
                    .for_each(|x| *x = (f64::from(*x) / norm * scale) as f32);
            }
            v
        };
        match self {
            WindowPooling::Mean => unit(weighted_mean(vectors, weights), 1.0),
            WindowPooling::Max => unit(element_max(vectors), 1.0),
            WindowPooling::MeanMax => {
                let half = std::f64::consts::FRAC_1_SQRT_2;
                let mut v = unit(weighted_mean(vectors, weights), half);
                v.extend(unit(element_max(vectors), half));
                v
            }
        }
    }
}

/// The element-wise maximum of window vectors.
pub fn element_max(vectors: &[Vec<f32>]) -> Vec<f32> {
    let dim = vectors.first().map_or(0, Vec::len);
    let mut out = vec![f32::NEG_INFINITY; dim];
    for v in vectors {
        for (o, &x) in out.iter_mut().zip(v) {
            *o = o.max(x);
        }
    }
    out
}

/// The token-weighted mean of window vectors: each window counts as many
/// times as it has tokens.
pub fn weighted_mean(vectors: &[Vec<f32>], weights: &[usize]) -> Vec<f32> {
    let dim = vectors.first().map_or(0, Vec::len);
    let total: f64 = weights.iter().map(|&w| w as f64).sum::<f64>().max(1e-9);
    let mut acc = vec![0f64; dim];
    for (v, &w) in vectors.iter().zip(weights) {
        for (a, &x) in acc.iter_mut().zip(v) {
            *a += w as f64 * f64::from(x);
        }
    }
    acc.into_iter().map(|a| (a / total) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words of `sizes[i]` tokens each; word i's pieces span characters
    /// 10*i .. 10*i + 9.
    fn words(sizes: &[usize]) -> Tokens {
        let mut t = Tokens {
            ids: vec![],
            word_ids: vec![],
            offsets: vec![],
        };
        for (w, &k) in sizes.iter().enumerate() {
            for p in 0..k {
                t.ids.push((100 * w + p) as i64);
                t.word_ids.push(Some(w as u32));
                t.offsets.push((10 * w + p, 10 * w + p + 1));
            }
        }
        t
    }

    fn specials() -> Specials {
        Specials {
            prefix: vec![1],
            suffix: vec![2],
        }
    }

    fn check_windows(t: &Tokens, ws: &[Window], opts: ChunkOptions) {
        let n = t.ids.len();
        assert!(!ws.is_empty());
        let mut covered = vec![false; n];
        let mut prev: Option<(usize, usize)> = None;
        for w in ws {
            assert!(w.encoded.len() <= opts.window);
            assert_eq!(w.encoded.ids.first(), Some(&1));
            assert_eq!(w.encoded.ids.last(), Some(&2));
            let a = t.ids.iter().position(|&x| x == w.encoded.ids[1]).unwrap();
            let b = a + w.tokens;
            assert_eq!(&w.encoded.ids[1..w.encoded.len() - 1], &t.ids[a..b]);
            covered[a..b].iter_mut().for_each(|c| *c = true);
            if let Some((pa, pb)) = prev {
                assert!(a > pa, "windows move forward");
                assert!(a <= pb, "no gap between windows");
                assert!(
                    pb - a <= opts.overlap,
                    "overlap {} over {}",
                    pb - a,
                    opts.overlap
                );
            }
            prev = Some((a, b));
        }
        assert!(covered.iter().all(|&c| c), "every token is in a window");
    }

    #[test]
    fn short_text_is_one_window() {
        let t = words(&[1, 2, 1]);
        let ws = windows(
            &t,
            &specials(),
            ChunkOptions {
                window: 16,
                overlap: 4,
                ..ChunkOptions::default()
            },
        );
        assert_eq!(ws.len(), 1);
        assert_eq!(ws[0].encoded.ids, vec![1, 0, 100, 101, 200, 2]);
        assert_eq!((ws[0].char_start, ws[0].char_end), (0, 21));
    }

    #[test]
    fn windows_end_and_start_at_word_boundaries() {
        let sizes: Vec<usize> = (0..200).map(|i| 1 + i % 4).collect();
        let t = words(&sizes);
        let opts = ChunkOptions {
            window: 18,
            overlap: 5,
            ..ChunkOptions::default()
        };
        let ws = windows(&t, &specials(), opts);
        check_windows(&t, &ws, opts);
        for w in &ws {
            let a = t.ids.iter().position(|&x| x == w.encoded.ids[1]).unwrap();
            let b = a + w.tokens;
            assert!(
                a == 0 || t.word_ids[a] != t.word_ids[a - 1],
                "window starts inside a word"
            );
            assert!(
                b == t.ids.len() || t.word_ids[b] != t.word_ids[b - 1],
                "window ends inside a word"
            );
            assert_eq!(w.char_start, t.offsets[a].0);
            assert_eq!(w.char_end, t.offsets[b - 1].1);
        }
    }

    #[test]
    fn a_word_longer_than_a_window_is_cut_and_progress_is_made() {
        let t = words(&[3, 40, 2, 2]);
        let opts = ChunkOptions {
            window: 10,
            overlap: 3,
            ..ChunkOptions::default()
        };
        let ws = windows(&t, &specials(), opts);
        check_windows(&t, &ws, opts);
    }

    #[test]
    fn empty_text_is_one_empty_window() {
        let ws = windows(&words(&[]), &specials(), ChunkOptions::default());
        assert_eq!(ws.len(), 1);
        assert_eq!(ws[0].encoded.ids, vec![1, 2]);
        assert_eq!(ws[0].tokens, 0);
    }

    #[test]
    fn options_are_checked() {
        let s = specials();
        assert!(ChunkOptions {
            window: 128,
            overlap: 32,
            ..ChunkOptions::default()
        }
        .check(&s, 512)
        .is_ok());
        assert!(ChunkOptions {
            window: 600,
            overlap: 32,
            ..ChunkOptions::default()
        }
        .check(&s, 512)
        .is_err());
        assert!(ChunkOptions {
            window: 2,
            overlap: 0,
            ..ChunkOptions::default()
        }
        .check(&s, 512)
        .is_err());
        assert!(ChunkOptions {
            window: 10,
            overlap: 8,
            ..ChunkOptions::default()
        }
        .check(&s, 512)
        .is_err());
        assert!(ChunkOptions {
            window: 10,
            overlap: 7,
            ..ChunkOptions::default()
        }
        .check(&s, 512)
        .is_ok());
    }

    #[test]
    fn weighted_mean_counts_tokens() {
        let m = weighted_mean(&[vec![1.0, 0.0], vec![4.0, 3.0]], &[1, 2]);
        assert_eq!(m, vec![3.0, 2.0]);
    }

    #[test]
    fn windows_never_cross_a_section() {
        // words 0..30 of 2 tokens each (word i at characters 10 * i ..);
        // sections at characters 0, 95 (word 10 on), 205 (word 21 on), and
        // a span with no tokens
        let t = words(&[2; 30]);
        let opts = ChunkOptions {
            window: 8,
            overlap: 2,
            ..ChunkOptions::default()
        };
        let spans = [(0, 95), (95, 205), (205, 300), (300, 310)];
        let ws = windows_in_sections(&t, &specials(), opts, &spans, &[]);
        let mut sections = std::collections::BTreeSet::new();
        for (s, w) in &ws {
            sections.insert(*s);
            let (start, end) = spans[*s];
            assert!(w.char_start >= start && w.char_end <= end, "{s}: {w:?}");
        }
        assert_eq!(sections.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
        // each section alone is cut as windows() cuts it
        let first: Vec<_> = ws
            .iter()
            .filter(|(s, _)| *s == 0)
            .map(|(_, w)| w.clone())
            .collect();
        let alone = Tokens {
            ids: t.ids[..20].to_vec(),
            word_ids: t.word_ids[..20].to_vec(),
            offsets: t.offsets[..20].to_vec(),
        };
        assert_eq!(first, windows(&alone, &specials(), opts));
        // one span over everything: the same windows as without sections
        let whole: Vec<_> = windows_in_sections(&t, &specials(), opts, &[(0, 300)], &[])
            .into_iter()
            .map(|(_, w)| w)
            .collect();
        assert_eq!(whole, windows(&t, &specials(), opts));
    }

    #[test]
    fn a_header_leads_every_window_of_its_section_after_the_first() {
        let t = words(&[2; 30]);
        let opts = ChunkOptions {
            window: 10,
            overlap: 2,
            ..ChunkOptions::default()
        };
        let spans = [(0, 95), (95, 300)];
        let header = vec![7001, 7002];
        let led = windows_in_sections(&t, &specials(), opts, &spans, &[vec![], header.clone()]);
        let plain = windows_in_sections(&t, &specials(), opts, &spans, &[]);
        // a section without a header is cut as before
        let of = |ws: &[(usize, Window)], s: usize| -> Vec<Window> {
            ws.iter()
                .filter(|(i, _)| *i == s)
                .map(|(_, w)| w.clone())
                .collect()
        };
        assert_eq!(of(&led, 0), of(&plain, 0));
        let second = of(&led, 1);
        assert!(second.len() > 2);
        // cut as windows two tokens shorter, so that the header fits
        let alone = Tokens {
            ids: t.ids[20..].to_vec(),
            word_ids: t.word_ids[20..].to_vec(),
            offsets: t.offsets[20..].to_vec(),
        };
        let short = ChunkOptions { window: 8, ..opts };
        let cut = windows(&alone, &specials(), short);
        assert_eq!(second.len(), cut.len());
        for (n, (w, c)) in second.iter().zip(&cut).enumerate() {
            assert!(w.encoded.ids.len() <= opts.window, "{n}: {w:?}");
            assert_eq!(w.encoded.ids.len(), w.encoded.type_ids.len());
            assert_eq!(
                (w.tokens, w.char_start, w.char_end),
                (c.tokens, c.char_start, c.char_end)
            );
            let body = &w.encoded.ids[1..w.encoded.ids.len() - 1];
            if n == 0 {
                // the first window starts with the header as written
                assert_eq!(w, c);
            } else {
                assert_eq!(&body[..2], &header[..]);
                assert_eq!(&body[2..], &c.encoded.ids[1..c.encoded.ids.len() - 1]);
            }
        }
        // a header that leaves no valid window is left out
        let long = vec![7000; 8];
        let none = windows_in_sections(&t, &specials(), opts, &spans, &[vec![], long]);
        assert_eq!(none, plain);
    }

    #[test]
    fn tokens_covered_counts_tokens_inside_some_window() {
        let tokens = [(0, 3), (4, 8), (9, 12), (13, 20), (21, 25)];
        assert_eq!(tokens_covered(&tokens, &[]), 0);
        assert_eq!(tokens_covered(&tokens, &[(0, 25)]), 5);
        // overlapping windows count a token once; a gap is not covered
        assert_eq!(tokens_covered(&tokens, &[(9, 25), (0, 8), (4, 12)]), 5);
        assert_eq!(tokens_covered(&tokens, &[(0, 8), (13, 25)]), 4);
        // a window that ends inside a token does not cover it
        assert_eq!(tokens_covered(&tokens, &[(0, 10)]), 2);
    }

    #[test]
    fn window_pooling() {
        let v = vec![vec![1.0, -2.0, 0.0], vec![3.0, 0.0, -1.0]];
        let w = [1, 3];
        assert_eq!(
            WindowPooling::Mean.pool(&v, &w, false),
            vec![2.5, -0.5, -0.75]
        );
        assert_eq!(WindowPooling::Max.pool(&v, &w, false), vec![3.0, 0.0, 0.0]);
        let mm = WindowPooling::MeanMax.pool(&v, &w, false);
        assert_eq!(mm, vec![2.5, -0.5, -0.75, 3.0, 0.0, 0.0]);
        assert_eq!(WindowPooling::MeanMax.dims(384), 768);
        // normalized: unit length, each half of mean_max weighing the same
        for p in [
            WindowPooling::Mean,
            WindowPooling::Max,
            WindowPooling::MeanMax,
        ] {
            let n: f32 = p.pool(&v, &w, true).iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-6, "{p:?}: {n}");
        }
        let mm = WindowPooling::MeanMax.pool(&v, &w, true);
        let half: f32 = mm[..3].iter().map(|x| x * x).sum();
        assert!((half - 0.5).abs() < 1e-6);
        // one window: mean and max are that window
        let one = vec![vec![0.5, -0.25]];
        assert_eq!(WindowPooling::Max.pool(&one, &[7], false), one[0]);
        assert_eq!(WindowPooling::Mean.pool(&one, &[7], false), one[0]);
        for p in [
            WindowPooling::Mean,
            WindowPooling::Max,
            WindowPooling::MeanMax,
        ] {
            assert_eq!(WindowPooling::parse(p.name()).unwrap(), p);
        }
        assert!(WindowPooling::parse("median").is_err());
    }
}
