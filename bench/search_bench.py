#!/usr/bin/env python3
"""embed_search's latency on a chunk table (bench/search.sh runs it).

In database BENCH (a table "source" of synthetic notes, scripts/lib.sh's
bench_notes): a notes table, its chunk rows filled from embed_chunks (the
rows the chunk trigger keeps, written here in one pass), a GIN index on the
notes' text, an HNSW index on the chunks; then, for each query of
scripts/gen_notes.py --queries, REPS times each:

  query embedding   SELECT embed_text(query): the part of a vector search
                    that is the model, reported apart
  vector, lexical,  SELECT * FROM embed_search('note_chunks', query, 10,
  hybrid            mode => ...), the lexical leg first through a GIN index
                    on to_tsvector('english', exp_text), then again with a
                    stored tsvector column (GENERATED ... STORED) and a GIN
                    index on it, which embed_search uses when it is there
  rerank top 20     embed_search(..., 10, rerank => 20) with a BERT-base
                    shaped cross-encoder (random weights: the cost of a
                    real one, scores that mean nothing)
  rerank alone      embed_rerank(query, the 20 best chunks' texts)

and prints p50 and p99 in milliseconds, measured by the client over a
Unix socket, one session, the model loaded before timing.
"""

import argparse
import statistics
import subprocess
import time

import psycopg


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def timed(c, sql, args):
    t = time.perf_counter()
    c.execute(sql, args).fetchall()
    return (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dbname", default="bench")
    ap.add_argument("--notes", type=int, required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rerank-reps", type=int, default=1, help="repetitions of the (slow) rerank rows")
    ap.add_argument("--reranker", default="")
    args = ap.parse_args()

    c = psycopg.connect(dbname=args.dbname, autocommit=True)
    c.execute("CREATE EXTENSION IF NOT EXISTS vector")
    c.execute("""CREATE TABLE notes (note_id int PRIMARY KEY, patient_id int, note_type text, exp_text text)""")
    c.execute("INSERT INTO notes SELECT note_id, patient_id, note_type, exp_text FROM source")
    c.execute("""CREATE TABLE note_chunks (note_id int, chunk int, section text, char_start int, char_end int,
                 tokens int, embedding vector(384), model text)""")
    t = time.perf_counter()
    step = 500
    for lo in range(1, args.notes + 1, step):
        c.execute("""INSERT INTO note_chunks SELECT n.note_id, c.chunk, c.section, c.char_start, c.char_end,
                     c.tokens, c.embedding::vector, embed_model_id() FROM notes n, embed_chunks(n.exp_text) c
                     WHERE n.note_id BETWEEN %s AND %s""", (lo, lo + step - 1))
    fill = time.perf_counter() - t
    c.execute("""CREATE TRIGGER chunks BEFORE INSERT OR UPDATE OR DELETE ON notes FOR EACH ROW
                 EXECUTE FUNCTION embed_chunks_trigger('exp_text', 'note_chunks', 'embedding', 'model')""")
    t = time.perf_counter()
    c.execute("CREATE INDEX ON note_chunks USING hnsw (embedding vector_cosine_ops)")
    c.execute("CREATE INDEX ON note_chunks (note_id)")
    c.execute("CREATE INDEX ON notes USING gin (to_tsvector('english', exp_text))")
    c.execute("ANALYZE notes")
    c.execute("ANALYZE note_chunks")
    index = time.perf_counter() - t
    rows = c.execute("SELECT count(*) FROM note_chunks").fetchone()[0]
    print(f"chunk rows: {rows} from {args.notes} notes; filled by embed_chunks in {fill:.0f} s "
          f"({rows / fill:.0f} rows/s); indexes (HNSW, GIN) in {index:.0f} s")

    queries = sorted({line.split("\t")[0] for line in subprocess.run(
        ["python3", "scripts/gen_notes.py", "--count", str(args.notes), "--queries"],
        check=True, capture_output=True, text=True).stdout.splitlines()})
    runs = [("query embedding", "SELECT embed_text(%s)", ()),
            ("vector", "SELECT * FROM embed_search('note_chunks', %s, 10, mode => 'vector')", ()),
            ("lexical", "SELECT * FROM embed_search('note_chunks', %s, 10, mode => 'lexical')", ()),
            ("hybrid", "SELECT * FROM embed_search('note_chunks', %s, 10)", ())]
    if args.reranker:
        runs.append(("hybrid, rerank top 20",
                     "SELECT * FROM embed_search('note_chunks', %s, 10, rerank => 20, rerank_model => %s)",
                     (args.reranker,)))
        runs.append(("rerank alone (20 chunks)",
                     """SELECT embed_rerank(%s, (SELECT array_agg(substr(n.exp_text, s.char_start + 1,
                        s.char_end - s.char_start)) FROM embed_search('note_chunks', %s, 20) s
                        JOIN notes n ON n.note_id = s.key[1]::int), model => %s)""", None))
    # Loaded and warm before timing.
    for name, sql, extra in runs:
        q = queries[0]
        c.execute(sql, (q, q, *([args.reranker])) if extra is None else (q, *extra)).fetchall()
    print(f"{len(queries)} queries, {args.reps} times each ({args.rerank_reps} for the rerank rows); milliseconds")
    print(f"{'':34} {'p50':>8} {'p99':>8} {'mean':>8}")
    measure(c, runs, queries, args)
    t = time.perf_counter()
    c.execute("""ALTER TABLE notes ADD COLUMN tsv tsvector
                 GENERATED ALWAYS AS (to_tsvector('english', exp_text)) STORED""")
    c.execute("CREATE INDEX ON notes USING gin (tsv)")
    c.execute("ANALYZE notes")
    print(f"with a stored tsvector column and its GIN index (added in {time.perf_counter() - t:.0f} s):")
    stored = [(f"{name}, stored tsvector", sql, extra) for name, sql, extra in runs
              if name in ("lexical", "hybrid", "hybrid, rerank top 20")]
    for _, sql, extra in stored:
        c.execute(sql, (queries[0], *extra)).fetchall()
    measure(c, stored, queries, args)


def measure(c, runs, queries, args):
    for name, sql, extra in runs:
        reps = args.rerank_reps if "rerank" in name else args.reps
        if extra is None:
            # The texts are looked up outside the timing: only the rerank.
            ms = []
            for _ in range(reps):
                for q in queries:
                    texts = [r[0] for r in c.execute(
                        """SELECT substr(n.exp_text, s.char_start + 1, s.char_end - s.char_start)
                           FROM embed_search('note_chunks', %s, 20) s JOIN notes n ON n.note_id = s.key[1]::int""",
                        (q,)).fetchall()]
                    ms.append(timed(c, "SELECT embed_rerank(%s, %s, model => %s)", (q, texts, args.reranker)))
        else:
            ms = [timed(c, sql, (q, *extra)) for _ in range(reps) for q in queries]
        print(f"{name:34} {pct(ms, 50):8.1f} {pct(ms, 99):8.1f} {statistics.mean(ms):8.1f}")


if __name__ == "__main__":
    main()
