"""The embedding queue, measured (bench/queue.sh runs it on a scratch cluster):

  write      pgbench, single-row INSERTs of notes, CLIENTS clients, SECONDS s,
             into a table with no trigger, the queue trigger (workers paused,
             and workers draining beside), the row trigger and the batched
             trigger: transactions per second, and the ratio to no trigger
  fresh      on an idle server, from an INSERT's commit to its vector being
             visible, for a short note: with a worker waiting (warm) and with
             none (cold: the commit launches one, which loads the model)
  drain      NOTES queued notes of the bench corpus drained by one worker,
             against one embed_texts call over the same notes, per model
  memory     a worker's resident and anonymous (its own) memory, idle after
             one short note and after a drain
  chunks     NOTES notes cut into chunk rows (windows inside sections) by
             the queue (embed_chunks_trigger, one worker), against one pass
             of embed_chunks over the same notes in one statement, per
             model; and the worker's memory after it

Prints one line per figure.  Timing lines, not assertions.
"""

import argparse
import os
import select
import statistics
import subprocess
import time

import psycopg

SHORT = "Patient seen in clinic today, afebrile, vitals stable, plan unchanged."


def conn(dsn, **kw):
    return psycopg.connect(dsn, autocommit=True, **kw)


def one(c, sql, *args):
    return c.execute(sql, args or None).fetchone()[0]


def setting(dsn, name, value):
    with conn(dsn) as c:
        c.execute("LOAD 'clinembed'")
        if value is None:
            c.execute(f"ALTER SYSTEM RESET {name}")
        else:
            c.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        c.execute("SELECT pg_reload_conf()")
    want = value
    for _ in range(200):
        with conn(dsn) as c:
            c.execute("LOAD 'clinembed'")
            now = one(c, f"SHOW {name}")
        if want is None or now == want:
            return
        time.sleep(0.05)


def workers(c):
    return [r[0] for r in c.execute(
        "SELECT pid FROM embed_queue_workers() WHERE datid = (SELECT oid FROM pg_database "
        "WHERE datname = current_database()) AND state = 'running'").fetchall()]


def pause(dsn):
    setting(dsn, "clinembed.queue_max_workers_per_database", "0")
    with conn(dsn) as c:
        for pid in workers(c):
            c.execute("SELECT pg_terminate_backend(%s)", (pid,))
        while workers(c):
            time.sleep(0.1)


def resume(dsn):
    setting(dsn, "clinembed.queue_max_workers_per_database", None)
    with conn(dsn) as c:
        c.execute("SELECT embed_queue_start()")


def wait_drained(c, table, limit=3600, poll=0.2):
    """Waits until no key of `table` is queued, looking every `poll` s with
    a query that stops at the first key (a count over the queue, every few
    milliseconds, took CPU from the worker it was timing)."""
    t0 = time.monotonic()
    while one(c, "SELECT EXISTS (SELECT FROM embed_queue WHERE relid = %s::regclass)", table):
        if time.monotonic() - t0 > limit:
            raise TimeoutError(table)
        time.sleep(poll)


def memory_of(pid):
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    # Anonymous: the worker's own memory (heap, arena); the rest of its RSS
    # is mapped files (the library, the model's shared weights), page cache
    # that every backend using the model shares.
    return fields.get("Rss", 0) // 1024, fields.get("Anonymous", 0) // 1024


QUEUE = ("CREATE TRIGGER e BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW "
         "EXECUTE FUNCTION embed_queue_trigger('exp_text', 'embedding', 'embedding_model')")
WRITE_TABLES = {
    "no trigger": "",
    "queue trigger, workers paused": QUEUE,
    "queue trigger, a worker draining beside, nice 10": QUEUE,
    "queue trigger, a worker draining beside, nice 0": QUEUE,
    "row trigger (embeds in the transaction)": "CREATE TRIGGER e BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW "
                                               "EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', "
                                               "'embedding_model')",
    "batched trigger (embeds in the transaction)": "CREATE TRIGGER e AFTER INSERT ON {t} REFERENCING NEW TABLE AS n "
                                                   "FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger("
                                                   "'exp_text', 'embedding', 'embedding_model')",
}


def pgbench(dsn, args, label, trigger, t):
    """Transactions per second of single-row INSERTs into a fresh table `t`."""
    script = "/tmp/clinembed-bench-queue.pgbench"
    with conn(dsn) as c:
        c.execute(f"DROP TABLE IF EXISTS {t}")
        c.execute(f"CREATE TABLE {t} (id bigserial PRIMARY KEY, exp_text text, embedding real[], "
                  "embedding_model text)")
        if trigger:
            c.execute(trigger.format(t=t))
        notes = one(c, "SELECT count(*) FROM source")
    with open(script, "w") as f:
        f.write(f"\\set n random(1, {notes})\n"
                f"INSERT INTO {t} (exp_text) SELECT exp_text FROM source WHERE note_id = :n;\n")
    os.chmod(script, 0o644)
    if "paused" in label:
        pause(dsn)
    if "nice" in label:
        # a worker started afresh with this priority
        pause(dsn)
        setting(dsn, "clinembed.queue_worker_nice", label.split()[-1])
        resume(dsn)
    out = subprocess.run([args.pgbench, "-n", "-f", script, "-c", str(args.clients), "-j", str(args.clients),
                          "-T", str(args.seconds), "-d", args.dbname],
                         check=True, capture_output=True, text=True).stdout
    tps = float([line for line in out.splitlines() if line.startswith("tps")][0].split()[2])
    with conn(dsn) as c:
        # the next run starts from an empty queue (the drain is measured apart)
        c.execute(f"DROP TABLE {t}")
        c.execute("DELETE FROM embed_queue")
        c.execute("VACUUM embed_queue")
    if "paused" in label:
        resume(dsn)
    if "nice" in label:
        setting(dsn, "clinembed.queue_worker_nice", None)
    return tps


def write(dsn, args):
    """No trigger and the queue trigger (workers paused) alternate for
    ROUNDS rounds, the ratio taken per round (timings here drift by 15%
    over minutes); the others run once."""
    labels = list(WRITE_TABLES)
    ratios = []
    for r in range(args.rounds):
        base = pgbench(dsn, args, labels[0], "", "w_base")
        queued = pgbench(dsn, args, labels[1], WRITE_TABLES[labels[1]], "w_queue")
        ratios.append(queued / base)
        print(f"write  round {r + 1}: {labels[0]} {base:9.1f} tps, {labels[1]} {queued:9.1f} tps = "
              f"{queued / base:6.1%}", flush=True)
    print(f"write  {labels[1]}: median {statistics.median(ratios):6.1%} of no trigger over {len(ratios)} rounds",
          flush=True)
    base = pgbench(dsn, args, labels[0], "", "w_base")
    print(f"write  {labels[0]:<50} {base:9.1f} tps", flush=True)
    for label in labels[2:]:
        tps = pgbench(dsn, args, label, WRITE_TABLES[label], "w_other")
        print(f"write  {label:<50} {tps:9.1f} tps  {tps / base:6.1%} of no trigger", flush=True)


def fresh(dsn, args):
    with conn(dsn) as c:
        c.execute("DROP TABLE IF EXISTS fresh")
        c.execute("CREATE TABLE fresh (id serial PRIMARY KEY, exp_text text, embedding real[], embedding_model text)")
        c.execute("CREATE TRIGGER e BEFORE INSERT OR UPDATE ON fresh FOR EACH ROW "
                  "EXECUTE FUNCTION embed_queue_trigger('exp_text', 'embedding', 'embedding_model')")
        c.execute("""CREATE FUNCTION fresh_notify() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN IF NEW.embedding IS NOT NULL THEN PERFORM pg_notify('fresh', NEW.id::text); END IF;
                     RETURN NEW; END $$""")
        c.execute("CREATE TRIGGER n AFTER UPDATE ON fresh FOR EACH ROW EXECUTE FUNCTION fresh_notify()")
    listener = conn(dsn)
    listener.execute("LISTEN fresh")
    writer = conn(dsn)

    def sample():
        writer.execute("INSERT INTO fresh (exp_text) VALUES (%s)", (SHORT,))
        t0 = time.monotonic()
        while True:
            select.select([listener.fileno()], [], [], 5)
            got = list(listener.notifies(timeout=0))
            if got:
                return (time.monotonic() - t0) * 1000

    # warm: a worker waits on its latch
    sample()
    warm = []
    for _ in range(args.fresh):
        time.sleep(0.2)
        warm.append(sample())
    # cold: no worker; the commit launches one, which loads the model
    setting(dsn, "clinembed.queue_idle_exit", "1")
    cold = []
    for _ in range(max(5, args.fresh // 5)):
        with conn(dsn) as c:
            while workers(c):
                time.sleep(0.1)
        cold.append(sample())
    setting(dsn, "clinembed.queue_idle_exit", None)
    for label, xs in (("warm worker", warm), ("cold (worker launched)", cold)):
        xs = sorted(xs)
        p99 = xs[min(len(xs) - 1, int(round(0.99 * (len(xs) - 1))))]
        print(f"fresh  {label:<30} n={len(xs):3d}  p50 {statistics.median(xs):7.1f} ms  p99 {p99:7.1f} ms  "
              f"max {xs[-1]:7.1f} ms", flush=True)
    listener.close()
    writer.close()


def drain(dsn, args, model, batch_rows):
    setting(dsn, "clinembed.model", model)
    setting(dsn, "clinembed.queue_batch_rows", batch_rows)
    with conn(dsn) as c:
        c.execute("DROP TABLE IF EXISTS drained")
        c.execute("CREATE TABLE drained (note_id int PRIMARY KEY, exp_text text, embedding real[], "
                  "embedding_model text)")
        c.execute("CREATE TRIGGER e BEFORE INSERT OR UPDATE ON drained FOR EACH ROW "
                  "EXECUTE FUNCTION embed_queue_trigger('exp_text', 'embedding', 'embedding_model')")
    pause(dsn)
    with conn(dsn) as c:
        c.execute("INSERT INTO drained (note_id, exp_text) SELECT note_id, exp_text FROM source "
                  "ORDER BY note_id LIMIT %s", (args.notes,))
        n = one(c, "SELECT count(*) FROM embed_queue WHERE relid = 'drained'::regclass")
    # one embed_texts call over the same notes, the model loaded first
    with conn(dsn) as c:
        c.execute("SELECT embed_model_id()")
        t0 = time.monotonic()
        c.execute("SELECT count(*) FROM embed_texts((SELECT array_agg(exp_text ORDER BY note_id) FROM drained))")
        direct = time.monotonic() - t0
    with conn(dsn) as c:
        t0 = time.monotonic()
        resume(dsn)
        wait_drained(c, "drained")
        queued = time.monotonic() - t0
        pid = (workers(c) or [None])[0]
        done = one(c, "SELECT count(embedding) FROM drained")
    print(f"drain  {model:<18} batch {batch_rows or 'default'}: {n} notes: embed_texts {n / direct:7.1f} notes/s ({direct:6.1f} s), queue "
          f"{n / queued:7.1f} notes/s ({queued:6.1f} s, worker start and model load included) = "
          f"{direct / queued:6.1%}; {done} written", flush=True)
    if pid:
        rss, private = memory_of(pid)
        print(f"memory {model:<18} worker after the drain: {rss} MB resident, {private} MB anonymous (its own)", flush=True)
    # idle: a fresh worker after one short note
    pause(dsn)
    resume(dsn)
    with conn(dsn) as c:
        c.execute("INSERT INTO drained (note_id, exp_text) VALUES (-1, %s)", (SHORT,))
        wait_drained(c, "drained")
        time.sleep(0.5)
        pid = (workers(c) or [None])[0]
    if pid:
        rss, private = memory_of(pid)
        print(f"memory {model:<18} worker idle after one short note: {rss} MB resident, {private} MB anonymous (its own)",
              flush=True)
    setting(dsn, "clinembed.model", None)
    setting(dsn, "clinembed.queue_batch_rows", None)


def chunks(dsn, args, model, batch_rows):
    setting(dsn, "clinembed.model", model)
    setting(dsn, "clinembed.queue_batch_rows", batch_rows)
    with conn(dsn) as c:
        c.execute("DROP TABLE IF EXISTS chunked, chunked_rows")
        c.execute("CREATE TABLE chunked (note_id int PRIMARY KEY, exp_text text)")
        c.execute("CREATE TABLE chunked_rows (note_id int, chunk int, section text, char_start int, "
                  "char_end int, tokens int, embedding real[], model text)")
        c.execute("CREATE INDEX ON chunked_rows (note_id)")
        c.execute("CREATE TRIGGER c BEFORE INSERT OR UPDATE OR DELETE ON chunked FOR EACH ROW "
                  "EXECUTE FUNCTION embed_chunks_trigger('exp_text', 'chunked_rows', 'embedding', 'model')")
    pause(dsn)
    with conn(dsn) as c:
        c.execute("INSERT INTO chunked SELECT note_id, exp_text FROM source ORDER BY note_id LIMIT %s",
                  (args.notes,))
        n = one(c, "SELECT count(*) FROM embed_queue WHERE relid = 'chunked'::regclass")
    # one embed_chunks pass over the same notes, the model loaded first
    with conn(dsn) as c:
        c.execute("SELECT embed_model_id()")
        t0 = time.monotonic()
        windows = one(c, "SELECT count(*) FROM chunked n, embed_chunks(n.exp_text) e")
        direct = time.monotonic() - t0
    with conn(dsn) as c:
        t0 = time.monotonic()
        resume(dsn)
        wait_drained(c, "chunked")
        queued = time.monotonic() - t0
        pid = (workers(c) or [None])[0]
        rows = one(c, "SELECT count(*) FROM chunked_rows")
    print(f"chunks {model:<18} batch {batch_rows or 'default'}: {n} notes, {windows} windows: embed_chunks "
          f"{windows / direct:7.1f} windows/s ({direct:6.1f} s), queue {rows / queued:7.1f} windows/s "
          f"({queued:6.1f} s, worker start and model load included) = {direct / queued:6.1%}; {rows} rows written",
          flush=True)
    if pid:
        rss, private = memory_of(pid)
        print(f"memory {model:<18} worker after the chunk rows: {rss} MB resident, {private} MB anonymous (its own)",
              flush=True)
    setting(dsn, "clinembed.model", None)
    setting(dsn, "clinembed.queue_batch_rows", None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dbname", default="bench")
    ap.add_argument("--pgbench", required=True)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fresh", type=int, default=50)
    ap.add_argument("--notes", type=int, default=2000)
    ap.add_argument("--models", default="")
    ap.add_argument("--batch-rows", default="", help="clinembed.queue_batch_rows values to drain with")
    ap.add_argument("--parts", default="write,fresh,drain")
    args = ap.parse_args()
    dsn = f"dbname={args.dbname}"
    parts = args.parts.split(",")
    if "write" in parts:
        write(dsn, args)
    if "fresh" in parts:
        fresh(dsn, args)
    if "drain" in parts:
        for model in args.models.split():
            for rows in args.batch_rows.split() or [None]:
                drain(dsn, args, model, rows)
    if "chunks" in parts:
        for model in args.models.split():
            for rows in args.batch_rows.split() or [None]:
                chunks(dsn, args, model, rows)


if __name__ == "__main__":
    main()
