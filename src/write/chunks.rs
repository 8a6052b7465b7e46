//! Chunk rows kept in sync with their notes (docs/long-notes.md, "Chunk
//! tables"): `embed_chunks_trigger`, the chunk table's checks, and the
//! write a queue worker makes for a batch of notes.  What is decided is in
//! `clinembed_core::rows::chunks`.
//!
//! `embed_chunks_trigger('source', 'chunk_table' [, 'vector_column' [,
//! 'model_column']])`, BEFORE INSERT OR UPDATE [OR DELETE] ... FOR EACH
//! ROW, runs no inference: when a note's text or key changes it deletes the
//! note's chunk rows (as the writing role, in the writing transaction) and
//! queues its key in `embed_queue`; a queue worker cuts the text into
//! windows inside its sections, as `embed_chunks` does, and writes one
//! chunk row per window, as the notes table's owner.

use clinembed_core::inference::chunk::{ChunkOptions, DEFAULT_HEADER_CONTEXT};
use clinembed_core::rows::chunks::{self as rule, ChunkColumns, Op};
use clinembed_core::rows::columns::{ColumnType, Target};
use clinembed_core::rows::queue as q;
use clinembed_core::rows::statements;
use clinembed_core::{Error, ErrorKind};
use pgrx::prelude::*;
use pgrx::PgTupleDesc;

use crate::errors::{report, OrReport};
use crate::pg::catalog::{self, shown};
use crate::pg::security::{as_role_with, pinned, Settings, KEY_TEXT_SETTINGS};
use crate::pg::spi::{self, select_one, select_two, During};
use crate::pg::tuple::{attribute, output, value};
use crate::write::columns::{
    chunk_args, ChunkArgs, CHUNKS_TRIGGER as TRIGGER, CHUNKS_USAGE as USAGE,
};
use crate::write::trigger::{refuse_update_of_without_keys, trigger_entry, update_of_list};
use crate::{backend, gucs};

/// The window settings of chunk rows: `embed_chunks`'s defaults.
pub(crate) fn chunk_options() -> ChunkOptions {
    ChunkOptions::default()
}

/// A notes table's chunk table, checked, with the statements on it.
pub(crate) struct ChunkTable {
    pub oid: pg_sys::Oid,
    pub cols: ChunkColumns,
    pub target: Target,
    /// `$1..$k` keys as text: deletes those notes' chunk rows.
    pub delete: String,
    pub insert: String,
}

/// A column of `rel` as the catalog describes it.
fn column(rel: pg_sys::Oid, name: &str) -> Option<ColumnType> {
    pinned(|| {
        Spi::connect(|client| {
            let row = client
                .select(
                    statements::TARGET_COLUMN,
                    Some(1),
                    &[rel.into(), name.into()],
                )
                .ok()?
                .first();
            Some(ColumnType {
                name: row.get::<String>(1).ok()??,
                typname: row.get::<String>(2).ok()??,
                category: row.get::<String>(3).ok()??.chars().next()?,
                typmod: row.get::<i32>(4).ok()??,
            })
        })
    })
}

/// The checks of a chunk set-up: the notes table has a primary key and a
/// text source column, and its chunk table the columns
/// `clinembed_core::rows::chunks::check_chunk_table` asks for.  Raises.
pub(crate) fn chunk_table(notes: pg_sys::Oid, args: &ChunkArgs) -> ChunkTable {
    match column(notes, &args.source) {
        Some(c) if c.category == 'S' => {}
        Some(c) => report(
            Error::new(
                ErrorKind::DatatypeMismatch,
                "source column must be of a text type",
            )
            .detail(format!(
                "Column {} of {} is {}.",
                shown(&args.source),
                catalog::relation_name(notes),
                c.name
            ))
            .hint("Use text or varchar."),
        ),
        None => report(
            Error::new(ErrorKind::UndefinedColumn, "source column does not exist")
                .detail(format!(
                    "Table {} has no column {}.",
                    catalog::relation_name(notes),
                    shown(&args.source)
                ))
                .hint(USAGE),
        ),
    }
    let keys = catalog::primary_key(notes).unwrap_or_else(|| {
        report(
            Error::new(
                ErrorKind::InvalidTable,
                "embed_chunks_trigger needs a primary key",
            )
            .detail(format!(
                "Table {} has none; chunk rows hold their note's key.",
                catalog::relation_name(notes)
            ))
            .hint("Add a primary key to the notes table."),
        )
    });
    let oid = select_one::<pg_sys::Oid>(
        statements::CHUNK_TABLE,
        &[args.table.as_str().into(), notes.into()],
    )
    .unwrap_or_else(|| {
        report(
            Error::new(ErrorKind::UndefinedTable, "the chunk table does not exist")
                .detail(format!(
                    "No table {} in the schema of {}, or named with its schema.",
                    shown(&args.table),
                    catalog::relation_name(notes)
                ))
                .hint("Create the chunk table first (docs/long-notes.md, \"Chunk tables\"), or name it with its schema."),
        )
    });
    let target = rule::check_chunk_table(
        || catalog::relation_name(oid),
        &keys,
        &args.vector,
        args.model.as_deref(),
        shown,
        |name| column(oid, name),
    )
    .or_report();
    let cols = ChunkColumns {
        keys,
        vector: args.vector.clone(),
        model: args.model.clone(),
    };
    let table = catalog::qualified(oid);
    ChunkTable {
        oid,
        delete: rule::chunk_delete(&table, &cols),
        insert: rule::chunk_insert(&table, &cols, &target.type_name),
        cols,
        target,
    }
}

/// Refuses (42501) a chunk set-up whose writers or owner may not write the
/// chunk table: the writing role deletes a note's chunk rows when its text
/// changes, the notes table's owner writes the new ones.
fn refuse_missing_privileges(t: &ChunkTable, notes: pg_sys::Oid, owner: pg_sys::Oid) {
    let mut wanted: Vec<(&str, &str)> = vec![("DELETE", "")];
    wanted.extend(t.cols.keys.iter().map(|k| ("SELECT", k.0.as_str())));
    let missing = catalog::missing_privileges_of(None, t.oid, &wanted);
    if !missing.is_empty() {
        report(
            Error::new(
                ErrorKind::Forbidden,
                format!(
                    "permission denied to change the chunk rows of {}",
                    catalog::relation_name(notes)
                ),
            )
            .detail(format!(
                "Writing a note's text deletes its chunk rows in {}, which needs {} for role {}.",
                catalog::relation_name(t.oid),
                missing.join(", "),
                catalog::current_role()
            ))
            .hint("GRANT DELETE and SELECT on the chunk table to the roles that write notes."),
        );
    }
    let mut wanted: Vec<(&str, &str)> = vec![("DELETE", ""), ("INSERT", "")];
    wanted.extend(t.cols.keys.iter().map(|k| ("SELECT", k.0.as_str())));
    let missing = catalog::missing_privileges_of(Some(owner), t.oid, &wanted);
    if !missing.is_empty() {
        report(
            Error::new(
                ErrorKind::Forbidden,
                "the notes table's owner may not write its chunk table",
            )
            .detail(format!(
                "Queue workers write the chunk rows of {} in {} as role {}, which lacks {}.",
                catalog::relation_name(notes),
                catalog::relation_name(t.oid),
                catalog::shown(&catalog::role_name(owner)),
                missing.join(", ")
            ))
            .hint("GRANT INSERT, DELETE and SELECT on the chunk table to the notes table's owner."),
        );
    }
}

/// Refuses (42501) a chunk table, or a partition or child of it, owned by a
/// role without the rights of `writer`, the role queue workers write its
/// rows as: its owner's code (column defaults, rules, policies, checks,
/// index expressions) would run with more rights than its author has.
pub(crate) fn refuse_foreign_owner(table: pg_sys::Oid, writer: pg_sys::Oid) {
    if let (Some(member), Some(owner)) = select_two::<String, String>(
        statements::FOREIGN_OWNED_MEMBER,
        &[table.into(), writer.into()],
    ) {
        report(
            Error::new(
                ErrorKind::Forbidden,
                "the chunk table's owner does not have the rights of the role that writes it",
            )
            .detail(format!(
                "Queue workers write chunk rows into {} as role {}; {} is owned by role {}, whose code there would run with that role's rights.",
                catalog::relation_name(table),
                catalog::shown(&catalog::role_name(writer)),
                member,
                catalog::shown(&owner),
            ))
            .hint("Have the notes table's owner own the chunk table and its partitions (ALTER TABLE ... OWNER TO)."),
        );
    }
}

/// Refuses (39P01) what would let a note's chunk rows outlive its text
/// without the trigger firing: a WHEN clause (an update that makes it false
/// would skip the delete), or an UPDATE OF list without the text column.
fn refuse_partial_firing(trigger: &pg_sys::Trigger, rel: pg_sys::Oid, name: &str, source: i16) {
    let why = if !trigger.tgqual.is_null() {
        "it has a WHEN clause, and an update that makes the clause false would leave the note's chunk rows beside its new text"
    } else if update_of_list(trigger).is_some_and(|listed| !listed.contains(&source)) {
        "its UPDATE OF list leaves out the text column, so a change of the text would leave the old chunk rows"
    } else {
        return;
    };
    report(
        Error::new(
            ErrorKind::TriggerProtocol,
            "embed_chunks_trigger must fire on every change of a note's text",
        )
        .detail(format!(
            "Trigger {} on {}: {why}.",
            shown(name),
            catalog::relation_name(rel)
        ))
        .hint("Create it BEFORE INSERT OR UPDATE OR DELETE without WHEN; for some notes only, create it on a partition that holds them."),
    );
}

/// What a firing needs, worked out once per trigger until the catalog
/// changes.
struct Checked {
    table: ChunkTable,
    source: (i16, pg_sys::Oid),
    /// Key columns' (attnum, type) in the notes table.
    keys: Vec<(i16, pg_sys::Oid)>,
    stable: bool,
    pk_index: pg_sys::Oid,
    owner: pg_sys::Oid,
}

thread_local! {
    static CHECKED: catalog::Cached<pg_sys::Oid, Checked> = catalog::Cached::new();
}

trigger_entry!(
    pg_finfo_embed_chunks_trigger_wrapper,
    embed_chunks_trigger_wrapper,
    embed_chunks_trigger_body_wrapper,
    "embed_chunks_trigger",
    "It was called as a function, with no note to cut into chunks.",
    "CREATE TRIGGER ... BEFORE INSERT OR UPDATE OR DELETE ON notes FOR EACH ROW EXECUTE FUNCTION embed_chunks_trigger('source_column', 'chunk_table'); to fill the chunk table for stored notes, call embed_queue_enqueue('notes')."
);

/// Chunk trigger: keeps the chunk table's rows of a note those of its
/// current text.  Runs no inference.
#[pg_trigger(
    sql = r#"CREATE FUNCTION "embed_chunks_trigger"() RETURNS TRIGGER LANGUAGE c AS 'MODULE_PATHNAME', 'embed_chunks_trigger_wrapper';"#
)]
fn embed_chunks_trigger_body<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    let op = match trigger.op()? {
        PgTriggerOperation::Insert => Op::Insert,
        PgTriggerOperation::Update => Op::Update,
        PgTriggerOperation::Delete => Op::Delete,
        PgTriggerOperation::Truncate => refuse_misfire(trigger)?,
    };
    if !matches!(trigger.when()?, PgTriggerWhen::Before)
        || !matches!(trigger.level(), PgTriggerLevel::Row)
    {
        refuse_misfire(trigger)?;
    }
    let rel = trigger.relid()?;
    let td = trigger.trigger_data();
    let (new, old) = match op {
        Op::Insert => (td.tg_trigtuple, std::ptr::null_mut()),
        Op::Update => (td.tg_newtuple, td.tg_trigtuple),
        Op::Delete => (std::ptr::null_mut(), td.tg_trigtuple),
    };
    // SAFETY: the open relation's own descriptor, valid while the trigger runs.
    let desc = unsafe { (*td.tg_relation).rd_att };
    let tgoid = trigger.trigger().tgoid;
    let checked = CHECKED.with(|c| {
        c.get(tgoid, || {
            let name = trigger.name().unwrap_or_default();
            let args = chunk_args(rel, name, trigger.extra_args().unwrap_or_default());
            let table = chunk_table(rel, &args);
            // SAFETY: as above; not freed by this wrapper.
            let tupdesc = unsafe { PgTupleDesc::from_pg_unchecked(desc) };
            let source = attribute(&tupdesc, &args.source).unwrap_or((0, pg_sys::Oid::INVALID));
            let keys: Vec<(i16, pg_sys::Oid)> = table
                .cols
                .keys
                .iter()
                .map(|k| attribute(&tupdesc, &k.0).unwrap_or((0, pg_sys::Oid::INVALID)))
                .collect();
            let stable = table.cols.keys.iter().all(|k| q::key_text_is_stable(&k.1));
            let attnums: Vec<i16> = keys.iter().map(|k: &(i16, pg_sys::Oid)| k.0).collect();
            refuse_update_of_without_keys(
                trigger.trigger(),
                TRIGGER,
                rel,
                name,
                &attnums,
                "an UPDATE of the key alone would leave the note's chunk rows under a key that no longer exists",
            );
            refuse_partial_firing(trigger.trigger(), rel, name, source.0);
            // SAFETY: the open relation's index list and owner.
            let (pk_index, relowner) = unsafe {
                let relation = td.tg_relation;
                pg_sys::RelationGetIndexList(relation);
                ((*relation).rd_pkindex, (*(*relation).rd_rel).relowner)
            };
            // The role workers write as: the owner of the table the trigger
            // was created on (a firing trigger is always found; this table's
            // owner otherwise).  A second queue trigger is refused here.
            let owner = crate::write::queue::queue_trigger(rel)
                .map_or(relowner, |t| t.setter);
            // Said at the first write; the workers check before every batch.
            refuse_foreign_owner(table.oid, owner);
            Checked {
                table,
                source,
                keys,
                stable,
                pk_index,
                owner,
            }
        })
    });
    let get = |tuple: pg_sys::HeapTuple, attnum: i16| {
        // SAFETY: the trigger's tuples, of this relation's descriptor.
        unsafe { value(tuple, desc, attnum) }
    };
    let key_of = |tuple: pg_sys::HeapTuple| -> Vec<String> {
        let _fixed = (!checked.stable).then(|| Settings::with(KEY_TEXT_SETTINGS));
        checked
            .keys
            .iter()
            .map(|&(a, t)| get(tuple, a).map(|d| output(t, d)).unwrap_or_default())
            .collect()
    };
    let (src, src_type) = checked.source;
    let text = |tuple: pg_sys::HeapTuple| get(tuple, src).map(|d| output(src_type, d));
    let work = match op {
        Op::Update => {
            let text_changed = text(new) != text(old);
            let key_changed = key_of(new) != key_of(old);
            rule::chunk_work(op, get(new, src).is_some(), text_changed, key_changed)
        }
        Op::Insert => rule::chunk_work(op, get(new, src).is_some(), false, false),
        Op::Delete => rule::chunk_work(op, false, false, false),
    };
    let mut doomed = Vec::new();
    if work.delete_old {
        doomed.push(key_of(old));
    }
    if work.delete_new {
        doomed.push(key_of(new));
    }
    if !doomed.is_empty() {
        refuse_missing_privileges(&checked.table, rel, checked.owner);
        delete_chunks(&checked, &doomed);
    }
    if work.enqueue {
        crate::write::queue::enqueue(rel, key_of(new), checked.pk_index);
    }
    Ok(match op {
        Op::Delete => trigger.old(),
        _ => trigger.new(),
    })
}

/// Refuses (39P01) a chunk trigger that fired other than BEFORE ... FOR
/// EACH ROW on INSERT, UPDATE or DELETE.
fn refuse_misfire<T>(trigger: &PgTrigger<'_>) -> Result<T, PgTriggerError> {
    let (rel, name) = (trigger.relid()?, trigger.name()?);
    report(
        Error::new(
            ErrorKind::TriggerProtocol,
            "embed_chunks_trigger must fire BEFORE INSERT OR UPDATE [OR DELETE] FOR EACH ROW",
        )
        .detail(format!(
            "Trigger {} on {} fired otherwise.",
            shown(name),
            catalog::relation_name(rel)
        ))
        .hint(USAGE),
    )
}

/// Deletes the chunk rows of the notes with `keys`, as the current role.
fn delete_chunks(checked: &Checked, keys: &[Vec<String>]) {
    let arrays = key_arrays(keys, checked.keys.len());
    let args: Vec<pgrx::datum::DatumWithOid<'_>> = arrays.into_iter().map(|a| a.into()).collect();
    let _fixed = Settings::with(KEY_TEXT_SETTINGS);
    pinned(|| {
        Spi::connect_mut(|c| {
            c.update(checked.table.delete.as_str(), None, &args)
                .map(|_| ())
        })
    })
    .unwrap_or_else(|e| spi::failed(During::Queue, e));
}

/// One `text[]` per key column out of keys given row by row.
fn key_arrays(keys: &[Vec<String>], columns: usize) -> Vec<Vec<String>> {
    (0..columns)
        .map(|i| {
            keys.iter()
                .map(|k| k.get(i).cloned().unwrap_or_default())
                .collect()
        })
        .collect()
}

/// A queue worker's write for a batch of notes: each note's old
/// chunk rows deleted and its windows written, as `owner`.  `keys` are the
/// notes' keys (row by row) and `texts` their texts (None: no text, no
/// chunk rows).  Returns the chunk rows written.
pub(crate) fn write_batch(
    owner: pg_sys::Oid,
    t: &ChunkTable,
    keys: &[Vec<String>],
    texts: &[Option<String>],
) -> usize {
    let n = t.cols.keys.len();
    let mut row_keys: Vec<Vec<String>> = vec![Vec::new(); n];
    let (mut chunk, mut start, mut end, mut tokens) = (vec![], vec![], vec![], vec![]);
    let mut section: Vec<Option<String>> = Vec::new();
    let mut flat: Vec<f32> = Vec::new();
    let mut dims = 0usize;
    if texts.iter().any(Option::is_some) {
        crate::write::columns::check_dims(
            t.oid,
            &t.cols.vector,
            &t.target.type_name,
            t.target.dims,
            None,
        );
        let sectionizer = crate::api::sections::sectionizer();
        let limits = gucs::batch_limits();
        for (key, text) in keys.iter().zip(texts) {
            let Some(text) = text else { continue };
            let windows = backend::with_embedder(|e| {
                e.embed_note_windows(
                    text,
                    chunk_options(),
                    Some(&sectionizer),
                    DEFAULT_HEADER_CONTEXT,
                    &limits,
                    backend::check_interrupts,
                )
            })
            .or_report();
            for (i, w) in windows.into_iter().enumerate() {
                for (c, k) in row_keys.iter_mut().enumerate() {
                    k.push(key.get(c).cloned().unwrap_or_default());
                }
                chunk.push(i as i32 + 1);
                start.push(i32::try_from(w.window.char_start).unwrap_or(i32::MAX));
                end.push(i32::try_from(w.window.char_end).unwrap_or(i32::MAX));
                tokens.push(w.window.tokens as i32);
                section.push(w.section);
                dims = w.vector.len();
                flat.extend_from_slice(&w.vector);
            }
        }
    }
    let written = chunk.len();
    let model_id = (written > 0).then(base_model_id);
    let delete: Vec<pgrx::datum::DatumWithOid<'_>> =
        key_arrays(keys, n).into_iter().map(|a| a.into()).collect();
    let mut insert: Vec<pgrx::datum::DatumWithOid<'_>> =
        row_keys.into_iter().map(|a| a.into()).collect();
    insert.push(chunk.into());
    insert.push(start.into());
    insert.push(end.into());
    insert.push(tokens.into());
    insert.push(section.into());
    insert.push(flat.into());
    insert.push((dims as i32).into());
    insert.push(model_id.into());
    as_role_with(owner, KEY_TEXT_SETTINGS, || {
        Spi::connect_mut(|c| {
            c.update(t.delete.as_str(), None, &delete)?;
            if written > 0 {
                c.update(t.insert.as_str(), None, &insert)?;
            }
            Ok::<_, pgrx::spi::SpiError>(())
        })
    })
    .unwrap_or_else(|e| spi::failed(During::Queue, e));
    written
}

/// The identity chunk rows carry: the configured model's, without a
/// long-text suffix (each window is embedded whole, as `embed_text` would
/// embed its span).
pub(crate) fn base_model_id() -> String {
    backend::with_embedder(|e| e.identity(None)).or_report()
}

/// Queues the notes of table `t` whose chunk rows are missing, stale or of
/// another model (see `clinembed_core::rows::chunks::enqueue_stored_chunks`).
pub(crate) fn enqueue_stored(
    t: pg_sys::Oid,
    args: &ChunkArgs,
    table: &ChunkTable,
    pkey: pg_sys::Oid,
    queue: &crate::write::queue::Queue,
) -> i64 {
    let sql = rule::enqueue_stored_chunks(
        &catalog::qualified(t),
        t.to_u32(),
        pkey.to_u32(),
        &queue.schema,
        &args.source,
        &catalog::qualified(table.oid),
        &table.cols,
        &base_model_id(),
    );
    as_role_with(queue.owner, KEY_TEXT_SETTINGS, || {
        Spi::connect_mut(|c| c.update(sql.as_str(), None, &[]).map(|r| r.len() as i64))
    })
    .unwrap_or_else(|e| spi::failed(During::Queue, e))
}

extension_sql!(
    r#"
-- SELECT * FROM embed_chunk_coverage('notes'): each note of a table with
-- an embed_chunks_trigger (its partitions included) with the tokens of its
-- text, the tokens its chunk rows embed, its chunk rows and the named
-- sections of its text.  Reads every note, as the calling role.
CREATE FUNCTION @extschema@.embed_chunk_coverage(relation pg_catalog.regclass)
RETURNS TABLE (key text[], tokens integer, tokens_embedded integer, windows integer, sections integer)
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._embed_chunk_coverage(relation::pg_catalog.oid) $$;
"#,
    name = "chunk_coverage",
    requires = [_embed_chunk_coverage]
);

/// Notes read per fetch by `_embed_chunk_coverage`.
const COVERAGE_FETCH: i64 = 1000;

/// What `embed_chunk_coverage` returns, row by row.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_restricted)]
fn _embed_chunk_coverage(
    rel: pg_sys::Oid,
) -> TableIterator<
    'static,
    (
        name!(key, Vec<String>),
        name!(tokens, i32),
        name!(tokens_embedded, i32),
        name!(windows, i32),
        name!(sections, i32),
    ),
> {
    let sectionizer = crate::api::sections::sectionizer();
    let mut out = Vec::new();
    let mut with_trigger = 0;
    for t in catalog::relation_tree(rel)
        .into_iter()
        .filter(|m| m.relkind == 'r')
        .map(|m| pg_sys::Oid::from(m.oid))
    {
        let Some(args) = crate::write::queue::queue_trigger(t).and_then(|q| q.chunks) else {
            continue;
        };
        with_trigger += 1;
        let table = chunk_table(t, &args);
        let sql = rule::coverage_statement(
            &catalog::qualified(t),
            &args.source,
            &catalog::qualified(table.oid),
            &table.cols,
        );
        let _fixed = Settings::with(KEY_TEXT_SETTINGS);
        pinned(|| {
            Spi::connect(|c| {
                let mut cursor = c.try_open_cursor(sql.as_str(), &[])?;
                loop {
                    let mut rows = Vec::new();
                    for row in cursor.fetch(COVERAGE_FETCH)? {
                        rows.push((
                            row.get::<Vec<String>>(1)?.unwrap_or_default(),
                            row.get::<String>(2)?,
                            row.get::<Vec<i32>>(3)?.unwrap_or_default(),
                            row.get::<Vec<i32>>(4)?.unwrap_or_default(),
                        ));
                    }
                    // SAFETY: the rows are copied out above (see
                    // batch_trigger.rs): one fetch's rows at a time.
                    unsafe { pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable) };
                    if rows.is_empty() {
                        return Ok::<_, pgrx::spi::SpiError>(());
                    }
                    for (key, text, starts, ends) in rows {
                        let spans: Vec<(usize, usize)> = starts
                            .iter()
                            .zip(&ends)
                            .map(|(&a, &b)| (a.max(0) as usize, b.max(0) as usize))
                            .collect();
                        let (tokens, embedded, sections) = match &text {
                            None => (0, 0, 0),
                            Some(text) => {
                                let tokens = backend::with_embedder(|e| {
                                    e.encoder().tokens(text, backend::check_interrupts)
                                })
                                .or_report();
                                let embedded = clinembed_core::inference::chunk::tokens_covered(
                                    &tokens.offsets,
                                    &spans,
                                );
                                let named = sectionizer
                                    .sections(text)
                                    .iter()
                                    .filter(|s| s.name.is_some())
                                    .count();
                                (tokens.ids.len(), embedded, named)
                            }
                        };
                        let int = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
                        out.push((
                            key,
                            int(tokens),
                            int(embedded),
                            int(spans.len()),
                            int(sections),
                        ));
                    }
                }
            })
        })
        .unwrap_or_else(|e| spi::failed(During::Queue, e));
    }
    if with_trigger == 0 {
        report(
            Error::new(ErrorKind::InvalidTable, "the table has no chunk trigger")
                .detail(format!(
                    "No table that holds rows of {} has an enabled embed_chunks_trigger.",
                    catalog::relation_name(rel)
                ))
                .hint(USAGE),
        );
    }
    TableIterator::new(out)
}
