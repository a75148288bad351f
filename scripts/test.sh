#!/usr/bin/env bash
# pg_imgsim's test command (README; called by .ci/run). On a fresh Debian 12 machine, as root or with sudo:
# installs whatever is missing (scripts/install-deps.sh, idempotent), then runs every test suite:
#   once: formatting and clippy; plain `cargo test` of the pure crates (src/algo, src/pipeline); `cargo check`
#   for PostgreSQL 13, 14, 16 and 17 against pgrx's shipped bindings (scripts/check_majors.sh);
#   for each PostgreSQL major in IMGSIM_MAJORS (default "15 18"; where each lives: scripts/pg_major.sh):
#   clippy of that major's cfg-gated code (majors other than 15), `cargo pgrx test pgN`, the extension
#   installed (release), SQL regression tests (pg_regress form) and the shell tests in tests/sh/ against
#   throwaway clusters of that major. Step names carry the major ("[pg18] shell test img_embed").
# Ends with "N passed, M failed" and a non-zero exit status when anything failed.
#   scripts/test.sh                      # everything, PostgreSQL 15 and 18
#   IMGSIM_MAJORS=18 scripts/test.sh     # only PostgreSQL 18 (the once-only steps still run)
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
. scripts/pg_major.sh
majors=${IMGSIM_MAJORS:-15 18}
unset PG_MAJOR PG_CONFIG PG_BIN   # set per major below
export PATH=$HOME/.cargo/bin:$PATH
logs=$root/target/test-logs
mkdir -p "$logs"

IMGSIM_MAJORS=$majors bash scripts/install-deps.sh || { echo "0 passed, 1 failed (install-deps)"; exit 1; }

passed=0; failed=0; failures=(); timings=()
# step NAME COMMAND...: runs a suite, counts the individual tests its log reports (cargo's "test result"
# lines, pg_regress's "... ok"/"... FAILED" lines, TAP "ok N"/"not ok N" lines of pg_regress 16+ and of
# tests/sh run through prove, PASS/FAIL lines of other producers), or the suite as one test.
step() {
  local name=$1; shift
  local log
  log="$logs/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_').log"
  printf '\n\033[1m=== %s\033[0m\n' "$name"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  local p f
  p=$(grep -aoE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
  f=$(grep -aoE '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
  # cargo prints both a "test result" line and per-test "... ok" lines; pg_regress only per-test lines
  # ("test x ... ok" up to PostgreSQL 15, TAP "ok 1 - x" / "not ok 1 - x" from 16): take the larger count,
  # then add tests/sh's PASS/FAIL lines.
  local dp df
  dp=$(grep -acE '\.\.\. ok( |$)|^ok [0-9]+ ' "$log" || true)
  df=$(grep -acE '\.\.\. FAILED|^not ok [0-9]+ ' "$log" || true)
  [ "$dp" -gt "$p" ] && p=$dp
  [ "$df" -gt "$f" ] && f=$df
  p=$((p + $(grep -acE '^PASS ' "$log" || true)))
  f=$((f + $(grep -acE '^FAIL ' "$log" || true)))
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
    if [ "$rc" -eq 0 ]; then p=1; else f=1; fi
  elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
  fi
  passed=$((passed + p)); failed=$((failed + f))
  timings+=("$(printf '%5ds  %s' $((SECONDS - t0)) "$name")")
  [ "$f" -eq 0 ] || failures+=("$name (log: $log)")
}

step "cargo fmt --check" cargo fmt --all -- --check
step "shellcheck (warnings)" shellcheck -S warning scripts/*.sh tests/sh/*.sh tests/pg_regress/run.sh \
  tests/clients/*.sh benches/*.sh docker/*.sh .ci/run
step "cargo clippy -D warnings" cargo clippy --workspace --all-targets -- -D warnings
step "unit tests: imgsim-algo, imgsim-pipeline" cargo test -p imgsim-algo -p imgsim-pipeline
# Majors not installed here: type-checked against pgrx's pre-generated bindings (scripts/check_majors.sh).
step "cargo check pg13 pg14 pg16 pg17 (pgrx's shipped bindings)" bash scripts/check_majors.sh 13 14 16 17
for m in $majors; do
  # pg_config_for prefers $PG_CONFIG when $PG_MAJOR matches: clear the previous major's first.
  unset PG_CONFIG PG_BIN
  export PG_MAJOR=$m
  PG_CONFIG=$(pg_config_for "$m"); PG_BIN=$(pg_bin_for "$m")
  export PG_CONFIG PG_BIN
  # The default features are pg15's: the other majors' cfg-gated code gets its own clippy run.
  [ "$m" = 15 ] || step "[pg$m] cargo clippy -D warnings" \
    cargo clippy --all-targets --no-default-features --features "pg$m" -- -D warnings
  pgdata=${PGRX_TEST_PGDATA:-/tmp/pg_imgsim-pgrx-test}-$m
  mkdir -p "$pgdata" && chown postgres: "$pgdata" 2>/dev/null || true
  step "[pg$m] cargo pgrx test pg$m" cargo pgrx test "pg$m" --runas postgres --pgdata "$pgdata"
  step "[pg$m] cargo pgrx install --release" cargo pgrx install --release --pg-config "$PG_CONFIG"
  step "[pg$m] SQL regression (pg_regress)" bash tests/pg_regress/run.sh
  for t in tests/sh/*.sh; do
    case $(basename "$t") in lib.sh|cluster.sh|with_cluster.sh|tap.sh) continue ;; esac  # helpers
    # docker/ builds a Debian PostgreSQL 15 image: its entry point runs against PostgreSQL 15 only.
    [ "$(basename "$t")" = docker_static.sh ] && [ "$m" != 15 ] && continue
    # Through prove, as TAP (tests/sh/tap.sh): a test that stops before its end counts as failed.
    step "[pg$m] shell test $(basename "$t" .sh)" prove -v --exec "bash $root/tests/sh/tap.sh" "$t"
  done
done

echo
printf '%s\n' "${timings[@]}"
if [ "${#failures[@]}" -gt 0 ]; then
  printf 'FAILED: %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
