//! The statements a search runs, as the calling role: the vector leg, the
//! lexical leg, and the lexical leg's best chunk for notes the vector leg
//! did not find.  Every name is quoted here, every value is a parameter,
//! every operator is named with its schema (the statements run under
//! `search_path = pg_catalog, pg_temp`).
//!
//! Parameters: the vector leg takes `$1` the query vector (`real[]`), `$2`
//! the limit, then `$3` the model identity when it filters by one, then
//! the filters' values; the lexical leg takes `$1` the query text, `$2`
//! the limit, then the filters' values.

use crate::rows::statements::{keys_as_text, quote_ident, quote_literal};

/// `$1` a relation: its live columns in order, each with its name, its
/// type as `format_type` prints it, the type's name and category, and the
/// type's schema (quoted).
pub const COLUMNS: &str = "SELECT a.attname::pg_catalog.text, \
     pg_catalog.format_type(a.atttypid, a.atttypmod), t.typname::pg_catalog.text, \
     t.typcategory::pg_catalog.text, pg_catalog.quote_ident(n.nspname) \
     FROM pg_catalog.pg_attribute a \
     JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid \
     JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) t.typnamespace \
     WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attnum OPERATOR(pg_catalog.>) 0 \
     AND NOT a.attisdropped ORDER BY a.attnum";

/// `$1` a relation: its relkind.
pub const RELKIND: &str = "SELECT c.relkind::pg_catalog.text FROM pg_catalog.pg_class c \
     WHERE c.oid OPERATOR(pg_catalog.=) $1";

/// pgvector's schema, quoted, where it is installed.
pub const PGVECTOR_SCHEMA: &str = "SELECT pg_catalog.quote_ident(n.nspname) \
     FROM pg_catalog.pg_extension e \
     JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace \
     WHERE e.extname OPERATOR(pg_catalog.=) 'vector'";

/// Every enabled trigger of clinembed's that names columns, on a table
/// that is not a partition's clone (`tgparentid` 0): its table, its
/// function's name and its arguments (`tgargs`); `$1` a table, or NULL
/// for every table.
pub const EMBED_TRIGGERS: &str = "SELECT t.tgrelid, p.proname::pg_catalog.text, t.tgargs \
     FROM pg_catalog.pg_trigger t \
     JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) t.tgfoid \
     JOIN pg_catalog.pg_extension e ON e.extnamespace OPERATOR(pg_catalog.=) p.pronamespace \
     AND e.extname OPERATOR(pg_catalog.=) 'clinembed' \
     WHERE ($1::pg_catalog.oid IS NULL OR t.tgrelid OPERATOR(pg_catalog.=) $1) \
     AND t.tgparentid OPERATOR(pg_catalog.=) 0::pg_catalog.oid \
     AND p.proname OPERATOR(pg_catalog.=) ANY \
     ('{embed_trigger,embed_batch_trigger,embed_queue_trigger,embed_chunks_trigger}'::pg_catalog.name[]) \
     AND t.tgenabled OPERATOR(pg_catalog.<>) 'D' \
     ORDER BY t.tgrelid, t.tgname";

/// `$1` a text search configuration's name: its oid (an error when there
/// is none).
pub const LANGUAGE: &str = "SELECT $1::pg_catalog.regconfig::pg_catalog.oid";

/// The labelled queries of a pairs table (`table`, qualified and quoted):
/// each row's query and the key of a relevant note as text, by query.
pub fn pairs(table: &str, keys: &[(String, String)]) -> String {
    format!(
        "SELECT p.query::pg_catalog.text, {} FROM {table} p WHERE p.query IS NOT NULL ORDER BY 1",
        key_text("p", keys)
    )
}

/// Where a search reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The table with the vectors (the notes table, or a chunk table),
    /// qualified and quoted.
    pub vectors: String,
    /// The table with the notes' text, qualified and quoted (the same as
    /// `vectors` unless `chunks`).
    pub notes: String,
    /// The notes' key columns with their types as `format_type` prints
    /// them; a chunk table has them under the same names.
    pub keys: Vec<(String, String)>,
    /// The vector column.
    pub vector: String,
    /// How the vector column is read: `Native` for pgvector's `vector` and
    /// `halfvec` (an HNSW index applies), `Array` for `real[]` (cast, read
    /// whole).
    pub vector_kind: VectorKind,
    /// pgvector's schema, quoted.
    pub pgvector_schema: String,
    /// The model identity column of the vector table, if it has one.
    pub model: Option<String>,
    /// `vectors` is a chunk table (`chunk`, `section`, `char_start`,
    /// `char_end` columns).
    pub chunks: bool,
    /// The notes' text column.
    pub text: String,
    /// A stored `tsvector` column of the notes table to search instead of
    /// the text.
    pub tsvector: Option<String>,
    /// The text search configuration, as its name.
    pub language: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorKind {
    /// pgvector's `vector` or `halfvec`, by type name.
    Native(NativeType),
    /// `real[]`.
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeType {
    Vector,
    Halfvec,
}

/// One equality filter on a column of the notes table: its value comes as
/// text and is cast to the column's type (`type_name`, as `format_type`
/// prints it); `is_null` filters for NULL and takes no parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub column: String,
    pub type_name: String,
    pub is_null: bool,
}

/// How a row's key reads: `ARRAY[alias.k1::text, ...]`.
fn key_text(alias: &str, keys: &[(String, String)]) -> String {
    let parts: Vec<String> = keys
        .iter()
        .map(|(k, _)| format!("{alias}.{}::pg_catalog.text", quote_ident(k)))
        .collect();
    format!("ARRAY[{}]", parts.join(", "))
}

/// The filters' conditions on `alias` (the notes table), parameters from
/// `first`.
fn filter_conditions(alias: &str, filters: &[Filter], first: usize) -> Vec<String> {
    let mut n = first;
    filters
        .iter()
        .map(|f| {
            if f.is_null {
                format!("{alias}.{} IS NULL", quote_ident(&f.column))
            } else {
                let c = format!(
                    "{alias}.{} OPERATOR(pg_catalog.=) ${n}::pg_catalog.text::{}",
                    quote_ident(&f.column),
                    f.type_name
                );
                n += 1;
                c
            }
        })
        .collect()
}

/// How many parameters the filters take.
pub fn filter_params(filters: &[Filter]) -> usize {
    filters.iter().filter(|f| !f.is_null).count()
}

impl Target {
    fn distance(&self, alias: &str) -> String {
        let s = &self.pgvector_schema;
        let (column, ty) = match self.vector_kind {
            VectorKind::Native(NativeType::Vector) => (
                format!("{alias}.{}", quote_ident(&self.vector)),
                format!("{s}.vector"),
            ),
            VectorKind::Native(NativeType::Halfvec) => (
                format!("{alias}.{}", quote_ident(&self.vector)),
                format!("{s}.halfvec"),
            ),
            VectorKind::Array => (
                format!("{alias}.{}::{s}.vector", quote_ident(&self.vector)),
                format!("{s}.vector"),
            ),
        };
        format!("{column} OPERATOR({s}.<=>) $1::pg_catalog.float4[]::{ty}")
    }

    /// The filters' conditions for a row `v` of the vector table: on the
    /// row itself when it is a note, through its note otherwise.
    fn note_filters(&self, filters: &[Filter], first: usize) -> Option<String> {
        if filters.is_empty() {
            return None;
        }
        if !self.chunks {
            return Some(filter_conditions("v", filters, first).join(" AND "));
        }
        let join: Vec<String> = self
            .keys
            .iter()
            .map(|(k, _)| {
                let k = quote_ident(k);
                format!("n.{k} OPERATOR(pg_catalog.=) v.{k}")
            })
            .chain(filter_conditions("n", filters, first))
            .collect();
        Some(format!(
            "EXISTS (SELECT 1 FROM {} n WHERE {})",
            self.notes,
            join.join(" AND ")
        ))
    }

    /// The vector leg: rows nearest the query first, with their key, span
    /// (NULLs for a notes table), cosine distance and model identity (NULL
    /// without a model column).  `exact` reads every matching row and
    /// sorts (no index can order it: the distance is computed below an
    /// `OFFSET 0` fence), for when an index scan gave fewer rows than asked
    /// although more match (an HNSW scan stops at `hnsw.max_scan_tuples`).
    pub fn vector_leg(&self, by_model: bool, filters: &[Filter], exact: bool) -> String {
        let span = if self.chunks {
            "v.chunk, v.section::pg_catalog.text, v.char_start, v.char_end"
        } else {
            "NULL::pg_catalog.int4, NULL::pg_catalog.text, NULL::pg_catalog.int4, NULL::pg_catalog.int4"
        };
        let model = match &self.model {
            Some(m) => format!("v.{}::pg_catalog.text", quote_ident(m)),
            None => "NULL::pg_catalog.text".into(),
        };
        let mut conds = vec![format!("v.{} IS NOT NULL", quote_ident(&self.vector))];
        let mut first_filter = 3;
        if by_model {
            if let Some(m) = &self.model {
                conds.push(format!(
                    "v.{}::pg_catalog.text OPERATOR(pg_catalog.=) $3",
                    quote_ident(m)
                ));
            }
            first_filter = 4;
        }
        conds.extend(self.note_filters(filters, first_filter));
        let distance = self.distance("v");
        let select = format!(
            "SELECT {key} AS key, {span}, ({distance})::pg_catalog.float8 AS distance, {model} AS model \
             FROM {table} v WHERE {conds}",
            key = key_text("v", &self.keys),
            table = self.vectors,
            conds = conds.join(" AND "),
        );
        if exact {
            format!("SELECT * FROM ({select} OFFSET 0) s ORDER BY distance LIMIT $2")
        } else {
            format!("{select} ORDER BY {distance} LIMIT $2")
        }
    }

    /// The text searched: the stored `tsvector`, or the text's.
    fn document(&self, alias: &str) -> String {
        match &self.tsvector {
            Some(t) => format!("{alias}.{}", quote_ident(t)),
            None => format!(
                "pg_catalog.to_tsvector({}::pg_catalog.regconfig, {alias}.{})",
                quote_literal(&self.language),
                quote_ident(&self.text)
            ),
        }
    }

    /// The query as a `tsquery`, from `$1` as a web search engine reads it
    /// (quoted phrases, `or`, `-` for not).
    fn tsquery(&self) -> String {
        format!(
            "pg_catalog.websearch_to_tsquery({}::pg_catalog.regconfig, $1)",
            quote_literal(&self.language)
        )
    }

    /// The lexical leg: notes whose text matches the query, by `ts_rank_cd`
    /// (cover density) best first, ties by key; their key and rank.  Written
    /// so that a GIN index on the same expression
    /// (`to_tsvector('english', text)`) or on the stored `tsvector` serves
    /// the match.
    pub fn lexical_leg(&self, filters: &[Filter]) -> String {
        let doc = self.document("n");
        let mut conds = vec![format!("{doc} OPERATOR(pg_catalog.@@) q.q")];
        conds.extend(filter_conditions("n", filters, 3));
        format!(
            "SELECT {key} AS key, pg_catalog.ts_rank_cd({doc}, q.q)::pg_catalog.float8 AS rank \
             FROM {notes} n, {tsq} AS q(q) WHERE {conds} ORDER BY rank DESC, key LIMIT $2",
            key = key_text("n", &self.keys),
            notes = self.notes,
            tsq = self.tsquery(),
            conds = conds.join(" AND "),
        )
    }

    /// For notes of a chunk table that the lexical leg found: each note's
    /// chunk row whose span ranks best for the query (ties to the first
    /// chunk), with its key and span.  `$1` the query text, `$2`, `$3`, ...
    /// the notes' keys as `text[]`s, one per key column.
    pub fn lexical_spans(&self) -> String {
        let (unnest, names, matched) =
            keys_as_text(&self.keys, |i| i + 2, "c", "w", "OPERATOR(pg_catalog.=)");
        let join: Vec<String> = self
            .keys
            .iter()
            .map(|(k, _)| {
                let k = quote_ident(k);
                format!("n.{k} OPERATOR(pg_catalog.=) c.{k}")
            })
            .collect();
        let span_doc = format!(
            "pg_catalog.to_tsvector({}::pg_catalog.regconfig, pg_catalog.substr(n.{}, c.char_start + 1, c.char_end - c.char_start))",
            quote_literal(&self.language),
            quote_ident(&self.text)
        );
        let key = key_text("c", &self.keys);
        format!(
            "SELECT DISTINCT ON ({key}) {key} AS key, c.chunk, c.section::pg_catalog.text, c.char_start, c.char_end \
             FROM ROWS FROM ({unnest}) AS w({names}) \
             JOIN {chunks} c ON {matched} \
             JOIN {notes} n ON {join}, {tsq} AS q(q) \
             ORDER BY {key}, pg_catalog.ts_rank_cd({span_doc}, q.q) DESC, c.chunk",
            chunks = self.vectors,
            notes = self.notes,
            join = join.join(" AND "),
            tsq = self.tsquery(),
        )
    }

    /// The notes' text by key: `$1`, `$2`, ... the keys as `text[]`s, one
    /// per key column; each found note's key and text.
    pub fn note_texts(&self) -> String {
        let (unnest, names, matched) =
            keys_as_text(&self.keys, |i| i + 1, "n", "w", "OPERATOR(pg_catalog.=)");
        format!(
            "SELECT {key} AS key, n.{text}::pg_catalog.text \
             FROM ROWS FROM ({unnest}) AS w({names}) JOIN {notes} n ON {matched}",
            key = key_text("n", &self.keys),
            text = quote_ident(&self.text),
            notes = self.notes,
        )
    }

    /// The first stored vector's model identity (NULL without a model
    /// column) and dimensions: what the query is embedded with and checked
    /// against.  With a model column, `$1` the model identity to look for,
    /// or NULL for any; without, no parameter.
    pub fn probe(&self) -> String {
        let s = &self.pgvector_schema;
        let dims = match self.vector_kind {
            VectorKind::Native(NativeType::Vector) => {
                format!("{s}.vector_dims(v.{})", quote_ident(&self.vector))
            }
            VectorKind::Native(NativeType::Halfvec) => {
                format!("{s}.vector_dims(v.{})", quote_ident(&self.vector))
            }
            VectorKind::Array => format!(
                "pg_catalog.array_length(v.{}, 1)",
                quote_ident(&self.vector)
            ),
        };
        let (model, by_model) = match &self.model {
            Some(m) => (
                format!("v.{}::pg_catalog.text", quote_ident(m)),
                format!(
                    " AND ($1::pg_catalog.text IS NULL OR v.{}::pg_catalog.text OPERATOR(pg_catalog.=) $1)",
                    quote_ident(m)
                ),
            ),
            None => ("NULL::pg_catalog.text".into(), String::new()),
        };
        format!(
            "SELECT {model}, {dims} FROM {table} v WHERE v.{vec} IS NOT NULL{by_model} LIMIT 1",
            table = self.vectors,
            vec = quote_ident(&self.vector),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_target() -> Target {
        Target {
            vectors: "\"public\".\"note_chunks\"".into(),
            notes: "\"public\".\"notes\"".into(),
            keys: vec![("note_id".into(), "integer".into())],
            vector: "embedding".into(),
            vector_kind: VectorKind::Native(NativeType::Vector),
            pgvector_schema: "\"public\"".into(),
            model: Some("model".into()),
            chunks: true,
            text: "exp_text".into(),
            tsvector: None,
            language: "english".into(),
        }
    }

    #[test]
    fn the_vector_leg_orders_by_the_operator_an_index_serves() {
        let t = chunk_target();
        let sql = t.vector_leg(false, &[], false);
        assert!(sql.ends_with(
            "ORDER BY v.\"embedding\" OPERATOR(\"public\".<=>) $1::pg_catalog.float4[]::\"public\".vector LIMIT $2"
        ));
        assert!(sql.contains("v.chunk, v.section"));
        let exact = t.vector_leg(false, &[], true);
        assert!(exact.contains("OFFSET 0) s ORDER BY distance LIMIT $2"));
    }

    #[test]
    fn filters_are_parameters_cast_to_the_column_type() {
        let t = chunk_target();
        let filters = vec![
            Filter {
                column: "patient id".into(),
                type_name: "integer".into(),
                is_null: false,
            },
            Filter {
                column: "ward".into(),
                type_name: "text".into(),
                is_null: true,
            },
            Filter {
                column: "kind".into(),
                type_name: "text".into(),
                is_null: false,
            },
        ];
        assert_eq!(filter_params(&filters), 2);
        let sql = t.vector_leg(true, &filters, false);
        assert!(sql.contains("v.\"model\"::pg_catalog.text OPERATOR(pg_catalog.=) $3"));
        assert!(sql.contains(
            "EXISTS (SELECT 1 FROM \"public\".\"notes\" n WHERE n.\"note_id\" OPERATOR(pg_catalog.=) v.\"note_id\" AND n.\"patient id\" OPERATOR(pg_catalog.=) $4::pg_catalog.text::integer AND n.\"ward\" IS NULL AND n.\"kind\" OPERATOR(pg_catalog.=) $5::pg_catalog.text::text)"
        ));
        let lex = t.lexical_leg(&filters);
        assert!(
            lex.contains("n.\"patient id\" OPERATOR(pg_catalog.=) $3::pg_catalog.text::integer")
        );
        assert!(lex.contains("n.\"kind\" OPERATOR(pg_catalog.=) $4::"));
    }

    #[test]
    fn the_lexical_leg_matches_an_expression_index() {
        let mut t = chunk_target();
        t.language = "it's".into();
        let sql = t.lexical_leg(&[]);
        assert!(sql.contains(
            "pg_catalog.to_tsvector('it''s'::pg_catalog.regconfig, n.\"exp_text\") OPERATOR(pg_catalog.@@) q.q"
        ));
        t.tsvector = Some("tsv".into());
        assert!(t
            .lexical_leg(&[])
            .contains("n.\"tsv\" OPERATOR(pg_catalog.@@) q.q"));
        let spans = t.lexical_spans();
        assert!(spans.contains("pg_catalog.unnest($2::pg_catalog.text[])"));
        let texts = t.note_texts();
        assert!(texts.contains("ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[])) AS w(k1)"));
        assert!(texts.contains("n.\"note_id\" OPERATOR(pg_catalog.=) w.k1::integer"));
        assert!(spans.contains("DISTINCT ON (ARRAY[c.\"note_id\"::pg_catalog.text])"));
    }

    #[test]
    fn arrays_are_cast_and_notes_have_no_span() {
        let mut t = chunk_target();
        t.chunks = false;
        t.vectors = t.notes.clone();
        t.vector_kind = VectorKind::Array;
        let sql = t.vector_leg(false, &[], false);
        assert!(sql.contains("v.\"embedding\"::\"public\".vector OPERATOR(\"public\".<=>)"));
        assert!(sql.contains("NULL::pg_catalog.int4, NULL::pg_catalog.text"));
        assert!(t
            .probe()
            .contains("pg_catalog.array_length(v.\"embedding\", 1)"));
    }
}
