#!/usr/bin/env bash
# The inference service (issue 13): pg_imgsim in shared_preload_libraries runs img_embed in one background
# worker that batches the requests of all sessions.
#   - results are bit-identical to the in-backend path (a cluster without the preload), one caller and six
#     concurrent callers, and concurrent callers are batched (imgsim_service_stats: mean batch > 1);
#   - errors keep their SQLSTATEs (bad image 22P03, missing model 42704); a request larger than a slot
#     is refused with 54000;
#   - cancel and statement_timeout work while waiting; terminated waiting sessions give their slots back;
#   - the worker stopped (pg_terminate_backend) or killed (kill -9, which makes PostgreSQL restart every
#     process) mid-batch: no caller hangs, a new worker starts and the next call succeeds;
#   - settings reloaded (max_batch, an invalid provider), pg_cancel_backend of the worker, DROP DATABASE;
#   - a hot standby runs its own service with the same answers;
#   - without the preload, imgsim_service_stats() is empty.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/lib.sh"
. "$here/cluster.sh"
cluster_base

fx=$CLUSTER_BASE/fixtures
mkdir -p "$fx" && cp "$root"/tests/fixtures/parity/*.{jpg,png,webp} "$fx/" && chmod -R a+rX "$fx"
cluster_init plain || { fail "initdb"; finish; }
cluster_init svc "shared_preload_libraries = 'pg_imgsim'" "pg_imgsim.service_slots = 8" \
  "pg_imgsim.max_batch_wait = 50000" "max_connections = 40" "restart_after_crash = on" || { fail "initdb"; finish; }
cluster_init tiny "shared_preload_libraries = 'pg_imgsim'" "pg_imgsim.service_memory = 1024" \
  "pg_imgsim.service_slots = 2" || { fail "initdb"; finish; }
for c in plain svc tiny; do
  cluster_start $c || { fail "start $c: $(lines "$(tail -5 "$(cluster_log $c)")")"; finish; }
  cluster_create_extension $c || { fail "CREATE EXTENSION on $c"; finish; }
done

# worker_pid NAME: pid of NAME's inference service process (empty when none).
worker_pid() {
  local p
  for p in $(cluster_children "$1"); do
    grep -qa 'pg_imgsim inference service' "/proc/$p/cmdline" 2>/dev/null && echo "$p"
  done
}
# wait_worker NAME OLDPID: waits up to 20 s for a worker other than OLDPID; prints its pid.
wait_worker() {
  local p
  for _ in $(seq 1 200); do
    p=$(worker_pid "$1")
    [ -n "$p" ] && [ "$p" != "$2" ] && { echo "$p"; return 0; }
    sleep 0.1
  done
  return 1
}
# state NAME SQL-expression: SQLSTATE of PERFORMing it, or ok.
state() {
  cq "$1" -c "DO \$\$ BEGIN PERFORM $2; RAISE NOTICE 'ok'; EXCEPTION WHEN others THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 |
    sed 's/^NOTICE: *//'
}
# digests NAME: md5 of every fixture's embedding text, one "file md5" line each.
digests_sql="SELECT f, md5(img_embed(pg_read_binary_file('$fx/' || f))::text) FROM pg_ls_dir('$fx') f ORDER BY f"

[ -n "$(worker_pid svc)" ] && pass "the service worker runs with the preload" || fail "no service worker"
expect_eq "the worker is in pg_stat_activity" \
  "$(cq svc -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_imgsim inference service' AND pid = $(worker_pid svc)")" "1"
expect_eq "no service worker without the preload" "$(worker_pid plain)" ""
expect_eq "imgsim_service_stats() is empty without the preload" "$(cq plain -c "SELECT count(*) FROM imgsim_service_stats()")" "0"

want=$(cq plain -c "$digests_sql")
n=$(echo "$want" | wc -l)
got=$(cq svc -c "$digests_sql")
expect_eq "one caller: $n embeddings bit-identical to the in-backend path" "$got" "$want"

# Six concurrent callers, three rounds each over every fixture.
for k in 1 2 3 4 5 6; do
  (for _ in 1 2 3; do cq svc -c "$digests_sql"; done >"$CLUSTER_BASE/par.$k" 2>&1) &
done
wait
bad=0
for k in 1 2 3 4 5 6; do
  [ "$(cat "$CLUSTER_BASE/par.$k")" = "$(printf '%s\n%s\n%s' "$want" "$want" "$want")" ] ||
    { bad=$((bad + 1)); echo "caller $k: $(lines "$(diff <(printf '%s\n%s\n%s\n' "$want" "$want" "$want") "$CLUSTER_BASE/par.$k")")"; }
done
expect_eq "six concurrent callers: every embedding bit-identical to the in-backend path" "$bad" "0"
stats=$(cq svc -c "SELECT model, provider, images, mean_batch > 1, failed, worker_pid = $(worker_pid svc) FROM imgsim_service_stats()")
expect_eq "stats: images served, batches formed (mean > 1), CPU, worker pid" \
  "$stats" "efficientnet_lite0|CPU|$((n + 18 * n))|t|0|t"
echo "stats: $(cq svc -c "SELECT batches, images, round(mean_batch::numeric, 2) FROM imgsim_service_stats()")"

one=$fx/chelsea.png
batch_sql="SELECT md5(e::text) FROM unnest(img_embed_batch(ARRAY(SELECT pg_read_binary_file('$fx/' || f) FROM pg_ls_dir('$fx') f ORDER BY f), NULL)) e"
before=$(cq svc -c "SELECT images FROM imgsim_service_stats()")
expect_eq "img_embed_batch through the service: bit-identical to the in-backend path" \
  "$(cq svc -c "$batch_sql")" "$(cq plain -c "$batch_sql")"
expect_eq "img_embed_batch ran in the service" "$(cq svc -c "SELECT images - $before FROM imgsim_service_stats()")" "$n"
before=$(cq svc -c "SELECT images FROM imgsim_service_stats()")
expect_eq "a session with its own provider setting embeds in its own backend" \
  "$(cq svc -c "SET pg_imgsim.execution_provider = 'cpu'" -c "SELECT md5(img_embed(pg_read_binary_file('$one'))::text)" -c "SELECT images - $before FROM imgsim_service_stats()")" \
  "$(cq plain -c "SELECT md5(img_embed(pg_read_binary_file('$one'))::text)")
0"
# DROP DATABASE waits for every process to absorb a procsignal barrier (PostgreSQL 15+): the worker must.
expect_eq "CREATE / DROP DATABASE do not wait for the worker" \
  "$(timeout 60 "$PG_BIN/psql" -h "$(cluster_sock svc)" -p "$(cluster_port svc)" -U postgres -qXAt \
      -c "CREATE DATABASE scratch" -c "DROP DATABASE scratch" -c "SELECT 'dropped'" 2>&1)" "dropped"
expect_eq "not an image through the service: 22P03" "$(state svc "img_embed('\\x00010203'::bytea)")" "22P03"
expect_eq "missing model through the service: 42704" "$(state svc "img_embed(pg_read_binary_file('$one'), 'no_such_model')")" "42704"
expect_eq "request larger than a slot: 54000" "$(state tiny "img_embed(pg_read_binary_file('$one'))")" "54000"
expect_eq "54000 says how to fix it" \
  "$(cq tiny -c "SELECT img_embed(pg_read_binary_file('$one'))" 2>&1 | grep -c 'service_memory')" "1"

# Reloaded settings: pg_imgsim.max_batch bounds img_embed_batch's batches; an invalid provider in the server
# configuration does not make the worker exit or loop (sessions embed in their own backends, and get the
# error there); pg_cancel_backend does not stop the worker.
pid0=$(worker_pid svc)
cq svc -c "ALTER SYSTEM SET pg_imgsim.max_batch = 2" -c "SELECT pg_reload_conf()" >/dev/null; sleep 1
b0=$(cq svc -c "SELECT batches FROM imgsim_service_stats()")
cq svc -c "$batch_sql" >/dev/null
expect_eq "pg_imgsim.max_batch = 2: 8 images of one img_embed_batch run in 4 batches" \
  "$(cq svc -c "SELECT batches - $b0 FROM imgsim_service_stats()")" "4"
cq svc -c "ALTER SYSTEM SET pg_imgsim.execution_provider = 'bogus'" -c "SELECT pg_reload_conf()" >/dev/null; sleep 1
expect_eq "invalid provider in the configuration: 22023 from the session" "$(state svc "img_embed(pg_read_binary_file('$one'))")" "22023"
cq svc -c "ALTER SYSTEM RESET pg_imgsim.execution_provider" -c "ALTER SYSTEM RESET pg_imgsim.max_batch" -c "SELECT pg_reload_conf()" >/dev/null; sleep 1
cq svc -c "SELECT pg_cancel_backend($pid0)" >/dev/null
sleep 0.5
i0=$(cq svc -c "SELECT images FROM imgsim_service_stats()")
expect_eq "after both, the same worker serves again" \
  "$(cq svc -c "SELECT dims(img_embed(pg_read_binary_file('$one')))" -c "SELECT images - $i0 FROM imgsim_service_stats()")|$(worker_pid svc)" "1280
1|$pid0"

# Cancelled while queued (the service waits 50 ms for a batch to fill) and while running.
for t in 10ms 70ms 120ms 200ms; do
  cq svc -c "SET statement_timeout = '$t'" -c "SELECT img_embed(pg_read_binary_file('$one'))" >/dev/null 2>"$CLUSTER_BASE/cancel.err"
  grep -q 'canceling statement due to statement timeout' "$CLUSTER_BASE/cancel.err" ||
    [ ! -s "$CLUSTER_BASE/cancel.err" ] || fail "statement_timeout $t: $(lines "$(cat "$CLUSTER_BASE/cancel.err")")"
done
pass "statement_timeout ends a wait for the service"
# Sessions terminated while they wait: their slots must come back (8 slots; 8 victims, then 8 callers).
for k in 1 2 3 4 5 6 7 8; do
  (cq svc -c "SELECT img_embed(pg_read_binary_file('$fx/' || f)) FROM pg_ls_dir('$fx') f" >/dev/null 2>&1) &
done
sleep 0.3
cq svc -c "SELECT count(pg_terminate_backend(pid)) >= 0 FROM pg_stat_activity WHERE query LIKE 'SELECT img_embed(pg_read_binary_file(%' AND pid <> pg_backend_pid()" >/dev/null
wait
for k in 1 2 3 4 5 6 7 8; do
  (cq svc -c "SET statement_timeout = '60s'" -c "SELECT dims(img_embed(pg_read_binary_file('$one')))" >"$CLUSTER_BASE/after.$k" 2>&1) &
done
wait
expect_eq "slots of cancelled and terminated sessions are reused (8 callers on 8 slots)" \
  "$(cat "$CLUSTER_BASE"/after.* | sort | uniq -c | awk '{print $1 "x" $2}')" "8x1280"
expect_eq "no slot in use once idle" "$(cq svc -c "SELECT DISTINCT slots_in_use FROM imgsim_service_stats()")" "0"

# A hot standby of the preloaded cluster runs its own service (the worker starts at a consistent state and
# connects to no database), with the same answers.
cluster_setup_dir stby
if as_pg "$PG_BIN/pg_basebackup" -h "$(cluster_sock svc)" -p "$(cluster_port svc)" -U postgres \
     -D "$(cluster_data stby)" -R -X stream -c fast >"$(cluster_dir stby)/basebackup.log" 2>&1; then
  cluster_base_conf stby
  cluster_conf stby "hot_standby = on" "max_connections = 40"
  if cluster_start stby; then
    expect_eq "standby: in recovery, img_embed through its own service = the in-backend path" \
      "$(cq stby -c "SELECT pg_is_in_recovery()" -c "$digests_sql" -c "SELECT images FROM imgsim_service_stats()")" \
      "t
$want
$n"
    cluster_stop stby
  else
    fail "standby start: $(lines "$(tail -5 "$(cluster_log stby)")")"
  fi
else
  fail "pg_basebackup: $(lines "$(tail -3 "$(cluster_dir stby)/basebackup.log")")"
fi

# The worker stopped mid-batch (pg_terminate_backend: it exits with status 1 and is restarted).
old=$(worker_pid svc)
for k in 1 2 3 4; do
  (timeout 120 "$PG_BIN/psql" -h "$(cluster_sock svc)" -p "$(cluster_port svc)" -U postgres -qXAt \
     -c "SELECT count(img_embed(pg_read_binary_file('$fx/' || f))) FROM pg_ls_dir('$fx') f, generate_series(1, 3)" \
     >"$CLUSTER_BASE/term.$k" 2>&1; echo "rc=$?" >>"$CLUSTER_BASE/term.$k") &
done
sleep 1
expect_eq "pg_terminate_backend stops the worker" "$(cq svc -c "SELECT pg_terminate_backend($old)")" "t"
wait
hung=$(grep -l 'rc=124' "$CLUSTER_BASE"/term.* 2>/dev/null | wc -l)
expect_eq "worker stopped mid-batch: no caller hangs" "$hung" "0"
odd=$(cat "$CLUSTER_BASE"/term.* | grep -vE "^rc=[01]$|^$((3 * n))$|inference service stopped while running this request|HINT:|CONTEXT:" | head -3)
expect_eq "worker stopped mid-batch: callers get their embeddings or a clear ERROR" "$odd" ""
wait_worker svc "$old" >/dev/null && pass "a new worker starts" || fail "no new worker after the old one stopped"
expect_eq "the next call after the restart succeeds" "$(cq svc -c "SELECT dims(img_embed(pg_read_binary_file('$one')))")" "1280"
expect_eq "no slot in use after the restart" "$(cq svc -c "SELECT DISTINCT slots_in_use FROM imgsim_service_stats()")" "0"

# The worker killed (SIGKILL) mid-batch: PostgreSQL restarts every process; callers see their connection
# end, not a hang; the next session's call succeeds.
old=$(worker_pid svc)
(timeout 120 "$PG_BIN/psql" -h "$(cluster_sock svc)" -p "$(cluster_port svc)" -U postgres -qXAt \
   -c "SELECT count(img_embed(pg_read_binary_file('$fx/' || f))) FROM pg_ls_dir('$fx') f, generate_series(1, 5)" \
   >"$CLUSTER_BASE/kill.out" 2>&1; echo "rc=$?" >>"$CLUSTER_BASE/kill.out") &
sleep 1
kill -9 "$old"
wait
expect_eq "worker killed mid-batch: the caller does not hang" "$(grep -c 'rc=124' "$CLUSTER_BASE/kill.out")" "0"
ok=
for _ in $(seq 1 60); do
  if [ "$(cq svc -c "SELECT dims(img_embed(pg_read_binary_file('$one')))" 2>/dev/null)" = 1280 ]; then ok=1; break; fi
  sleep 0.5
done
expect_eq "after the crash restart the next call succeeds" "$ok" "1"
[ -n "$(worker_pid svc)" ] && [ "$(worker_pid svc)" != "$old" ] && pass "a new worker runs after the crash restart" ||
  fail "no new worker after the crash restart"

for c in plain svc tiny stby; do
  expect_eq "$c: no process terminated by a signal other than the test's SIGKILL" \
    "$(grep 'terminated by signal' "$(cluster_log $c)" | grep -vc 'signal 9: Killed')" "0"
  expect_eq "$c: no PANIC or failed assertion" "$(grep -cE 'PANIC|TRAP:' "$(cluster_log $c)")" "0"
done
finish
