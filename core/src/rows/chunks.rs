//! Chunk rows kept in sync with their notes: what `embed_chunks_trigger`
//! and the queue workers decide, free of Postgres.  A notes table's row is
//! cut into windows inside its sections (`embed_chunks`), and each window
//! is one row of a chunk table that holds the note's key columns, the
//! columns named here, and a vector column.  The trigger deletes a note's
//! chunk rows when its text or key changes (in the writing transaction)
//! and queues its key; a worker writes the new rows.

use super::columns::{ColumnType, Target};
use super::statements::{keys_as_text, quote_ident, quote_literal};
use crate::error::{Error, ErrorKind, Result};

/// The chunk table's columns beside the note's key columns and the vector:
/// the window's number in its note (from 1), its section's canonical name
/// (NULL before the first header), its character span in the note's text,
/// and its token count without special tokens.  The same as `embed_chunks`
/// returns.
pub const CHUNK: &str = "chunk";
pub const SECTION: &str = "section";
pub const CHAR_START: &str = "char_start";
pub const CHAR_END: &str = "char_end";
pub const TOKENS: &str = "tokens";
/// The vector column when the trigger names none.
pub const DEFAULT_VECTOR_COLUMN: &str = "embedding";

/// The integer columns, in the order the insert writes them.
const INTEGER_COLUMNS: [&str; 4] = [CHUNK, CHAR_START, CHAR_END, TOKENS];

/// How a row of the notes table was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

/// What the trigger does for one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkWork {
    /// Delete the chunk rows of OLD's key (UPDATE, DELETE).
    pub delete_old: bool,
    /// Delete the chunk rows of NEW's key (INSERT, or an UPDATE that
    /// changes the key): rows left by a note of the same key that went
    /// without its chunk rows, which were not cut from this text.
    pub delete_new: bool,
    /// Queue NEW's key: a text to cut and embed.
    pub enqueue: bool,
}

/// The trigger's rule.  `has_text`: NEW's text is not NULL;
/// `text_changed`, `key_changed`: UPDATE changed them.  An UPDATE that
/// changes neither writes nothing.
pub fn chunk_work(op: Op, has_text: bool, text_changed: bool, key_changed: bool) -> ChunkWork {
    match op {
        // Queued even without text: an INSERT ... ON CONFLICT that goes on
        // to do nothing has deleted the stored note's chunk rows, and the
        // worker writes them again from the text the note still has.
        Op::Insert => ChunkWork {
            delete_old: false,
            delete_new: true,
            enqueue: true,
        },
        Op::Update => {
            let changed = text_changed || key_changed;
            ChunkWork {
                delete_old: changed,
                delete_new: key_changed,
                enqueue: changed && has_text,
            }
        }
        Op::Delete => ChunkWork {
            delete_old: true,
            delete_new: false,
            enqueue: false,
        },
    }
}

/// The chunk table's checks: the notes table's key columns with the same
/// types, the integer columns, a text `section` column, the vector column
/// (`real[]`, `vector` or `halfvec`) and the model column (text) when one
/// is named.  `lookup` reads a column of the chunk table; `table` names it
/// for messages.  Returns how to cast a `real[]` into the vector column.
pub fn check_chunk_table(
    table: impl Fn() -> String,
    keys: &[(String, String)],
    vector: &str,
    model: Option<&str>,
    shown: impl Fn(&str) -> String,
    lookup: impl Fn(&str) -> Option<ColumnType>,
) -> Result<Target> {
    let missing = |name: &str, wanted: &str| {
        Error::new(ErrorKind::UndefinedColumn, "the chunk table lacks a column")
            .detail(format!(
                "Chunk table {} has no column {} ({wanted}).",
                table(),
                shown(name)
            ))
            .hint(CHUNK_TABLE_HINT)
    };
    let mistyped = |name: &str, found: &str, wanted: &str| {
        Error::new(
            ErrorKind::DatatypeMismatch,
            "a column of the chunk table has the wrong type",
        )
        .detail(format!(
            "Column {} of chunk table {} is {found}; it must be {wanted}.",
            shown(name),
            table()
        ))
        .hint(CHUNK_TABLE_HINT)
    };
    for (name, ty) in keys {
        let c = lookup(name).ok_or_else(|| missing(name, &format!("the note's key, {ty}")))?;
        if &c.name != ty {
            return Err(mistyped(name, &c.name, ty));
        }
    }
    for name in INTEGER_COLUMNS {
        let c = lookup(name).ok_or_else(|| missing(name, "integer"))?;
        if !matches!(c.typname.as_str(), "int4" | "int8") {
            return Err(mistyped(name, &c.name, "integer or bigint"));
        }
    }
    for name in std::iter::once(SECTION).chain(model) {
        let c = lookup(name).ok_or_else(|| missing(name, "text"))?;
        if c.category != 'S' {
            return Err(mistyped(name, &c.name, "text"));
        }
    }
    let c = lookup(vector).ok_or_else(|| missing(vector, "real[], vector or halfvec"))?;
    let target = match c.typname.as_str() {
        "_float4" => Target {
            type_name: "real[]".into(),
            dims: None,
        },
        "vector" | "halfvec" => Target {
            type_name: c.name.clone(),
            dims: (c.typmod != -1).then_some(c.typmod),
        },
        _ => return Err(mistyped(vector, &c.name, "real[], vector or halfvec")),
    };
    let named: Vec<&str> = keys
        .iter()
        .map(|k| k.0.as_str())
        .chain(INTEGER_COLUMNS)
        .chain([SECTION, vector])
        .collect();
    if let Some(m) = model.filter(|m| named.contains(m)) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "the chunk table's model column must be a column of its own",
        )
        .detail(format!(
            "Column {} of chunk table {} is also a key, chunk or vector column.",
            shown(m),
            table()
        ))
        .hint(CHUNK_TABLE_HINT));
    }
    if named[..keys.len()]
        .iter()
        .any(|k| named[keys.len()..].contains(k))
    {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "a key column of the notes table has the name of a chunk column",
        )
        .detail(format!(
            "The notes table's key columns and the chunk columns of {} share a name.",
            table()
        ))
        .hint("Rename the key column, or the vector column the trigger names."));
    }
    Ok(target)
}

const CHUNK_TABLE_HINT: &str = "A chunk table holds the notes table's primary key columns (same names and types), chunk, char_start, char_end and tokens (integer), section (text) and the vector column (real[], vector or halfvec); see docs/long-notes.md.";

/// The chunk table's columns that the statements name, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkColumns {
    /// The notes table's key columns and their types (`format_type`).
    pub keys: Vec<(String, String)>,
    pub vector: String,
    pub model: Option<String>,
}

/// Deletes the chunk rows of some notes: `$1`, `$2`, ... are `text[]`s, one
/// per key column, the notes' keys as text in order.  `table` is qualified
/// and quoted.
pub fn chunk_delete(table: &str, cols: &ChunkColumns) -> String {
    let (args, names, matched) =
        keys_as_text(&cols.keys, |i| i + 1, "c", "q", "OPERATOR(pg_catalog.=)");
    format!("DELETE FROM {table} c USING ROWS FROM ({args}) AS q({names}) WHERE {matched}")
}

/// Inserts chunk rows: `$1` .. `$k` the key columns as text (one element a
/// row), then `int4[]`s of chunk, char_start, char_end and tokens, a
/// `text[]` of sections, the rows' vectors one after another (`real[]`),
/// their dimensions, and the model identity.
pub fn chunk_insert(table: &str, cols: &ChunkColumns, target_type: &str) -> String {
    let k = cols.keys.len();
    let mut names: Vec<String> = cols.keys.iter().map(|c| quote_ident(&c.0)).collect();
    names.extend(INTEGER_COLUMNS.iter().map(|c| quote_ident(c)));
    names.push(quote_ident(SECTION));
    names.push(quote_ident(&cols.vector));
    let mut values: Vec<String> = cols
        .keys
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("q.k{}::{ty}", i + 1))
        .collect();
    values.extend((1..=INTEGER_COLUMNS.len()).map(|i| format!("q.n{i}")));
    values.push("q.s".into());
    let (flat, dims, model) = (k + 6, k + 7, k + 8);
    values.push(format!(
        "(${flat}::pg_catalog.float4[])[((q.ord OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog.*) ${dims} OPERATOR(pg_catalog.+) 1)::pg_catalog.int4 : (q.ord OPERATOR(pg_catalog.*) ${dims})::pg_catalog.int4]::{target_type}"
    ));
    if let Some(m) = &cols.model {
        names.push(quote_ident(m));
        values.push(format!("${model}::pg_catalog.text"));
    }
    let mut unnest: Vec<String> = (1..=k)
        .map(|i| format!("pg_catalog.unnest(${i}::pg_catalog.text[])"))
        .collect();
    unnest.extend((k + 1..=k + 4).map(|i| format!("pg_catalog.unnest(${i}::pg_catalog.int4[])")));
    unnest.push(format!("pg_catalog.unnest(${}::pg_catalog.text[])", k + 5));
    let mut q: Vec<String> = (1..=k).map(|i| format!("k{i}")).collect();
    q.extend((1..=INTEGER_COLUMNS.len()).map(|i| format!("n{i}")));
    q.push("s".into());
    q.push("ord".into());
    // the model parameter is named even without a model column, so every
    // call passes the same parameters
    let unused = if cols.model.is_none() {
        format!(" WHERE ${model}::pg_catalog.text IS NULL OR true")
    } else {
        String::new()
    };
    format!(
        "INSERT INTO {table} ({}) SELECT {} FROM ROWS FROM ({}) WITH ORDINALITY AS q({}){unused}",
        names.join(", "),
        values.join(", "),
        unnest.join(", "),
        q.join(", ")
    )
}

/// The statement `embed_queue_enqueue` queues a notes table's stored rows
/// with: a note whose text has no chunk rows, or chunk rows of another
/// model (with a model column); a note without text that has chunk rows.
/// Keys already queued stay as they are.
#[allow(clippy::too_many_arguments)]
pub fn enqueue_stored_chunks(
    notes: &str,
    relid: u32,
    pkey: u32,
    schema: &str,
    source: &str,
    chunks: &str,
    cols: &ChunkColumns,
    model_id: &str,
) -> String {
    let key = cols
        .keys
        .iter()
        .map(|k| format!("t.{}::pg_catalog.text", quote_ident(&k.0)))
        .collect::<Vec<_>>()
        .join(", ");
    let matched = cols
        .keys
        .iter()
        .map(|(k, _)| {
            let k = quote_ident(k);
            format!("c.{k} OPERATOR(pg_catalog.=) t.{k}")
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    let source = quote_ident(source);
    let (current, other) = match &cols.model {
        Some(m) => {
            let (m, id) = (quote_ident(m), quote_literal(model_id));
            (
                format!(" AND c.{m} OPERATOR(pg_catalog.=) {id}"),
                format!(" OR c.{m} IS DISTINCT FROM {id}"),
            )
        }
        None => (String::new(), String::new()),
    };
    format!(
        "INSERT INTO {schema}.embed_queue (relid, key, pkey) \
         SELECT {relid}::pg_catalog.oid, ARRAY[{key}], {pkey}::pg_catalog.oid FROM ONLY {notes} t \
         WHERE (t.{source} IS NOT NULL AND NOT EXISTS (SELECT FROM {chunks} c WHERE {matched}{current})) \
         OR EXISTS (SELECT FROM {chunks} c WHERE {matched} AND (t.{source} IS NULL{other})) \
         ON CONFLICT (relid, key) DO NOTHING"
    )
}

/// The statement `embed_chunk_coverage` reads a notes table (itself only)
/// with: each note's key as text, its text, and the character spans of its
/// chunk rows (`int4[]`s, NULL without rows).
pub fn coverage_statement(notes: &str, source: &str, chunks: &str, cols: &ChunkColumns) -> String {
    let key = cols
        .keys
        .iter()
        .map(|k| format!("t.{}::pg_catalog.text", quote_ident(&k.0)))
        .collect::<Vec<_>>()
        .join(", ");
    let matched = cols
        .keys
        .iter()
        .map(|(k, _)| {
            let k = quote_ident(k);
            format!("c.{k} OPERATOR(pg_catalog.=) t.{k}")
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    format!(
        "SELECT ARRAY[{key}], t.{}::pg_catalog.text, w.starts, w.ends FROM ONLY {notes} t \
         LEFT JOIN LATERAL (SELECT pg_catalog.array_agg(c.{}::pg_catalog.int4 ORDER BY c.{}) AS starts, \
         pg_catalog.array_agg(c.{}::pg_catalog.int4 ORDER BY c.{}) AS ends \
         FROM {chunks} c WHERE {matched}) w ON true ORDER BY 1",
        quote_ident(source),
        quote_ident(CHAR_START),
        quote_ident(CHUNK),
        quote_ident(CHAR_END),
        quote_ident(CHUNK),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, typname: &str, category: char, typmod: i32) -> ColumnType {
        ColumnType {
            name: name.into(),
            typname: typname.into(),
            category,
            typmod,
        }
    }

    fn lookup<'a>(
        drop: &'a str,
        retype: Option<(&'a str, ColumnType)>,
    ) -> impl Fn(&str) -> Option<ColumnType> + 'a {
        move |n: &str| {
            if n == drop {
                return None;
            }
            if let Some((r, t)) = &retype {
                if *r == n {
                    return Some(t.clone());
                }
            }
            Some(match n {
                "id" => col("bigint", "int8", 'N', -1),
                "section" => col("text", "text", 'S', -1),
                "model" => col("text", "text", 'S', -1),
                "embedding" => col("vector(384)", "vector", 'U', 384),
                _ => col("integer", "int4", 'N', -1),
            })
        }
    }

    fn keys() -> Vec<(String, String)> {
        vec![("id".into(), "bigint".into())]
    }

    #[test]
    fn the_rule_deletes_before_it_queues_and_writes_nothing_for_other_columns() {
        use Op::*;
        let w = |delete_old, delete_new, enqueue| ChunkWork {
            delete_old,
            delete_new,
            enqueue,
        };
        assert_eq!(chunk_work(Insert, true, false, false), w(false, true, true));
        assert_eq!(
            chunk_work(Insert, false, false, false),
            w(false, true, true)
        );
        assert_eq!(chunk_work(Update, true, true, false), w(true, false, true));
        assert_eq!(
            chunk_work(Update, false, true, false),
            w(true, false, false)
        );
        assert_eq!(chunk_work(Update, true, false, true), w(true, true, true));
        assert_eq!(
            chunk_work(Update, true, false, false),
            w(false, false, false)
        );
        assert_eq!(
            chunk_work(Delete, false, false, false),
            w(true, false, false)
        );
    }

    #[test]
    fn the_chunk_table_is_checked_column_by_column() {
        let t = || "note_chunks".to_string();
        let shown = |s: &str| s.to_string();
        let ok = check_chunk_table(
            t,
            &keys(),
            "embedding",
            Some("model"),
            shown,
            lookup("", None),
        )
        .unwrap();
        assert_eq!(ok.type_name, "vector(384)");
        assert_eq!(ok.dims, Some(384));
        for (drop, kind) in [
            ("id", ErrorKind::UndefinedColumn),
            ("chunk", ErrorKind::UndefinedColumn),
            ("section", ErrorKind::UndefinedColumn),
            ("embedding", ErrorKind::UndefinedColumn),
            ("model", ErrorKind::UndefinedColumn),
        ] {
            let e = check_chunk_table(
                t,
                &keys(),
                "embedding",
                Some("model"),
                shown,
                lookup(drop, None),
            )
            .unwrap_err();
            assert_eq!(e.kind, kind, "{drop}");
            assert!(e.detail.as_deref().unwrap().contains(drop), "{drop}");
        }
        for (name, wrong) in [
            ("id", col("integer", "int4", 'N', -1)),
            ("tokens", col("real", "float4", 'N', -1)),
            ("section", col("integer", "int4", 'N', -1)),
            ("embedding", col("text", "text", 'S', -1)),
        ] {
            let e = check_chunk_table(
                t,
                &keys(),
                "embedding",
                None,
                shown,
                lookup("", Some((name, wrong))),
            )
            .unwrap_err();
            assert_eq!(e.kind, ErrorKind::DatatypeMismatch, "{name}");
        }
        let e = check_chunk_table(
            t,
            &keys(),
            "embedding",
            Some("section"),
            shown,
            lookup("", None),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        let clash = vec![("chunk".to_string(), "integer".to_string())];
        let e =
            check_chunk_table(t, &clash, "embedding", None, shown, lookup("", None)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn statements_join_keys_by_their_types_and_name_every_parameter() {
        let cols = ChunkColumns {
            keys: vec![
                ("site".into(), "text".into()),
                ("note id".into(), "bigint".into()),
            ],
            vector: "embedding".into(),
            model: None,
        };
        let d = chunk_delete("public.note_chunks", &cols);
        assert!(
            d.contains("c.\"site\" OPERATOR(pg_catalog.=) q.k1::text"),
            "{d}"
        );
        assert!(
            d.contains("c.\"note id\" OPERATOR(pg_catalog.=) q.k2::bigint"),
            "{d}"
        );
        assert_eq!(super::super::statements::parameters(&d), (2, true));
        for model in [None, Some("model".to_string())] {
            let cols = ChunkColumns {
                model: model.clone(),
                ..cols.clone()
            };
            let i = chunk_insert("public.note_chunks", &cols, "vector(384)");
            assert_eq!(super::super::statements::parameters(&i), (10, true), "{i}");
            assert!(i.contains("q.k2::bigint"), "{i}");
            assert_eq!(
                i.contains("\"model\"") || i.contains(", model)"),
                model.is_some(),
                "{i}"
            );
            assert!(i.contains("::vector(384)"));
        }
        let e = enqueue_stored_chunks(
            "public.notes",
            7,
            8,
            "clinembed",
            "exp_text",
            "public.note_chunks",
            &ChunkColumns {
                model: Some("model".into()),
                ..cols
            },
            "m@0123",
        );
        assert!(
            e.contains("t.\"exp_text\" IS NOT NULL AND NOT EXISTS"),
            "{e}"
        );
        assert!(e.contains("c.\"model\" IS DISTINCT FROM 'm@0123'"), "{e}");
        assert!(e.contains("ON CONFLICT (relid, key) DO NOTHING"));
    }
}
