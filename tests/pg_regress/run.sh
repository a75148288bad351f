#!/usr/bin/env bash
# SQL regression tests in pg_regress form, run as root: pg_virtualenv makes a throwaway cluster (owned by
# the postgres user) and pg_regress runs tests/pg_regress/sql/*.sql against it, comparing with expected/.
#   bash tests/pg_regress/run.sh [test ...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PG_MAJOR=${PG_MAJOR:-15}
out=$(mktemp -d /tmp/pg_imgsim-regress.XXXXXX)
chmod 755 "$out"
if [ $# -gt 0 ]; then tests=("$@"); else
  tests=(); for f in "$here"/sql/*.sql; do tests+=("$(basename "$f" .sql)"); done
fi
regress=/usr/lib/postgresql/$PG_MAJOR/lib/pgxs/src/test/regress/pg_regress
rc=0
pg_virtualenv -t -v "$PG_MAJOR" \
  "$regress" --inputdir="$here" --outputdir="$out" --dbname=imgsim_regress \
  --load-extension=pg_imgsim "${tests[@]}" || rc=$?
if [ $rc -ne 0 ] && [ -f "$out/regression.diffs" ]; then
  cat "$out/regression.diffs"
  mkdir -p "$here/../../target/test-logs" && cp "$out/regression.diffs" "$here/../../target/test-logs/"
fi
exit $rc
