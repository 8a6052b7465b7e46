-- clinembed 0.9.0 -> 0.10.0: the backfill's steps move from PL/pgSQL into
-- the library.  _backfill_start (arguments, column and dimension checks, the
-- refusal of a second model, counting, the run row) and _backfill_batch (the
-- scan's walk over tables and passes, the batch, progress, finishing) are C
-- functions (src/backfill.rs over clinembed_core::backfill), with the same
-- errors and notices; they take the relation as an oid, which embed_backfill
-- passes as the regclass it has (an implicit cast).  _embed_constraint_error
-- is a C function too, shared by the batch trigger and the backfill.
-- _backfill_tables, used only by the two steps, is dropped: the library
-- calls its rule directly.  embed_backfill itself is unchanged.

DROP FUNCTION @extschema@._backfill_start(pg_catalog.regclass, text, text, integer, text);
DROP FUNCTION @extschema@._backfill_batch(bigint, text);
DROP FUNCTION @extschema@._embed_constraint_error(pg_catalog.regclass, text, text);
DROP FUNCTION @extschema@._backfill_tables(oid, text, text, text);

CREATE FUNCTION @extschema@."_backfill_start"(
	"rel" oid,
	"source_column" TEXT,
	"target_column" TEXT,
	"batch_size" INT,
	"model_column" TEXT
) RETURNS bigint
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', '_backfill_start_wrapper';

CREATE FUNCTION @extschema@."_backfill_batch"(
	"run" bigint,
	"caller_search_path" TEXT
) RETURNS bool
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c
AS 'MODULE_PATHNAME', '_backfill_batch_wrapper';

CREATE FUNCTION @extschema@."_embed_constraint_error"(
	"rel" oid,
	"state" TEXT,
	"message" TEXT
) RETURNS void
VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_constraint_error_wrapper';
