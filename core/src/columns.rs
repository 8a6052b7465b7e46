//! Embeddings beside their rows: which rows need work, decided once.
//!
//! The row trigger, the statement trigger and the backfill (and anything
//! later that keeps vectors beside rows) ask [`action`] what to do with a
//! row, or put the SQL condition [`condition`] derives from it into the
//! statements they run over many rows.  The condition is built from the rule
//! itself, state by state, so the two cannot disagree.  Also here: the
//! dimension check of a target column and how many rows go into one
//! `embed_texts` call.  Identifiers and literals are quoted by this module;
//! nothing here sees note text.

use crate::error::{Error, ErrorKind, Result};

/// Rows handed to one `embed_texts` call by the statement trigger, at most
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

/// An SQL boolean expression, true exactly for the rows whose [`action`]
/// under `event` is one of `wanted`: one term per text/vector state that has
/// any such row, with the model column's part only where the label decides.
/// Columns are read as `alias.column` (or unqualified when `alias` is empty);
/// `model_id` is the current identity, needed only when a label is compared
/// with it (an error otherwise).  Every operator and type is named by schema,
/// so the expression means the same under any `search_path`.
pub fn condition(
    event: Event,
    wanted: &[Action],
    columns: &Columns,
    alias: &str,
    model_id: Option<&str>,
) -> Result<String> {
    let col = |name: &str| {
        if alias.is_empty() {
            quote_ident(name)
        } else {
            format!("{alias}.{}", quote_ident(name))
        }
    };
    let null = |name: &str, is_null: bool| {
        format!("{} IS {}NULL", col(name), if is_null { "" } else { "NOT " })
    };
    let labels: &[Label] = match columns.model {
        Some(_) => &[Label::Null, Label::Current, Label::Other],
        None => &[Label::NoColumn],
    };
    let mut terms = Vec::new();
    for text in [false, true] {
        for vector in [false, true] {
            let hits: Vec<Label> = labels
                .iter()
                .copied()
                .filter(|&label| {
                    wanted.contains(&action(
                        event,
                        Row {
                            text,
                            vector,
                            label,
                        },
                    ))
                })
                .collect();
            if hits.is_empty() {
                continue;
            }
            let mut parts = vec![null(&columns.source, !text), null(&columns.target, !vector)];
            if hits.len() < labels.len() {
                let m = columns
                    .model
                    .as_deref()
                    .expect("several labels need a model column");
                let has = |l| hits.contains(&l);
                let compare = |op: &str| -> Result<String> {
                    let id = model_id.ok_or_else(|| {
                        Error::new(ErrorKind::InvalidArgument, "the rule needs the model identity")
                            .detail("The condition compares the model column with the current identity, and none was given.")
                            .hint("This is an internal function of clinembed's triggers and backfill.")
                    })?;
                    Ok(format!(
                        "{}::pg_catalog.text OPERATOR(pg_catalog.{op}) {}",
                        col(m),
                        quote_literal(id)
                    ))
                };
                parts.push(
                    match (has(Label::Null), has(Label::Current), has(Label::Other)) {
                        (true, false, false) => null(m, true),
                        (false, true, true) => null(m, false),
                        (false, true, false) => compare("=")?,
                        (false, false, true) => compare("<>")?,
                        (true, true, false) => format!("({} OR {})", null(m, true), compare("=")?),
                        (true, false, true) => format!("({} OR {})", null(m, true), compare("<>")?),
                        _ => unreachable!("some but not all labels"),
                    },
                );
            }
            terms.push(format!("({})", parts.join(" AND ")));
        }
    }
    Ok(if terms.is_empty() {
        "false".into()
    } else {
        format!("({})", terms.join(" OR "))
    })
}

/// The rows that need work (embedding or clearing) under `event`.
pub fn needs_work(
    event: Event,
    columns: &Columns,
    alias: &str,
    model_id: Option<&str>,
) -> Result<String> {
    condition(
        event,
        &[Action::Embed, Action::Clear],
        columns,
        alias,
        model_id,
    )
}

/// Checks that vectors of `dimensions` fit the target column, whose type is
/// `target_type` (as `format_type` prints it) with `target_dims` dimensions
/// (None: any, as for `real[]` or `vector` without a length).  `table` and
/// `target` are shown as given: the caller quotes them as PostgreSQL would.
pub fn check_dimensions(
    table: &str,
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
                "The model returns {dimensions}-dimensional vectors; column {target} of {table} is {target_type}."
            ))
            .hint(format!(
                "Make the column {base}({dimensions}), or set clinembed.model to a model with {want} dimensions."
            )))
        }
        _ => Ok(()),
    }
}

/// Rows per `embed_texts` call for a statement's rows, given
/// `clinembed.batch_max_texts`.
pub fn rows_per_call(batch_max_texts: i32) -> usize {
    ROWS_PER_CALL.min(batch_max_texts.max(1) as usize)
}

/// An SQL identifier, always quoted (any name, keywords included).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal that reads the same whatever
/// `standard_conforming_strings` is (as PostgreSQL's `quote_literal`).
pub fn quote_literal(value: &str) -> String {
    let body = value.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Event::*;
    use Label::*;

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

    fn columns(model: Option<&str>) -> Columns {
        Columns {
            source: "note".into(),
            target: "emb".into(),
            model: model.map(Into::into),
        }
    }

    #[test]
    fn condition_names_one_term_per_state_that_needs_work() {
        let c = needs_work(Stored, &columns(None), "", None).unwrap();
        // stored, no model column: text without vector; no text with vector
        assert_eq!(
            c,
            "((\"note\" IS NULL AND \"emb\" IS NOT NULL) OR (\"note\" IS NOT NULL AND \"emb\" IS NULL))"
        );
        let c = needs_work(Inserted, &columns(Some("m")), "n", Some("m@1")).unwrap();
        assert!(
            c.contains("n.\"m\"::pg_catalog.text OPERATOR(pg_catalog.<>) 'm@1'"),
            "{c}"
        );
        // a changed text never consults the identity
        let c = needs_work(TextChanged, &columns(Some("m")), "n", None).unwrap();
        assert!(!c.contains("OPERATOR"), "{c}");
        // the backfill does, and refuses to guess
        assert!(needs_work(Stored, &columns(Some("m")), "", None).is_err());
        assert_eq!(
            condition(TextUnchanged, &[Embed, Clear], &columns(None), "", None).unwrap(),
            "false"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("select"), "\"select\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
    }

    #[test]
    fn dimensions() {
        assert!(check_dimensions("t", "e", "real[]", None, 384).is_ok());
        assert!(check_dimensions("t", "e", "vector(384)", Some(384), 384).is_ok());
        let e = check_dimensions("t", "e", "vector(768)", Some(768), 384).unwrap_err();
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
}
