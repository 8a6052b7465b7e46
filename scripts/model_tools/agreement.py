"""Agreement of a candidate model with a reference model, before switching.

Embeds a corpus with both model directories the way clinembed does (the
model's tokenizer, truncation at its max_length, the pooling and
normalization of its clinembed.json), with the one Python reference
(reference.py: onnxruntime and tokenizers), and reports:
  - cosine similarity between each text's two vectors: mean and minimum;
  - nearest-neighbour overlap at k (default 10): for each text, the share of
    its k nearest neighbours (cosine, within the corpus) that both models
    agree on, averaged over the corpus.
The corpus is a file of one text per line, or the synthetic notes of
scripts/gen_notes.py when none is given.  Prints a report and, with --json,
writes the numbers.
"""

import argparse
import json
import os
import time

import numpy as np

from model_tools.reference import Reference


def unit(m):
    return m / np.clip(np.linalg.norm(m, axis=1, keepdims=True), 1e-12, None)


def neighbours(m, k):
    sims = unit(m) @ unit(m).T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1)[:, :k]


def compare(a, b, k=10):
    """(each row's cosine between `a` and `b`, the mean share of each row's
    k nearest neighbours within its own matrix that both agree on)."""
    cos = np.sum(unit(a) * unit(b), axis=1)
    na, nb = neighbours(a, k), neighbours(b, k)
    return cos, float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)]))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("reference", help="reference model directory (e.g. fp32)")
    ap.add_argument("candidate", help="candidate model directory (e.g. int8)")
    ap.add_argument("--corpus", help="file with one text per line (default: scripts/gen_notes.py notes)")
    ap.add_argument("--notes", type=int, default=300, help="synthetic notes when no corpus is given")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()

    if args.corpus:
        texts = [l.rstrip("\n") for l in open(args.corpus) if l.strip()]
        source = args.corpus
    else:
        import gen_notes
        texts = [row[4] for row in gen_notes.notes(args.notes, 20261126)]
        source = f"scripts/gen_notes.py, {len(texts)} notes"
    ref, cand = Reference(args.reference, args.threads), Reference(args.candidate, args.threads)
    t = time.perf_counter()
    a = np.array([ref.embed(x)[0] for x in texts], dtype=np.float64)
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    b = np.array([cand.embed(x)[0] for x in texts], dtype=np.float64)
    t_cand = time.perf_counter() - t
    cos, overlap = compare(a, b, args.k)
    result = {
        "reference": args.reference, "candidate": args.candidate, "corpus": source, "texts": len(texts),
        "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
        "cosine_p05": float(np.percentile(cos, 5)), f"nn_overlap_at_{args.k}": float(overlap),
        "python_ort_s_reference": t_ref, "python_ort_s_candidate": t_cand,
    }
    print(f"agreement of {args.candidate} with {args.reference} on {source}:")
    print(f"  cosine: mean {cos.mean():.5f}, min {cos.min():.5f}, 5th percentile {np.percentile(cos, 5):.5f}")
    print(f"  nearest-neighbour overlap at {args.k}: {overlap:.3f}")
    print(f"  Python onnxruntime, one text at a time: {len(texts) / t_ref:.2f} vs {len(texts) / t_cand:.2f} texts/s")
    if args.json:
        json.dump(result, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
