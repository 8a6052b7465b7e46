//! The embedding functions: one text, many, a text's windows, token counts
//! and truncation, and the pinned IMMUTABLE forms, each with the configured
//! model or an installed one named per call.

use clinembed_core::inference::chunk::{ChunkOptions, WindowPooling};
use clinembed_core::inference::identity::{check_pin, parse_pin};
use pgrx::prelude::*;

use crate::errors::OrReport;
use crate::{backend, gucs};

/// The embedding of one text: tokenized with the model's tokenizer, truncated
/// to the model's maximum length, run through the model, and pooled
/// (attention-mask mean by default).  STABLE: the result depends on the
/// configured model, not only on the argument.  COST 10000: a call takes
/// milliseconds, thousands of times a default function's cost, and the
/// planner must know it, or it may sort a table by
/// `embedding <=> embed_text(...)` computing the query vector once per row
/// instead of using the vector index, which computes it once.
#[pg_extern(stable, parallel_safe, strict, cost = 10000)]
pub(crate) fn embed_text(text: &str) -> Vec<f32> {
    one_vector(text, None, gucs::long_text())
}

/// A text's vector with the configured model or installed model `model`,
/// truncated, or chunked when `long_text` has window settings.
fn one_vector(text: &str, model: Option<&str>, long_text: Option<ChunkOptions>) -> Vec<f32> {
    backend::using_model(model, |e| backend::vector_of(e, text, long_text))
}

/// One vector for a text by the chunked long-text policy, whatever
/// `clinembed.long_text` says: windows of `window_tokens` tokens (special
/// tokens included) overlapping by at most `overlap_tokens`, never splitting
/// a word, pooled by `pooling`: `mean` (token-weighted), `max`
/// (element-wise) or `mean_max` (both, one after the other: twice the
/// model's dimensions).
#[pg_extern(stable, parallel_safe, strict, cost = 10000)]
fn embed_text_chunked(
    text: &str,
    window_tokens: default!(i32, 128),
    overlap_tokens: default!(i32, 32),
    pooling: default!(&str, "'mean'"),
) -> Vec<f32> {
    let opts = chunk_args(window_tokens, overlap_tokens, pooling);
    one_vector(text, None, Some(opts))
}

/// `embed_text_chunked` with an installed model chosen for this call.
#[pg_extern(
    stable,
    parallel_safe,
    strict,
    cost = 10000,
    name = "embed_text_chunked"
)]
fn embed_text_chunked_model(
    text: &str,
    model: &str,
    window_tokens: default!(i32, 128),
    overlap_tokens: default!(i32, 32),
    pooling: default!(&str, "'mean'"),
) -> Vec<f32> {
    let opts = chunk_args(window_tokens, overlap_tokens, pooling);
    one_vector(text, Some(model), Some(opts))
}

/// Window options from a function's arguments (negative values count as 0).
fn chunk_args(window: i32, overlap: i32, pooling: &str) -> ChunkOptions {
    ChunkOptions {
        window: window.max(0) as usize,
        overlap: overlap.max(0) as usize,
        pooling: WindowPooling::parse(pooling).or_report(),
    }
}

/// The windows of a text, for storing long notes as chunk rows: each
/// window's character span in the text (`substr(text, char_start + 1,
/// char_end - char_start)` is its text), its token count without special
/// tokens, its vector, and its section's canonical name.  Windows hold
/// `window_tokens` tokens at most, special tokens included, overlap by at
/// most `overlap_tokens`, and never split a word; with `sections` (the
/// default) they never cross a section (`embed_sections`), and `section`
/// is NULL for text before the first header; with `header_context` each
/// window of a section after its first is embedded led by the section's
/// header and a colon.  With the defaults, what `embed_chunks_trigger`
/// writes into a chunk table.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe, strict, cost = 10000)]
fn embed_chunks(
    text: &str,
    window_tokens: default!(i32, 128),
    overlap_tokens: default!(i32, 32),
    sections: default!(bool, true),
    header_context: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(chunk, i32),
        name!(char_start, i32),
        name!(char_end, i32),
        name!(tokens, i32),
        name!(embedding, Vec<f32>),
        name!(section, Option<String>),
    ),
> {
    let sections = Sections {
        on: sections,
        header_context,
    };
    windows(text, None, window_tokens, overlap_tokens, sections)
}

/// `embed_chunks` with an installed model chosen for this call.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe, strict, cost = 10000, name = "embed_chunks")]
fn embed_chunks_model(
    text: &str,
    model: &str,
    window_tokens: default!(i32, 128),
    overlap_tokens: default!(i32, 32),
    sections: default!(bool, true),
    header_context: default!(bool, false),
) -> TableIterator<
    'static,
    (
        name!(chunk, i32),
        name!(char_start, i32),
        name!(char_end, i32),
        name!(tokens, i32),
        name!(embedding, Vec<f32>),
        name!(section, Option<String>),
    ),
> {
    let sections = Sections {
        on: sections,
        header_context,
    };
    windows(text, Some(model), window_tokens, overlap_tokens, sections)
}

/// `(chunk, char_start, char_end, tokens, embedding, section)` rows.
type Windows = TableIterator<'static, (i32, i32, i32, i32, Vec<f32>, Option<String>)>;

/// `embed_chunks`'s section arguments.
struct Sections {
    on: bool,
    header_context: bool,
}

/// The windows of a text with their vectors, numbered from 1.
fn windows(
    text: &str,
    model: Option<&str>,
    window: i32,
    overlap: i32,
    sections: Sections,
) -> Windows {
    let opts = chunk_args(window, overlap, WindowPooling::Mean.name());
    let limits = gucs::batch_limits();
    let sectionizer = sections.on.then(crate::api::sections::sectionizer);
    let parts = backend::using_model(model, |e| {
        e.embed_note_windows(
            text,
            opts,
            sectionizer.as_deref(),
            sections.header_context,
            &limits,
            backend::check_interrupts,
        )
    });
    TableIterator::new(parts.into_iter().enumerate().map(|(i, w)| {
        (
            i as i32 + 1,
            i32::try_from(w.window.char_start).unwrap_or(i32::MAX),
            i32::try_from(w.window.char_end).unwrap_or(i32::MAX),
            w.window.tokens as i32,
            w.vector,
            w.section,
        )
    }))
}

/// Embeddings of many texts in one call, as `(ord, embedding)` rows where
/// `ord` is the 1-based position in `texts`; a NULL element gives a NULL
/// embedding.  Texts are sorted by token count and run in micro-batches of at
/// most `clinembed.batch_tokens` padded tokens, each padded only to its own
/// longest text; the query can be cancelled between micro-batches.
#[pg_extern(stable, parallel_safe, strict, cost = 10000)]
fn embed_texts(
    texts: Array<'_, &str>,
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    many_vectors(texts, None)
}

/// `(ord, embedding)` rows; pgrx reads column names from each function's own
/// signature, so the functions spell this type out.
type Ordered = TableIterator<'static, (i32, Option<Vec<f32>>)>;

/// Vectors of many texts, in micro-batches, under the long-text policy.
fn many_vectors(texts: Array<'_, &str>, model: Option<&str>) -> Ordered {
    let items: Vec<Option<&str>> = texts.iter().collect();
    let long_text = gucs::long_text();
    ordered(backend::using_model(model, |e| {
        backend::vectors_of(e, &items, long_text)
    }))
}

/// `(ord, embedding)` rows, `ord` the 1-based position of each text.
fn ordered(vectors: Vec<Option<Vec<f32>>>) -> Ordered {
    TableIterator::new(
        vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as i32 + 1, v)),
    )
}

/// Number of tokens of `text` before truncation, special tokens included.
/// Compare with `max_length` from `embed_model_info()` to find notes that are
/// truncated.  COST 1000: tokenizing is cheaper than embedding but far from
/// free.
#[pg_extern(stable, parallel_safe, strict, cost = 1000)]
fn embed_token_count(text: &str) -> i32 {
    token_count(text, None)
}

/// `embed_token_count` with an installed model's tokenizer.
#[pg_extern(stable, parallel_safe, strict, cost = 1000, name = "embed_token_count")]
fn embed_token_count_model(text: &str, model: &str) -> i32 {
    token_count(text, Some(model))
}

fn token_count(text: &str, model: Option<&str>) -> i32 {
    let n = backend::using_model(model, |e| {
        e.encoder().count_tokens(text, backend::check_interrupts)
    });
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Whether `embed_text` would truncate `text` under the current model: its
/// token count (special tokens included), the model's maximum length, and
/// whether the first exceeds the second.  Truncation is the default, as in
/// the notebook, but never silent: this tells which notes lose text.
#[pg_extern(stable, parallel_safe, strict, cost = 1000)]
fn embed_truncation(
    text: &str,
) -> TableIterator<
    'static,
    (
        name!(tokens, i32),
        name!(max_length, i32),
        name!(truncated, bool),
    ),
> {
    truncation(text, None)
}

/// `embed_truncation` under an installed model chosen for this call.
#[pg_extern(stable, parallel_safe, strict, cost = 1000, name = "embed_truncation")]
fn embed_truncation_model(
    text: &str,
    model: &str,
) -> TableIterator<
    'static,
    (
        name!(tokens, i32),
        name!(max_length, i32),
        name!(truncated, bool),
    ),
> {
    truncation(text, Some(model))
}

fn truncation(text: &str, model: Option<&str>) -> TableIterator<'static, (i32, i32, bool)> {
    let (tokens, max) = backend::using_model(model, |e| {
        e.encoder()
            .count_tokens(text, backend::check_interrupts)
            .map(|n| (n, e.info().max_length))
    });
    TableIterator::once((
        i32::try_from(tokens).unwrap_or(i32::MAX),
        max as i32,
        tokens > max,
    ))
}

/// `embed_text` with an installed model chosen for this call
/// (`embed_text(exp_text, model => 'bio_clinicalbert')`).  Only installed
/// names: pointing at files is what the superuser-only `clinembed.model`
/// setting is for.  Up to `clinembed.max_loaded_models` models stay loaded.
#[pg_extern(stable, parallel_safe, strict, cost = 10000, name = "embed_text")]
fn embed_text_model(text: &str, model: &str) -> Vec<f32> {
    one_vector(text, Some(model), gucs::long_text())
}

/// `embed_texts` with an installed model chosen for this call.
#[pg_extern(stable, parallel_safe, strict, cost = 10000, name = "embed_texts")]
fn embed_texts_model(
    texts: Array<'_, &str>,
    model: &str,
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    many_vectors(texts, Some(model))
}

/// `embed_text` pinned to one model identity, IMMUTABLE: the vector of
/// `text` by the installed model that `model_id` names (`name@hash`, as
/// `embed_model_id('name')` returns it), under the long-text policy it names
/// (`+chunkW/O`, or truncation without it), whatever this session's
/// settings say.  Every call checks that the installed files still have that
/// identity and raises an error naming both if not, so no other vector can
/// come back under the same arguments: that is what makes IMMUTABLE honest,
/// and what lets generated columns, expression indexes and postgres_fdw
/// (which ships only immutable functions to remote servers) use it.
#[pg_extern(immutable, parallel_safe, strict, cost = 10000)]
fn embed_text_pinned(text: &str, model_id: &str) -> Vec<f32> {
    with_pinned(model_id, |e, long_text| {
        backend::vector_of(e, text, long_text)
    })
}

/// `embed_texts` pinned to one model identity, IMMUTABLE (see
/// `embed_text_pinned`).
#[pg_extern(immutable, parallel_safe, strict, cost = 10000)]
fn embed_texts_pinned(
    texts: Array<'_, &str>,
    model_id: &str,
) -> TableIterator<'static, (name!(ord, i32), name!(embedding, Option<Vec<f32>>))> {
    let items: Vec<Option<&str>> = texts.iter().collect();
    ordered(with_pinned(model_id, |e, long_text| {
        backend::vectors_of(e, &items, long_text)
    }))
}

/// Runs `f` with the installed model that `model_id` names and the long-text
/// policy it names, once the model's identity is checked to be `model_id`.
pub(crate) fn with_pinned<T>(
    model_id: &str,
    f: impl FnOnce(&mut clinembed_core::Embedder, Option<ChunkOptions>) -> clinembed_core::Result<T>,
) -> T {
    let pin = parse_pin(model_id).or_report();
    backend::using_model(Some(pin.name), |e| {
        check_pin(model_id, &e.identity(pin.long_text)?)?;
        f(e, pin.long_text)
    })
}
