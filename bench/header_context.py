"""A section's header embedded as context for its windows, measured.

bench/header_context.sh runs this against a scratch cluster holding
synthetic notes (scripts/gen_notes.py).  Every vector comes from the
extension: each note's windows from embed_chunks with header_context =>
false (plain: each window embedded as its span) and => true (context: each
window of a section after its first led by the section's header), the
queries from embed_text.

Figures, for each, over the windows of every note:

  section agreement    later windows of a section (those that do not
                       start it) whose nearest section name (each
                       canonical name in the corpus, embedded as words:
                       "hospital course") is their own section
  topic precision@10   per topic, a query of its problem and finding; the
                       share of the 10 nearest windows from notes of that
                       topic (context must not cost this)
  phrase precision@10  per finding of every topic ("troponin elevated at
                       0.84"), the share of the 10 nearest windows whose
                       text holds it (nor this)
  section+topic p@10   per (section, topic) with later windows, a query
                       "<section words> <problem>"; the share of the 10
                       nearest windows of that section and topic
"""

import argparse
import random

import numpy as np
import psycopg

import gen_notes  # scripts/gen_notes.py, on the project environment's path


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / max(np.linalg.norm(v), 1e-12)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dbname", required=True)
    args = ap.parse_args()
    with psycopg.connect(dbname=args.dbname) as c:

        def windows_of(context):
            """(note, topic, section, first, vector, text) of every window."""
            return [(note, topic, section, bool(first), unit(v), text)
                    for note, topic, section, first, v, text in c.execute(
                "SELECT n.note_id, n.topic, w.section, w.char_start = s.char_start, w.embedding, "
                "       substr(n.exp_text, w.char_start + 1, w.char_end - w.char_start) "
                "FROM source n, embed_chunks(n.exp_text, header_context => %s) w, "
                "     LATERAL embed_sections(n.exp_text) s "
                "WHERE w.char_start >= s.char_start AND w.char_end <= s.char_end "
                "ORDER BY n.note_id, w.chunk", (context,)).fetchall()]

        def embed(text):
            return unit(c.execute("SELECT embed_text(%s)", (text,)).fetchone()[0])

        for label, context in (("plain", False), ("context", True)):
            windows = windows_of(context)
            rng = random.Random(20261205)
            names = sorted({w[2] for w in windows if w[2]})
            name_vecs = np.stack([embed(n.replace("_", " ")) for n in names])
            topics = sorted({w[1] for w in windows})
            later = [w for w in windows if w[2] and not w[3]]
            m = np.stack([w[4] for w in windows])
            agree = np.mean([names[int(np.argmax(name_vecs @ w[4]))] == w[2] for w in later])
            p_topic = []
            for t in topics:
                q = embed(f"{rng.choice(gen_notes.TOPICS[t]['problem'])}, {rng.choice(gen_notes.TOPICS[t]['finding'])}")
                top = np.argsort(-(m @ q))[:10]
                p_topic.append(np.mean([windows[i][1] == t for i in top]))
            p_phrase = []
            for t in topics:
                for finding in gen_notes.TOPICS[t]["finding"]:
                    top = np.argsort(-(m @ embed(finding)))[:10]
                    p_phrase.append(np.mean([finding in windows[i][5] for i in top]))
            p_both = []
            for s in sorted({w[2] for w in later}):
                for t in topics:
                    if not any(w[2] == s and w[1] == t for w in later):
                        continue
                    q = embed(f"{s.replace('_', ' ')} {rng.choice(gen_notes.TOPICS[t]['problem'])}")
                    top = np.argsort(-(m @ q))[:10]
                    p_both.append(np.mean([windows[i][2] == s and windows[i][1] == t for i in top]))
            by_section = {}
            for w in later:
                by_section[w[2]] = by_section.get(w[2], 0) + 1
            print(f"{label:8s} notes {len({w[0] for w in windows})}, windows {len(windows)}, later windows "
                  f"{len(later)} ({', '.join(f'{k} {v}' for k, v in sorted(by_section.items(), key=lambda kv: -kv[1]))})")
            print(f"{label:8s} section agreement {agree:.3f}  topic precision@10 {np.mean(p_topic):.3f}  "
                  f"phrase precision@10 {np.mean(p_phrase):.3f}  section+topic precision@10 {np.mean(p_both):.3f}")


if __name__ == "__main__":
    main()
