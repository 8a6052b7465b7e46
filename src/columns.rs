//! Embeddings beside their rows: the row and statement triggers, the
//! resumable backfill and its progress view.  They are PL/pgSQL in
//! `sql/columns.sql`: they only move rows between tables and the embedding
//! functions, and PL/pgSQL gives the backfill its per-batch COMMIT.
//! Everything that computes is still `embed_text` and `embed_texts`.

use pgrx::prelude::*;

extension_sql_file!(
    "../sql/columns.sql",
    name = "columns",
    requires = [embed_text, embed_texts, embed_model_id, embed_model_info]
);
