#!/usr/bin/env python3
"""Side-by-side benchmark on one corpus and one BERT-base-shaped model.

  1. the notebook in PyTorch: HF AutoModel, batches of 100 padded to their
     longest note, truncation at 512, attention-mask mean pooling
  2. the same loop through Python onnxruntime, on the same ONNX file
  3. SELECT embed_text(exp_text) FROM notes, default settings
  4. embed_texts() over the same notes
  5. the physical limit: FLOPs the corpus's tokens need / measured fp32 GEMM rate

plus single-note latency (~128 tokens), the cold first call in a new backend,
RSS per backend, and 8 concurrent connections running (3) on shards.
Run it through bench/run.sh, which sets up the cluster and the model.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time

import numpy as np

import gen_notes  # scripts/gen_notes.py, on the project environment's path
import sweep  # bench/sweep.py, beside this script

# BERT-base: per token, 12 layers x 2 x (4*768*768 + 2*768*3072) in the linear
# layers; per sequence of length L, 12 layers x 2 matmuls x 2*L*L*768 in attention.
LINEAR_FLOP_PER_TOKEN = 12 * 2 * (4 * 768 * 768 + 2 * 768 * 3072)
ATTN_FLOP_PER_L2 = 12 * 2 * 2 * 768


def flops(lengths):
    return sum(LINEAR_FLOP_PER_TOKEN * n + ATTN_FLOP_PER_L2 * n * n for n in lengths)


def rss_mb(status):
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) // 1024 for k in ("VmRSS", "RssAnon", "RssFile") if k in fields}


def measure_gemm(threads):
    """Best fp32 GEMM rate, GFLOP/s, of ONNX Runtime's MatMul and numpy, on the FFN shape."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = 4096, 768, 3072
    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # opset 17's; onnx 1.23 writes 14, which ONNX Runtime 1.31 refuses
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    a = rng.standard_normal((m, k), dtype=np.float32)
    best = {}
    for name, fn in (("onnxruntime", lambda: sess.run(None, {"a": a})), ("numpy", lambda: a @ w)):
        fn()
        times = []
        for _ in range(8):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        best[name] = 2 * m * k * n / min(times) / 1e9
    return best


def mean_pool(hidden, mask):
    m = mask[..., None].astype(np.float32)
    return (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)


def run_torch(hf_dir, tokenizer_file, texts, threads):
    import torch
    from transformers import AutoModel, PreTrainedTokenizerFast

    torch.set_num_threads(threads)
    tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_file, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    model = AutoModel.from_pretrained(hf_dir).eval()
    out = []
    t = time.perf_counter()
    for i in range(0, len(texts), 100):
        enc = tok(texts[i:i + 100], padding=True, truncation=True, max_length=512, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        out.append(((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy())
    return time.perf_counter() - t, np.concatenate(out)


def run_ort(onnx_dir, texts, threads):
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(onnx_dir, "tokenizer.json"))
    tok.enable_truncation(max_length=512)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(os.path.join(onnx_dir, "model.onnx"), opts, providers=["CPUExecutionProvider"])
    out = []
    t = time.perf_counter()
    for i in range(0, len(texts), 100):
        encs = tok.encode_batch(texts[i:i + 100])
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        types = np.array([e.type_ids for e in encs], dtype=np.int64)
        hidden = sess.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
        out.append(mean_pool(hidden, mask))
    return time.perf_counter() - t, np.concatenate(out)


def connect():
    import psycopg
    return psycopg.connect(dbname="bench", autocommit=True)


def backend_rss(conn):
    return rss_mb(conn.execute("SELECT pg_read_file('/proc/self/status')").fetchone()[0])


def db_runs(n_notes, latency_text):
    r = {}
    # cold first call in a new backend: connect, then the first embedding (loads the model)
    t0 = time.perf_counter()
    conn = connect()
    t1 = time.perf_counter()
    conn.execute("SELECT embed_text('chest pain')").fetchone()
    t2 = time.perf_counter()
    r["connect_s"], r["cold_first_call_s"] = t1 - t0, t2 - t1
    info = conn.execute("SELECT model, dimensions, intra_op_threads, batch_invariant FROM embed_model_info()").fetchone()
    r["model_info"] = dict(zip(["model", "dimensions", "intra_op_threads", "batch_invariant"], info))

    lat = []
    for _ in range(10):
        t = time.perf_counter()
        conn.execute("SELECT embed_text(%s)", (latency_text,)).fetchone()
        lat.append(time.perf_counter() - t)
    r["latency_128_ms"] = statistics.median(lat) * 1000

    t = time.perf_counter()
    rows = conn.execute("SELECT note_id, embed_text(exp_text) FROM notes ORDER BY note_id").fetchall()
    r["embed_text_s"] = time.perf_counter() - t
    r["embed_text_vectors"] = np.array([v for _, v in rows], dtype=np.float32)
    r["rss_after_embed_text"] = backend_rss(conn)
    conn.close()

    conn = connect()
    conn.execute("SELECT embed_text('warm up')").fetchone()
    t = time.perf_counter()
    rows = conn.execute("SELECT ord, embedding FROM embed_texts((SELECT array_agg(exp_text ORDER BY note_id) FROM notes)) ORDER BY ord").fetchall()
    r["embed_texts_s"] = time.perf_counter() - t
    r["embed_texts_vectors"] = np.array([v for _, v in rows], dtype=np.float32)
    r["rss_after_embed_texts"] = backend_rss(conn)
    conn.close()

    # 8 concurrent connections, each embedding a shard with embed_text, defaults
    rate, r["rss_concurrent8"] = sweep.concurrent_embed_text(8, n_notes)
    r["concurrent8_s"] = n_notes / rate
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--notes", type=int, default=300)
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--model", required=True, help="directory with hf/ and onnx/ from make_model.py")
    ap.add_argument("--out", required=True, help="directory for results.json and notes_per_s.png")
    args = ap.parse_args()
    threads = os.cpu_count()
    notes = list(gen_notes.notes(args.notes, args.seed))
    texts = [n[4] for n in notes]
    onnx_dir, hf_dir = os.path.join(args.model, "onnx"), os.path.join(args.model, "hf")

    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(onnx_dir, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    full = [len(e.ids) for e in tok.encode_batch(texts)]
    trunc = [min(n, 512) for n in full]
    padded = [max(trunc[i:i + 100]) * len(trunc[i:i + 100]) for i in range(0, len(trunc), 100)]
    latency_text = texts[min(range(len(trunc)), key=lambda i: abs(trunc[i] - 128))]

    print(f"corpus: {len(texts)} notes, tokens before truncation median {statistics.median(full):.0f}, "
          f"mean {statistics.mean(full):.0f}, {100 * sum(n > 512 for n in full) / len(full):.0f}% over 512; "
          f"{sum(trunc)} tokens after truncation; the notebook's batches of 100 pad to {sum(padded)} "
          f"({sum(padded) / sum(trunc):.2f}x)", flush=True)
    gemm = measure_gemm(threads)
    rate = max(gemm.values())
    need = flops(trunc)
    limit_s = need / (rate * 1e9)
    print(f"fp32 GEMM {rate:.0f} GFLOP/s ({', '.join(f'{k} {v:.0f}' for k, v in gemm.items())}); "
          f"the corpus needs {need / 1e12:.2f} TFLOP -> limit {len(texts) / limit_s:.2f} notes/s", flush=True)

    print("running 1/4: PyTorch notebook loop", flush=True)
    torch_s, torch_vec = run_torch(hf_dir, os.path.join(onnx_dir, "tokenizer.json"), texts, threads)
    print("running 2/4: Python onnxruntime loop", flush=True)
    ort_s, ort_vec = run_ort(onnx_dir, texts, threads)
    print("running 3-4/4: in the database", flush=True)
    db = db_runs(len(texts), latency_text)

    n, tokens = len(texts), sum(trunc)
    methods = [
        ("notebook, PyTorch", torch_s),
        ("notebook, Python onnxruntime", ort_s),
        ("SELECT embed_text(exp_text)", db["embed_text_s"]),
        ("embed_texts(array)", db["embed_texts_s"]),
        ("8 connections, embed_text", db["concurrent8_s"]),
        ("physical limit", limit_s),
    ]
    print()
    print(f"{'method':<30} {'notes/s':>8} {'tokens/s':>9} {'vs PyTorch':>10} {'vs ORT py':>9} {'of limit':>8}")
    rows = []
    for name, s in methods:
        row = {"method": name, "seconds": s, "notes_per_s": n / s, "tokens_per_s": tokens / s,
               "vs_pytorch": torch_s / s, "vs_ort_python": ort_s / s, "of_limit": limit_s / s}
        rows.append(row)
        print(f"{name:<30} {row['notes_per_s']:>8.2f} {row['tokens_per_s']:>9.0f} {row['vs_pytorch']:>9.2f}x "
              f"{row['vs_ort_python']:>8.2f}x {100 * row['of_limit']:>7.0f}%")
    agree_texts = float(np.max(np.abs(db["embed_texts_vectors"] - db["embed_text_vectors"])))
    agree_ort = float(np.max(np.abs(db["embed_text_vectors"] - ort_vec)))
    agree_torch = float(np.max(np.abs(db["embed_text_vectors"] - torch_vec)))
    print()
    print(f"single-note latency, {trunc[texts.index(latency_text)]} tokens: {db['latency_128_ms']:.0f} ms (median of 10)")
    print(f"cold first call in a new backend: {db['cold_first_call_s']:.2f} s (connect {db['connect_s'] * 1000:.0f} ms)")
    print(f"RSS per backend: after embed_text {db['rss_after_embed_text']}, after embed_texts {db['rss_after_embed_texts']} (MB); "
          f"8 connections: {db['rss_concurrent8']} MB")
    print(f"model: {db['model_info']}")
    print(f"agreement, max abs diff: embed_texts vs embed_text {agree_texts:.1e}; embed_text vs onnxruntime loop "
          f"{agree_ort:.1e}; vs PyTorch loop {agree_torch:.1e}")

    os.makedirs(args.out, exist_ok=True)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
            "cpu": subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip(),
            "notes": n, "tokens": tokens, "gemm_gflops": gemm, "flops": need}
    json.dump({"meta": meta, "rows": rows,
               "db": {k: v for k, v in db.items() if not k.endswith("vectors")},
               "agreement": {"embed_texts_vs_embed_text": agree_texts, "embed_text_vs_ort": agree_ort, "embed_text_vs_torch": agree_torch}},
              open(os.path.join(args.out, "results.json"), "w"), indent=2, default=str)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [r["method"] for r in rows[:-1]]
    vals = [r["notes_per_s"] for r in rows[:-1]]
    bars = ax.barh(names[::-1], vals[::-1], color=["#4c72b0"] * 3 + ["#999999"] * 2)
    ax.axvline(rows[-1]["notes_per_s"], color="#c44e52", linestyle="--", label=f"physical limit {rows[-1]['notes_per_s']:.1f}")
    for b, v in zip(bars, vals[::-1]):
        ax.text(v, b.get_y() + b.get_height() / 2, f" {v:.2f}", va="center")
    ax.set_xlabel("notes/s (higher is better)")
    ax.set_title(f"BERT-base embeddings, {n} synthetic clinical notes, {os.cpu_count()} CPUs")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "notes_per_s.png"), dpi=110)
    print(f"wrote {args.out}/results.json and notes_per_s.png")


if __name__ == "__main__":
    main()
