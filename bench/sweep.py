#!/usr/bin/env python3
"""Settings sweep behind bench/RESULTS.md's choices: embed_text on 1 and 8
connections under thread and spinning settings, and embed_texts under
micro-batch budgets and the arena setting.  Prints notes/s and backend RSS.
Run through `bash bench/run.sh sweep`."""

import sys
import threading
import time

import psycopg


def rss(conn):
    return int(conn.execute(r"SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmRSS:\s+(\d+)'))[1]").fetchone()[0]) // 1024


def concurrent_embed_text(conns, n, sets=()):
    """`conns` warm connections embed notes 1..n with embed_text, sharded by
    note_id, all at once.  Returns (notes/s over all, RSS of each backend)."""
    cs = [psycopg.connect(dbname="bench", autocommit=True) for _ in range(conns)]
    for c in cs:
        for s in sets:
            c.execute(s)
        c.execute("SELECT embed_text('warm up')").fetchone()
    barrier = threading.Barrier(conns + 1)
    end = [0.0] * conns

    def work(k):
        barrier.wait()
        cs[k].execute("SELECT count(embed_text(exp_text)) FROM notes WHERE note_id <= %s AND note_id %% %s = %s", (n, conns, k)).fetchone()
        end[k] = time.perf_counter()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(conns)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    rates = n / (max(end) - start), [rss(c) for c in cs]
    for c in cs:
        c.close()
    return rates


def embed_text(sets, conns, n):
    rate, rsses = concurrent_embed_text(conns, n, sets)
    print(f"embed_text  {conns} conn {sets}: {rate:.2f} notes/s, RSS {rsses} MB", flush=True)


def embed_texts(sets, n):
    c = psycopg.connect(dbname="bench", autocommit=True)
    for s in sets:
        c.execute(s)
    c.execute("SELECT embed_text('warm up')").fetchone()
    t = time.perf_counter()
    c.execute("SELECT count(*) FROM embed_texts((SELECT array_agg(exp_text ORDER BY note_id) FROM notes WHERE note_id <= %s))", (n,)).fetchone()
    print(f"embed_texts {sets}: {n / (time.perf_counter() - t):.2f} notes/s, RSS {rss(c)} MB", flush=True)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    embed_text([], 1, n)
    embed_text(["SET clinembed.intra_op_spinning = on"], 1, n)
    embed_text(["SET clinembed.memory_arena = off"], 1, n)
    embed_text([], 8, n)
    embed_text(["SET clinembed.intra_op_spinning = on"], 8, n)
    embed_text(["SET clinembed.intra_op_threads = 1"], 8, n)
    for budget in (512, 1024, 2048, 4096, 8192):
        # budgets over the default need the superuser's ceiling raised too
        embed_texts([f"SET clinembed.batch_tokens_limit = {budget}",
                     f"SET clinembed.batch_tokens = {budget}"], n)
    embed_texts(["SET clinembed.memory_arena = off"], n)
    embed_texts(["SET clinembed.intra_op_spinning = on"], n)


if __name__ == "__main__":
    main()
