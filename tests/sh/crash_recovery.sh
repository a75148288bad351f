#!/usr/bin/env bash
# Crash safety of the lsh index: WAL replay after SIGKILL must give back an index that holds every
# committed row where a scan finds it, and that lsh_index_check finds clean.
#   round 1: 3 clients insert rows (one statement each, autocommit) and 1 client updates rows while every
#            process of the cluster is SIGKILLed at once (no shutdown, no checkpoint); restart (WAL replay).
#   round 2: the same load, but only one inserting backend is SIGKILLed: the postmaster resets all
#            backends and replays WAL itself (restart_after_crash).
#   After each round: every id a client saw acknowledged is in the table; lsh_index_check is clean (also
#   after VACUUM); every row is its own nearest neighbour through the index (lsh.probes = 1: only the
#   row's own bucket in each table is read, so this fails if a row is missing from its buckets).
#   round 3: SIGKILL of the whole cluster while CREATE INDEX writes a bigger index (stopped half-way at
#            an advisory lock, then killed in its hashing/writing phase): it restarts cleanly, the index
#            is gone with its transaction, the table is intact and the index builds again.
#   round 4: SIGKILL in the middle of VACUUM's pass over the index: scans still find the live rows, and
#            the next VACUUM finishes the job (lsh_index_check clean, index holds exactly the live rows).
#   round 5: SIGKILL while an index created on an empty table rebuilds its bucket structure (grow.rs);
#            VACUUM then reuses the structure pages the interrupted rebuild left unused.
#   round 6: split vectors (600-d: heads and tails written, and freed, in one WAL record over two pages):
#            3 clients insert while another deletes and VACUUMs, the cluster is SIGKILLed; every
#            acknowledged row is found, lsh_index_check is clean before and after VACUUM.
# Runs throwaway clusters as the postgres user (tests/sh/cluster.sh).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/cluster.sh"
cluster_base

cluster_init p "synchronous_commit = on" "full_page_writes = on" "restart_after_crash = on" \
  || { fail "crash: initdb"; finish; }
cluster_start p || { fail "crash: start: $(tail -5 "$(cluster_log p)")"; finish; }
cluster_create_extension p || { fail "crash: CREATE EXTENSION"; finish; }

rand16="ARRAY(SELECT random() FROM generate_series(1,16))::embedding(16)"
cq p >/dev/null <<SQL || fail "crash: setup"
CREATE TABLE t (id bigserial PRIMARY KEY, v embedding(16) NOT NULL);
INSERT INTO t(v) SELECT ARRAY(SELECT random() FROM generate_series(1,16) WHERE g > 0) FROM generate_series(1,500) g;
CREATE INDEX idx ON t USING lsh (v embedding_l2_ops) WITH (bits = 8, tables = 4);
CREATE UNLOGGED TABLE u (id int PRIMARY KEY, v embedding(16) NOT NULL);
CREATE INDEX uidx ON u USING lsh (v) WITH (bits = 6, tables = 3);
INSERT INTO u SELECT g, ARRAY(SELECT random() FROM generate_series(1,16) WHERE g > 0) FROM generate_series(1,300) g;
CHECKPOINT;
SQL

work=$(cluster_dir p)
# start_clients ROUND: 3 inserting + 1 updating psql clients, statements streamed from `yes`. psql
# prints an id only after the server's CommandComplete, which follows the commit: a printed id is an
# acknowledged (durable, synchronous_commit = on) row.
start_clients() {
  local r=$1 k
  for k in 1 2 3; do
    yes "INSERT INTO t(v) SELECT $rand16 RETURNING id;" \
      | "$PG_BIN/psql" -h "$(cluster_sock p)" -p "$(cluster_port p)" -U postgres -qXAt \
        >"$work/ins.$r.$k" 2>"$work/ins.$r.$k.err" &
  done
  yes "UPDATE t SET v = $rand16 WHERE id = (SELECT 1 + floor(random() * 500)::int) RETURNING id;" \
    | "$PG_BIN/psql" -h "$(cluster_sock p)" -p "$(cluster_port p)" -U postgres -qXAt \
      >"$work/upd.$r" 2>"$work/upd.$r.err" &
}

# wait_clients: the clients exit once their connection is gone.
wait_clients() {
  local i
  for i in $(seq 1 300); do
    [ -z "$(jobs -rp)" ] && break
    sleep 0.1
  done
  [ -z "$(jobs -rp)" ] || { fail "crash: clients did not exit after the crash"; for i in $(jobs -p); do kill "$i"; done; }
  wait 2>/dev/null
}

# wait_ready: until the server accepts queries again (after its own crash recovery).
wait_ready() {
  local i
  for i in $(seq 1 600); do
    cq p -c 'SELECT 1' >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  return 1
}

# idlist: the numbers on stdin as "0,n1,n2,..." (for SQL IN lists; never empty).
idlist() { (echo 0; cat) | paste -sd,; }

# verify ROUND: the checks after a crash.
verify() {
  local r=$1 acked missing n bad explain problems
  acked=$(cat "$work"/ins."$r".? | grep -cE '^[0-9]+$')
  [ "$acked" -gt 0 ] || fail "crash round $r: no insert was acknowledged before the crash ($(head -c 300 "$work/ins.$r.1.err"))"
  cat "$work"/ins."$r".? | grep -E '^[0-9]+$' | sort -n >"$work/acked.$r"
  cq p -c "SELECT id FROM t ORDER BY id" >"$work/present.$r"
  missing=$(comm -23 <(sort "$work/acked.$r") <(sort "$work/present.$r") | wc -l)
  expect_eq "crash round $r: all $acked acknowledged inserts survived" "$missing" 0
  n=$(cq p -c "SELECT count(*) FROM t")
  echo "round $r: $acked acknowledged inserts, $(grep -cE '^[0-9]+$' "$work/upd.$r") acknowledged updates, $n rows after recovery"

  problems=$(cq p -c "SELECT * FROM lsh_index_check('idx')" 2>&1)
  expect_eq "crash round $r: lsh_index_check clean right after recovery" "$(lines "$problems")" ""

  # Rows checked through the index: the rows updated during the load, the last 100 acknowledged
  # inserts (their pages were the least likely to be on disk at the crash), and a stride sample of
  # the rest (about 150): each must be its own nearest neighbour.
  local sample
  sample="(id IN ($(grep -hE '^[0-9]+$' "$work/upd.$r" | sort -un | head -100 | idlist))
                 OR id IN ($(tail -100 "$work/acked.$r" | idlist)) OR id % (1 + $n / 150) = 0)"
  explain=$(cq p -c "SET enable_seqscan = off" -c "SET lsh.probes = 1" \
    -c "EXPLAIN SELECT id FROM t WHERE $sample AND id <> (SELECT t2.id FROM t t2 ORDER BY t2.v <-> t.v LIMIT 1)")
  case "$explain" in
    *"Index Scan using idx on t t2"*) ;;
    *) fail "crash round $r: the nearest-neighbour subquery does not use the lsh index: $explain" ;;
  esac
  # lsh.probes = 1: only the row's own bucket in each table is read, so a row missing from its
  # buckets is not found.
  bad=$(cq p -c "SET enable_seqscan = off" -c "SET lsh.probes = 1" \
    -c "SELECT id FROM t WHERE $sample AND id <> (SELECT t2.id FROM t t2 ORDER BY t2.v <-> t.v LIMIT 1) ORDER BY id" 2>&1)
  expect_eq "crash round $r: sampled rows ($(cq p -c "SELECT count(*) FROM t WHERE $sample")) are their own nearest neighbours through the index (probes=1)" \
    "$(lines "$bad")" ""
  # The same with default settings, on the newest rows.
  bad=$(cq p -c "SET enable_seqscan = off" \
    -c "SELECT id FROM t WHERE id IN ($(tail -50 "$work/acked.$r" | idlist)) AND id <> (SELECT t2.id FROM t t2 ORDER BY t2.v <-> t.v LIMIT 1)" 2>&1)
  expect_eq "crash round $r: newest 50 acknowledged rows are their own nearest neighbours (default probes)" "$(lines "$bad")" ""

  problems=$(cq p -c "VACUUM t" -c "SELECT * FROM lsh_index_check('idx')" 2>&1)
  expect_eq "crash round $r: lsh_index_check clean after VACUUM" "$(lines "$problems")" ""
}

# Round 1: every process of the cluster SIGKILLed at once.
start_clients 1
sleep 3
cluster_crash p || fail "crash round 1: could not kill the cluster"
wait_clients
if cluster_start p; then
  pass "crash round 1: server restarts after SIGKILL of the whole cluster"
  grep -q "redo done\|redo starts" "$(cluster_log p)" || fail "crash round 1: no WAL replay in the server log"
  verify 1
  # The unlogged table was reset from its init fork (an index built empty): it takes rows again.
  expect_eq "crash round 1: unlogged table emptied by the crash" "$(cq p -c "SELECT count(*) FROM u")" 0
  cq p -c "INSERT INTO u SELECT g, ARRAY(SELECT random() FROM generate_series(1,16) WHERE g > 0) FROM generate_series(1,300) g" \
    || fail "crash round 1: insert into the reset unlogged table"
  problems=$(cq p -c "SELECT * FROM lsh_index_check('uidx')" 2>&1)
  expect_eq "crash round 1: index of the reset unlogged table is clean" "$(lines "$problems")" ""
  bad=$(cq p -c "SET enable_seqscan = off" -c "SET lsh.probes = 1" \
    -c "SELECT id FROM u WHERE id <> (SELECT u2.id FROM u u2 ORDER BY u2.v <-> u.v LIMIT 1)" 2>&1)
  expect_eq "crash round 1: all 300 rows of the reset unlogged table found through its index" "$(lines "$bad")" ""
else
  fail "crash round 1: server does not restart: $(tail -5 "$(cluster_log p)")"
  finish
fi

# Round 2: one inserting backend SIGKILLed; the postmaster reinitialises and replays WAL.
cq p -c CHECKPOINT
start_clients 2
sleep 3
victim=$(cq p -c "SELECT pid FROM pg_stat_activity WHERE query LIKE 'INSERT INTO t%' AND pid <> pg_backend_pid() LIMIT 1")
if [ -n "$victim" ]; then
  kill -9 "$victim"
  wait_clients
  if wait_ready; then
    pass "crash round 2: server recovers by itself after SIGKILL of a backend"
    verify 2
  else
    fail "crash round 2: server does not come back: $(tail -5 "$(cluster_log p)")"
  fi
else
  fail "crash round 2: no inserting backend found"
  cluster_crash p; wait_clients; cluster_start p
fi

# Round 3: crash during CREATE INDEX on a bigger table.
#   3a (deterministic): an expression index whose expression blocks on an advisory lock at the row in
#       the middle of the table, so the build is stopped half-way through writing its vector pages;
#   3b: a plain build, killed as soon as it reports its hashing or writing phase (on a fast machine the
#       build may commit first: then the committed index must be clean).
cq p >/dev/null <<'SQL' || fail "crash round 3: setup"
CREATE TABLE big AS SELECT g AS id, ARRAY(SELECT random() FROM generate_series(1,16) WHERE g > 0)::embedding(16) AS v
  FROM generate_series(1, 12000) g;
UPDATE big SET v = ARRAY(SELECT -1 FROM generate_series(1,16))::embedding WHERE id = 6000;
-- Not really immutable (it waits on a lock): a test device only.
CREATE FUNCTION gate(v embedding) RETURNS embedding LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF (v::real[])[1] = -1 THEN PERFORM pg_advisory_lock_shared(4242); PERFORM pg_advisory_unlock_shared(4242); END IF;
  RETURN v;
END $$;
CHECKPOINT;
SQL
sum_before=$(cq p -c "SELECT md5(string_agg(v::text, ',' ORDER BY id)) FROM big")

# after_build_crash NAME: the checks after the cluster was killed during CREATE INDEX NAME.
after_build_crash() {
  local name=$1 problems
  if cluster_start p; then
    pass "crash round 3 ($name): server restarts after SIGKILL during CREATE INDEX"
    if [ "$(cq p -c "SELECT count(*) FROM pg_class WHERE relname = '$name'")" = 0 ]; then
      pass "crash round 3 ($name): the interrupted index is gone"
    else
      echo "round 3 ($name): CREATE INDEX committed before the kill landed"
      problems=$(cq p -c "SELECT * FROM lsh_index_check('$name')" 2>&1)
      expect_eq "crash round 3 ($name): index committed just before the crash is clean" "$(lines "$problems")" ""
      cq p -c "DROP INDEX $name"
    fi
    expect_eq "crash round 3 ($name): table intact" "$(cq p -c "SELECT md5(string_agg(v::text, ',' ORDER BY id)) FROM big")" "$sum_before"
  else
    fail "crash round 3 ($name): server does not restart: $(tail -5 "$(cluster_log p)")"
    finish
  fi
}

# 3a
"$PG_BIN/psql" -h "$(cluster_sock p)" -p "$(cluster_port p)" -U postgres -qXAt \
  -c "SELECT pg_advisory_lock(4242)" -c "SELECT pg_sleep(600)" >/dev/null 2>&1 &
for i in $(seq 1 300); do
  [ "$(cq p -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")" = 1 ] && break
  sleep 0.1
done
"$PG_BIN/psql" -h "$(cluster_sock p)" -p "$(cluster_port p)" -U postgres -qXAt \
  -c "CREATE INDEX gate_idx ON big USING lsh ((gate(v))) WITH (bits = 10, tables = 4)" >"$work/build_a.out" 2>&1 &
waiting=0
for i in $(seq 1 1200); do
  waiting=$(cq p -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
  [ "$waiting" = 1 ] && break
  sleep 0.1
done
expect_eq "crash round 3 (gate_idx): CREATE INDEX stopped half-way through its heap scan" "$waiting" 1
echo "round 3: SIGKILL during CREATE INDEX gate_idx, phase [$(cq p -c "SELECT phase FROM pg_stat_progress_create_index")]"
cluster_crash p || fail "crash round 3: could not kill the cluster"
wait_clients
after_build_crash gate_idx

# 3b
"$PG_BIN/psql" -h "$(cluster_sock p)" -p "$(cluster_port p)" -U postgres -qXAt \
  -c "CREATE INDEX big_idx ON big USING lsh (v) WITH (bits = 10, tables = 4)" >"$work/build.out" 2>&1 &
phase=
for i in $(seq 1 1200); do
  phase=$(cq p -c "SELECT phase FROM pg_stat_progress_create_index" 2>/dev/null)
  case "$phase" in *hashing*|*writing*) break ;; esac
  [ -z "$(jobs -rp)" ] && break
  sleep 0.05
done
cluster_crash p || fail "crash round 3: could not kill the cluster"
echo "round 3: SIGKILL during CREATE INDEX big_idx, phase [$phase]"
wait_clients
after_build_crash big_idx

if cq p -c "CREATE INDEX big_idx ON big USING lsh (v) WITH (bits = 10, tables = 4)"; then
  problems=$(cq p -c "SELECT * FROM lsh_index_check('big_idx')" 2>&1)
  expect_eq "crash round 3: index rebuilt after the crashes is clean" "$(lines "$problems")" ""
  bad=$(cq p -c "SET enable_seqscan = off" -c "SET lsh.probes = 1" \
    -c "SELECT id FROM big WHERE id % 40 = 0 AND id <> (SELECT b.id FROM big b ORDER BY b.v <-> big.v LIMIT 1)" 2>&1)
  expect_eq "crash round 3: rebuilt index finds sampled rows" "$(lines "$bad")" ""
else
  fail "crash round 3: CREATE INDEX after the crashes failed"
fi
expect_eq "crash round 3: index of t still clean" "$(cq p -c "SELECT count(*) FROM lsh_index_check('idx')" 2>/dev/null)" 0

# Round 4: crash in the middle of VACUUM's pass over the lsh index (vacuum_cost_delay slows it down so
# the kill lands while some vector items are marked deleted and their bucket entries still exist).
cq p -c "DELETE FROM t WHERE id % 3 = 0" -c CHECKPOINT >/dev/null || fail "crash round 4: delete"
"$PG_BIN/psql" -h "$(cluster_sock p)" -p "$(cluster_port p)" -U postgres -qXAt \
  -c "SET vacuum_cost_delay = '20ms'" -c "SET vacuum_cost_limit = 1" -c "VACUUM t" >"$work/vacuum.out" 2>&1 &
vphase=
for i in $(seq 1 1200); do
  vphase=$(cq p -c "SELECT phase FROM pg_stat_progress_vacuum" 2>/dev/null)
  [ "$vphase" = "vacuuming indexes" ] && break
  [ -z "$(jobs -rp)" ] && break
  sleep 0.1
done
expect_eq "crash round 4: VACUUM reached its index phase" "$vphase" "vacuuming indexes"
sleep 2
echo "round 4: SIGKILL during VACUUM, phase [$(cq p -c "SELECT phase FROM pg_stat_progress_vacuum" 2>/dev/null)]"
cluster_crash p || fail "crash round 4: could not kill the cluster"
wait_clients
if cluster_start p; then
  pass "crash round 4: server restarts after SIGKILL during VACUUM"
  problems=$(cq p -c "SELECT * FROM lsh_index_check('idx')" 2>&1)
  expect_eq "crash round 4: lsh_index_check clean right after recovery" "$(lines "$problems")" ""
  n=$(cq p -c "SELECT count(*) FROM t")
  bad=$(cq p -c "SET enable_seqscan = off" -c "SET lsh.probes = 1" \
    -c "SELECT id FROM t WHERE id % (1 + $n / 200) = 0 AND id <> (SELECT t2.id FROM t t2 ORDER BY t2.v <-> t.v LIMIT 1)" 2>&1)
  expect_eq "crash round 4: sampled rows are their own nearest neighbours after the interrupted VACUUM" "$(lines "$bad")" ""
  problems=$(cq p -c "VACUUM t" -c "SELECT * FROM lsh_index_check('idx')" 2>&1)
  expect_eq "crash round 4: lsh_index_check clean after a new VACUUM" "$(lines "$problems")" ""
  expect_eq "crash round 4: index holds exactly the live rows" \
    "$(cq p -c "SELECT count(*) FROM lsh_index_check('idx')" 2>&1 | grep -oE '[0-9]+ vectors \([0-9]+ flagged deleted\), [0-9]+ live heap rows')" \
    "$n vectors (0 flagged deleted), $n live heap rows"
else
  fail "crash round 4: server does not restart: $(tail -5 "$(cluster_log p)")"
fi

# Round 5: crash while an index created on an empty table rebuilds its bucket structure as it grows
# (grow.rs). A poller sees the rebuild's exclusive lock on the index's meta page and the cluster is killed
# at once: before the meta page switch the old structure is in use, after it the new one.
cq p >/dev/null <<'SQL' || fail "crash round 5: setup"
CREATE TABLE g (id int PRIMARY KEY, v embedding(48) NOT NULL);
CREATE INDEX g_idx ON g USING lsh (v);
INSERT INTO g SELECT i, ARRAY(SELECT (i % 23) + random() FROM generate_series(1, 48))::embedding FROM generate_series(1, 2000) i;
CHECKPOINT;
SQL
"$PG_BIN/psql" -h "$(cluster_sock p)" -p "$(cluster_port p)" -U postgres -qXAt >"$work/poll.out" 2>&1 <<'SQL' &
DO $$
BEGIN
  FOR i IN 1 .. 120000 LOOP
    IF EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'page' AND relation = 'g_idx'::regclass AND page = 0
                 AND mode = 'ExclusiveLock' AND granted) THEN
      RAISE NOTICE 'rebuild seen';
      RETURN;
    END IF;
    PERFORM pg_sleep(0.0005);
  END LOOP;
END $$;
SQL
poller=$!
"$PG_BIN/psql" -h "$(cluster_sock p)" -p "$(cluster_port p)" -U postgres -qXAt \
  -c "INSERT INTO g SELECT i, ARRAY(SELECT (i % 23) + random() FROM generate_series(1, 48))::embedding FROM generate_series(2001, 200000) i" \
  >"$work/grow_insert.out" 2>&1 &
wait "$poller"
cluster_crash p || fail "crash round 5: could not kill the cluster"
echo "round 5: SIGKILL $(grep -o 'rebuild seen' "$work/poll.out" || echo 'without having seen a rebuild') "
wait_clients
if cluster_start p; then
  pass "crash round 5: server restarts after SIGKILL during a rebuild of the bucket structure"
  expect_eq "crash round 5: the rebuild was caught in the act" "$(grep -c 'rebuild seen' "$work/poll.out")" 1
  expect_eq "crash round 5: the committed rows survive, the interrupted insert is gone" "$(cq p -c "SELECT count(*) FROM g")" 2000
  problems=$(cq p -c "SELECT * FROM lsh_index_check('g_idx')" 2>&1)
  expect_eq "crash round 5: lsh_index_check clean after recovery" "$(lines "$problems")" ""
  # Structure pages the interrupted rebuild left unused are reused by the next VACUUM (reported as index
  # pages newly deleted: VACUUM VERBOSE's "index ...: pages: N in total, M newly deleted", PostgreSQL 15+);
  # a second VACUUM has nothing left to reclaim.
  first=$(cq p -c "VACUUM (VERBOSE) g" 2>&1 | grep -A2 'index "g_idx"' | grep -oE '[0-9]+ newly deleted' | grep -oE '^[0-9]+')
  echo "round 5: the first VACUUM after recovery reclaimed ${first:-?} unused structure pages"
  second=$(cq p -c "VACUUM (VERBOSE) g" 2>&1 | grep -A2 'index "g_idx"' | grep -oE '[0-9]+ newly deleted' | grep -oE '^[0-9]+')
  expect_eq "crash round 5: a second VACUUM finds no unused structure pages" "${second:-missing}" "0"
  problems=$(cq p -c "SELECT * FROM lsh_index_check('g_idx')" 2>&1)
  expect_eq "crash round 5: lsh_index_check clean after VACUUM reclaimed pages" "$(lines "$problems")" ""
  bad=$(cq p -c "SET enable_seqscan = off" \
    -c "SELECT id FROM g WHERE id % 20 = 0 AND id <> (SELECT g2.id FROM g g2 ORDER BY g2.v <-> g.v LIMIT 1)" 2>&1)
  expect_eq "crash round 5: sampled rows are their own nearest neighbours" "$(lines "$bad")" ""
  # How far the killed insert got before the poller saw a rebuild varies (a rebuild of a small index
  # can finish between two polls): its rows are dead, their room is reused first, and the next rebuild
  # waits until the index has doubled again. So rows go in by batches of 10,000 until the layout has
  # grown past one superbucket (at most 20 batches).
  batches=0
  while [ "$batches" -lt 20 ]; do
    lo=$((2001 + batches * 10000))
    cq p -c "INSERT INTO g SELECT i, ARRAY(SELECT (i % 23) + random() FROM generate_series(1, 48))::embedding FROM generate_series($lo, $((lo + 9999))) i" >/dev/null ||
      fail "crash round 5: inserts after recovery"
    batches=$((batches + 1))
    [ "$(cq p -c "SELECT superbuckets > 1 FROM lsh_index_info('g_idx')")" = t ] && break
  done
  echo "round 5: $batches batch(es) of 10,000 rows after recovery until the layout grew"
  problems=$(cq p -c "SELECT * FROM lsh_index_check('g_idx')" 2>&1)
  expect_eq "crash round 5: the index grows again after recovery, clean" "$(lines "$problems")" ""
  expect_eq "crash round 5: the grown layout has more than one superbucket" \
    "$(cq p -c "SELECT superbuckets > 1 FROM lsh_index_info('g_idx')")" "t"
else
  fail "crash round 5: server does not restart: $(tail -5 "$(cluster_log p)")"
fi

# Round 6: split vectors under load (two-page WAL records on insert and VACUUM), whole cluster SIGKILLed.
rand600="ARRAY(SELECT random() FROM generate_series(1,600))::embedding(600)"
cq p >/dev/null <<SQL || fail "crash round 6: setup"
CREATE TABLE s (id bigserial PRIMARY KEY, v embedding(600) NOT NULL);
INSERT INTO s(v) SELECT ARRAY(SELECT random() FROM generate_series(1,600) WHERE g > 0) FROM generate_series(1,400) g;
CREATE INDEX s_idx ON s USING lsh (v);
CHECKPOINT;
SQL
for k in 1 2 3; do
  yes "INSERT INTO s(v) SELECT $rand600 RETURNING id;" \
    | "$PG_BIN/psql" -h "$(cluster_sock p)" -p "$(cluster_port p)" -U postgres -qXAt \
      >"$work/sins.$k" 2>"$work/sins.$k.err" &
done
yes "DELETE FROM s WHERE id IN (SELECT id FROM s WHERE id <= 400 ORDER BY random() LIMIT 5) RETURNING -id;
VACUUM s;" | "$PG_BIN/psql" -h "$(cluster_sock p)" -p "$(cluster_port p)" -U postgres -qXAt \
  >"$work/sdel" 2>"$work/sdel.err" &
sleep 4
cluster_crash p || fail "crash round 6: could not kill the cluster"
wait_clients
if cluster_start p; then
  pass "crash round 6: server restarts after SIGKILL during inserts and VACUUM of split vectors"
  cat "$work"/sins.? | grep -E '^[0-9]+$' | sort -n >"$work/sacked"
  acked=$(wc -l <"$work/sacked")
  [ "$acked" -gt 0 ] || fail "crash round 6: no insert was acknowledged ($(head -c 300 "$work/sins.1.err"))"
  missing=$(comm -23 <(sort "$work/sacked") <(cq p -c "SELECT id FROM s" | sort) | wc -l)
  expect_eq "crash round 6: all $acked acknowledged inserts survived" "$missing" 0
  echo "round 6: $acked acknowledged inserts, $(grep -cE '^-[0-9]+$' "$work/sdel") acknowledged deletes"
  problems=$(cq p -c "SELECT * FROM lsh_index_check('s_idx')" 2>&1)
  expect_eq "crash round 6: lsh_index_check clean after recovery" "$(lines "$problems")" ""
  bad=$(cq p -c "SET enable_seqscan = off" -c "SET lsh.rerank = 100000" \
    -c "SELECT id FROM s WHERE (id IN ($(tail -60 "$work/sacked" | idlist)) OR id % 7 = 0) AND id <> (SELECT s2.id FROM s s2 ORDER BY s2.v <-> s.v LIMIT 1)" 2>&1)
  expect_eq "crash round 6: newest acknowledged rows and a sample are their own nearest neighbours" "$(lines "$bad")" ""
  problems=$(cq p -c "DELETE FROM s WHERE id % 2 = 0" -c "VACUUM s" -c "SELECT * FROM lsh_index_check('s_idx')" 2>&1)
  expect_eq "crash round 6: lsh_index_check clean after deleting half and VACUUM" "$(lines "$problems")" ""
  expect_eq "crash round 6: the index holds exactly the live rows" \
    "$(cq p -c "SET enable_seqscan = off" -c "SELECT count(*) FROM (SELECT id FROM s ORDER BY v <-> NULL) x")" \
    "$(cq p -c "SELECT count(*) FROM s")"
else
  fail "crash round 6: server does not restart: $(tail -5 "$(cluster_log p)")"
fi

panics=$(grep -E 'PANIC|TRAP:|was terminated by signal (6|11)' "$(cluster_log p)" | head -5)
expect_eq "crash: no PANIC/assertion/segfault in the server log" "$panics" ""
finish
