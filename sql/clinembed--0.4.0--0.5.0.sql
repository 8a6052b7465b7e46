-- clinembed 0.4.0 -> 0.5.0.
--
-- embed_stats() reports the backend's memory as an operator needs it:
-- proportional (pss_kb), private and shared, beside resident (rss_kb).
\echo Use "ALTER EXTENSION clinembed UPDATE TO '0.5.0'" to load this file. \quit

DROP FUNCTION @extschema@.embed_stats();
CREATE FUNCTION @extschema@."embed_stats"() RETURNS TABLE (
	"model" TEXT,
	"path" TEXT,
	"model_id" TEXT,
	"load_ms" double precision,
	"calls" bigint,
	"texts" bigint,
	"tokens" bigint,
	"runs" bigint,
	"rss_kb" bigint,
	"pss_kb" bigint,
	"private_kb" bigint,
	"shared_kb" bigint
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_stats_wrapper';
