#!/usr/bin/env bash
# The lsh index under concurrent use (pgbench, 4 clients for 15 s on one cluster):
#   2 clients insert a row and at once look it up through the index (it must be its own nearest
#     neighbour: read-your-write while other inserts split the same bucket chains), or update a row;
#   1 client runs top-10 searches through the index and checks it gets 10 rows;
#   1 client deletes a few rows and runs VACUUM (bucket entries removed, vector items freed and reused).
# Then: no client error or abort, no ERROR/PANIC/crash in the server log, lsh_index_check clean, and
# recall@10 of the index against the exact answer >= 0.9 on 20 queries (clustered data).
# Runs a throwaway cluster as the postgres user (tests/sh/cluster.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/cluster.sh"
cluster_base
duration=${CONCURRENCY_SECONDS:-15}

cluster_init c || { fail "concurrency: initdb"; finish; }
cluster_start c || { fail "concurrency: start: $(tail -5 "$(cluster_log c)")"; finish; }
cluster_create_extension c || { fail "concurrency: CREATE EXTENSION"; finish; }

# 20 centres; rows are a centre plus noise, each one distinct (so each row is its own nearest neighbour).
cq c >/dev/null <<'SQL' || { fail "concurrency: setup"; finish; }
SELECT setseed(0.17);
CREATE TABLE centre AS SELECT c, ARRAY(SELECT random() * 4 FROM generate_series(1,16) WHERE c > 0) AS x
  FROM generate_series(1, 20) c;
CREATE FUNCTION near(c int, seed int DEFAULT 0) RETURNS embedding LANGUAGE sql AS
  $$ SELECT ARRAY(SELECT x[i] + (random() - 0.5) * 0.4 FROM centre, generate_series(1,16) i
                  WHERE centre.c = near.c AND seed IS NOT NULL ORDER BY i)::embedding $$;
CREATE TABLE t (id bigserial PRIMARY KEY, v embedding(16) NOT NULL);
INSERT INTO t(v) SELECT near(1 + g % 20, g) FROM generate_series(1, 2000) g;
CREATE INDEX idx ON t USING lsh (v embedding_l2_ops) WITH (bits = 8, tables = 4);
CREATE TABLE q AS SELECT g AS qid, near(1 + (g * 3) % 20, -g) AS v FROM generate_series(1, 20) g;
SQL

work=$(cluster_dir c)
cat >"$work/insert_find.sql" <<'EOF'
\set k random(1, 20)
INSERT INTO t(v) VALUES (near(:k)) RETURNING id AS new_id \gset
SELECT id AS found FROM t ORDER BY v <-> (SELECT v FROM t WHERE id = :new_id) LIMIT 1 \gset
\if :found != :new_id
SELECT ('index scan did not find new row ' || :new_id || ' (got ' || :found || ')')::int;
\endif
EOF
cat >"$work/update.sql" <<'EOF'
\set id random(1, 2000)
\set k random(1, 20)
UPDATE t SET v = near(:k) WHERE id = :id;
EOF
cat >"$work/search.sql" <<'EOF'
\set k random(1, 20)
SELECT count(*) AS n FROM (SELECT id FROM t ORDER BY v <-> (SELECT near(:k)) LIMIT 10) s \gset
\if :n != 10
SELECT ('index scan returned ' || :n || ' rows, not 10')::int;
\endif
EOF
# Deletes only rows older than the newest 300, so the insert_find clients never look up a deleted row.
cat >"$work/delete_vacuum.sql" <<'EOF'
DELETE FROM t WHERE id IN (SELECT id FROM t WHERE id < (SELECT max(id) - 300 FROM t) ORDER BY random() LIMIT 15);
VACUUM t;
\sleep 300 ms
EOF

explain=$(cq c -c "SET enable_seqscan = off" -c "EXPLAIN SELECT id FROM t ORDER BY v <-> (SELECT near(1)) LIMIT 10")
case "$explain" in *"Index Scan using idx"*) ;; *) fail "concurrency: searches do not use the lsh index: $explain" ;; esac

bench() { # NAME CLIENTS SCRIPT...
  local name=$1 clients=$2; shift 2
  PGOPTIONS="-c enable_seqscan=off" "$PG_BIN/pgbench" -n -h "$(cluster_sock c)" -p "$(cluster_port c)" -U postgres \
    -c "$clients" -j "$clients" -T "$duration" "$@" postgres >"$work/$name.out" 2>&1
  echo $? >"$work/$name.rc"
}
bench writers 2 -f "$work/insert_find.sql@3" -f "$work/update.sql@1" &
bench searcher 1 -f "$work/search.sql" &
bench vacuumer 1 -f "$work/delete_vacuum.sql" &
wait

for b in writers searcher vacuumer; do
  rc=$(cat "$work/$b.rc")
  # The first count is the total (PostgreSQL 18's pgbench repeats the line per script).
  txs=$(grep -oE 'number of transactions actually processed: [0-9]+' "$work/$b.out" | head -1 | grep -oE '[0-9]+$')
  echo "concurrency: $b: ${txs:-?} transactions in ${duration}s"
  errs=$(grep -iE 'error|abort|fatal' "$work/$b.out" | grep -vE 'number of failed transactions: 0 |aborted: 0' | head -5)
  if [ "$rc" = 0 ] && [ -z "$errs" ] && [ "${txs:-0}" -gt 0 ]; then
    pass "concurrency: $b clients ran without errors"
  else
    fail "concurrency: $b clients: exit $rc, ${txs:-0} transactions: $(lines "$errs")"
  fi
done

alive=$(cq c -c "SELECT 1" 2>&1)
expect_eq "concurrency: server alive after the run" "$alive" 1
logerr=$(grep -E 'ERROR|PANIC|FATAL|TRAP:|terminated by signal|server process .* exited' "$(cluster_log c)" | head -5)
expect_eq "concurrency: no ERROR/PANIC/crash in the server log" "$(lines "$logerr")" ""

echo "concurrency: $(cq c -c "SELECT count(*) FROM t") rows after the run"
problems=$(cq c -c "SELECT * FROM lsh_index_check('idx')" 2>&1)
expect_eq "concurrency: lsh_index_check clean after the run" "$(lines "$problems")" ""
problems=$(cq c -c "VACUUM t" -c "SELECT * FROM lsh_index_check('idx')" 2>&1)
expect_eq "concurrency: lsh_index_check clean after a final VACUUM" "$(lines "$problems")" ""

topk() { # settings...: top-10 ids of each query, one line per query
  cq c "$@" -c "SELECT q.qid, (SELECT string_agg(id::text, ',') FROM (SELECT id FROM t ORDER BY t.v <-> q.v LIMIT 10) s)
                FROM q ORDER BY q.qid"
}
exact=$(topk -c "SET enable_indexscan = off")
approx=$(topk -c "SET enable_seqscan = off")
recall=$(join -t'|' <(echo "$exact") <(echo "$approx") \
  | awk -F'|' '{n = split($2, a, ","); split($3, b, ","); for (i in a) for (j in b) if (a[i] == b[j]) hit++; tot += n} END {printf "%.3f", (tot ? hit / tot : 0)}')
echo "concurrency: recall@10 on 20 queries: $recall"
awk -v r="$recall" 'BEGIN {exit !(r >= 0.9)}' && pass "concurrency: recall@10 $recall >= 0.9" || fail "concurrency: recall@10 $recall < 0.9"

# An index built on an empty table is set up by its first insert: 4 clients race to be first.
cq c -c "CREATE TABLE e (id bigserial PRIMARY KEY, v embedding(16) NOT NULL)" -c "CREATE INDEX eidx ON e USING lsh (v) WITH (tables = 3)"
sed 's/INTO t(v)/INTO e(v)/; s/FROM t ORDER BY/FROM e ORDER BY/; s/FROM t WHERE/FROM e WHERE/' "$work/insert_find.sql" >"$work/insert_find_e.sql"
duration=3 bench first_insert 4 -f "$work/insert_find_e.sql"
errs=$(grep -iE 'error|abort|fatal' "$work/first_insert.out" | grep -vE 'number of failed transactions: 0 |aborted: 0' | head -5)
txs=$(grep -oE 'number of transactions actually processed: [0-9]+' "$work/first_insert.out" | head -1 | grep -oE '[0-9]+$')
echo "concurrency: first_insert: ${txs:-?} transactions, $(cq c -c "SELECT count(*) FROM e") rows"
if [ "$(cat "$work/first_insert.rc")" = 0 ] && [ -z "$errs" ] && [ "${txs:-0}" -gt 0 ]; then
  pass "concurrency: 4 clients inserting into an index built empty (first insert sets it up)"
else
  fail "concurrency: first inserts into an index built empty: $(lines "$errs")"
fi
problems=$(cq c -c "SELECT * FROM lsh_index_check('eidx')" 2>&1)
expect_eq "concurrency: index built empty, after concurrent first inserts: lsh_index_check clean" "$(lines "$problems")" ""
logerr=$(grep -E 'ERROR|PANIC|FATAL|TRAP:|terminated by signal|server process .* exited' "$(cluster_log c)" | head -5)
expect_eq "concurrency: no ERROR/PANIC/crash in the server log at the end" "$(lines "$logerr")" ""
# Errors while index buffers are pinned and locked (buffer guards, src/pg/am/buffer.rs): statement
# timeouts of 1..30 ms cancel scans, inserts and VACUUM at arbitrary points, in one session that goes on
# working. The transaction abort must release every pin and lock: no WARNING (buffer refcount leak,
# lock not held), PANIC or crash in the log, later statements in the same session succeed, the index
# stays consistent.
mark=$(wc -l <"$(cluster_log c)")
{
  echo "SET lsh.probes = 200; SET lsh.rerank = 2000;"
  for i in $(seq 1 30); do
    echo "SET statement_timeout = '${i}ms';"
    echo "SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> near($((1 + i % 20))) LIMIT 50) s;"
    echo "INSERT INTO t(v) SELECT near(1 + g % 20, g) FROM generate_series(1, 300) g;"
    echo "DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY id DESC LIMIT 100);"
    echo "VACUUM t;"
  done
  echo "RESET statement_timeout;"
  echo "SELECT 'after', count(*) FROM (SELECT id FROM t ORDER BY v <-> near(3) LIMIT 10) s;"
} >"$work/cancel.sql"
after=$(cq c -v ON_ERROR_STOP=0 -f "$work/cancel.sql" 2>/dev/null | grep '^after' | cut -d'|' -f2)
cancelled=$(tail -n +"$((mark + 1))" "$(cluster_log c)" | grep -c 'canceling statement due to statement timeout')
echo "concurrency: cancellation: $cancelled statements cancelled by statement_timeout"
expect_eq "concurrency: the session that had statements cancelled mid-index-access still answers (10 rows)" "$after" "10"
problems=$(cq c -c "SELECT * FROM lsh_index_check('idx')" 2>&1)
expect_eq "concurrency: after cancelled scans, inserts and VACUUMs: lsh_index_check clean" "$(lines "$problems")" ""
logerr=$(tail -n +"$((mark + 1))" "$(cluster_log c)" | grep -E 'WARNING|PANIC|FATAL|TRAP:|terminated by signal|not held|refcount|server process .* exited' | head -5)
expect_eq "concurrency: no buffer pin/lock leak warning, PANIC or crash after cancellations" "$(lines "$logerr")" ""
finish
