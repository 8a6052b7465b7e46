-- embed_text on the default model: shape, NULL, empty text, long and huge
-- text, scripts and symbols, similarity, and the function markings.
CREATE EXTENSION IF NOT EXISTS clinembed;
CREATE FUNCTION cosine(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE AS
$$ SELECT sum(x * y) / (sqrt(sum(x * x)) * sqrt(sum(y * y))) FROM unnest(a::float8[], b::float8[]) t(x, y) $$;
CREATE FUNCTION finite(a real[]) RETURNS bool LANGUAGE sql IMMUTABLE AS
$$ SELECT bool_and(x NOT IN ('NaN'::real, 'Infinity'::real, '-Infinity'::real)) FROM unnest(a) x $$;

-- no schema prefix needed with the default search_path
SHOW search_path;
SELECT array_length(embed_text('chest pain'), 1) AS dims;
SELECT model, dimensions, max_length, pooling, normalize, inputs, output, onnxruntime_version,
       intra_op_threads >= 1 AS has_threads
FROM embed_model_info();

-- STRICT: NULL in, NULL out
SELECT embed_text(NULL) IS NULL AS null_out, embed_token_count(NULL) IS NULL AS null_count;
SELECT count(*) AS rows, count(e) AS embedded
FROM (SELECT embed_text(t) AS e FROM (VALUES ('a'), (NULL), ('b')) v(t)) s;

-- deterministic
SELECT embed_text('Pt c/o SOB x3d') = embed_text('Pt c/o SOB x3d') AS same;

-- empty and whitespace-only text embed [CLS] [SEP]: finite, equal, not zero
SELECT embed_token_count('') AS tokens, finite(embed_text('')) AS finite,
       embed_text('') = embed_text(E' \t\n ') AS empty_equals_blank,
       (SELECT bool_or(x <> 0) FROM unnest(embed_text('')) x) AS nonzero;

-- over 512 tokens: truncated at 512, no error; text past the cut changes nothing
SELECT embed_token_count(repeat('afebrile lungs clear ', 300)) AS tokens;
SELECT embed_text(repeat('afebrile lungs clear ', 300))
     = embed_text(repeat('afebrile lungs clear ', 300) || 'sepsis intubated') AS tail_ignored;
-- truncation is never silent: embed_truncation tells which notes lose text
SELECT * FROM embed_truncation('Patient stable.');
SELECT * FROM embed_truncation(repeat('word ', 600));
SELECT * FROM embed_truncation(NULL);

-- a 2 MB note
SELECT array_length(embed_text(repeat('afebrile lungs clear ', 100000)), 1) AS huge_dims,
       embed_text(repeat('afebrile lungs clear ', 100000)) = embed_text(repeat('afebrile lungs clear ', 300)) AS same_prefix;

-- accents, scripts, emoji, numbers, punctuation only
SELECT label, array_length(embed_text(t), 1) AS dims, finite(embed_text(t)) AS finite
FROM (VALUES ('accents', 'café résumé naïve'), ('japanese', '胸痛と息切れ'), ('cyrillic', 'Боль в груди'),
             ('arabic', 'ألم في الصدر'), ('emoji', '🫀💊🩺'), ('numbers', 'BP 142/91 HR 104 T 38.4'),
             ('punctuation', '?!...;;--'), ('one 5000-char word', repeat('x', 5000))) v(label, t);

-- similar notes are closer than unrelated ones
SELECT cosine(a, b) > cosine(a, c) + 0.05 AS similar_closer
FROM (SELECT embed_text('Crushing substernal chest pain, troponin elevated, ST depressions.') a,
             embed_text('NSTEMI: chest pain with rising troponin; cardiology consulted for catheterization.') b,
             embed_text('Distal radius fracture after a fall; splint applied, orthopedics follow-up.') c) v;

-- markings: STABLE (depends on the configured model), PARALLEL SAFE, STRICT,
-- and a cost that tells the planner embedding is expensive
SELECT DISTINCT proname, provolatile, proparallel, proisstrict, procost FROM pg_proc
WHERE proname IN ('embed_text', 'embed_texts', 'embed_token_count', 'embed_model_info') ORDER BY proname;

-- pgvector pairing: a vector column checks the width of what is stored in it
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE notes_v (note_id int, embedding vector(384));
INSERT INTO notes_v VALUES (1, embed_text('chest pain')::vector(384));
SELECT vector_dims(embedding) FROM notes_v;
INSERT INTO notes_v VALUES (2, embed_text('chest pain')::vector(768));
INSERT INTO notes_v VALUES (3, embed_text(NULL)::vector(384));
SELECT note_id, embedding IS NULL AS no_vector FROM notes_v ORDER BY note_id;
