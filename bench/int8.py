"""The int8 row of the benchmark: notes/s of the notebook's PyTorch loop,
embed_texts on the fp32 BERT-base model and on its int8 quantization, each on
the same notes; run by bench/int8.sh."""

import argparse
import json
import os
import time

import numpy as np

import gen_notes  # scripts/gen_notes.py, on the project environment's path
import run  # bench/run.py, beside this script


def db_rate(model):
    conn = run.connect()
    conn.execute("SELECT embed_text('warm up', model => %s)", (model,)).fetchone()
    t = time.perf_counter()
    rows = conn.execute("SELECT ord, embedding FROM embed_texts((SELECT array_agg(exp_text ORDER BY note_id) FROM notes), model => %s) ORDER BY ord",
                        (model,)).fetchall()
    s = time.perf_counter() - t
    conn.close()
    return s, np.array([v for _, v in rows], dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--notes", type=int, default=300)
    ap.add_argument("--model", required=True)
    ap.add_argument("--agreement", required=True)
    args = ap.parse_args()
    texts = [row[4] for row in gen_notes.notes(args.notes, 20261126)]
    threads = os.cpu_count()
    t_torch, v_torch = run.run_torch(os.path.join(args.model, "hf"), os.path.join(args.model, "onnx", "tokenizer.json"), texts, threads)
    t_fp32, v_fp32 = db_rate("bert-base-bench")
    t_int8, v_int8 = db_rate("bert-base-bench-int8")
    unit = lambda m: m / np.clip(np.linalg.norm(m, axis=1, keepdims=True), 1e-12, None)
    cos = np.sum(unit(v_fp32) * unit(v_int8), axis=1)
    a = json.load(open(args.agreement))
    n = len(texts)
    print(f"notes: {n} ({threads} CPUs)")
    print(f"{'notebook: PyTorch, batches of 100 padded to longest':<58} {n / t_torch:7.2f} notes/s   1.00x")
    print(f"{'embed_texts, BERT-base fp32':<58} {n / t_fp32:7.2f} notes/s {t_torch / t_fp32:6.2f}x")
    print(f"{'embed_texts, BERT-base int8 (dynamic quantization)':<58} {n / t_int8:7.2f} notes/s {t_torch / t_int8:6.2f}x")
    print(f"fp32 in PostgreSQL vs PyTorch: max abs diff {float(np.max(np.abs(v_fp32 - v_torch))):.2e}")
    print(f"int8 vs fp32 in PostgreSQL: cosine mean {cos.mean():.5f}, min {cos.min():.5f}")
    print(f"agreement report (Python onnxruntime): cosine mean {a['cosine_mean']:.5f}, min {a['cosine_min']:.5f}, "
          f"nearest-neighbour overlap at 10 {a['nn_overlap_at_10']:.3f}")


if __name__ == "__main__":
    main()
