"""Memory per backend and first-call latency, shared weights against private
weights, on one model.  Run by `bash bench/run.sh memory` (and `... memo`), which
sets up the cluster, the notes table and the models; this script only measures.

For each of clinembed.shared_weights = on and off:
  * K = 1, 2, 4, 8 backends each run embed_texts over NOTES notes and stay
    connected; then /proc/PID/smaps_rollup of every backend: RSS, PSS and
    private (Private_Clean + Private_Dirty) per backend (median) and in total;
  * FIRST new connections one after another: the first embed_text's latency
    (the model's files already in the page cache);
with --parts memo, FIRST new connections with shared weights, the memo of
hashed model versions kept against removed before each (interleaved rounds):
latency, load_ms and the bytes the backend read (/proc/PID/io rchar);
then throughput in interleaved rounds (on, off, on, off, ...), each in a new
connection after one warm-up call: embed_texts over THROUGHPUT notes, and
SELECT embed_text(exp_text) over the same notes.

Reads /proc of the server's backends: run as root (or as the server's user).
"""

import argparse
import json
import os
import statistics
import threading
import time

import psycopg


def connect(dsn):
    return psycopg.connect(dsn, autocommit=True)


def smaps(pid):
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return {
        "rss": out["Rss"] / 1024,
        "pss": out["Pss"] / 1024,
        "private": (out["Private_Clean"] + out["Private_Dirty"]) / 1024,
    }


MODEL = None


def setup(conn, mode, threads):
    if MODEL:
        conn.execute(f"SET clinembed.model = '{MODEL}'")
    conn.execute(f"SET clinembed.shared_weights = {mode}")
    if threads:
        conn.execute(f"SET clinembed.intra_op_threads = {threads}")


def memory(dsn, mode, k, notes, threads):
    conns = [connect(dsn) for _ in range(k)]
    try:
        for c in conns:
            setup(c, mode, threads)
            c.execute(
                "SELECT count(*) FROM embed_texts(ARRAY(SELECT exp_text FROM notes ORDER BY note_id LIMIT %s))",
                (notes,),
            ).fetchone()
        weights = {c.execute("SELECT weights FROM embed_stats()").fetchone()[0] for c in conns}
        figures = [smaps(c.info.backend_pid) for c in conns]
    finally:
        for c in conns:
            c.close()
    med = {key: statistics.median(f[key] for f in figures) for key in ("rss", "pss", "private")}
    tot = {key: sum(f[key] for f in figures) for key in ("rss", "pss", "private")}
    return {"mode": mode, "k": k, "weights": sorted(weights), "median": med, "total": tot}


def first_calls(dsn, mode, n, threads):
    times, loads = [], []
    for _ in range(n):
        with connect(dsn) as c:
            setup(c, mode, threads)
            t = time.perf_counter()
            c.execute("SELECT embed_text('chest pain and shortness of breath')").fetchone()
            times.append((time.perf_counter() - t) * 1000)
            loads.append(c.execute("SELECT load_ms FROM embed_stats()").fetchone()[0])
    times.sort()
    return {
        "mode": mode,
        "p50_ms": statistics.median(times),
        "p90_ms": times[int(0.9 * (len(times) - 1))],
        "min_ms": times[0],
        "load_p50_ms": statistics.median(loads),
    }


def rchar(pid):
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError(f"no rchar in /proc/{pid}/io")


def memo_calls(dsn, n, threads, forget):
    """N new connections one after another, shared weights on: the first
    embed_text's latency, its load_ms, and the bytes the backend read for it
    (/proc/PID/io rchar, which counts page-cache reads too).  With `forget`,
    the memo of hashed model versions (`sources/` in the weights cache) is
    removed before each connection, as if it were never written: a model
    whose clinembed.json records a sha256 is then hashed on every load."""
    with connect(dsn) as c:
        data = c.execute("SHOW data_directory").fetchone()[0]
        cache = c.execute("SELECT current_setting('clinembed.weights_cache', true)").fetchone()[0]
    sources = os.path.join(cache or os.path.join(data, "clinembed_cache"), "sources")
    times, loads, reads = [], [], []
    for _ in range(n):
        if forget:
            for name in os.listdir(sources) if os.path.isdir(sources) else []:
                os.unlink(os.path.join(sources, name))
        with connect(dsn) as c:
            setup(c, "on", threads)
            pid = c.info.backend_pid
            before = rchar(pid)
            t = time.perf_counter()
            c.execute("SELECT embed_text('chest pain and shortness of breath')").fetchone()
            times.append((time.perf_counter() - t) * 1000)
            reads.append((rchar(pid) - before) / 2**20)
            loads.append(c.execute("SELECT load_ms FROM embed_stats()").fetchone()[0])
    return {
        "memo": "removed before each" if forget else "kept",
        "p50_ms": statistics.median(times),
        "min_ms": min(times),
        "load_p50_ms": statistics.median(loads),
        "read_p50_mb": statistics.median(reads),
    }


def throughput(dsn, mode, notes, threads):
    with connect(dsn) as c:
        setup(c, mode, threads)
        c.execute("SELECT embed_text('warm up')").fetchone()
        t = time.perf_counter()
        c.execute(
            "SELECT count(*) FROM embed_texts(ARRAY(SELECT exp_text FROM notes ORDER BY note_id LIMIT %s))",
            (notes,),
        ).fetchone()
        batched = notes / (time.perf_counter() - t)
        t = time.perf_counter()
        c.execute(
            "SELECT count(embed_text(exp_text)) FROM (SELECT exp_text FROM notes ORDER BY note_id LIMIT %s) n",
            (notes,),
        ).fetchone()
        rows = notes / (time.perf_counter() - t)
    return batched, rows


def threads(dsn, notes, connections):
    """Serial against parallel plans and one connection against several, on
    the same NOTES notes: the thread rule's measurement (notes/s)."""
    count = f"SELECT count(embed_text(exp_text)) FROM (SELECT exp_text FROM notes ORDER BY note_id LIMIT {notes}) n"
    parallel = [
        "SET parallel_setup_cost = 0",
        "SET parallel_tuple_cost = 0",
        "SET min_parallel_table_scan_size = 0",
    ]
    plans = [
        ("serial plan, threads per CPU (the default)", [], count),
        (
            "parallel plan, 2 workers, leader not participating",
            parallel + ["SET max_parallel_workers_per_gather = 2", "SET parallel_leader_participation = off"],
            f"SELECT count(embed_text(exp_text)) FROM notes WHERE note_id <= {notes}",
        ),
        (
            "parallel plan, 1 worker and the leader",
            parallel + ["SET max_parallel_workers_per_gather = 1"],
            f"SELECT count(embed_text(exp_text)) FROM notes WHERE note_id <= {notes}",
        ),
    ]
    out = []
    for label, sets, sql in plans:
        with connect(dsn) as c:
            setup(c, "on", 0)
            for x in sets:
                c.execute(x)
            c.execute("SELECT embed_text('warm up')").fetchone()
            plan = " ".join(r[0] for r in c.execute("EXPLAIN " + sql).fetchall())
            t = time.perf_counter()
            c.execute(sql).fetchone()
            rate = notes / (time.perf_counter() - t)
        out.append((label + (" (Gather)" if "Gather" in plan else ""), rate))
    for per_conn in (0, 1):
        share = notes // connections
        conns = [connect(dsn) for _ in range(connections)]
        for c in conns:
            setup(c, "on", per_conn)
            c.execute("SELECT embed_text('warm up')").fetchone()
        barrier = threading.Barrier(connections)

        def work(i):
            barrier.wait()
            conns[i].execute(
                "SELECT count(embed_text(exp_text)) FROM (SELECT exp_text FROM notes ORDER BY note_id "
                "OFFSET %s LIMIT %s) n",
                (i * share, share),
            ).fetchone()

        ts = [threading.Thread(target=work, args=(i,)) for i in range(connections)]
        t = time.perf_counter()
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        rate = share * connections / (time.perf_counter() - t)
        for c in conns:
            c.close()
        label = "threads per CPU" if per_conn == 0 else "1 thread each"
        out.append((f"{connections} connections at once, {label}, total", rate))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", default="dbname=bench")
    ap.add_argument("--model", help="clinembed.model for every session; default: the server's")
    ap.add_argument("--notes", type=int, default=40)
    ap.add_argument("--backends", default="1,2,4,8")
    ap.add_argument("--first", type=int, default=20)
    ap.add_argument("--throughput", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="clinembed.intra_op_threads; 0 leaves the server's")
    ap.add_argument("--json")
    ap.add_argument("--parts", default="memory,first,throughput", help="any of memory,first,memo,throughput,threads")
    ap.add_argument("--thread-notes", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=8)
    a = ap.parse_args()
    global MODEL
    MODEL = a.model
    ks = [int(k) for k in a.backends.split(",")]
    label = a.model or "the server's clinembed.model"
    result = {"label": label, "memory": [], "first": [], "throughput": []}

    parts = a.parts.split(",")
    print(f"## {label}")
    if "threads" in parts:
        print(f"\nThreads: SELECT embed_text(exp_text) over {a.thread_notes} notes (notes/s):\n")
        print("| how | notes/s |")
        print("|---|---|")
        for how, rate in threads(a.dsn, a.thread_notes, a.connections):
            result.setdefault("threads", []).append({"how": how, "notes_per_s": rate})
            print(f"| {how} | {rate:.2f} |", flush=True)
    if "memory" in parts:
        memory_part(a, ks, result)
    if "first" in parts:
        first_part(a, result)
    if "memo" in parts:
        memo_part(a, result)
    if "throughput" in parts:
        throughput_part(a, result)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


def memory_part(a, ks, result):
    print(f"\nMemory after each backend ran embed_texts over {a.notes} notes, all still connected (MB):\n")
    print("| weights | backends | RSS each | PSS each | private each | total RSS | total PSS | total private |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("on", "off"):
        for k in ks:
            m = memory(a.dsn, mode, k, a.notes, a.threads)
            result["memory"].append(m)
            md, tt = m["median"], m["total"]
            print(
                f"| {'/'.join(m['weights'])} | {k} | {md['rss']:.0f} | {md['pss']:.0f} | {md['private']:.0f} "
                f"| {tt['rss']:.0f} | {tt['pss']:.0f} | {tt['private']:.0f} |",
                flush=True,
            )


def first_part(a, result):
    print(f"\nFirst embed_text in a new connection, {a.first} connections one after another (ms):\n")
    print("| weights | p50 | p90 | min | load p50 |")
    print("|---|---|---|---|---|")
    for mode in ("on", "off"):
        f = first_calls(a.dsn, mode, a.first, a.threads)
        result["first"].append(f)
        print(f"| {'shared' if mode == 'on' else 'private'} | {f['p50_ms']:.0f} | {f['p90_ms']:.0f} | {f['min_ms']:.0f} | {f['load_p50_ms']:.0f} |", flush=True)


def memo_part(a, result):
    print(f"\nFirst embed_text in a new connection, shared weights, {a.first} connections one after another,")
    print("with the memo of hashed model versions kept, and removed before each connection:\n")
    print("| memo | p50 ms | min ms | load p50 ms | read by the backend, p50 (MB) |")
    print("|---|---|---|---|---|")
    # a first load builds the derived form and writes the memo: not measured
    with connect(a.dsn) as c:
        setup(c, "on", a.threads)
        c.execute("SELECT embed_text('warm up')").fetchone()
    # interleaved, so drift on this VM falls on both alike
    rows = {False: [], True: []}
    for _ in range(a.rounds):
        for forget in (False, True):
            rows[forget].append(memo_calls(a.dsn, a.first, a.threads, forget))
    for forget in (False, True):
        m = {k: (statistics.median(r[k] for r in rows[forget]) if k != "memo" else rows[forget][0][k])
             for k in rows[forget][0]}
        result.setdefault("memo", []).append(m)
        print(f"| {m['memo']} | {m['p50_ms']:.0f} | {m['min_ms']:.0f} | {m['load_p50_ms']:.0f} | {m['read_p50_mb']:.1f} |",
              flush=True)


def throughput_part(a, result):
    print(f"\nThroughput over {a.throughput} notes, interleaved rounds (notes/s):\n")
    print("| round | weights | embed_texts | embed_text per row |")
    print("|---|---|---|---|")
    per = {"on": [], "off": []}
    for r in range(a.rounds):
        for mode in ("on", "off"):
            b, s = throughput(a.dsn, mode, a.throughput, a.threads)
            per[mode].append((b, s))
            result["throughput"].append({"round": r + 1, "mode": mode, "embed_texts": b, "embed_text": s})
            print(f"| {r + 1} | {'shared' if mode == 'on' else 'private'} | {b:.2f} | {s:.2f} |", flush=True)
    ratio_b = statistics.median(b1 / b0 for (b1, _), (b0, _) in zip(per["on"], per["off"]))
    ratio_s = statistics.median(s1 / s0 for (_, s1), (_, s0) in zip(per["on"], per["off"]))
    print(f"\nshared / private, median of paired rounds: embed_texts {ratio_b:.3f}, embed_text {ratio_s:.3f}")


if __name__ == "__main__":
    main()
