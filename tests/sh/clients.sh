#!/usr/bin/env bash
# Client libraries against pg_imgsim, in a throwaway cluster of $PG_MAJOR (tests/sh/with_cluster.sh), as root:
#   tests/clients/python/test_psycopg.py     psycopg 3: text/binary adapters, numpy, COPY, embedding[]
#   tests/clients/python/test_sqlalchemy.py  SQLAlchemy 2 ORM: Embedding(dims) column, comparator queries
#   tests/clients/python/test_demo_load.py   scripts/demo_report.py's loader: (path, sha256) keys, re-runs
#   tests/clients/rust (cargo run)           tokio-postgres: ToSql/FromSql, simple_query text protocol
#   tests/clients/demo_smoke.sh              scripts/demo.sh end to end, own cluster, twice, then --stop
# Parts that need img_embed / img_embed_batch / the lsh access method print SKIP while the server lacks them.
# Python comes from .cache/venv (scripts/install-deps.sh); the Rust client builds in target/clients.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export PATH=$HOME/.cargo/bin:$PATH
if [ -z "${PG_IMGSIM_IN_VENV:-}" ]; then
  # Build the Rust client before the cluster exists (it takes a while on a cold target dir).
  mkdir -p "$root/target"
  CARGO_TARGET_DIR=$root/target/clients cargo build --locked -q \
    --manifest-path "$root/tests/clients/rust/Cargo.toml" >"$root/target/clients-build.log" 2>&1
  echo $? >"$root/target/clients-build.rc"
  PG_IMGSIM_IN_VENV=1 exec bash "$here/with_cluster.sh" bash "$0" "$@"
fi
. "$here/lib.sh"
py=$root/.cache/venv/bin/python
out=$(mktemp)

# run_client NAME CMD...: runs a client test that prints its own PASS/FAIL/SKIP lines; a non-zero exit with
# no FAIL line (a crash) counts as one failure.
run_client() {
  local name=$1; shift
  "$@" >"$out" 2>&1
  local rc=$?
  grep -E '^(PASS|FAIL|SKIP) |^  ' "$out"
  local f; f=$(grep -c '^FAIL ' "$out")
  fails=$((fails + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    fail "$name: exited with status $rc: $(tail -3 "$out" | tr '\n' ' ')"
  fi
}

if "$py" -c 'import psycopg, sqlalchemy, numpy' 2>/dev/null; then
  run_client "psycopg client" "$py" "$root/tests/clients/python/test_psycopg.py"
  run_client "sqlalchemy client" "$py" "$root/tests/clients/python/test_sqlalchemy.py"
  run_client "demo loader" "$py" "$root/tests/clients/python/test_demo_load.py"
else
  fail "python clients: psycopg/sqlalchemy/numpy missing from .cache/venv (scripts/requirements.txt)"
fi

if [ "$(cat "$root/target/clients-build.rc" 2>/dev/null)" = 0 ]; then
  run_client "rust client" "$root/target/clients/debug/pg_imgsim_client_test"
else
  fail "rust client: cargo build failed: $(tail -5 "$root/target/clients-build.log" 2>/dev/null | tr '\n' ' ')"
fi
# scripts/demo.sh end to end with its own cluster (SKIP until the extension has img_embed_batch)
run_client "demo smoke" env -u PGHOST -u PGPORT -u PGUSER -u PGPASSWORD -u PGDATABASE \
  bash "$root/tests/clients/demo_smoke.sh"
rm -f "$out"
finish
