#!/usr/bin/env bash
# Hostile input from an ordinary role never takes the server down (issue 9). The extension is installed in
# its own schema "ext" that is not on the role's search_path, and an ordinary role "mallory" runs:
#   - settings that cost server resources (execution provider, thread count, decode memory): refused 42501;
#   - lsh_index_check on a table it cannot read: refused 42501 (and on a non-lsh index: 42809);
#   - avg(embedding)'s support functions called directly with forged states: 22023, never a bad value;
#   - a text embedding of 2,000,000 elements (14 MB): 54000 at once, backend memory stays small;
#   - ext.img_embed_fill with search_path = public: works, skips only bad images, stops on a missing model;
#   - every file of the bomb-image corpus (tests/fixtures/hostile/manifest.tsv: file, expected outcome)
#     through ext.img_embed and ext.img_embed_batch: the documented SQLSTATE for each, the backend's peak
#     memory (VmHWM) under a stated bound;
# and at the end no "terminated by signal" (no backend abort) in the server log.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/lib.sh"
. "$here/cluster.sh"
cluster_base

cluster_init h || { fail "hostile: initdb"; finish; }
cluster_start h || { fail "hostile: start: $(tail -5 "$(cluster_log h)")"; finish; }
# Fixture files, readable by the server (the checkout may be private to root).
files=$CLUSTER_BASE/files
mkdir -p "$files" && cp -r "$root/tests/fixtures/." "$files/" && chmod -R a+rX "$files"
sock=$(cluster_sock h)
port=$(cluster_port h)
# m ARGS...: psql as the ordinary role mallory (search_path = public only).
m() { psql -qXAt -h "$sock" -p "$port" -U mallory -d postgres "$@"; }
# state_of SQL: the SQLSTATE of running SQL as mallory ("ok" when it succeeds).
state_of() {
  m -c "DO \$\$ BEGIN $1; RAISE NOTICE 'ok'; EXCEPTION WHEN others THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 |
    sed -n 's/^NOTICE: *//p' | tail -1
}
# set_state SETTING VALUE: the SQLSTATE of SET as mallory.
# The library is loaded first (any of its functions), so the settings are defined, not placeholders.
set_state() {
  local load="SELECT ext.dims('[1]'::ext.embedding)"
  m -c "$load" -c "SET $1 = '$2'" >/dev/null 2>&1 && { echo ok; return; }
  m -v VERBOSITY=verbose -c "$load" -c "SET $1 = '$2'" 2>&1 | sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\):.*/\1/p' | head -1
}

cq h >/dev/null <<'SQL' || { fail "hostile: setup"; finish; }
CREATE SCHEMA ext;
CREATE EXTENSION pg_imgsim SCHEMA ext;
CREATE ROLE mallory LOGIN;
ALTER ROLE mallory SET search_path = public;
GRANT CREATE ON SCHEMA public TO mallory;
GRANT USAGE ON SCHEMA ext TO mallory;
CREATE TABLE secret (id int, v ext.embedding(3));
INSERT INTO secret SELECT g, ARRAY[g, 1, 2]::real[]::ext.embedding FROM generate_series(1, 50) g;
CREATE INDEX secret_v ON secret USING lsh (v ext.embedding_l2_ops);
CREATE INDEX secret_id ON secret (id);
SQL

# 1. Settings that cost server resources are superuser-only.
expect_eq "ordinary role cannot set pg_imgsim.threads: 42501" "$(set_state pg_imgsim.threads 1024)" "42501"
expect_eq "ordinary role cannot set pg_imgsim.execution_provider: 42501" \
  "$(set_state pg_imgsim.execution_provider cuda)" "42501"
expect_eq "ordinary role cannot set pg_imgsim.max_decode_memory: 42501" \
  "$(set_state pg_imgsim.max_decode_memory 100000)" "42501"
expect_eq "ordinary role may choose its model" "$(set_state pg_imgsim.model resnet34_random)" "ok"

# 2. lsh_index_check needs the right to read the table.
expect_eq "lsh_index_check on an unreadable table: 42501" \
  "$(state_of "PERFORM ext.lsh_index_check('secret_v')")" "42501"
cq h -c "GRANT SELECT ON secret TO mallory" >/dev/null
expect_eq "lsh_index_check with SELECT on the table: clean" \
  "$(m -c "SELECT count(*) FROM ext.lsh_index_check('secret_v')" 2>/dev/null)" "0"
expect_eq "lsh_index_check on a btree index: 42809" \
  "$(state_of "PERFORM ext.lsh_index_check('secret_id')")" "42809"
expect_eq "lsh_index_check on a table: 42809" "$(state_of "PERFORM ext.lsh_index_check('secret')")" "42809"

# 3. avg(embedding) support functions with forged states.
expect_eq "embedding_avg with a NULL in the state: 22023" \
  "$(state_of "PERFORM ext.embedding_avg(ARRAY[1, NULL]::float8[])")" "22023"
expect_eq "embedding_avg with a negative count: 22023" \
  "$(state_of "PERFORM ext.embedding_avg(ARRAY[-1, 2]::float8[])")" "22023"
expect_eq "embedding_avg with an oversized state: 22023" \
  "$(state_of "PERFORM ext.embedding_avg(array_fill(1::float8, ARRAY[20000]))")" "22023"
expect_eq "embedding_combine with a 2-D state: 22023" \
  "$(state_of "PERFORM ext.embedding_combine('{{1,2},{3,4}}'::float8[], '{1,2}'::float8[])")" "22023"
expect_eq "embedding_avg producing infinity: 22000" \
  "$(state_of "PERFORM ext.embedding_avg(ARRAY[1, 1e300]::float8[])")" "22000"
expect_eq "embedding_avg of a valid state still works" \
  "$(m -c "SELECT ext.embedding_avg(ARRAY[2, 2, 4]::float8[])::text")" "[1,2]"

# 4. Over-long text input stops at the dimension limit without building the whole list.
expect_eq "text embedding of 2,000,000 elements: 54000" \
  "$(state_of "PERFORM ('[' || repeat('1,', 1999999) || '1]')::ext.embedding")" "54000"

# Binary input (COPY ... FORMAT binary from the client): a NaN value and a header claiming more values
# than sent are refused before anything is allocated from them.
copybin() { # copybin FILE DIMS RESERVED FLOAT-HEX...: one-column binary COPY file with one row
  python3 - "$@" <<'PY'
import struct, sys
path, dims, reserved, *vals = sys.argv[1:]
body = struct.pack(">hh", int(dims), int(reserved)) + b"".join(bytes.fromhex(v) for v in vals)
data = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0) + struct.pack(">hi", 1, len(body)) + body + struct.pack(">h", -1)
open(path, "wb").write(data)
PY
}
m -c "CREATE TABLE public.rcv (v ext.embedding)" >/dev/null
copy_state() {
  m -v VERBOSITY=verbose -c "\\copy rcv FROM '$1' WITH (FORMAT binary)" 2>&1 | sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\):.*/\1/p' | head -1
}
copybin "$files/ok.bin" 2 0 3f800000 40000000
copybin "$files/nan.bin" 1 0 7fc00000
copybin "$files/short.bin" 16000 0 3f800000
copybin "$files/reserved.bin" 1 7 3f800000
expect_eq "binary input of a valid embedding" "$(copy_state "$files/ok.bin")$(m -c "SELECT v::text FROM rcv")" "[1,2]"
expect_eq "binary input with NaN: 22000" "$(copy_state "$files/nan.bin")" "22000"
expect_eq "binary input claiming 16000 values but sending 1: 22P03" "$(copy_state "$files/short.bin")" "22P03"
expect_eq "binary input with a non-zero reserved field: 22P03" "$(copy_state "$files/reserved.bin")" "22P03"

# 5. img_embed_fill with the extension outside the search_path.
cq h >/dev/null <<SQL
CREATE TABLE public.pics (id serial PRIMARY KEY, img bytea, emb ext.embedding);
ALTER TABLE public.pics OWNER TO mallory;
INSERT INTO public.pics (img)
  SELECT pg_read_binary_file('$files/formats/' || f)
  FROM unnest(ARRAY['chelsea.png', 'chelsea.jpg']) f;
INSERT INTO public.pics (img) VALUES ('\x00010203');
SQL
fill_err=$(m -c "SET client_min_messages = warning" -c "CALL ext.img_embed_fill('pics', 'img', 'emb', 'efficientnet_lite0', 2)" 2>&1 >/dev/null)
expect_eq "img_embed_fill works with search_path = public" \
  "$(m -c "SELECT count(emb) FROM pics")" "2"
expect_eq "img_embed_fill skips the bad image with one warning" \
  "$(printf '%s\n' "$fill_err" | grep -c 'row .* skipped')" "1"
expect_eq "img_embed_fill with a missing model stops with 42704" \
  "$(m -c "UPDATE pics SET emb = NULL" -c "CALL ext.img_embed_fill('pics', 'img', 'emb', 'no_such_model', 2)" \
      -v VERBOSITY=verbose 2>&1 | sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\):.*/\1/p' | head -1)" "42704"
expect_eq "img_embed_fill stopped before skipping rows one by one" \
  "$(m -c "CALL ext.img_embed_fill('pics', 'img', 'emb', 'no_such_model', 2)" 2>&1 | grep -c 'skipped')" "0"
expect_eq "error messages shown to users carry no server paths" \
  "$(m -c "SELECT ext.img_embed('\\x00'::bytea, 'no_such_model')" 2>&1 | grep -c '/usr/\|/share/')" "0"

# 6. Cancellation: statement_timeout stops a long batch (64 images through the slow resnet34_random,
#    several seconds of inference) within a second of the deadline.
cq h -c "CREATE TABLE public.many AS SELECT pg_read_binary_file('$files/formats/chelsea.jpg') AS img
         FROM generate_series(1, 64); GRANT SELECT ON public.many TO mallory" >/dev/null
t0=$(date +%s%N)
cancel=$(m -v VERBOSITY=verbose -c "SET statement_timeout = '500ms'" \
  -c "SELECT ext.img_embed_batch(array_agg(img), 'resnet34_random') FROM many" 2>&1 |
  sed -n 's/^ERROR: *\([0-9A-Z]\{5\}\):.*/\1/p' | head -1)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "img_embed_batch of 64 images cancelled by a 500 ms statement_timeout after $ms ms (psql included)"
expect_eq "statement_timeout cancels img_embed_batch: 57014" "$cancel" "57014"
[ "$ms" -lt 1500 ] && pass "cancelled within a second of the deadline ($ms ms)" ||
  fail "cancellation took $ms ms (deadline 500 ms)"
expect_eq "imgsim_models shows each model's ONNX SHA-256" \
  "$(m -c "SELECT length(onnx_sha256) FROM ext.imgsim_models() WHERE name = 'efficientnet_lite0'")" "64"

# 7. The bomb-image corpus.
manifest=$root/tests/fixtures/hostile/manifest.tsv
hwm_bound_kb=$((512 * 1024)) # measured ~205 MB: model + ONNX Runtime; room for one 256 MB decode budget
if [ -f "$manifest" ]; then
  cq h -c "CREATE TABLE public.bombs (name text PRIMARY KEY, want text, img bytea); GRANT SELECT ON public.bombs TO mallory" >/dev/null
  while IFS=$'\t' read -r f want _; do
    case $f in ''|'#'*) continue ;; esac
    cq h -c "INSERT INTO public.bombs VALUES ('$f', '$want', pg_read_binary_file('$files/hostile/$f'))" >/dev/null ||
      fail "hostile: cannot load fixture $f"
  done <"$manifest"
  out=$(m 2>&1 <<'SQL'
SELECT pg_backend_pid() AS pid \gset
DO $$
DECLARE r record; got text;
BEGIN
  FOR r IN SELECT name, want, img FROM bombs ORDER BY name LOOP
    BEGIN
      PERFORM ext.img_embed(r.img, 'efficientnet_lite0');
      got := 'ok';
    EXCEPTION WHEN others THEN got := SQLSTATE;
    END;
    RAISE NOTICE 'single % % %', r.name, r.want, got;
  END LOOP;
  BEGIN
    PERFORM ext.img_embed_batch(array_agg(img ORDER BY name), 'efficientnet_lite0') FROM bombs WHERE want <> 'ok';
    got := 'ok';
  EXCEPTION WHEN others THEN got := SQLSTATE;
  END;
  RAISE NOTICE 'batch %', got;
END $$;
\setenv BACKEND_PID :pid
\! grep VmHWM /proc/$BACKEND_PID/status
SQL
)
  while read -r name want got; do
    expect_eq "img_embed bomb $name: $want" "$got" "$want"
  done < <(printf '%s\n' "$out" | sed -n 's/^NOTICE: *single //p')
  batch=$(printf '%s\n' "$out" | sed -n 's/^NOTICE: *batch //p')
  case $batch in
    22P03|54000|0A000) pass "img_embed_batch of every bad bomb: an ERROR ($batch)" ;;
    *) fail "img_embed_batch of every bad bomb: got [$batch], want 22P03/54000/0A000" ;;
  esac
  hwm=$(printf '%s\n' "$out" | sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p')
  echo "backend peak memory after the corpus: ${hwm:-?} kB (bound $hwm_bound_kb kB)"
  if [ -n "$hwm" ] && [ "$hwm" -lt "$hwm_bound_kb" ]; then
    pass "backend peak memory (VmHWM) under $((hwm_bound_kb / 1024)) MB"
  else
    fail "backend peak memory (VmHWM): got [${hwm:-none}] kB, bound $hwm_bound_kb kB"
  fi
else
  fail "hostile: $manifest missing (scripts/make_hostile_fixtures.py makes it; it is committed)"
fi

# 8. Nothing above took the server down.
expect_eq "server alive" "$(m -c "SELECT 1")" "1"
expect_eq "no backend terminated by a signal" "$(grep -c 'terminated by signal' "$(cluster_log h)")" "0"
finish
