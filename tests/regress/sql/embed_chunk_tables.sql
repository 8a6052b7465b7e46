-- Chunk tables: embed_chunks_trigger's set-up checks and what it does in
-- the writing transaction (the queue workers' part is in
-- tests/integration/test_chunks.py).
CREATE EXTENSION IF NOT EXISTS clinembed;
\set SHOW_CONTEXT never
-- embed_chunks: windows inside sections, each with its section's name
SELECT chunk, section, char_start, char_end, tokens, array_length(embedding, 1) > 0 AS has_vector
  FROM embed_chunks(E'HPI: chest pain since this morning.\nMEDICATIONS:\n- aspirin 81 mg daily\nASSESSMENT AND PLAN: admit.');
-- without sections, the whole text's windows, as before
SELECT chunk, section, char_start, char_end FROM embed_chunks(E'HPI: chest pain.\nPLAN: admit.', sections => false);
-- a window's vector is its span's, whichever way it was cut
SELECT bool_and(c.embedding = embed_text(substr(t, c.char_start + 1, c.char_end - c.char_start))) AS spans
  FROM (SELECT E'HPI: chest pain.\nMEDICATIONS: aspirin.\nPLAN: admit.' AS t) n, embed_chunks(t) c;
-- with header_context => true a section's later windows are embedded led by
-- its header, as the text 'header: window' (its first window starts with the
-- header already); without (the default), every window is its span
CREATE FUNCTION pg_temp.gap(a real[], b real[]) RETURNS real LANGUAGE sql
    AS 'SELECT max(abs(x - y)) FROM unnest(a, b) u(x, y)';
WITH n AS (SELECT E'Admitted overnight.\nHOSPITAL COURSE:\n'
                  || repeat('Patient improved on diuresis and walked in the hall with a walker. ', 30) AS t)
SELECT h.header_context, count(*) AS windows, count(*) FILTER (WHERE c.char_start > s.char_start) AS later,
       max(pg_temp.gap(c.embedding, embed_text(CASE
           WHEN h.header_context AND c.char_start > s.char_start THEN s.header || ': ' ELSE '' END
           || substr(n.t, c.char_start + 1, c.char_end - c.char_start)))) < 1e-5 AS as_said
  FROM n, (VALUES (true), (false)) h(header_context),
       LATERAL embed_chunks(n.t, header_context => h.header_context) c,
       LATERAL embed_sections(n.t) s
 WHERE s.name IS NOT NULL AND c.char_start >= s.char_start AND c.char_end <= s.char_end
 GROUP BY h.header_context ORDER BY h.header_context;

CREATE TABLE cn_notes (id bigint PRIMARY KEY, body text, other int DEFAULT 0);
CREATE TABLE cn_chunks (id bigint, chunk int, section text, char_start int, char_end int,
                        tokens int, embedding real[], model text);
CREATE TRIGGER chunks BEFORE INSERT OR UPDATE OR DELETE ON cn_notes FOR EACH ROW
    EXECUTE FUNCTION embed_chunks_trigger('body', 'cn_chunks', 'embedding', 'model');
-- in one transaction, so that no queue worker takes a key before it is seen
BEGIN;
-- an insert queues the note's key and runs no inference (without text too:
-- an INSERT ... ON CONFLICT DO NOTHING has deleted the stored note's rows)
INSERT INTO cn_notes (id, body) VALUES (1, 'HPI: chest pain.'), (2, NULL);
SELECT key FROM embed_queue WHERE relid = 'cn_notes'::regclass ORDER BY key;
-- chunk rows the worker would have written (written by hand here)
INSERT INTO cn_chunks (id, chunk, section, char_start, char_end, tokens, embedding)
SELECT 1, c.chunk, c.section, c.char_start, c.char_end, c.tokens, c.embedding FROM embed_chunks('HPI: chest pain.') c;
DELETE FROM embed_queue WHERE relid = 'cn_notes'::regclass;
-- another column: nothing deleted, nothing queued
UPDATE cn_notes SET other = 1 WHERE id = 1;
SELECT count(*) AS chunk_rows, (SELECT count(*) FROM embed_queue WHERE relid = 'cn_notes'::regclass) AS queued
  FROM cn_chunks WHERE id = 1;
-- a new text: the old chunk rows are gone in the writing transaction
SAVEPOINT s;
UPDATE cn_notes SET body = 'HPI: no chest pain.' WHERE id = 1;
SELECT count(*) AS chunk_rows, (SELECT count(*) FROM embed_queue WHERE relid = 'cn_notes'::regclass) AS queued
  FROM cn_chunks WHERE id = 1;
ROLLBACK TO s;
-- rolled back: the rows and the queue as they were
SELECT count(*) AS chunk_rows, (SELECT count(*) FROM embed_queue WHERE relid = 'cn_notes'::regclass) AS queued
  FROM cn_chunks WHERE id = 1;
-- a new key: its rows go with it, and it is queued under the new one
UPDATE cn_notes SET id = 10 WHERE id = 1;
SELECT count(*) AS chunk_rows, (SELECT array_agg(key) FROM embed_queue WHERE relid = 'cn_notes'::regclass) AS queued
  FROM cn_chunks;
-- a deleted note leaves no chunk rows
INSERT INTO cn_chunks (id, chunk, section, char_start, char_end, tokens) VALUES (2, 1, NULL, 0, 0, 0);
DELETE FROM cn_notes WHERE id = 2;
SELECT count(*) AS chunk_rows FROM cn_chunks WHERE id = 2;
-- embed_queue_enqueue queues the notes whose chunk rows are missing
DELETE FROM embed_queue WHERE relid = 'cn_notes'::regclass;
INSERT INTO cn_notes (id, body) VALUES (3, 'PLAN: discharge.');
DELETE FROM embed_queue WHERE relid = 'cn_notes'::regclass;
SELECT embed_queue_enqueue('cn_notes') AS queued;
SELECT key FROM embed_queue WHERE relid = 'cn_notes'::regclass ORDER BY key;
DELETE FROM embed_queue WHERE relid = 'cn_notes'::regclass;
COMMIT;

-- set-up checks, at the first write
CREATE TABLE cn_bad (id bigint PRIMARY KEY, body text);
CREATE TABLE cn_bad_chunks (id integer, chunk int, section text, char_start int, char_end int, tokens int, embedding real[]);
CREATE TRIGGER chunks BEFORE INSERT OR UPDATE ON cn_bad FOR EACH ROW
    EXECUTE FUNCTION embed_chunks_trigger('body', 'cn_bad_chunks');
INSERT INTO cn_bad VALUES (1, 'x');
ALTER TABLE cn_bad_chunks ALTER COLUMN id TYPE bigint, DROP COLUMN section;
INSERT INTO cn_bad VALUES (1, 'x');
ALTER TABLE cn_bad_chunks ADD COLUMN section int;
INSERT INTO cn_bad VALUES (1, 'x');
ALTER TABLE cn_bad_chunks DROP COLUMN section, ADD COLUMN section text, ALTER COLUMN embedding TYPE text;
INSERT INTO cn_bad VALUES (1, 'x');
DROP TABLE cn_bad_chunks;
INSERT INTO cn_bad VALUES (1, 'x');
DROP TRIGGER chunks ON cn_bad;
CREATE TRIGGER chunks BEFORE INSERT OR UPDATE ON cn_bad FOR EACH ROW
    EXECUTE FUNCTION embed_chunks_trigger('body');
INSERT INTO cn_bad VALUES (1, 'x');
DROP TRIGGER chunks ON cn_bad;
CREATE TRIGGER chunks AFTER INSERT ON cn_bad FOR EACH ROW
    EXECUTE FUNCTION embed_chunks_trigger('body', 'cn_chunks');
INSERT INTO cn_bad VALUES (1, 'x');
DROP TRIGGER chunks ON cn_bad;
-- an UPDATE OF list must name the key: a key changed alone would strand
-- the note's chunk rows
CREATE TRIGGER chunks BEFORE INSERT OR UPDATE OF body ON cn_bad FOR EACH ROW
    EXECUTE FUNCTION embed_chunks_trigger('body', 'cn_chunks');
INSERT INTO cn_bad VALUES (1, 'x');
DROP TABLE cn_bad;
CREATE TABLE cn_nokey (id bigint, body text);
CREATE TRIGGER chunks BEFORE INSERT ON cn_nokey FOR EACH ROW
    EXECUTE FUNCTION embed_chunks_trigger('body', 'cn_chunks');
INSERT INTO cn_nokey VALUES (1, 'x');
DROP TABLE cn_nokey;
SELECT embed_chunks_trigger();

-- a writer that may update notes but not delete chunk rows is refused
-- before anything is written
CREATE ROLE cn_writer;
GRANT SELECT, INSERT, UPDATE ON cn_notes TO cn_writer;
SET ROLE cn_writer;
UPDATE cn_notes SET body = 'PLAN: stay.' WHERE id = 3;
RESET ROLE;
GRANT SELECT, DELETE ON cn_chunks TO cn_writer;
BEGIN;
SET ROLE cn_writer;
UPDATE cn_notes SET body = 'PLAN: stay.' WHERE id = 3;
RESET ROLE;
SELECT key FROM embed_queue WHERE relid = 'cn_notes'::regclass ORDER BY key;
DELETE FROM embed_queue WHERE relid = 'cn_notes'::regclass;
COMMIT;
DROP TABLE cn_notes, cn_chunks;
DROP ROLE cn_writer;

-- coverage: a note's tokens, the tokens its chunk rows embed, its rows and
-- its named sections
CREATE TABLE cv_notes (id int PRIMARY KEY, body text);
CREATE TABLE cv_chunks (id int, chunk int, section text, char_start int, char_end int, tokens int, embedding real[]);
CREATE TRIGGER chunks BEFORE INSERT OR UPDATE OR DELETE ON cv_notes FOR EACH ROW
    EXECUTE FUNCTION embed_chunks_trigger('body', 'cv_chunks');
BEGIN;
INSERT INTO cv_notes VALUES (1, E'HPI: chest pain.\nPLAN: admit.'), (2, 'no headers at all'), (3, NULL);
INSERT INTO cv_chunks SELECT 1, c.chunk, c.section, c.char_start, c.char_end, c.tokens, c.embedding
  FROM cv_notes n, embed_chunks(n.body) c WHERE n.id = 1;
SELECT * FROM embed_chunk_coverage('cv_notes') ORDER BY key;
DELETE FROM embed_queue WHERE relid = 'cv_notes'::regclass;
COMMIT;
SELECT * FROM embed_chunk_coverage('cn_nowhere');
CREATE TABLE cv_plain (id int PRIMARY KEY);
SELECT * FROM embed_chunk_coverage('cv_plain');
DROP TABLE cv_notes, cv_chunks, cv_plain;

-- the chunked policy's pooling: by name, and only these names
SELECT array_length(embed_text_chunked('Chest pain.', pooling => 'mean_max'), 1)
     = 2 * array_length(embed_text('Chest pain.'), 1) AS twice;
SELECT embed_text_chunked('Chest pain.', pooling => 'max') = embed_text('Chest pain.') AS one_window_max;
SELECT embed_text_chunked('Chest pain.', pooling => 'min');
SET clinembed.long_text = 'chunk';
SET clinembed.chunk_pooling = 'mean_max';
SELECT embed_model_id() LIKE '%+chunk128/32/mean_max' AS named;
SELECT embed_text_pinned('Chest pain.', embed_model_id()) = embed_text_chunked('Chest pain.', pooling => 'mean_max') AS pinned;
RESET clinembed.chunk_pooling;
RESET clinembed.long_text;
