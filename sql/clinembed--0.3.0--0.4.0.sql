-- clinembed 0.3.0 -> 0.4.0.
--
-- The pinned forms: embed_text_pinned and embed_texts_pinned take the model
-- identity as an argument, check it at every call, and are IMMUTABLE, so
-- postgres_fdw ships them to remote servers and generated columns and
-- expression indexes accept them.  embed_chunks, embed_text_chunked,
-- embed_token_count and embed_truncation take model => as embed_text does.
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

CREATE FUNCTION @extschema@."embed_chunks"(
	"text" TEXT,
	"model" TEXT,
	"window_tokens" INT DEFAULT 128,
	"overlap_tokens" INT DEFAULT 32
) RETURNS TABLE (
	"chunk" INT,
	"char_start" INT,
	"char_end" INT,
	"tokens" INT,
	"embedding" real[]
)
STRICT STABLE PARALLEL SAFE COST 10000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_chunks_model_wrapper';

CREATE FUNCTION @extschema@."embed_text_chunked"(
	"text" TEXT,
	"model" TEXT,
	"window_tokens" INT DEFAULT 128,
	"overlap_tokens" INT DEFAULT 32
) RETURNS real[]
STRICT STABLE PARALLEL SAFE COST 10000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_text_chunked_model_wrapper';

CREATE FUNCTION @extschema@."embed_token_count"(
	"text" TEXT,
	"model" TEXT
) RETURNS INT
STRICT STABLE PARALLEL SAFE COST 1000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_token_count_model_wrapper';

CREATE FUNCTION @extschema@."embed_truncation"(
	"text" TEXT,
	"model" TEXT
) RETURNS TABLE (
	"tokens" INT,
	"max_length" INT,
	"truncated" bool
)
STRICT STABLE PARALLEL SAFE COST 1000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_truncation_model_wrapper';
