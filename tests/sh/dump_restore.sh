#!/usr/bin/env bash
# pg_dump of a database with embedding columns, restored into a new database, gives identical values.
# Runs inside a throwaway cluster of $PG_MAJOR (tests/sh/with_cluster.sh), as root.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -z "${PG_IMGSIM_IN_VENV:-}" ]; then
  PG_IMGSIM_IN_VENV=1 exec bash "$here/with_cluster.sh" bash "$0" "$@"
fi
. "$here/lib.sh"
psql -qX -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE src' -c 'CREATE DATABASE dst' >/dev/null
psql -qX -v ON_ERROR_STOP=1 -d src >/dev/null <<'SQL'
CREATE EXTENSION pg_imgsim;
CREATE TABLE t (id int PRIMARY KEY, v embedding(3), w embedding);
INSERT INTO t VALUES (1, '[1,2,3]', '[0.1]'), (2, '[-1.5e-7,3.4028235e38,0]', '[1,2,3,4,5]'), (3, NULL, NULL);
INSERT INTO t SELECT i, ARRAY[random(), random(), random()]::embedding, ARRAY[i, 1.0 / i]::embedding
  FROM generate_series(4, 1000) i;
SQL
snapshot() { psql -qXAt -d "$1" -c "SELECT id, v, w, embedding_send(v), embedding_send(w) FROM t ORDER BY id" | md5sum; }
for fmt in plain custom; do
  psql -qX -d postgres -c 'DROP DATABASE IF EXISTS dst' -c 'CREATE DATABASE dst' >/dev/null
  if [ $fmt = plain ]; then
    pg_dump -d src | psql -qX -v ON_ERROR_STOP=1 -d dst >/dev/null 2>&1 || fail "restore ($fmt) ran with errors"
  else
    pg_dump -Fc -d src -f /tmp/pg_imgsim_dump.$$ && pg_restore -d dst /tmp/pg_imgsim_dump.$$ || fail "pg_restore ($fmt)"
    rm -f /tmp/pg_imgsim_dump.$$
  fi
  expect_eq "dump/restore ($fmt): identical values, bit for bit" "$(snapshot dst)" "$(snapshot src)"
  expect_eq "dump/restore ($fmt): typmod kept" \
    "$(psql -qXAt -d dst -c "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid='t'::regclass AND attname='v'")" \
    "embedding(3)"
done
finish
