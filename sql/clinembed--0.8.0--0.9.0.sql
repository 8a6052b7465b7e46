-- clinembed 0.8.0 -> 0.9.0: _backfill_tables, which finds the tables a
-- backfill writes (the relation, its partitions and inheritance children)
-- and refuses foreign tables and missing privileges, moves from PL/pgSQL
-- into the library (clinembed_core::columns::backfill_tables), with the
-- same errors.  Its callers, _backfill_start and _backfill_batch, call it by
-- name and are unchanged.  In the library only: the setting
-- clinembed.max_sessions is renamed clinembed.max_loaded_models.

DROP FUNCTION @extschema@._backfill_tables(pg_catalog.regclass, text, text, text);

CREATE FUNCTION @extschema@."_backfill_tables"(
	"rel" oid,
	"source_column" TEXT,
	"target_column" TEXT,
	"model_column" TEXT
) RETURNS oid[]
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_backfill_tables_wrapper';
