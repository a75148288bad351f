#!/usr/bin/env bash
# Physical replication of the lsh index (its pages are WAL-logged through GenericXLog): a streaming
# standby made with pg_basebackup -R replays CREATE INDEX, inserts, DELETE + VACUUM, the first insert
# into an index built on an empty table and its in-place layout rebuilds as it grows, split vectors
# (600-d), and a REINDEX with new options; index scans on the standby
# return exactly the primary's top-10 ids, and lsh_index_check is clean on both.
# Runs throwaway clusters as the postgres user (tests/sh/cluster.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/cluster.sh"
cluster_base

cluster_init p "wal_level = replica" "max_wal_senders = 4" "wal_keep_size = 128MB" \
  || { fail "replica: initdb"; finish; }
cluster_start p || { fail "replica: primary start: $(tail -5 "$(cluster_log p)")"; finish; }
cluster_create_extension p || { fail "replica: CREATE EXTENSION"; finish; }

# The standby: a base backup of the running primary, with its own port and socket.
cluster_setup_dir s
if ! as_pg "$PG_BIN/pg_basebackup" -h "$(cluster_sock p)" -p "$(cluster_port p)" -U postgres \
  -D "$(cluster_data s)" -R -X stream -c fast >"$(cluster_dir s)/basebackup.log" 2>&1; then
  fail "replica: pg_basebackup: $(tail -3 "$(cluster_dir s)/basebackup.log")"
  finish
fi
cluster_base_conf s
cluster_conf s "hot_standby = on"
cluster_start s || { fail "replica: standby start: $(tail -5 "$(cluster_log s)")"; finish; }
expect_eq "replica: standby is in recovery" "$(cq s -c 'SELECT pg_is_in_recovery()')" t

# Clustered data (40 centres + small noise), so the index has real neighbourhoods to find.
cq p >/dev/null <<'SQL' || fail "replica: workload on the primary"
SELECT setseed(0.42);
CREATE TABLE centre AS SELECT c, ARRAY(SELECT random() * 4 FROM generate_series(1,16) WHERE c > 0) AS x
  FROM generate_series(1, 40) c;
CREATE FUNCTION near(c int, seed int) RETURNS embedding LANGUAGE sql AS
  $$ SELECT ARRAY(SELECT x[i] + (random() - 0.5) * 0.4 FROM centre, generate_series(1,16) i
                  WHERE centre.c = near.c AND seed IS NOT NULL ORDER BY i)::embedding $$;
CREATE TABLE t (id int PRIMARY KEY, v embedding(16));
INSERT INTO t SELECT g, near(1 + g % 40, g) FROM generate_series(1, 3000) g;
CREATE INDEX idx ON t USING lsh (v embedding_l2_ops) WITH (bits = 8, tables = 4);
INSERT INTO t SELECT g, near(1 + g % 40, g) FROM generate_series(3001, 3600) g;
DELETE FROM t WHERE id % 7 = 0;
VACUUM t;
INSERT INTO t SELECT g, near(1 + g % 40, g) FROM generate_series(3601, 4200) g;
-- An index built on an empty table: the first insert sets it up, and it rebuilds its bucket structure
-- in place as it grows (grow.rs), which the standby replays.
CREATE TABLE e (id int PRIMARY KEY, v embedding(16));
CREATE INDEX eidx ON e USING lsh (v) WITH (tables = 3);
INSERT INTO e SELECT g, near(1 + g % 40, g) FROM generate_series(1, 800) g;
INSERT INTO e SELECT g, near(1 + g % 40, g) FROM generate_series(801, 12000) g;
-- Split vectors (600-d: heads and tails on two pages, one WAL record): build, inserts, DELETE + VACUUM.
CREATE TABLE w (id int PRIMARY KEY, v embedding(600));
INSERT INTO w SELECT g, ARRAY(SELECT random() FROM generate_series(1,600) WHERE g > 0) FROM generate_series(1, 500) g;
CREATE INDEX widx ON w USING lsh (v);
INSERT INTO w SELECT g, ARRAY(SELECT random() FROM generate_series(1,600) WHERE g > 0) FROM generate_series(501, 800) g;
DELETE FROM w WHERE id % 5 = 0;
VACUUM w;
INSERT INTO w SELECT g, ARRAY(SELECT random() FROM generate_series(1,600) WHERE g > 0) FROM generate_series(801, 1000) g;
-- 20 query vectors near the data.
CREATE TABLE q AS SELECT g AS qid, near(1 + (g * 7) % 40, -g) AS v FROM generate_series(1, 20) g;
SQL

# wait_replay: until the standby has replayed everything the primary wrote so far.
wait_replay() {
  local lsn
  lsn=$(cq p -c "SELECT pg_current_wal_lsn()")
  for _ in $(seq 1 600); do
    [ "$(cq s -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn")" = t ] && return 0
    sleep 0.2
  done
  return 1
}
wait_replay && pass "replica: standby caught up" || fail "replica: standby did not replay up to the primary's LSN"

# top10 NODE TABLE [settings]: the index's top-10 ids of each query vector, one line per query.
top10() {
  local node=$1 tbl=$2; shift 2
  cq "$node" -c "SET enable_seqscan = off" "$@" -c "
    SELECT q.qid, (SELECT string_agg(id::text, ',') FROM (SELECT id FROM $tbl ORDER BY $tbl.v <-> q.v LIMIT 10) s)
    FROM q ORDER BY q.qid"
}
for tbl in t e; do
  plan=$(cq s -c "SET enable_seqscan = off" -c "EXPLAIN SELECT id FROM $tbl ORDER BY v <-> (SELECT v FROM q LIMIT 1) LIMIT 10")
  case "$plan" in *"Index Scan using "*"idx on $tbl"*) ;; *) fail "replica: standby plan for $tbl does not use the lsh index: $plan" ;; esac
  prim=$(top10 p $tbl)
  stby=$(top10 s $tbl)
  [ "$(echo "$prim" | grep -c ',')" = 20 ] || fail "replica: primary top-10 of $tbl incomplete: $(lines "$prim")"
  expect_eq "replica: $tbl: 20 queries, top-10 ids on the standby == on the primary" "$stby" "$prim"
done

# Split vectors: the standby's top-10 (exact: the rerank covers every row) equals the primary's.
wtop() {
  cq "$1" -c "SET enable_seqscan = off" -c "SET lsh.rerank = 100000" -c "
    SELECT w0.id, (SELECT string_agg(id::text, ',') FROM (SELECT id FROM w ORDER BY w.v <-> w0.v LIMIT 10) s)
    FROM w w0 WHERE w0.id % 50 = 1 ORDER BY w0.id"
}
prim=$(wtop p)
[ "$(echo "$prim" | grep -c ',')" = 20 ] || fail "replica: primary top-10 of w incomplete: $(lines "$prim")"
expect_eq "replica: w (600-d, split vectors): 20 queries, top-10 ids on the standby == on the primary" "$(wtop s)" "$prim"

expect_eq "replica: eidx grew on the primary, the standby has the same layout" \
  "$(cq s -c "SELECT superbuckets > 1, bits, layout_rows FROM lsh_index_info('eidx')")" \
  "$(cq p -c "SELECT superbuckets > 1, bits, layout_rows FROM lsh_index_info('eidx')")"
expect_eq "replica: eidx grew past one superbucket per table" "$(cq p -c "SELECT superbuckets > 1 FROM lsh_index_info('eidx')")" "t"

# The index finds real neighbours (recall@10 against the exact answer, on the primary).
exact=$(cq p -c "SET enable_indexscan = off" -c "
  SELECT q.qid, (SELECT string_agg(id::text, ',') FROM (SELECT id FROM t ORDER BY t.v <-> q.v LIMIT 10) s)
  FROM q ORDER BY q.qid")
recall=$(join -t'|' <(echo "$exact") <(top10 p t) | awk -F'|' '{n = split($2, a, ","); split($3, b, ","); for (i in a) for (j in b) if (a[i] == b[j]) hit++; tot += n} END {printf "%.3f", hit / tot}')
echo "replica: recall@10 of idx on the primary: $recall"
awk -v r="$recall" 'BEGIN {exit !(r >= 0.9)}' && pass "replica: recall@10 $recall >= 0.9" || fail "replica: recall@10 $recall < 0.9"

for node in p s; do
  for ix in idx eidx widx; do
    problems=$(cq $node -c "SELECT * FROM lsh_index_check('$ix')" 2>&1)
    expect_eq "replica: lsh_index_check('$ix') clean on $( [ $node = p ] && echo primary || echo standby)" "$(lines "$problems")" ""
  done
done

# REINDEX with other options while a standby session keeps its cached index shape: the same session
# must see the new index (the backends' shape cache is keyed by the meta page's build id).
cat >"$(cluster_dir s)/reindex.sh" <<EOF
. "$here/cluster.sh"; CLUSTER_BASE=$CLUSTER_BASE
cq p -c "SET client_min_messages = warning" -c "ALTER INDEX idx SET (bits = 6, tables = 2)" -c "REINDEX INDEX idx" -c "INSERT INTO t SELECT g, near(1 + g % 40, g) FROM generate_series(4201, 4300) g"
lsn=\$(cq p -c "SELECT pg_current_wal_lsn()")
for i in \$(seq 1 600); do [ "\$(cq s -c "SELECT pg_last_wal_replay_lsn() >= '\$lsn'::pg_lsn")" = t ] && break; sleep 0.2; done
EOF
same_session=$(cq s -c "SET enable_seqscan = off" -c "SELECT count(*) FROM (SELECT id FROM t ORDER BY v <-> (SELECT v FROM q WHERE qid = 1) LIMIT 10) s" \
  -c "\\! bash $(cluster_dir s)/reindex.sh" -c "
    SELECT q.qid, (SELECT string_agg(id::text, ',') FROM (SELECT id FROM t ORDER BY t.v <-> q.v LIMIT 10) s)
    FROM q ORDER BY q.qid" 2>&1 | tail -n +2)
expect_eq "replica: after REINDEX (bits=6, tables=2) on the primary, an existing standby session == primary" \
  "$same_session" "$(top10 p t)"
expect_eq "replica: reindexed idx has 2 tables" "$(cq s -c "SELECT reloptions FROM pg_class WHERE relname = 'idx'")" "{bits=6,tables=2}"
problems=$(cq s -c "SELECT * FROM lsh_index_check('idx')" 2>&1)
expect_eq "replica: lsh_index_check('idx') clean on the standby after REINDEX" "$(lines "$problems")" ""

# Promotion: the standby becomes a primary and its index takes writes.
if as_pg "$PG_BIN/pg_ctl" -D "$(cluster_data s)" -w promote >/dev/null 2>&1; then
  cq s -c "INSERT INTO t SELECT g, near(1 + g % 40, g) FROM generate_series(5001, 5200) g" -c "DELETE FROM t WHERE id % 11 = 0" -c "VACUUM t" \
    || fail "replica: writes after promotion"
  problems=$(cq s -c "SELECT * FROM lsh_index_check('idx')" 2>&1)
  expect_eq "replica: lsh_index_check clean on the promoted standby after writes" "$(lines "$problems")" ""
else
  fail "replica: promote"
fi

for node in p s; do
  errs=$(grep -E 'ERROR|PANIC|FATAL|TRAP:|terminated by signal' "$(cluster_log $node)" \
    | grep -v 'terminating walreceiver process due to administrator command' | head -5)
  expect_eq "replica: no errors in the $node server log" "$(lines "$errs")" ""
done
finish
