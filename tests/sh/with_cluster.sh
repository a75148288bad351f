#!/usr/bin/env bash
# with_cluster.sh CMD [ARG...]: runs CMD against a throwaway cluster of PostgreSQL $PG_MAJOR (default 15;
# binaries from $PG_BIN, else scripts/pg_major.sh) and removes the cluster afterwards, whatever CMD did.
# Replaces Debian's pg_virtualenv, which only knows Debian-packaged majors. The cluster (tests/sh/cluster.sh)
# runs as the postgres user and listens only on a unix socket in its temp dir; CMD gets PGHOST, PGPORT,
# PGUSER=postgres, PGDATABASE=postgres (trust auth), PG_BIN, and PATH starting with $PG_BIN, so plain psql,
# pg_dump and pg_restore are the cluster's major. Exits with CMD's status (1 when the cluster does not start).
# scripts/test.sh does not run this file as a test (it is a helper, like cluster.sh and lib.sh).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -eq 0 ]; then echo "usage: $0 CMD [ARG...]" >&2; exit 2; fi
. "$here/cluster.sh"
cluster_base
# pg_virtualenv's sizes (the tests were written against it), not cluster.sh's small defaults.
cluster_init v "shared_buffers = 128MB" "max_connections = 100" || exit 1
cluster_start v || { echo "with_cluster: PostgreSQL $("$PG_BIN/pg_config" --version) does not start:" >&2
                     tail -5 "$(cluster_log v)" >&2; exit 1; }
PGHOST=$(cluster_sock v); PGPORT=$(cluster_port v)
export PGHOST PGPORT PGUSER=postgres PGDATABASE=postgres PG_BIN PATH="$PG_BIN:$PATH"
unset PGPASSWORD PGSERVICE PGSERVICEFILE PGCLUSTER DATABASE_URL
rc=0
"$@" || rc=$?
exit "$rc"
