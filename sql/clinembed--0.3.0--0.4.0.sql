-- clinembed 0.3.0 -> 0.4.0.
--
-- The pinned forms: embed_text_pinned and embed_texts_pinned take the model
-- identity as an argument, check it at every call, and are IMMUTABLE, so
-- postgres_fdw ships them to remote servers and generated columns and
-- expression indexes accept them.
\echo Use "ALTER EXTENSION clinembed UPDATE TO '0.4.0'" to load this file. \quit

CREATE FUNCTION @extschema@."embed_text_pinned"(
	"text" TEXT,
	"model_id" TEXT
) RETURNS real[]
IMMUTABLE STRICT PARALLEL SAFE COST 10000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_text_pinned_wrapper';

CREATE FUNCTION @extschema@."embed_texts_pinned"(
	"texts" TEXT[],
	"model_id" TEXT
) RETURNS TABLE (
	"ord" INT,
	"embedding" real[]
)
IMMUTABLE STRICT PARALLEL SAFE COST 10000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_texts_pinned_wrapper';
