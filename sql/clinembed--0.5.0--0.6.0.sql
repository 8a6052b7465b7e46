-- clinembed 0.5.0 -> 0.6.0.
--
-- Model weights shared between backends (clinembed.shared_weights,
-- clinembed.weights_cache; in the library): embed_model_info() says where a
-- model's weights are (weights, weights_detail), and embed_stats() per
-- loaded model (weights).
\echo Use "ALTER EXTENSION clinembed UPDATE TO '0.6.0'" to load this file. \quit

DROP FUNCTION @extschema@.embed_model_info();
CREATE FUNCTION @extschema@."embed_model_info"() RETURNS TABLE (
	"model" TEXT,
	"path" TEXT,
	"dimensions" INT,
	"max_length" INT,
	"pooling" TEXT,
	"normalize" bool,
	"inputs" TEXT[],
	"output" TEXT,
	"onnxruntime_version" TEXT,
	"intra_op_threads" INT,
	"batch_invariant" bool,
	"weights" TEXT,
	"weights_detail" TEXT
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_model_info_wrapper';

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
	"shared_kb" bigint,
	"weights" TEXT
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_stats_wrapper';
