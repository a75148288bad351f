#!/usr/bin/env bash
# pg_imgsim in one command, on a fresh Debian 12 machine, as root or as a user with sudo:
#   installs what is missing (scripts/install-deps.sh, the same installer as scripts/test.sh), builds and
#   installs the extension (cargo pgrx install --release), starts its own PostgreSQL cluster in
#   .cache/demo-pg on a free port (or uses --database-url), loads a photo collection (default: the Public
#   Domain/CC0 photos of Debian's gcompris-qt-data, a few held out as queries), embeds them in the database
#   with img_embed_batch (progress bar), builds the lsh index, runs
#     SELECT ... ORDER BY emb <-> (SELECT img_embed($1)) LIMIT k
#   for each query photo and writes demo-out/contact_sheet.png and demo-out/index.html.
#   Re-running is fast: only new or changed photos are loaded and embedded (rows keyed by path + SHA-256).
#
# Usage: scripts/demo.sh [--images DIR] [--query FILE]... [--k N] [--database-url URL] [--port N]
#                        [--model NAME] [--batch N] [--out DIR] [--skip-build] [--stop]
#   --images DIR        photos to load, recursively (jpg, png, webp, gif, bmp, tiff); default .cache/data/gcompris
#   --query FILE        query photo (repeatable); default: a few photos of the collection, held out of it
#   --k N               results per query (default 5)
#   --database-url URL  use this server (pg_imgsim must be installable there) instead of the demo cluster
#   --port N            port for the demo cluster (default: the first free port from 54329 on)
#   --model NAME        model for img_embed (default efficientnet_lite0, prepared offline by the installer)
#   --batch N           photos per img_embed_batch call (default 32)
#   --out DIR           where the report goes (default demo-out)
#   --skip-build        skip scripts/install-deps.sh and the extension build (when both are already done)
#   --rebuild           build and install the extension even if the sources did not change since the last demo
#   --stop              stop the demo cluster and exit (its data stays in .cache/demo-pg)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
start_dir=$PWD
cd "$root"
export PG_MAJOR=${PG_MAJOR:-15}   # 15 (Debian) or 18 (.cache/pg18): scripts/pg_major.sh
. scripts/pg_major.sh
export PG_CONFIG=${PG_CONFIG:-$(pg_config_for "$PG_MAJOR")}
export PATH=$HOME/.cargo/bin:$PATH
images="" queries=() k=5 dburl="" port="" model=efficientnet_lite0 batch=32 out=demo-out
skip_build="" rebuild="" stop=""
pgdata=${IMGSIM_DEMO_PGDATA:-$root/.cache/demo-pg}   # IMGSIM_DEMO_PGDATA: for tests
dbname=imgsim_demo

die() { printf '\033[1;31m[demo]\033[0m %s\n' "$*" >&2; exit 1; }
log() { printf '\033[1m[demo]\033[0m %s\n' "$*" >&2; }
need_arg() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
  case $1 in
    --images) need_arg "$@"; images=$2; shift 2 ;;
    --query) need_arg "$@"; queries+=("$2"); shift 2 ;;
    --k) need_arg "$@"; k=$2; shift 2 ;;
    --database-url) need_arg "$@"; dburl=$2; shift 2 ;;
    --port) need_arg "$@"; port=$2; shift 2 ;;
    --model) need_arg "$@"; model=$2; shift 2 ;;
    --batch) need_arg "$@"; batch=$2; shift 2 ;;
    --out) need_arg "$@"; out=$2; shift 2 ;;
    --skip-build) skip_build=1; shift ;;
    --rebuild) rebuild=1; shift ;;
    --stop) stop=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ $k =~ ^[1-9][0-9]*$ ]] || die "--k wants a positive number"
[[ $batch =~ ^[1-9][0-9]*$ ]] || die "--batch wants a positive number"
[ -z "$port" ] || [[ $port =~ ^[1-9][0-9]*$ ]] || die "--port wants a number"
# paths on the command line are relative to where the command was typed
abspath() { case $1 in /*) echo "$1" ;; *) echo "$start_dir/$1" ;; esac; }
[ -z "$images" ] || images=$(abspath "$images")
[ -z "$images" ] || [ -d "$images" ] || die "--images $images: not a folder"
for i in "${!queries[@]}"; do
  queries[$i]=$(abspath "${queries[$i]}")
  [ -f "${queries[$i]}" ] || die "--query ${queries[$i]}: no such file"
done
[ "$out" = demo-out ] || out=$(abspath "$out")

bindir=""
owner=""     # who runs the cluster's programs: postgres when we are root (initdb refuses root), else us
as_owner() { if [ -n "$owner" ]; then (cd / && runuser -u "$owner" -- "$@"); else "$@"; fi; }
cluster_setup_vars() {
  bindir=$("$PG_CONFIG" --bindir)
  if [ "$(id -u)" -eq 0 ]; then owner=postgres; fi
}
# the cluster's socket goes into its data directory (mode 0700: only its owner and root connect)
sockdir() { echo "$pgdata"; }
conf_port() { sed -n "s/^port = \([0-9]*\).*/\1/p" "$pgdata/postgresql.auto.conf" 2>/dev/null | tail -1; }
running() { [ -f "$pgdata/PG_VERSION" ] && as_owner "$bindir/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; }

# .cache/demo-pg is a link when the cluster had to live elsewhere (see below)
if [ -L "$pgdata" ]; then pgdata=$(readlink -f "$pgdata"); fi

if [ -n "$stop" ]; then
  [ -x "$PG_CONFIG" ] || die "no PostgreSQL here ($PG_CONFIG)"
  cluster_setup_vars
  if running; then
    as_owner "$bindir/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null
    log "demo cluster stopped (data kept in $pgdata; scripts/demo.sh starts it again, rm -rf it to start over)"
  else
    log "the demo cluster is not running"
  fi
  exit 0
fi

# 1. dependencies (idempotent), the extension (only when its sources changed since the last demo build)
if [ -z "$skip_build" ]; then
  if [ -n "$images" ]; then IMGSIM_SKIP_DATA=1 bash scripts/install-deps.sh; else bash scripts/install-deps.sh; fi
  pkglib=$("$PG_CONFIG" --pkglibdir)
  stamp_file=$root/.cache/demo-build.sha
  stamp=$( { find src sql -type f \( -name '*.rs' -o -name '*.sql' -o -name 'Cargo.toml' \) -print0 | sort -z |
             xargs -0 sha256sum; sha256sum Cargo.toml Cargo.lock pg_imgsim.control; } | sha256sum | cut -d' ' -f1)
  if [ -n "$rebuild" ] || [ ! -f "$pkglib/pg_imgsim.so" ] || [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
    log "building and installing pg_imgsim (cargo pgrx install --release; the first build takes several minutes)"
    if [ "$(id -u)" -eq 0 ]; then
      cargo pgrx install --release --pg-config "$PG_CONFIG"
    else
      cargo pgrx install --release --sudo --pg-config "$PG_CONFIG"
    fi
    echo "$stamp" > "$stamp_file"
  else
    log "pg_imgsim is installed and its sources did not change since (--rebuild to build anyway)"
  fi
fi
py=$root/.cache/venv/bin/python
[ -x "$py" ] || die "no Python venv in .cache/venv: run without --skip-build once"
"$py" -c 'import psycopg, PIL' 2>/dev/null ||
  die "psycopg or Pillow missing from .cache/venv (scripts/requirements.txt; rerun without --skip-build)"

if [ -z "$images" ]; then
  images=$root/.cache/data/gcompris
  [ -d "$images" ] || die "no photo collection in $images (run without --skip-build, or give --images DIR)"
fi

# 2. the database: --database-url, or the demo cluster in .cache/demo-pg
port_free() { "$py" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}
if [ -n "$dburl" ]; then
  dsn=$dburl
  where=$(echo "$dburl" | sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#; s#password=[^ ]*#password=***#')
  connect_hint="psql '$where'"
  stop_hint=""
else
  cluster_setup_vars
  [ -x "$bindir/initdb" ] || die "no initdb in $bindir (postgresql-$PG_MAJOR missing; run without --skip-build)"
  if [ -n "$owner" ]; then
    # postgres must reach the data directory: every folder above it needs search (x) permission for it
    mkdir -p "$(dirname "$pgdata")"
    if ! (cd / && runuser -u postgres -- test -x "$(dirname "$pgdata")"); then
      alt=/var/lib/postgresql/pg_imgsim-demo-$(echo "$root" | sha256sum | cut -c1-12)
      log "postgres cannot reach $root: keeping the cluster in $alt (linked from .cache/demo-pg)"
      mkdir -p "$alt"; chown postgres: "$alt"; chmod 700 "$alt"
      [ -e "$pgdata" ] && die "$pgdata exists but postgres cannot reach it"
      ln -s "$alt" "$pgdata"
      pgdata=$alt
    fi
  fi
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    log "initdb $pgdata"
    mkdir -p "$pgdata"
    [ -z "$owner" ] || chown "$owner": "$pgdata"
    chmod 700 "$pgdata"
    as_owner "$bindir/initdb" -D "$pgdata" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >/dev/null
    pw=$("$py" -c 'import secrets; print(secrets.token_hex(12))')
    echo "$pw" > "$pgdata/demo.password"
    chmod 600 "$pgdata/demo.password"
    [ -z "$owner" ] || chown "$owner": "$pgdata/demo.password"
    cat >> "$pgdata/postgresql.conf" <<EOF

# scripts/demo.sh
listen_addresses = 'localhost'
unix_socket_directories = '$(sockdir)'
unix_socket_permissions = 0700
shared_buffers = 256MB
max_wal_size = 2GB
EOF
  fi
  if ! running; then
    p=${port:-$(conf_port)}
    if [ -z "$p" ] || ! port_free "$p"; then
      [ -z "$port" ] || die "port $port is taken"
      p=54329
      while ! port_free "$p"; do p=$((p + 1)); done
    fi
    if [ "$p" != "$(conf_port)" ]; then
      grep -v '^port = ' "$pgdata/postgresql.auto.conf" > "$pgdata/postgresql.auto.conf.new" || true
      echo "port = $p" >> "$pgdata/postgresql.auto.conf.new"
      mv "$pgdata/postgresql.auto.conf.new" "$pgdata/postgresql.auto.conf"
      [ -z "$owner" ] || chown "$owner": "$pgdata/postgresql.auto.conf"
    fi
    log "starting PostgreSQL on port $p (data: $pgdata)"
    as_owner "$bindir/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 start >/dev/null ||
      die "the cluster did not start; see $pgdata/server.log"
  elif [ -n "$port" ] && [ "$port" != "$(conf_port)" ]; then
    log "the demo cluster is already running on port $(conf_port) (--stop first to move it to $port)"
  fi
  p=$(conf_port)
  base="host=$(sockdir) port=$p user=postgres"
  if ! "$bindir/psql" -qXAt -d "$base dbname=postgres" -c "SELECT 1 FROM pg_database WHERE datname = '$dbname'" |
       grep -q 1; then
    "$bindir/psql" -qX -d "$base dbname=postgres" -c "CREATE DATABASE $dbname" >/dev/null
  fi
  # the password for TCP connections (the socket needs none: only the cluster's owner and root reach it)
  "$bindir/psql" -qX -d "$base dbname=postgres" -v pw="$(cat "$pgdata/demo.password")" >/dev/null <<'SQL'
SELECT format('ALTER ROLE postgres PASSWORD %L', :'pw') \gexec
SQL
  dsn="$base dbname=$dbname"
  where="demo cluster $pgdata, port $p, database $dbname"
  pwfile=$pgdata/demo.password
  connect_hint="psql \"host=$(sockdir) port=$p user=postgres dbname=$dbname\"
    or over TCP: PGPASSWORD=\$(cat $pwfile) psql -h localhost -p $p -U postgres $dbname"
  stop_hint="scripts/demo.sh --stop"
fi

# 3. the extension in the database (updated in place when a newer version is installed; never dropped)
"$py" - "$dsn" <<'EOF' || die "pg_imgsim is not usable in that database (see the line above)"
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as c:
    c.execute("CREATE EXTENSION IF NOT EXISTS pg_imgsim")
    # Never drop the extension (that would drop the user's embedding columns): update it in place
    # through the upgrade scripts (sql/pg_imgsim--A--B.sql) when a newer version is installed.
    avail = c.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'pg_imgsim'").fetchone()[0]
    have = c.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_imgsim'").fetchone()[0]
    if avail != have:
        c.execute("ALTER EXTENSION pg_imgsim UPDATE")
    if not c.execute("SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'img_embed_batch')").fetchone()[0]:
        sys.exit(f"pg_imgsim {have} in this database has no img_embed_batch and no upgrade path to {avail}")
EOF

# 4. load, embed, index, search, report
args=(--dsn "$dsn" all --images "$images" --k "$k" --model "$model" --batch "$batch" --out "$out" --where "$where")
for q in "${queries[@]}"; do args+=(--query "$q"); done
"$py" scripts/demo_report.py "${args[@]}"

outabs=$(cd "$out" && pwd)
cat >&2 <<EOF

$(printf '\033[1m')Done.$(printf '\033[0m')
  contact sheet: $outabs/contact_sheet.png
  report (SQL and timings): $outabs/index.html
  connect: $connect_hint
    e.g.  SELECT path, emb <-> (SELECT img_embed(pg_read_binary_file('/abs/path/photo.jpg'))) AS d
          FROM demo_photos ORDER BY d LIMIT 5;
EOF
if [ -n "$stop_hint" ]; then
  echo "  the cluster keeps running; stop it with: $stop_hint" >&2
fi
