#!/usr/bin/env bash
# The "index before the data" flow, measured (issue 11): an lsh index created on an empty table, then N
# single-row INSERT statements (pgbench, one client, autocommit), in 10 chunks whose insert rates are
# printed; then recall@10 against the exact answer and mean query time over Q queries; then the same
# after REINDEX (the layout a build on the loaded table gets); then TRUNCATE + reload in one statement.
# Optionally (when the PostgreSQL 18 wheel with pgvector is unpacked in .cache/pg18, as install-deps
# does for the tests) the same single-row inserts into a pgvector hnsw index (m 16, ef_construction 64)
# on the same rows, for the insert rate side by side.
#   bash benches/lsh_grow.sh [--rows N] [--dims D] [--queries Q]   (defaults 100000, 128, 200)
#   bash benches/lsh_grow.sh --npy BASE.npy --query-npy QUERIES.npy [--rows N] [--queries Q]
#     real vectors instead (e.g. .cache/data/images/{base,queries}.npy from scripts/make_image_set.py):
#     the first N rows of BASE (default all) and the first Q of QUERIES; dims from the file.
# Data: 100 clusters of 9 sub-clusters each, and groups of 10 rows inside them (centre + 0.3 x sub-centre
# offset + 0.1 x a group offset + uniform noise of width 0.04),
# generated once in SQL with a fixed seed; the query vectors are held-out points of the same distribution.
# Needs the extension installed (release build: cargo pgrx install --release) for the major in PG_MAJOR
# (default 15).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rows=100000 dims=128 queries=200 npy='' qnpy='' rows_set=''
while [ $# -gt 0 ]; do
  case $1 in
    --rows) rows=$2; rows_set=1; shift 2 ;;
    --dims) dims=$2; shift 2 ;;
    --queries) queries=$2; shift 2 ;;
    --npy) npy=$(realpath "$2"); shift 2 ;;
    --query-npy) qnpy=$(realpath "$2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
. "$root/tests/sh/cluster.sh"
cluster_base
if [ -n "$npy" ]; then
  [ -n "$qnpy" ] || { echo "--npy needs --query-npy" >&2; exit 2; }
  py="$root/.cache/venv/bin/python"; [ -x "$py" ] || py=python3
  # One COPY file: ids 1..N for the base rows, N+1.. for the queries, as real[] literals.
  read -r rows dims queries < <("$py" - "$npy" "$qnpy" "${rows_set:+$rows}" "$queries" "$CLUSTER_BASE/src.copy" <<'PY'
import sys
import numpy as np
base, qs, n, nq, out = sys.argv[1:6]
x = np.load(base, mmap_mode="r")
x = x[: int(n)] if n else x
q = np.load(qs, mmap_mode="r")[: int(nq)]
with open(out, "w") as f:
    for i, row in enumerate(np.concatenate([np.asarray(x), np.asarray(q)]).astype(np.float32)):
        f.write(f"{i + 1}\t{{{','.join(repr(float(v)) for v in row)}}}\n")
print(x.shape[0], x.shape[1], q.shape[0])
PY
)
  chmod 644 "$CLUSTER_BASE/src.copy"
fi
chunk=$((rows / 10))

# data NODE: the source rows and the queries (same seed on every server), or the --npy rows.
data() {
  if [ -n "$npy" ]; then
    cq "$1" >/dev/null <<SQL
CREATE TABLE src (id int, x real[]);
COPY src FROM '$CLUSTER_BASE/src.copy';
CREATE UNIQUE INDEX ON src (id);
CREATE SEQUENCE seq;
SQL
    return
  fi
  cq "$1" >/dev/null <<SQL
SELECT setseed(0.31);
CREATE TABLE centre AS SELECT c, ARRAY(SELECT random() * 2 - 1 FROM generate_series(1, $dims)) AS x
  FROM generate_series(0, 999) c;
CREATE TABLE src AS SELECT g AS id,
  ARRAY(SELECT a.x[i] + 0.3 * b.x[i] + 0.1 * sin((g % 10000) * 12.9898 + i * 78.233) + (random() - 0.5) * 0.04
        FROM centre a, centre b, generate_series(1, $dims) i
        WHERE a.c = g % 100 AND b.c = 100 + (g % 100) * 9 + ((g % 10000) / 100) % 9 ORDER BY i) AS x
  FROM generate_series(1, $rows + $queries) g;
CREATE UNIQUE INDEX ON src (id);
CREATE SEQUENCE seq;
SQL
}

# inserts NODE: N single-row INSERTs in 10 chunks; prints the rate of each chunk.
inserts() {
  local node=$1 out rates=""
  cat >"$CLUSTER_BASE/insert.sql" <<'EOF'
INSERT INTO t SELECT id, v FROM vsrc WHERE id = (SELECT nextval('seq'));
EOF
  for _ in $(seq 1 10); do
    out=$("$PG_BIN/pgbench" -h "$(cluster_sock "$node")" -p "$(cluster_port "$node")" -U postgres -n -c 1 \
      -t "$chunk" -f "$CLUSTER_BASE/insert.sql" postgres 2>&1)
    rates="$rates $(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1 | cut -d. -f1)"
  done
  echo "$rates"
}

# quality NODE: recall@10 and mean ms per query through the index, over the held-out queries.
quality() {
  cq "$1" <<SQL
CREATE OR REPLACE FUNCTION bench_quality() RETURNS text LANGUAGE plpgsql AS \$\$
DECLARE q record; a int[]; b int[]; hits int := 0; t0 timestamptz; ms float8 := 0;
BEGIN
  FOR q IN SELECT id, v FROM vsrc WHERE id > $rows LOOP
    SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = on;
    t0 := clock_timestamp();
    SELECT array_agg(id) INTO a FROM (SELECT id FROM t ORDER BY v <-> q.v LIMIT 10) s;
    ms := ms + extract(epoch FROM clock_timestamp() - t0) * 1000;
    SET LOCAL enable_seqscan = on; SET LOCAL enable_indexscan = off;
    SELECT array_agg(id) INTO b FROM (SELECT id FROM t ORDER BY v <-> q.v LIMIT 10) s;
    hits := hits + (SELECT count(*) FROM unnest(a) x WHERE x = ANY (b));
  END LOOP;
  RETURN format('%s %s', round(hits::numeric / (10 * $queries), 3), round((ms / $queries)::numeric, 2));
END \$\$;
SELECT bench_quality();
SQL
}

printf 'lsh_grow: %s rows x %s dims%s, %s queries, PostgreSQL %s (%s)\n' "$rows" "$dims" "${npy:+ from $npy}" "$queries" "${PG_MAJOR:-15}" "$(uname -n)"
cluster_init l "shared_buffers = 512MB" "max_wal_size = 4GB" "synchronous_commit = off" || exit 1
cluster_start l || exit 1
data l
cq l >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION pg_imgsim;
CREATE VIEW vsrc AS SELECT id, x::embedding AS v FROM src;
CREATE TABLE t (id int, v embedding($dims));
CREATE INDEX t_v ON t USING lsh (v);
SQL
t0=$(date +%s.%N)
lsh_rates=$(inserts l)
t1=$(date +%s.%N)
read -r grown_recall grown_ms <<<"$(quality l)"
grown_info=$(cq l -c "SELECT format('bits %s, %s superbuckets, laid out for %s rows, %s blocks', bits, superbuckets, layout_rows, blocks) FROM lsh_index_info('t_v')")
cq l -c "SET client_min_messages = warning" -c "REINDEX INDEX t_v" >/dev/null
read -r re_recall re_ms <<<"$(quality l)"
re_info=$(cq l -c "SELECT format('bits %s, %s superbuckets, laid out for %s rows, %s blocks', bits, superbuckets, layout_rows, blocks) FROM lsh_index_info('t_v')")
cq l -c "TRUNCATE t" -c "SELECT setval('seq', 1, false)" -c "INSERT INTO t SELECT id, v FROM vsrc WHERE id <= $rows" >/dev/null
read -r tr_recall tr_ms <<<"$(quality l)"

first=$(echo "$lsh_rates" | awk '{print $1}')
last=$(echo "$lsh_rates" | awk '{print $NF}')
echo
echo "| lsh, index created on the empty table | value |"
echo "|---|---|"
echo "| insert rate per chunk of $chunk rows (rows/s) | $lsh_rates |"
echo "| last / first chunk | $(awk -v a="$last" -v b="$first" 'BEGIN {printf "%.2f", a / b}') |"
echo "| total insert time | $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f s", b - a}') |"
echo "| grown: recall@10, ms/query | $grown_recall, $grown_ms ($grown_info) |"
echo "| after REINDEX: recall@10, ms/query | $re_recall, $re_ms ($re_info) |"
echo "| TRUNCATE + reload: recall@10, ms/query | $tr_recall, $tr_ms |"
echo "| grown - REINDEX recall | $(awk -v a="$grown_recall" -v b="$re_recall" 'BEGIN {printf "%+.3f", a - b}') |"
echo "| grown / REINDEX query time | $(awk -v a="$grown_ms" -v b="$re_ms" 'BEGIN {printf "%.2f", a / b}') |"

# pgvector hnsw on PostgreSQL 18, when its wheel is unpacked.
pg18bin=
if [ -f "$root/scripts/pg_major.sh" ]; then . "$root/scripts/pg_major.sh"; pg18bin=$(pg_bin_for 18); fi
if [ -n "$pg18bin" ] && [ -x "$pg18bin/postgres" ]; then
  PG_BIN=$pg18bin
  cluster_init h "shared_buffers = 512MB" "max_wal_size = 4GB" "synchronous_commit = off" || exit 1
  cluster_start h || exit 1
  data h
  cq h >/dev/null <<SQL
CREATE EXTENSION vector;
CREATE VIEW vsrc AS SELECT id, x::vector AS v FROM src;
CREATE TABLE t (id int, v vector($dims));
CREATE INDEX t_v ON t USING hnsw (v vector_l2_ops) WITH (m = 16, ef_construction = 64);
SQL
  h0=$(date +%s.%N)
  hnsw_rates=$(inserts h)
  h1=$(date +%s.%N)
  read -r h_recall h_ms <<<"$(quality h)"
  echo "| pgvector hnsw (PostgreSQL 18): insert rate per chunk (rows/s) | $hnsw_rates |"
  echo "| pgvector hnsw: total insert time | $(awk -v a="$h0" -v b="$h1" 'BEGIN {printf "%.1f s", b - a}') |"
  echo "| pgvector hnsw: recall@10, ms/query (ef_search 40) | $h_recall, $h_ms |"
else
  echo "(pgvector side skipped: no PostgreSQL 18 wheel in .cache/pg18)"
fi
