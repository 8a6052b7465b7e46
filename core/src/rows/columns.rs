//! Embeddings beside their rows: which rows need work, decided once.
//!
//! The row trigger, the statement trigger and the backfill (and anything
//! later that keeps vectors beside rows) ask [`action`] what to do with a
//! row, or put the SQL condition [`condition`] derives from it into the
//! statements they run over many rows.  The condition is built from the rule
//! itself, state by state, so the two cannot disagree.  Also here: the
//! dimension check of a target column and how many rows are embedded
//! together.  Identifiers and literals are quoted by this module;
//! nothing here sees note text.

use crate::error::{Error, ErrorKind, Result};

/// Rows the statement trigger embeds and writes together, at most
/// (further bounded by `clinembed.batch_max_texts`).
pub const ROWS_PER_CALL: usize = 1000;

/// Why a row is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// INSERT (or COPY): the row arrived with whatever vector it carries.
    Inserted,
    /// UPDATE that changed the text (or the row's key): any vector it has
    /// describes the old text.
    TextChanged,
    /// UPDATE that left the text as it was.
    TextUnchanged,
    /// A stored row met by the backfill.
    Stored,
}

impl Event {
    pub fn parse(s: &str) -> Result<Event> {
        Ok(match s {
            "inserted" => Event::Inserted,
            "text_changed" => Event::TextChanged,
            "text_unchanged" => Event::TextUnchanged,
            "stored" => Event::Stored,
            _ => {
                return Err(Error::new(ErrorKind::InvalidArgument, "unknown row event")
                    .detail(format!(
                        "The event is {} characters long; the events are inserted, text_changed, text_unchanged and stored.",
                        s.chars().count()
                    ))
                    .hint("This is an internal function of clinembed's triggers and backfill."))
            }
        })
    }
}

/// The model identity column of a row, as far as the rule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// The table keeps no model column.
    NoColumn,
    /// The column is NULL.
    Null,
    /// The column holds the identity of the model in use.
    Current,
    /// The column holds another identity.
    Other,
}

/// What a row holds: a text or NULL, a vector or NULL, and its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub text: bool,
    pub vector: bool,
    pub label: Label,
}

/// What to do with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave vector and label as they are; no inference.
    Keep,
    /// Embed the text; write the vector and the current identity.
    Embed,
    /// Set vector and label to NULL: the row has no text, so no vector can
    /// describe it.  No inference.
    Clear,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Embed => "embed",
            Action::Clear => "clear",
        }
    }
}

/// The rule.
///
/// * An UPDATE that leaves the text alone changes nothing.
/// * A row without text gets no vector and no label: whatever it has is
///   cleared, in every path (a vector beside a NULL text describes nothing).
/// * A changed text is always embedded again.
/// * An inserted row keeps a vector it arrives with only when it is labelled
///   with the current identity (a restore, a copy between tables); without a
///   model column nothing can vouch for it, so it is embedded.
/// * A stored row is embedded when its vector is missing, or, with a model
///   column, when its label is missing or another model's.  Without a model
///   column a stored vector is taken as current.
pub fn action(event: Event, row: Row) -> Action {
    if event == Event::TextUnchanged {
        return Action::Keep;
    }
    if !row.text {
        let labelled = matches!(row.label, Label::Current | Label::Other);
        return if row.vector || labelled {
            Action::Clear
        } else {
            Action::Keep
        };
    }
    let vouched = row.vector && row.label == Label::Current;
    let fresh = match event {
        Event::TextChanged | Event::TextUnchanged => false,
        Event::Inserted => vouched,
        Event::Stored => vouched || (row.vector && row.label == Label::NoColumn),
    };
    if fresh {
        Action::Keep
    } else {
        Action::Embed
    }
}

/// The source, target and model identity columns of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub source: String,
    pub target: String,
    pub model: Option<String>,
}

/// Every state a row of a table with (or without) a model column can be in.
pub fn states(has_model_column: bool) -> Vec<Row> {
    let labels: &[Label] = if has_model_column {
        &[Label::Null, Label::Current, Label::Other]
    } else {
        &[Label::NoColumn]
    };
    let mut out = Vec::new();
    for text in [false, true] {
        for vector in [false, true] {
            for &label in labels {
                out.push(Row {
                    text,
                    vector,
                    label,
                });
            }
        }
    }
    out
}

/// A column of the table as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// As `format_type` prints it, with its modifier: `vector(384)`.
    pub name: String,
    /// `pg_type.typname`: `vector`, `_float4`, `text`.
    pub typname: String,
    /// `pg_type.typcategory`: `S` for the string types.
    pub category: char,
    /// `atttypmod`: -1 when the type has none.
    pub typmod: i32,
}

/// What the target column takes: the type to cast a `real[]` to, and the
/// dimensions it requires (None: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub type_name: String,
    pub dims: Option<i32>,
}

/// The column checks of the triggers and the backfill: the source and model
/// columns exist and hold text, the target exists and is `real[]`, `vector`
/// or `halfvec`, and the three differ.  `lookup` reads a column from the
/// catalog; `table` and `shown` render names as messages show them (`table`
/// is asked only for an error).
pub fn check_columns(
    table: impl Fn() -> String,
    source: Option<&str>,
    target: Option<&str>,
    model: Option<&str>,
    shown: impl Fn(&str) -> String,
    lookup: impl Fn(&str) -> Option<ColumnType>,
) -> Result<Target> {
    let mut found = None;
    for (role, name) in [("source", source), ("target", target), ("model", model)] {
        if role == "model" && name.is_none() {
            continue;
        }
        let Some(column) = name.and_then(&lookup) else {
            return Err(Error::new(
                ErrorKind::UndefinedColumn,
                format!("{role} column does not exist"),
            )
            .detail(format!(
                "Table {} has no column {}.",
                table(),
                name.map(&shown).unwrap_or_else(|| "NULL".into())
            ))
            .hint("The trigger or backfill arguments are: source text column, target embedding column, optional model identity column."));
        };
        let name = name.map(&shown).unwrap_or_default();
        if role != "target" && column.category != 'S' {
            return Err(Error::new(
                ErrorKind::DatatypeMismatch,
                format!("{role} column must be of a text type"),
            )
            .detail(format!("Column {name} of {} is {}.", table(), column.name))
            .hint("Use text or varchar."));
        }
        if role == "target" {
            if column.typname == "_float4" {
                found = Some(Target {
                    type_name: "real[]".into(),
                    dims: None,
                });
            } else if column.typname == "vector" || column.typname == "halfvec" {
                found = Some(Target {
                    type_name: column.name.clone(),
                    dims: (column.typmod != -1).then_some(column.typmod),
                });
            } else {
                return Err(Error::new(
                    ErrorKind::DatatypeMismatch,
                    "target column must be real[], vector or halfvec",
                )
                .detail(format!("Column {name} of {} is {}.", table(), column.name))
                .hint(
                    "Store embeddings in real[] or, with pgvector, in vector(N) or halfvec(N).",
                ));
            }
        }
    }
    let (source, target) = (source.unwrap_or_default(), target.unwrap_or_default());
    if Some(source) == model || source == target || Some(target) == model {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "source, target and model columns must differ",
        )
        .detail(format!(
            "Columns given for {}: {}, {}, {}.",
            table(),
            shown(source),
            shown(target),
            model.map(&shown).unwrap_or_else(|| "none".into())
        ))
        .hint("Name three different columns."));
    }
    Ok(found.expect("the target was checked"))
}

/// One relation of a backfill's tree (the relation itself, its partitions
/// and its inheritance children), as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub oid: u32,
    /// As PostgreSQL shows it (`regclass` output).
    pub name: String,
    /// `pg_class.relkind`: `r` a table with storage, `p` a partitioned
    /// table, `f` a foreign table, ...
    pub relkind: char,
}

/// The column privileges a backfill uses on each table it writes, in the
/// order they are reported: SELECT on the source, UPDATE on the target and
/// the model column.
pub fn backfill_privileges(columns: &Columns) -> Vec<(&'static str, &str)> {
    let mut wanted = vec![
        ("SELECT", columns.source.as_str()),
        ("UPDATE", columns.target.as_str()),
    ];
    if let Some(m) = columns.model.as_deref() {
        wanted.push(("UPDATE", m));
    }
    wanted
}

/// The tables a backfill of `relation` reads and writes, in the members'
/// order (the caller's, by oid): those with storage.  A row is its table and
/// ctid together, as a ctid alone repeats across partitions.  A foreign
/// table is refused (its rows are on another server), and so is a table for
/// which `missing` names privileges (as `SELECT (col)`) the role lacks;
/// `role` is the role's name, quoted, for the hint.
pub fn backfill_tables(
    relation: &str,
    members: &[Member],
    mut missing: impl FnMut(&Member) -> Vec<String>,
    role: impl Fn() -> String,
) -> Result<Vec<u32>> {
    let mut tables = Vec::new();
    for m in members {
        match m.relkind {
            'f' => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!("embed_backfill cannot write foreign table {}", m.name),
                )
                .detail(format!(
                    "{} holds rows of {relation} on another server.",
                    m.name
                ))
                .hint("Run embed_backfill on the server that holds that table."))
            }
            'r' => {}
            _ => continue,
        }
        let lacking = missing(m);
        if !lacking.is_empty() {
            let lacking = lacking.join(", ");
            return Err(Error::new(
                ErrorKind::Forbidden,
                format!("permission denied to backfill {}", m.name),
            )
            .detail(format!(
                "The backfill of {relation} reads and writes {} directly and needs {lacking} on it.",
                m.name
            ))
            .hint(format!(
                "GRANT {lacking} ON {} TO {}, or run the backfill as the table's owner.",
                m.name,
                role()
            )));
        }
        tables.push(m.oid);
    }
    Ok(tables)
}

/// Checks that vectors of `dimensions` fit the target column, whose type is
/// `target_type` (as `format_type` prints it) with `target_dims` dimensions
/// (None: any, as for `real[]` or `vector` without a length).  `table` and
/// `target` are shown as given: the caller quotes them as PostgreSQL would
/// (`table` is asked only for an error).
pub fn check_dimensions(
    table: impl Fn() -> String,
    target: &str,
    target_type: &str,
    target_dims: Option<i32>,
    dimensions: i32,
) -> Result<()> {
    match target_dims {
        Some(want) if want != dimensions => {
            let base = target_type.split('(').next().unwrap_or(target_type);
            Err(Error::new(
                ErrorKind::DatatypeMismatch,
                format!("embedding has {dimensions} dimensions, column {target} expects {want}"),
            )
            .detail(format!(
                "The model returns {dimensions}-dimensional vectors; column {target} of {} is {target_type}.",
                table()
            ))
            .hint(format!(
                "Make the column {base}({dimensions}), or set clinembed.model to a model with {want} dimensions."
            )))
        }
        _ => Ok(()),
    }
}

/// Rows the statement trigger embeds and writes together, given
/// `clinembed.batch_max_texts`.
pub fn rows_per_call(batch_max_texts: i32) -> usize {
    ROWS_PER_CALL.min(batch_max_texts.max(1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Event::*;
    use Label::*;

    fn member(oid: u32, relkind: char) -> Member {
        Member {
            oid,
            name: format!("t{oid}"),
            relkind,
        }
    }

    #[test]
    fn backfill_tables_keep_the_tables_with_storage_in_order() {
        let members = [
            member(10, 'p'),
            member(11, 'r'),
            member(12, 'r'),
            member(13, 'v'),
        ];
        let tables = backfill_tables("t10", &members, |_| vec![], || "alice".into()).unwrap();
        assert_eq!(tables, vec![11, 12]);
        assert!(
            backfill_tables("t10", &[member(10, 'p')], |_| vec![], String::new)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn backfill_tables_refuse_foreign_tables_and_missing_privileges() {
        let e = backfill_tables(
            "t10",
            &[member(10, 'p'), member(11, 'f')],
            |_| vec![],
            String::new,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unsupported);
        assert_eq!(e.message, "embed_backfill cannot write foreign table t11");
        assert_eq!(
            e.detail.as_deref(),
            Some("t11 holds rows of t10 on another server.")
        );
        let e = backfill_tables(
            "t10",
            &[member(11, 'r'), member(12, 'r')],
            |m| {
                if m.oid == 12 {
                    vec!["SELECT (a)".into(), "UPDATE (b)".into()]
                } else {
                    vec![]
                }
            },
            || "alice".into(),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Forbidden);
        assert_eq!(e.message, "permission denied to backfill t12");
        assert_eq!(
            e.hint.as_deref(),
            Some("GRANT SELECT (a), UPDATE (b) ON t12 TO alice, or run the backfill as the table's owner.")
        );
    }

    #[test]
    fn backfill_privileges_name_the_columns_it_reads_and_writes() {
        let c = Columns {
            source: "s".into(),
            target: "t".into(),
            model: Some("m".into()),
        };
        assert_eq!(
            backfill_privileges(&c),
            vec![("SELECT", "s"), ("UPDATE", "t"), ("UPDATE", "m")]
        );
        let c = Columns { model: None, ..c };
        assert_eq!(
            backfill_privileges(&c),
            vec![("SELECT", "s"), ("UPDATE", "t")]
        );
    }

    fn row(text: bool, vector: bool, label: Label) -> Row {
        Row {
            text,
            vector,
            label,
        }
    }

    #[test]
    fn the_rule_state_by_state() {
        // (event, text, vector, label) -> action, written out in full.
        let table = [
            // a NULL text: cleared wherever anything is left, in every event
            (Inserted, false, false, NoColumn, Keep),
            (Inserted, false, true, NoColumn, Clear),
            (Inserted, false, false, Null, Keep),
            (Inserted, false, false, Current, Clear),
            (Inserted, false, true, Null, Clear),
            (Stored, false, true, NoColumn, Clear),
            (Stored, false, true, Current, Clear),
            (Stored, false, false, Other, Clear),
            (Stored, false, false, Null, Keep),
            (TextChanged, false, true, Current, Clear),
            (TextChanged, false, false, NoColumn, Keep),
            // inserted with text: kept only when vouched for
            (Inserted, true, true, Current, Keep),
            (Inserted, true, true, Other, Embed),
            (Inserted, true, true, Null, Embed),
            (Inserted, true, false, Current, Embed),
            (Inserted, true, true, NoColumn, Embed),
            (Inserted, true, false, NoColumn, Embed),
            // stored with text
            (Stored, true, true, Current, Keep),
            (Stored, true, true, NoColumn, Keep),
            (Stored, true, true, Other, Embed),
            (Stored, true, true, Null, Embed),
            (Stored, true, false, Current, Embed),
            (Stored, true, false, NoColumn, Embed),
            // a changed text: always embedded
            (TextChanged, true, true, Current, Embed),
            (TextChanged, true, true, NoColumn, Embed),
            (TextChanged, true, false, Null, Embed),
        ];
        for (event, text, vector, label, want) in table {
            assert_eq!(
                action(event, row(text, vector, label)),
                want,
                "{event:?} {text} {vector} {label:?}"
            );
        }
        for r in states(true).into_iter().chain(states(false)) {
            assert_eq!(action(TextUnchanged, r), Keep, "{r:?}");
        }
    }

    #[test]
    fn states_cover_each_table_shape() {
        assert_eq!(states(false).len(), 4);
        assert_eq!(states(true).len(), 12);
        assert!(states(true).iter().all(|r| r.label != NoColumn));
    }

    #[test]
    fn dimensions() {
        assert!(check_dimensions(|| "t".into(), "e", "real[]", None, 384).is_ok());
        assert!(check_dimensions(|| "t".into(), "e", "vector(384)", Some(384), 384).is_ok());
        let e = check_dimensions(|| "t".into(), "e", "vector(768)", Some(768), 384).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DatatypeMismatch);
        assert_eq!(
            e.message,
            "embedding has 384 dimensions, column e expects 768"
        );
        assert_eq!(
            e.hint.as_deref(),
            Some("Make the column vector(384), or set clinembed.model to a model with 768 dimensions.")
        );
    }

    #[test]
    fn rows_per_call_is_bounded_both_ways() {
        assert_eq!(rows_per_call(100_000), ROWS_PER_CALL);
        assert_eq!(rows_per_call(10), 10);
        assert_eq!(rows_per_call(0), 1);
    }

    #[test]
    fn events_by_name() {
        assert_eq!(Event::parse("stored").unwrap(), Stored);
        assert_eq!(
            Event::parse("bogus").unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }

    fn catalog(name: &str) -> Option<ColumnType> {
        let (ty, typname, category, typmod) = match name {
            "note" | "m" => ("text", "text", 'S', -1),
            "n" => ("integer", "int4", 'N', -1),
            "emb" => ("vector(384)", "vector", 'U', 384),
            "any" => ("vector", "vector", 'U', -1),
            "arr" => ("real[]", "_float4", 'A', -1),
            _ => return None,
        };
        Some(ColumnType {
            name: ty.into(),
            typname: typname.into(),
            category,
            typmod,
        })
    }

    #[test]
    fn column_checks() {
        let check = |s: Option<&str>, t: Option<&str>, m: Option<&str>| {
            check_columns(|| "public.t".into(), s, t, m, |n| n.to_string(), catalog)
        };
        let ok = check(Some("note"), Some("emb"), Some("m")).unwrap();
        assert_eq!((ok.type_name.as_str(), ok.dims), ("vector(384)", Some(384)));
        assert_eq!(check(Some("note"), Some("any"), None).unwrap().dims, None);
        assert_eq!(
            check(Some("note"), Some("arr"), None).unwrap().type_name,
            "real[]"
        );
        let kind = |r: Result<Target>| r.map(|_| ()).unwrap_err();
        let e = kind(check(None, Some("emb"), None));
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::UndefinedColumn, "source column does not exist")
        );
        assert_eq!(
            e.detail.as_deref(),
            Some("Table public.t has no column NULL.")
        );
        assert_eq!(
            kind(check(Some("n"), Some("emb"), None)).kind,
            ErrorKind::DatatypeMismatch
        );
        assert_eq!(
            kind(check(Some("note"), Some("note"), None)).message,
            "target column must be real[], vector or halfvec"
        );
        assert_eq!(
            kind(check(Some("note"), Some("emb"), Some("gone"))).message,
            "model column does not exist"
        );
        assert_eq!(
            kind(check(Some("note"), Some("emb"), Some("n"))).message,
            "model column must be of a text type"
        );
        let e = kind(check(Some("m"), Some("emb"), Some("m")));
        assert_eq!(
            (e.kind, e.detail.as_deref()),
            (
                ErrorKind::InvalidArgument,
                Some("Columns given for public.t: m, emb, m.")
            )
        );
    }
}
