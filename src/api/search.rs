//! Search: `embed_search` finds the notes nearest a query by their vectors,
//! their text, or both fused, collapsed to notes; `embed_eval` measures it
//! on labelled queries.  What is decided (modes, depths, fusion, collapse,
//! measures, statements) is in `clinembed_core::search`; this layer finds
//! the relation's columns in the catalog, runs the legs as the calling role
//! and embeds the query.

use std::collections::{HashMap, HashSet};

use clinembed_core::search::metrics::Totals;
use clinembed_core::search::statements::{self as sql, Filter, NativeType, Target, VectorKind};
use clinembed_core::search::{self as rule, Candidate, Found, Fusion, Mode, Span};
use clinembed_core::{Error, ErrorKind};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::JsonB;

use crate::errors::{report, OrReport};
use crate::pg::catalog::{self, relation_name, shown};
use crate::pg::security::Settings;
use crate::pg::spi::select_one;
use crate::write::columns::CHUNKS_TRIGGER;

/// A column of a relation, as the catalog describes it.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    /// As `format_type` prints it, with its schema where it is not visible.
    type_name: String,
    typname: String,
    category: char,
    schema: String,
}

fn columns_of(rel: pg_sys::Oid) -> Vec<Column> {
    crate::pg::security::pinned(|| {
        Spi::connect(|c| {
            c.select(sql::COLUMNS, None, &[rel.into()])?
                .map(|row| {
                    Ok(Column {
                        name: row.get::<String>(1)?.unwrap_or_default(),
                        type_name: row.get::<String>(2)?.unwrap_or_default(),
                        typname: row.get::<String>(3)?.unwrap_or_default(),
                        category: row
                            .get::<String>(4)?
                            .unwrap_or_default()
                            .chars()
                            .next()
                            .unwrap_or(' '),
                        schema: row.get::<String>(5)?.unwrap_or_default(),
                    })
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_default()
}

/// How a column holds vectors, if it does.
fn vector_kind(c: &Column) -> Option<VectorKind> {
    match (c.typname.as_str(), c.type_name.as_str()) {
        ("vector", _) => Some(VectorKind::Native(NativeType::Vector)),
        ("halfvec", _) => Some(VectorKind::Native(NativeType::Halfvec)),
        (_, "real[]") => Some(VectorKind::Array),
        _ => None,
    }
}

fn is_text(c: &Column) -> bool {
    c.category == 'S'
}

/// One of clinembed's triggers on a table: its function and arguments.
struct EmbedTrigger {
    table: pg_sys::Oid,
    function: String,
    args: Vec<String>,
}

fn embed_triggers(table: Option<pg_sys::Oid>) -> Vec<EmbedTrigger> {
    crate::pg::security::pinned(|| {
        Spi::connect(|c| {
            c.select(sql::EMBED_TRIGGERS, None, &[table.into()])?
                .map(|row| {
                    let raw = row.get::<Vec<u8>>(3)?.unwrap_or_default();
                    let mut args: Vec<String> = raw
                        .split(|&b| b == 0)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                    // tgargs ends each argument with a NUL
                    args.pop();
                    Ok(EmbedTrigger {
                        table: row.get::<pg_sys::Oid>(1)?.unwrap_or_default(),
                        function: row.get::<String>(2)?.unwrap_or_default(),
                        args,
                    })
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_default()
}

/// The columns a caller names, each optional.
#[derive(Default)]
struct Named {
    text: Option<String>,
    vector: Option<String>,
    model: Option<String>,
    tsvector: Option<String>,
}

fn refuse(kind: ErrorKind, message: &str, detail: String, hint: &str) -> ! {
    report(Error::new(kind, message).detail(detail).hint(hint))
}

/// The one column of `cols` that `pick` accepts, the named one, or an
/// error naming what is missing or ambiguous.
fn one_column<'a>(
    rel: pg_sys::Oid,
    cols: &'a [Column],
    named: Option<&str>,
    what: &str,
    argument: &str,
    pick: impl Fn(&Column) -> bool,
) -> &'a Column {
    if let Some(n) = named {
        return match cols.iter().find(|c| c.name == n) {
            Some(c) if pick(c) => c,
            Some(c) => refuse(
                ErrorKind::DatatypeMismatch,
                &format!("the {what} column has the wrong type"),
                format!(
                    "Column {} of {} is {}.",
                    shown(n),
                    relation_name(rel),
                    c.type_name
                ),
                "See docs/search.md for the columns a search reads.",
            ),
            None => refuse(
                ErrorKind::UndefinedColumn,
                &format!("the {what} column does not exist"),
                format!("Table {} has no column {}.", relation_name(rel), shown(n)),
                "Name an existing column.",
            ),
        };
    }
    let found: Vec<&Column> = cols.iter().filter(|c| pick(c)).collect();
    match found.as_slice() {
        [one] => one,
        [] => refuse(
            ErrorKind::UndefinedColumn,
            &format!("the relation has no {what} column"),
            format!("Table {} has none.", relation_name(rel)),
            &format!("Name it with {argument} => ..., or see docs/search.md."),
        ),
        _ => refuse(
            ErrorKind::InvalidArgument,
            &format!("the relation has more than one {what} column"),
            format!("Table {} has {} of them.", relation_name(rel), found.len()),
            &format!("Name the one to search with {argument} => ...."),
        ),
    }
}

/// The chunk set-up whose chunk table is `rel`: the notes table and the
/// chunk trigger's arguments.
fn chunk_setup_of(rel: pg_sys::Oid) -> Option<(pg_sys::Oid, Vec<String>)> {
    embed_triggers(None)
        .into_iter()
        .filter(|t| t.function == CHUNKS_TRIGGER && t.args.len() >= 2)
        .find(|t| {
            select_one::<pg_sys::Oid>(
                clinembed_core::rows::statements::CHUNK_TABLE,
                &[t.args[1].as_str().into(), t.table.into()],
            ) == Some(rel)
        })
        .map(|t| (t.table, t.args))
}

/// Where a search of `rel` reads, from the catalog and the names given.
fn target(
    rel: pg_sys::Oid,
    named: &Named,
    language: &str,
    vectors_needed: bool,
) -> (Target, pg_sys::Oid) {
    let relkind = select_one::<String>(sql::RELKIND, &[rel.into()]).unwrap_or_default();
    if !matches!(relkind.as_str(), "r" | "p") {
        refuse(
            ErrorKind::Unsupported,
            "embed_search reads tables only",
            format!("{} is not a table.", relation_name(rel)),
            "Search the table that holds the notes or their chunk rows.",
        );
    }
    // A configuration that does not exist raises PostgreSQL's own error
    // (42704) here, before anything is read.
    let _ = select_one::<pg_sys::Oid>(sql::LANGUAGE, &[language.into()]);
    let (notes, chunks, trigger_args) = match chunk_setup_of(rel) {
        Some((notes, args)) => (notes, true, args),
        None => {
            let cols = columns_of(rel);
            let has_vector =
                named.vector.is_some() || cols.iter().any(|c| vector_kind(c).is_some());
            let triggers = embed_triggers(Some(rel));
            let chunked = triggers.iter().find(|t| t.function == CHUNKS_TRIGGER);
            match chunked {
                // A notes table without vectors of its own whose chunk
                // rows a chunk trigger keeps: search its chunk rows.
                Some(t) if !has_vector && t.args.len() >= 2 => {
                    let table = select_one::<pg_sys::Oid>(
                        clinembed_core::rows::statements::CHUNK_TABLE,
                        &[t.args[1].as_str().into(), rel.into()],
                    )
                    .unwrap_or_else(|| {
                        refuse(
                            ErrorKind::UndefinedTable,
                            "the chunk table does not exist",
                            format!(
                                "The chunk trigger of {} names {}.",
                                relation_name(rel),
                                shown(&t.args[1])
                            ),
                            "Create the chunk table (docs/long-notes.md, \"Chunk tables\").",
                        )
                    });
                    return target_of(
                        table,
                        rel,
                        true,
                        t.args.clone(),
                        named,
                        language,
                        vectors_needed,
                    );
                }
                _ => {
                    let args = triggers
                        .iter()
                        .find(|t| t.function != CHUNKS_TRIGGER)
                        .map(|t| t.args.clone())
                        .unwrap_or_default();
                    (rel, false, args)
                }
            }
        }
    };
    let vectors = rel;
    target_of(
        vectors,
        notes,
        chunks,
        trigger_args,
        named,
        language,
        vectors_needed,
    )
}

fn target_of(
    vectors: pg_sys::Oid,
    notes: pg_sys::Oid,
    chunks: bool,
    trigger_args: Vec<String>,
    named: &Named,
    language: &str,
    vectors_needed: bool,
) -> (Target, pg_sys::Oid) {
    // A vector trigger's arguments: (text, vector[, model]); a chunk
    // trigger's: (text, chunk table[, vector[, model]]).
    let (t_text, t_vector, t_model) = if chunks {
        (
            trigger_args.first().cloned(),
            Some(
                trigger_args
                    .get(2)
                    .cloned()
                    .unwrap_or_else(|| clinembed_core::rows::chunks::DEFAULT_VECTOR_COLUMN.into()),
            ),
            trigger_args.get(3).cloned(),
        )
    } else {
        (
            trigger_args.first().cloned(),
            trigger_args.get(1).cloned(),
            trigger_args.get(2).cloned(),
        )
    };
    let note_cols = columns_of(notes);
    let vec_cols = if chunks {
        columns_of(vectors)
    } else {
        note_cols.clone()
    };
    let text = one_column(
        notes,
        &note_cols,
        named.text.as_deref().or(t_text.as_deref()),
        "text",
        "text_column",
        is_text,
    )
    .name
    .clone();
    let keys = catalog::primary_key(notes).unwrap_or_else(|| {
        refuse(
            ErrorKind::InvalidTable,
            "embed_search needs a primary key",
            format!(
                "Table {} has none; a search names notes by their key.",
                relation_name(notes)
            ),
            "Add a primary key to the notes table.",
        )
    });
    let vector_col = named.vector.as_deref().or(t_vector.as_deref());
    let (vector, kind, type_schema) = if vectors_needed || vector_col.is_some() {
        let c = one_column(
            vectors,
            &vec_cols,
            vector_col,
            "vector",
            "vector_column",
            |c| vector_kind(c).is_some(),
        );
        (
            c.name.clone(),
            vector_kind(c).expect("picked"),
            Some(c.schema.clone()),
        )
    } else {
        // The lexical leg alone needs no vectors.
        (String::new(), VectorKind::Array, None)
    };
    let pgvector_schema = match (kind, type_schema) {
        (VectorKind::Native(_), Some(s)) => s,
        _ => select_one::<String>(sql::PGVECTOR_SCHEMA, &[]).unwrap_or_else(|| {
            if vectors_needed {
                refuse(
                    ErrorKind::Unsupported,
                    "vector search needs pgvector",
                    "Extension vector is not installed in this database.".into(),
                    "CREATE EXTENSION vector; or search with mode => 'lexical'.",
                )
            }
            String::new()
        }),
    };
    let model = named.model.clone().or(t_model);
    if let Some(m) = &model {
        one_column(
            vectors,
            &vec_cols,
            Some(m),
            "model",
            "model_column",
            is_text,
        );
    }
    let tsvector = match &named.tsvector {
        Some(n) => Some(
            one_column(
                notes,
                &note_cols,
                Some(n),
                "tsvector",
                "tsvector_column",
                |c| c.typname == "tsvector",
            )
            .name
            .clone(),
        ),
        None => {
            let all: Vec<&Column> = note_cols
                .iter()
                .filter(|c| c.typname == "tsvector")
                .collect();
            (all.len() == 1).then(|| all[0].name.clone())
        }
    };
    let t = Target {
        vectors: catalog::qualified(vectors),
        notes: catalog::qualified(notes),
        keys,
        vector,
        vector_kind: kind,
        pgvector_schema,
        model,
        chunks,
        text,
        tsvector,
        language: language.to_string(),
    };
    (t, notes)
}

/// Equality filters from a JSON object of column names and values, on
/// columns of the notes table.
fn filters(notes: pg_sys::Oid, filter: Option<&serde_json::Value>) -> (Vec<Filter>, Vec<String>) {
    let Some(v) = filter else {
        return (vec![], vec![]);
    };
    let Some(obj) = v.as_object() else {
        refuse(
            ErrorKind::InvalidArgument,
            "filter must be a JSON object",
            "It is not an object of column names and values.".into(),
            "filter => '{\"patient_id\": 42, \"note_type\": \"discharge\"}'",
        )
    };
    let cols = columns_of(notes);
    let mut fs = Vec::new();
    let mut values = Vec::new();
    for (name, value) in obj {
        let Some(c) = cols.iter().find(|c| &c.name == name) else {
            refuse(
                ErrorKind::UndefinedColumn,
                "a filter's column does not exist",
                format!(
                    "Table {} has no column {}.",
                    relation_name(notes),
                    shown(name)
                ),
                "Filters name columns of the notes table.",
            )
        };
        let text = match value {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::Bool(b) => Some(b.to_string()),
            _ => refuse(
                ErrorKind::InvalidArgument,
                "a filter's value must be a string, number, boolean or null",
                format!(
                    "The value for column {} is an array or an object.",
                    shown(name)
                ),
                "Filters are equalities, one value a column.",
            ),
        };
        fs.push(Filter {
            column: name.to_string(),
            type_name: c.type_name.clone(),
            is_null: text.is_none(),
        });
        values.extend(text);
    }
    (fs, values)
}

/// What one search asks, besides its relation.
struct Ask<'a> {
    query: &'a str,
    k: usize,
    mode: Mode,
    fusion: Fusion,
    model_id: Option<&'a str>,
    filters: &'a [Filter],
    values: &'a [String],
    /// How many of the fused notes the cross-encoder reorders (0: none).
    rerank: usize,
    /// The cross-encoder, when `rerank` is above 0.
    rerank_model: Option<&'a str>,
}

/// The query's vector, embedded once per search (and once per query in an
/// evaluation), with the model the relation's vectors carry.
struct QueryVector {
    identity: String,
    vector: Vec<f32>,
}

/// The model identity and dimensions of the first stored vector (of
/// `model_id`'s rows when given); None when no row has a vector.
fn probe(t: &Target, model_id: Option<&str>) -> Option<(Option<String>, i32)> {
    let sql = t.probe();
    let args: Vec<DatumWithOid<'_>> = if t.model.is_some() {
        vec![model_id.into()]
    } else {
        vec![]
    };
    let row = crate::pg::security::pinned(|| {
        Spi::connect(|c| {
            let r = c.select(&sql, Some(1), &args)?.first();
            if r.is_empty() {
                return Ok(None);
            }
            Ok::<_, pgrx::spi::Error>(Some((r.get::<String>(1)?, r.get::<i32>(2)?.unwrap_or(0))))
        })
    });
    row.unwrap_or_else(|e| report_spi(e))
}

fn report_spi(e: pgrx::spi::Error) -> ! {
    // An SPI error of a statement (a privilege, row-level security) has
    // been raised as a Postgres error already; this is for pgrx's own.
    report(
        Error::new(ErrorKind::Runtime, "a search statement failed")
            .detail(format!("SPI: {e}"))
            .hint("This is a bug in clinembed; please report it."),
    )
}

/// Embeds the query with the identity the stored vectors carry (or the
/// configured model where the relation keeps no identity).
fn embed_query(t: &Target, query: &str, model_id: Option<&str>) -> Option<QueryVector> {
    // A named identity is checked against the installed files first, so
    // one they do not have is refused even where no row carries it.
    let named = model_id.map(|id| (id.to_string(), query_vector(Some(id), query)));
    let (stored, dims) = probe(t, model_id)?;
    let (identity, vector) = match (named, stored) {
        (Some(n), _) => n,
        (None, Some(id)) => {
            let v = query_vector(Some(&id), query);
            (id, v)
        }
        (None, None) => (crate::backend::model_id(), query_vector(None, query)),
    };
    if vector.len() as i32 != dims {
        refuse(
            ErrorKind::DatatypeMismatch,
            "the query's vector does not fit the stored vectors",
            format!(
                "The query has {} dimensions with {identity}; the stored vectors have {dims}.",
                vector.len()
            ),
            "Store a model column beside the vectors, or configure the model they were made with.",
        );
    }
    Some(QueryVector { identity, vector })
}

/// A search query's vector for the stored vectors of identity `id` (the
/// configured model's without one): written as the model wants queries
/// (its `query_prefix`), by its query encoder where `clinembed.json` names
/// one (`query_model`), else by the model itself under the long-text
/// policy the identity names.
fn query_vector(id: Option<&str>, query: &str) -> Vec<f32> {
    use crate::backend::{using_model, vector_of};
    let query_model = match id {
        Some(id) => crate::api::embed::with_pinned(id, |e, _| Ok(e.info().query_model.clone())),
        None => using_model(None, |e| Ok(e.info().query_model.clone())),
    };
    if let Some(m) = query_model {
        return using_model(Some(&m), |e| {
            let q = e.query_text(query).into_owned();
            e.embed(&q)
        });
    }
    match id {
        Some(id) => crate::api::embed::with_pinned(id, |e, long_text| {
            let q = e.query_text(query).into_owned();
            vector_of(e, &q, long_text)
        }),
        None => {
            let long_text = crate::gucs::long_text();
            using_model(None, |e| {
                let q = e.query_text(query).into_owned();
                vector_of(e, &q, long_text)
            })
        }
    }
}

fn texts(v: Option<Vec<Option<String>>>) -> Vec<Option<String>> {
    v.unwrap_or_default()
}

/// The vector leg: notes by their best row's distance, `depth` of them.
fn vector_leg(t: &Target, q: &QueryVector, ask: &Ask<'_>, depth: usize) -> Vec<Candidate> {
    let by_model = ask.model_id.is_some();
    let mut limit = if t.chunks {
        rule::first_chunk_limit(depth)
    } else {
        depth
    };
    // Iterative index scans (pgvector 0.8): a filtered HNSW scan goes on
    // past ef_search until it has the rows asked for.  Rolled back after.
    let _settings = Settings::with(&[
        ("search_path", clinembed_core::PINNED_SEARCH_PATH),
        ("hnsw.iterative_scan", "relaxed_order"),
    ]);
    let mut exact = false;
    loop {
        let sql = t.vector_leg(by_model, ask.filters, exact);
        let mut args: Vec<DatumWithOid<'_>> = vec![q.vector.clone().into(), (limit as i64).into()];
        if by_model {
            args.push(ask.model_id.into());
        }
        for v in ask.values {
            args.push(v.as_str().into());
        }
        let rows: Vec<(Candidate, Option<String>)> = Spi::connect(|c| {
            c.select(&sql, None, &args)?
                .map(|r| {
                    let chunk = r.get::<i32>(2)?;
                    let span = chunk.map(|chunk| Span {
                        chunk,
                        section: r.get::<String>(3).ok().flatten(),
                        char_start: r.get::<i32>(4).ok().flatten().unwrap_or(0),
                        char_end: r.get::<i32>(5).ok().flatten().unwrap_or(0),
                    });
                    Ok((
                        Candidate {
                            key: texts(r.get::<Vec<Option<String>>>(1)?),
                            score: r.get::<f64>(6)?.unwrap_or(f64::INFINITY),
                            span,
                        },
                        r.get::<String>(7)?,
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
        .unwrap_or_else(|e| report_spi(e));
        let n = rows.len();
        if !by_model {
            rule::check_models(
                &q.identity,
                rows.iter().map(|(_, m)| m.as_deref()),
                &t.vectors,
            )
            .or_report();
        }
        let notes = rule::collapse(rows.into_iter().map(|(c, _)| c).collect(), true);
        if n < limit && !exact {
            // An index scan can stop early (hnsw.max_scan_tuples); read
            // exactly whether more rows match.
            exact = true;
            continue;
        }
        match rule::next_chunk_limit(limit, n, notes.len(), depth) {
            Some(next) if t.chunks => limit = next,
            _ => return notes.into_iter().take(depth).collect(),
        }
    }
}

/// The lexical leg: notes by text rank, `depth` of them.
fn lexical_leg(t: &Target, ask: &Ask<'_>, depth: usize) -> Vec<Candidate> {
    let sql = t.lexical_leg(ask.filters);
    let mut args: Vec<DatumWithOid<'_>> = vec![ask.query.into(), (depth as i64).into()];
    for v in ask.values {
        args.push(v.as_str().into());
    }
    crate::pg::security::pinned(|| {
        Spi::connect(|c| {
            c.select(&sql, None, &args)?
                .map(|r| {
                    Ok(Candidate {
                        key: texts(r.get::<Vec<Option<String>>>(1)?),
                        score: r.get::<f64>(2)?.unwrap_or(0.0),
                        span: None,
                    })
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_else(|e| report_spi(e))
}

/// The best chunk row by text rank of each note in `found` that has no
/// span yet (a chunk table's notes the vector leg did not find).
fn fill_lexical_spans(t: &Target, query: &str, found: &mut [Found]) {
    if !t.chunks {
        return;
    }
    let missing: Vec<usize> = (0..found.len())
        .filter(|&i| found[i].span.is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); t.keys.len()];
    for &i in &missing {
        for (c, part) in columns.iter_mut().zip(found[i].key.iter()) {
            c.push(part.clone());
        }
    }
    let sql = t.lexical_spans();
    let mut args: Vec<DatumWithOid<'_>> = vec![query.into()];
    for c in columns {
        args.push(c.into());
    }
    let spans: HashMap<Vec<Option<String>>, Span> = crate::pg::security::pinned(|| {
        Spi::connect(|c| {
            c.select(&sql, None, &args)?
                .map(|r| {
                    Ok((
                        texts(r.get::<Vec<Option<String>>>(1)?),
                        Span {
                            chunk: r.get::<i32>(2)?.unwrap_or(0),
                            section: r.get::<String>(3)?,
                            char_start: r.get::<i32>(4)?.unwrap_or(0),
                            char_end: r.get::<i32>(5)?.unwrap_or(0),
                        },
                    ))
                })
                .collect::<Result<HashMap<_, _>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_else(|e| report_spi(e));
    for i in missing {
        found[i].span = spans.get(&found[i].key).cloned();
    }
}

/// One search: the legs the mode asks for, fused, collapsed, reranked
/// when asked, cut at k.  `q` is the query's vector when the caller has it
/// already.
fn search(t: &Target, ask: &Ask<'_>, q: &mut Option<Option<QueryVector>>) -> Vec<Found> {
    let depth = rule::leg_depth(ask.k, ask.rerank);
    let vector = if ask.mode.uses_vectors() {
        let qv = q.get_or_insert_with(|| embed_query(t, ask.query, ask.model_id));
        match qv {
            Some(qv) => vector_leg(t, qv, ask, depth),
            None => vec![],
        }
    } else {
        vec![]
    };
    let lexical = if ask.mode.uses_text() {
        lexical_leg(t, ask, depth)
    } else {
        vec![]
    };
    let mut found = rule::fuse(&vector, &lexical, &ask.fusion);
    found.truncate(ask.k.max(ask.rerank));
    fill_lexical_spans(t, ask.query, &mut found);
    if ask.rerank > 0 && !found.is_empty() {
        let model = ask
            .rerank_model
            .expect("a reranker is named when rerank > 0");
        let head = ask.rerank.min(found.len());
        let texts = note_texts(t, &found[..head]);
        let items: Vec<Option<&str>> = found[..head]
            .iter()
            .map(|f| {
                texts
                    .get(&f.key)
                    .map(|text| rule::span_text(text, f.span.as_ref()))
            })
            .collect();
        let scores: Vec<f32> = crate::api::rerank::scores(model, ask.query, &items)
            .into_iter()
            .map(|s| s.unwrap_or(f32::NEG_INFINITY))
            .collect();
        found = rule::rerank_order(found, head, &scores);
    }
    found.truncate(ask.k);
    found
}

/// The text of each note of `found`, by key, as the calling role reads it.
fn note_texts(t: &Target, found: &[Found]) -> HashMap<Vec<Option<String>>, String> {
    let mut columns: Vec<Vec<Option<String>>> = vec![Vec::new(); t.keys.len()];
    for f in found {
        for (c, part) in columns.iter_mut().zip(f.key.iter()) {
            c.push(part.clone());
        }
    }
    let sql = t.note_texts();
    let args: Vec<DatumWithOid<'_>> = columns.into_iter().map(|c| c.into()).collect();
    crate::pg::security::pinned(|| {
        Spi::connect(|c| {
            c.select(&sql, None, &args)?
                .map(|r| {
                    Ok((
                        texts(r.get::<Vec<Option<String>>>(1)?),
                        r.get::<String>(2)?.unwrap_or_default(),
                    ))
                })
                .collect::<Result<HashMap<_, _>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_else(|e| report_spi(e))
}

/// The notes nearest `query` in `relation` (a notes table with a vector
/// column, or a chunk table, or a notes table whose chunk table a chunk
/// trigger keeps), best first, each note once: its key (as text, one
/// element per key column), the fused score, its rank in each leg, the
/// cosine distance of its best row, and its best chunk row's span.  Runs
/// as the calling role (its privileges, row-level security).  See
/// docs/search.md.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(stable, parallel_restricted, cost = 10000, name = "_embed_search")]
fn embed_search_impl(
    relation: Option<pg_sys::Oid>,
    query: Option<&str>,
    k: Option<i32>,
    mode: Option<&str>,
    filter: Option<JsonB>,
    rrf_k: Option<f64>,
    vector_weight: Option<f64>,
    lexical_weight: Option<f64>,
    language: Option<&str>,
    model_id: Option<&str>,
    text_column: Option<&str>,
    vector_column: Option<&str>,
    model_column: Option<&str>,
    tsvector_column: Option<&str>,
    rerank: Option<i32>,
    rerank_model: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(key, Vec<Option<String>>),
        name!(score, f64),
        name!(vector_rank, Option<i32>),
        name!(lexical_rank, Option<i32>),
        name!(distance, Option<f64>),
        name!(chunk, Option<i32>),
        name!(section, Option<String>),
        name!(char_start, Option<i32>),
        name!(char_end, Option<i32>),
        name!(rerank_score, Option<f32>),
    ),
> {
    // NULL arguments take the defaults, defined once in the core.
    let (Some(relation), Some(query)) = (relation, query) else {
        return TableIterator::new(Vec::new());
    };
    let mode = mode.map_or(Ok(rule::DEFAULT_MODE), Mode::parse).or_report();
    let (k, rerank) = rule::check_k(
        i64::from(k.unwrap_or(rule::DEFAULT_K as i32)),
        i64::from(rerank.unwrap_or(0)),
    )
    .or_report();
    let rerank_model = (rerank > 0).then(|| crate::api::rerank::reranker(rerank_model));
    let fusion = Fusion::new(
        rrf_k.unwrap_or(rule::DEFAULT_RRF_K),
        vector_weight.unwrap_or(rule::DEFAULT_LEG_WEIGHT),
        lexical_weight.unwrap_or(rule::DEFAULT_LEG_WEIGHT),
    )
    .or_report();
    let language = language.unwrap_or(rule::DEFAULT_LANGUAGE);
    let named = Named {
        text: text_column.map(str::to_string),
        vector: vector_column.map(str::to_string),
        model: model_column.map(str::to_string),
        tsvector: tsvector_column.map(str::to_string),
    };
    let (t, notes) = target(relation, &named, language, mode.uses_vectors());
    if model_id.is_some() && t.model.is_none() {
        refuse(
            ErrorKind::InvalidArgument,
            "model_id needs a model column",
            format!("{} keeps no model identity beside its vectors.", t.vectors),
            "Name it with model_column => ..., or leave model_id out.",
        );
    }
    let (fs, values) = filters(notes, filter.as_ref().map(|j| &j.0));
    let ask = Ask {
        query,
        k,
        mode,
        fusion,
        model_id,
        filters: &fs,
        values: &values,
        rerank,
        rerank_model: rerank_model.as_deref(),
    };
    let found = search(&t, &ask, &mut None);
    TableIterator::new(found.into_iter().map(|f| {
        let (chunk, section, start, end) = match f.span {
            Some(s) => (
                Some(s.chunk),
                s.section,
                Some(s.char_start),
                Some(s.char_end),
            ),
            None => (None, None, None, None),
        };
        (
            f.key,
            f.score,
            f.vector_rank.map(|r| r as i32),
            f.lexical_rank.map(|r| r as i32),
            f.distance,
            chunk,
            section,
            start,
            end,
            f.rerank_score,
        )
    }))
}

/// Recall, MRR and nDCG at `k` of each mode over the labelled queries of
/// `pairs` (a `query` text column and the notes' key columns, one row per
/// relevant note), for each relation of `relations` with the model its
/// vectors carry.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_restricted, cost = 10000, name = "_embed_eval")]
fn embed_eval_impl(
    pairs: Option<pg_sys::Oid>,
    relations: Option<Vec<Option<i64>>>,
    k: Option<i32>,
    modes: Option<Vec<String>>,
    language: Option<&str>,
    rerank: Option<i32>,
    rerank_model: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(relation, String),
        name!(model, Option<String>),
        name!(mode, String),
        name!(queries, i32),
        name!(recall, Option<f64>),
        name!(mrr, Option<f64>),
        name!(ndcg, Option<f64>),
    ),
> {
    let (k, rerank) = rule::check_k(
        i64::from(k.unwrap_or(rule::DEFAULT_K as i32)),
        i64::from(rerank.unwrap_or(0)),
    )
    .or_report();
    // (name, mode, notes reranked): each mode asked for, and hybrid
    // reranked when a rerank depth is given.
    let mut runs: Vec<(String, Mode, usize)> = match modes {
        Some(m) => m
            .iter()
            .map(|m| Mode::parse(m).or_report())
            .map(|m| (m.name().to_string(), m, 0))
            .collect(),
        None => Mode::ALL
            .iter()
            .map(|&m| (m.name().to_string(), m, 0))
            .collect(),
    };
    let rerank_model = (rerank > 0).then(|| crate::api::rerank::reranker(rerank_model));
    if rerank > 0 {
        runs.push((rule::RERANKED_MODE.to_string(), Mode::Hybrid, rerank));
    }
    let language = language.unwrap_or(rule::DEFAULT_LANGUAGE);
    let (Some(pairs), Some(relations)) = (pairs, relations) else {
        return TableIterator::new(Vec::new());
    };
    let mut out = Vec::new();
    for rel in relations.into_iter().flatten() {
        let rel = pg_sys::Oid::from(rel as u32);
        let (t, _) = target(
            rel,
            &Named::default(),
            language,
            runs.iter().any(|(_, m, _)| m.uses_vectors()),
        );
        let labels = labelled(pairs, &t);
        let mut totals: Vec<Totals> = vec![Totals::default(); runs.len()];
        let mut identity = None;
        for (query, relevant) in &labels {
            let mut q = None;
            for ((_, mode, rerank), total) in runs.iter().zip(totals.iter_mut()) {
                let ask = Ask {
                    query,
                    k,
                    mode: *mode,
                    fusion: Fusion::default(),
                    model_id: None,
                    filters: &[],
                    values: &[],
                    rerank: *rerank,
                    rerank_model: rerank_model.as_deref(),
                };
                let found = search(&t, &ask, &mut q);
                let ranked: Vec<Vec<Option<String>>> = found.into_iter().map(|f| f.key).collect();
                total.add(&ranked, relevant, k);
            }
            if let Some(Some(qv)) = &q {
                identity.get_or_insert_with(|| qv.identity.clone());
            }
        }
        for ((name, mode, _), total) in runs.iter().zip(totals) {
            out.push((
                relation_name(rel),
                mode.uses_vectors().then(|| identity.clone()).flatten(),
                name.clone(),
                total.queries as i32,
                total.recall(),
                total.mrr(),
                total.ndcg(),
            ));
        }
    }
    TableIterator::new(out)
}

/// The labelled queries of `pairs`: each query with its relevant notes'
/// keys, in the order the queries first appear.
fn labelled(pairs: pg_sys::Oid, t: &Target) -> Vec<(String, HashSet<Vec<Option<String>>>)> {
    let cols = columns_of(pairs);
    for needed in std::iter::once("query").chain(t.keys.iter().map(|(k, _)| k.as_str())) {
        if !cols.iter().any(|c| c.name == needed) {
            refuse(
                ErrorKind::UndefinedColumn,
                "the pairs table lacks a column",
                format!("Table {} has no column {}.", relation_name(pairs), shown(needed)),
                "It needs a query text column and the notes' key columns, one row per relevant note.",
            );
        }
    }
    let stmt = sql::pairs(&catalog::qualified(pairs), &t.keys);
    let rows: Vec<(String, Vec<Option<String>>)> = crate::pg::security::pinned(|| {
        Spi::connect(|c| {
            c.select(&stmt, None, &[])?
                .map(|r| Ok((r.get::<String>(1)?.unwrap_or_default(), texts(r.get(2)?))))
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_else(|e| report_spi(e));
    let mut out: Vec<(String, HashSet<Vec<Option<String>>>)> = Vec::new();
    for (q, key) in rows {
        match out.last_mut() {
            Some((last, set)) if *last == q => {
                set.insert(key);
            }
            _ => out.push((q, HashSet::from([key]))),
        }
    }
    out
}

extension_sql!(
    r#"
-- SELECT * FROM embed_search('notes', 'query', 10): the notes nearest a
-- query, by vectors and text fused (docs/search.md).  A NULL argument
-- takes its default: k 10, mode 'hybrid', rrf_k 60, weights 1, language
-- 'english', rerank 0 (none).  SECURITY INVOKER: it reads as the calling
-- role.
CREATE FUNCTION @extschema@.embed_search(
    relation pg_catalog.regclass, query text, k integer DEFAULT NULL,
    mode text DEFAULT NULL, filter jsonb DEFAULT NULL,
    rrf_k double precision DEFAULT NULL, vector_weight double precision DEFAULT NULL,
    lexical_weight double precision DEFAULT NULL, language text DEFAULT NULL,
    model_id text DEFAULT NULL, text_column text DEFAULT NULL,
    vector_column text DEFAULT NULL, model_column text DEFAULT NULL,
    tsvector_column text DEFAULT NULL, rerank integer DEFAULT NULL,
    rerank_model text DEFAULT NULL)
RETURNS TABLE (key text[], score double precision, vector_rank integer,
    lexical_rank integer, distance double precision, chunk integer,
    section text, char_start integer, char_end integer, rerank_score real)
LANGUAGE sql STABLE PARALLEL RESTRICTED COST 10000 ROWS 10
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._embed_search(relation::pg_catalog.oid, query, k,
    mode, filter, rrf_k, vector_weight, lexical_weight, language, model_id,
    text_column, vector_column, model_column, tsvector_column, rerank,
    rerank_model) $$;

-- SELECT * FROM embed_eval('eval_pairs', ARRAY['notes']::regclass[]):
-- recall, MRR and nDCG at k of each mode on labelled queries
-- (docs/search.md).  NULL: k 10, every mode, language 'english'; with
-- rerank => n, also hybrid with its first n notes reranked.
CREATE FUNCTION @extschema@.embed_eval(
    pairs pg_catalog.regclass, relations pg_catalog.regclass[], k integer DEFAULT NULL,
    modes text[] DEFAULT NULL, language text DEFAULT NULL,
    rerank integer DEFAULT NULL, rerank_model text DEFAULT NULL)
RETURNS TABLE (relation text, model text, mode text, queries integer,
    recall double precision, mrr double precision, ndcg double precision)
LANGUAGE sql STABLE PARALLEL RESTRICTED COST 1000000
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._embed_eval(pairs::pg_catalog.oid,
    relations::pg_catalog.oid[]::pg_catalog.int8[], k, modes, language,
    rerank, rerank_model) $$;
"#,
    name = "search_sql",
    requires = [embed_search_impl, embed_eval_impl]
);
