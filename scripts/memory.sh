#!/usr/bin/env bash
# Backend RSS with the default model, arena on and off: the README's "Memory
# per backend" table.  Run as root after scripts/setup.sh and an install
# (scripts/demo.sh or scripts/test.sh does both).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
cluster_start memory 28818
trap cluster_stop EXIT
pg -q -c 'CREATE EXTENSION clinembed'
for arena in on off; do
    echo "== clinembed.memory_arena = $arena, clinembed.intra_op_threads = 1"
    pg -At -F ' | ' <<SQL
SET clinembed.memory_arena = $arena;
SET clinembed.intra_op_threads = 1;
CREATE OR REPLACE FUNCTION pg_temp.rss() RETURNS int LANGUAGE sql AS
\$\$ SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmRSS:\s+(\d+)'))[1]::int / 1024 \$\$;
SELECT 'connected, nothing embedded', pg_temp.rss();
\\o /dev/null
SELECT embed_text('x');
\\o
SELECT 'first embed_text (model loaded)', pg_temp.rss();
\\o /dev/null
SELECT embed_text(repeat('chest pain ', 400));
\\o
SELECT 'a 512-token note', pg_temp.rss();
\\o /dev/null
SELECT count(embed_text(repeat('chest pain ', g))) FROM generate_series(1, 400, 7) g;
\\o
SELECT '58 more notes of 2 to 800 words', pg_temp.rss();
SQL
done
