#!/usr/bin/env bash
# scripts/demo.sh end to end (without the install/build steps: --skip-build), on 3 gcompris classes x 6 photos,
# with its own cluster in a temporary data directory (IMGSIM_DEMO_PGDATA): first run loads, embeds with
# img_embed_batch, indexes and writes the report; the second run adds and embeds nothing; --stop stops the
# cluster. Prints PASS/FAIL lines; SKIP while the installed pg_imgsim has no img_embed_batch.
# Called by tests/sh/clients.sh; runs as root (the cluster then belongs to postgres) or as a normal user.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/tests/sh/lib.sh"
cd "$root" || exit 1
. "$root/scripts/pg_major.sh"
PG_CONFIG=${PG_CONFIG:-$(pg_config_for "${PG_MAJOR:-15}")}
bindir=$("$PG_CONFIG" --bindir)
if ! grep -qs img_embed_batch "$("$PG_CONFIG" --sharedir)"/extension/pg_imgsim--*.sql; then
  echo "SKIP demo: the installed pg_imgsim has no img_embed_batch yet"
  exit 0
fi
unset PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE PGSERVICE DATABASE_URL
tmp=$(mktemp -d /tmp/pg_imgsim_demo_smoke.XXXXXX)
chmod 755 "$tmp"
for c in animals fish tools; do
  mkdir -p "$tmp/photos/$c"
  find ".cache/data/gcompris/$c" -name '*.webp' | sort | head -6 | xargs -I{} cp {} "$tmp/photos/$c/"
done
chmod -R a+rX "$tmp/photos"
export IMGSIM_DEMO_PGDATA=$tmp/pg
# shellcheck disable=SC2120  # extra demo.sh options when a run needs them
run_demo() { bash scripts/demo.sh --skip-build --images "$tmp/photos" --k 3 --out "$tmp/out" "$@"; }

run_demo >"$tmp/run1.log" 2>&1
rc=$?
expect_eq "demo: first run exits 0" "$rc" "0"
[ "$rc" -eq 0 ] || sed 's/^/    /' "$tmp/run1.log" | tail -15
port=$(sed -n 's/^port = \([0-9]*\).*/\1/p' "$tmp/pg/postgresql.auto.conf" | tail -1)
q() { "$bindir/psql" -qXAt -d "host=$tmp/pg port=$port user=postgres dbname=imgsim_demo" -c "$1" 2>&1; }
expect_eq "demo: 15 photos loaded (3 held out as queries), all embedded" \
  "$(q 'SELECT count(*), count(emb) FROM demo_photos')" "15|15"
expect_eq "demo: the lsh index exists" "$(q "SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam
  WHERE c.relname = 'demo_photos_emb_lsh'")" "lsh"
size=$("$root/.cache/venv/bin/python" -c "from PIL import Image; im = Image.open('$tmp/out/contact_sheet.png'); print(im.size)" 2>&1)
case $size in "("*", "*")") pass "demo: contact_sheet.png is a PNG $size" ;; *) fail "demo: contact_sheet.png: $size" ;; esac
if grep -q 'ORDER BY emb &lt;-&gt; (SELECT img_embed' "$tmp/out/index.html" && grep -q 'Index Scan using demo_photos_emb_lsh' "$tmp/out/index.html"; then
  pass "demo: index.html lists the SQL and an lsh index scan plan"
else
  fail "demo: index.html lacks the SQL or the plan"
fi
hits=0 total=0
for f in $(cd "$tmp/photos" && ls -- */*.webp | sort | awk -F/ '!seen[$1]++'); do  # the held-out ones
  cls=${f%%/*}
  got=$(q "SELECT label FROM demo_photos ORDER BY emb <-> (SELECT img_embed(pg_read_binary_file('$tmp/photos/$f'))) LIMIT 3")
  for l in $got; do total=$((total + 1)); [ "$l" = "$cls" ] && hits=$((hits + 1)); done
done
if [ "$total" -eq 9 ] && [ "$hits" -ge 7 ]; then
  pass "demo: held-out queries find their own class ($hits of 9 results)"
else
  fail "demo: held-out queries find their own class: $hits of $total"
fi

run_demo >"$tmp/run2.log" 2>&1
rc=$?
expect_eq "demo: second run exits 0" "$rc" "0"
if grep -q '(0 new, 0 removed, 15 unchanged)' "$tmp/run2.log" && grep -q 'all photos already embedded' "$tmp/run2.log"; then
  pass "demo: second run loads and embeds nothing"
else
  fail "demo: second run loads and embeds nothing: $(grep -E 'photos:|embeddings:' "$tmp/run2.log" | tr '\n' ' ')"
fi
expect_eq "demo: no duplicate rows after the second run" "$(q 'SELECT count(*) FROM demo_photos')" "15"

bash scripts/demo.sh --stop >/dev/null 2>&1
if [ "$(id -u)" -eq 0 ]; then st() { runuser -u postgres -- "$bindir/pg_ctl" -D "$tmp/pg" status; }; else st() { "$bindir/pg_ctl" -D "$tmp/pg" status; }; fi
if st >/dev/null 2>&1; then
  fail "demo: --stop stops the cluster"
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$bindir/pg_ctl" -D "$tmp/pg" -m immediate stop; else "$bindir/pg_ctl" -D "$tmp/pg" -m immediate stop; fi >/dev/null 2>&1
else
  pass "demo: --stop stops the cluster"
fi
rm -rf "$tmp"
finish
