#!/usr/bin/env bash
# Entry point of the pg_imgsim images (docker/Dockerfile, docker/Dockerfile.gpu).
# First start with an empty $PGDATA: initdb, the image's settings (/etc/pg_imgsim/pg_imgsim.conf: ONNX Runtime
# library, execution provider), CREATE EXTENSION pg_imgsim in $POSTGRES_DB and template1, then the scripts in
# /docker-entrypoint-initdb.d (*.sql, *.sh). Every start: postgres in the foreground.
# Environment (same names as the official postgres image):
#   POSTGRES_PASSWORD          password of POSTGRES_USER (required unless POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_USER              superuser name (default postgres)
#   POSTGRES_DB                database to create (default: POSTGRES_USER)
#   POSTGRES_HOST_AUTH_METHOD  auth for TCP connections (default scram-sha-256)
#   PGDATA                     data directory (default /var/lib/postgresql/data)
set -euo pipefail
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
: "${PG_IMGSIM_CONF:=/etc/pg_imgsim/pg_imgsim.conf}"
: "${INITDB_DIR:=/docker-entrypoint-initdb.d}"
PGBIN=${PGBIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
export PGDATA PATH="$PGBIN:$PATH"

log() { echo "pg_imgsim-entrypoint: $*" >&2; }

# "postgres -c x=y ..." or "-c x=y ..." start the server; anything else is run as given
if [ "${1:-}" = postgres ] || [ "${1:0:1}" = - ] || [ $# -eq 0 ]; then
  [ "${1:-}" = postgres ] && shift
else
  exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres: "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$0" postgres "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    log "the database is uninitialized: set POSTGRES_PASSWORD (or POSTGRES_HOST_AUTH_METHOD=trust)"
    exit 1
  fi
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:-}" > "$pwfile"
  log "initdb $PGDATA"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD" >/dev/null
  rm -f "$pwfile"
  echo "host all all all $POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
  {
    echo
    echo "# pg_imgsim image"
    echo "listen_addresses = '*'"
    echo "include_if_exists = '$PG_IMGSIM_CONF'"
  } >> "$PGDATA/postgresql.conf"

  # a private server for the setup: socket only, in a fresh folder
  sock=$(mktemp -d)
  pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories='$sock'" start >/dev/null
  run_sql() { psql -qX -v ON_ERROR_STOP=1 -h "$sock" -U "$POSTGRES_USER" "$@"; }
  if [ "$POSTGRES_DB" != postgres ]; then
    run_sql -d postgres -v db="$POSTGRES_DB" <<'SQL'
SELECT format('CREATE DATABASE %I', :'db') WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
  fi
  for db in template1 "$POSTGRES_DB"; do
    run_sql -d "$db" -c 'CREATE EXTENSION IF NOT EXISTS pg_imgsim'
  done
  for f in "$INITDB_DIR"/*; do
    [ -e "$f" ] || continue
    case $f in
      *.sql) log "running $f"; run_sql -d "$POSTGRES_DB" -f "$f" ;;
      *.sh) log "running $f"; PGHOST=$sock PGUSER=$POSTGRES_USER PGDATABASE=$POSTGRES_DB bash "$f" ;;
      *) log "ignoring $f" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  rmdir "$sock"
  log "ready: database $POSTGRES_DB with pg_imgsim"
fi

exec postgres -D "$PGDATA" "$@"
