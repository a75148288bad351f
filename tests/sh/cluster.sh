# shellcheck shell=bash
# Throwaway PostgreSQL clusters for tests/sh/*.sh (sourced, not run: scripts/test.sh runs every
# tests/sh/*.sh, so running this file alone just exits 0).
#
#   . "$here/cluster.sh"
#   cluster_base                       # one temp dir for all of this test's clusters; trap cleans up
#   cluster_init NAME [conf line...]   # initdb NAME under it (owned by postgres), unix socket only
#   cluster_start NAME / cluster_stop NAME [mode] / cluster_crash NAME (SIGKILL to every process)
#   cq NAME [psql args...]             # psql -qXAt -v ON_ERROR_STOP=1 against NAME's postgres db
#   cluster_create_extension NAME      # CREATE EXTENSION pg_imgsim, retried while the lead reinstalls
# tests/sh/with_cluster.sh wraps this for tests that want one cluster and plain psql (PGHOST etc. set).
#
# Each cluster listens only on a unix socket in its own directory (listen_addresses = ''), so port
# numbers cannot clash with anything else on the machine. Clusters run as the postgres user because
# initdb refuses root. The trap set by cluster_base stops every postmaster (immediate) and removes the
# directory on any exit, failure and ^C included.
[ "${BASH_SOURCE[0]}" = "$0" ] && exit 0

# PG_BIN: the binaries of the major under test; by default those of $PG_MAJOR (15) from scripts/pg_major.sh.
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/pg_major.sh"
PG_BIN=${PG_BIN:-$(pg_bin_for "${PG_MAJOR:-15}")}
CLUSTER_BASE=
CLUSTER_PORT_NEXT=$((20000 + RANDOM % 20000))

# as_pg CMD...: runs CMD as the postgres user (directly when we already are not root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cluster_cleanup() {
  local d pid
  [ -n "$CLUSTER_BASE" ] && [ -d "$CLUSTER_BASE" ] || return 0
  for d in "$CLUSTER_BASE"/*/data; do
    [ -f "$d/postmaster.pid" ] || continue
    as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w -t 20 stop >/dev/null 2>&1
    pid=$(head -1 "$d/postmaster.pid" 2>/dev/null)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null; fi
  done
  # Client processes this test started in the background (pgbench, psql loops).
  local j
  for j in $(jobs -p); do kill "$j" 2>/dev/null; done
  wait 2>/dev/null
  if [ -n "${KEEP_CLUSTERS:-}" ]; then echo "kept $CLUSTER_BASE"; else rm -rf "$CLUSTER_BASE"; fi
}

# cluster_base: makes the temp dir and installs the cleanup trap.
cluster_base() {
  CLUSTER_BASE=$(mktemp -d /tmp/pg_imgsim_test.XXXXXX)
  chmod 755 "$CLUSTER_BASE"
  chown postgres: "$CLUSTER_BASE" 2>/dev/null || true
  trap cluster_cleanup EXIT
  trap 'exit 130' INT TERM
}

cluster_dir() { echo "$CLUSTER_BASE/$1"; }
cluster_data() { echo "$CLUSTER_BASE/$1/data"; }
cluster_sock() { echo "$CLUSTER_BASE/$1"; }
cluster_port() { cat "$CLUSTER_BASE/$1/port"; }
cluster_log() { echo "$CLUSTER_BASE/$1/server.log"; }

# cluster_conf NAME LINE...: appends settings to NAME's postgresql.conf.
cluster_conf() {
  local name=$1; shift
  printf '%s\n' "$@" | as_pg tee -a "$(cluster_data "$name")/postgresql.conf" >/dev/null
}

# cluster_setup_dir NAME: the directory and port of a cluster (used by initdb and by pg_basebackup).
cluster_setup_dir() {
  local name=$1
  as_pg mkdir -p "$CLUSTER_BASE/$name"
  echo $CLUSTER_PORT_NEXT | as_pg tee "$CLUSTER_BASE/$name/port" >/dev/null
  CLUSTER_PORT_NEXT=$((CLUSTER_PORT_NEXT + 1))
}

# cluster_base_conf NAME: settings every test cluster gets (its own socket, small, quiet, durable).
cluster_base_conf() {
  local name=$1
  cluster_conf "$name" \
    "port = $(cluster_port "$name")" \
    "listen_addresses = ''" \
    "unix_socket_directories = '$(cluster_sock "$name")'" \
    "fsync = on" \
    "shared_buffers = 32MB" \
    "max_connections = 30" \
    "jit = off" \
    "log_min_messages = warning" \
    "log_line_prefix = '%m [%p] '"
}

cluster_init() {
  local name=$1; shift
  cluster_setup_dir "$name"
  as_pg "$PG_BIN/initdb" -D "$(cluster_data "$name")" --auth=trust --no-instructions -E UTF8 --locale=C.UTF-8 \
    >"$CLUSTER_BASE/$name/initdb.log" 2>&1 || { cat "$CLUSTER_BASE/$name/initdb.log"; return 1; }
  cluster_base_conf "$name"
  [ $# -gt 0 ] && cluster_conf "$name" "$@"
  return 0
}

# The server does not inherit RUST_BACKTRACE (as under Debian's pg_ctlcluster, which cleans the
# environment): pgrx would append Rust backtraces to re-raised errors' DETAIL and change expected output.
cluster_start() {
  local name=$1
  as_pg env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$PG_BIN/pg_ctl" -D "$(cluster_data "$name")" -l "$(cluster_log "$name")" -w -t 120 start \
    >>"$CLUSTER_BASE/$name/pg_ctl.log" 2>&1
}

cluster_stop() {
  as_pg "$PG_BIN/pg_ctl" -D "$(cluster_data "$1")" -m "${2:-fast}" -w -t 60 stop >/dev/null
}

# cluster_postmaster_pid NAME
cluster_postmaster_pid() { head -1 "$(cluster_data "$1")/postmaster.pid"; }

# cluster_crash NAME: SIGKILL, at once, to the postmaster and every process it started (no shutdown,
# no checkpoint: as far as PostgreSQL can tell, the machine lost power), and waits until they are gone.
cluster_crash() {
  local name=$1 pid pids
  pid=$(cluster_postmaster_pid "$name")
  pids="$pid $(cluster_children "$name")"
  kill -9 $pids 2>/dev/null
  for _ in $(seq 1 300); do
    pids=$(cluster_children "$name")
    [ -z "$pids" ] && ! kill -0 "$pid" 2>/dev/null && return 0
    kill -9 $pids 2>/dev/null
    sleep 0.1
  done
  echo "cluster_crash: processes of $name survive: $pids" >&2
  return 1
}

# cluster_children NAME: processes running in NAME's data directory (the postmaster and its children).
cluster_children() {
  local data p
  data=$(cluster_data "$1")
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/cwd" 2>/dev/null)" = "$data" ] && echo "${p#/proc/}"
  done
}

# lines TEXT: the first 10 lines of TEXT on one line (for FAIL messages); empty for empty TEXT.
lines() { printf '%s' "$1" | grep -v '^NOTICE' | head -10 | paste -sd' '; }

# cq NAME [args...]: psql as postgres to NAME's postgres database, unaligned tuples-only, stop on error.
cq() {
  local name=$1; shift
  "$PG_BIN/psql" -h "$(cluster_sock "$name")" -p "$(cluster_port "$name")" -U postgres -d postgres \
    -qXAt -v ON_ERROR_STOP=1 "$@"
}

# cluster_create_extension NAME: the lead reinstalls the extension now and then; retry for a while.
cluster_create_extension() {
  local name=$1 out
  for _ in $(seq 1 30); do
    if out=$(cq "$name" -c 'CREATE EXTENSION IF NOT EXISTS pg_imgsim' 2>&1); then
      return 0
    fi
    sleep 2
  done
  echo "CREATE EXTENSION pg_imgsim failed: $out" >&2
  return 1
}
