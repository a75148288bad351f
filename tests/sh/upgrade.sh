#!/usr/bin/env bash
# Upgrading the extension in place (issue 12): a database made with the previous release's SQL
# (sql/versions/pg_imgsim--<previous>.sql, kept in the repository) holding embedding columns and an lsh
# index is taken to the current version with ALTER EXTENSION pg_imgsim UPDATE; then:
#   - every row and every index answer is the same as before the update, and lsh_index_check is clean;
#   - the upgraded extension is the same as a fresh CREATE EXTENSION (objects, function definitions,
#     comments), so the upgrade script misses nothing;
#   - pg_dump of the upgraded database restores into a new database with the same answers.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$here/lib.sh"
. "$here/cluster.sh"
cluster_base

current=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$root/pg_imgsim.control")
previous=0.1.0
extdir=$("$PG_BIN/pg_config" --sharedir)/extension
[ -f "$extdir/pg_imgsim--$previous--$current.sql" ] ||
  { fail "upgrade: $extdir/pg_imgsim--$previous--$current.sql is not installed"; finish; }
# The previous release's install script, so that version can be created here.
cp "$root/sql/versions/pg_imgsim--$previous.sql" "$extdir/" || { fail "upgrade: cannot install the $previous script"; finish; }

cluster_init u || { fail "upgrade: initdb"; finish; }
cluster_start u || { fail "upgrade: start: $(tail -5 "$(cluster_log u)")"; finish; }
# qd DB [psql args...]: psql as postgres to database DB of the cluster.
qd() {
  local db=$1; shift
  "$PG_BIN/psql" -h "$(cluster_sock u)" -p "$(cluster_port u)" -U postgres -d "$db" -qXAt -v ON_ERROR_STOP=1 "$@"
}
cq u -c "CREATE DATABASE old" -c "CREATE DATABASE fresh" -c "CREATE DATABASE restored" >/dev/null

qd old >/dev/null <<SQL || { fail "upgrade: setup on $previous"; finish; }
SET client_min_messages = warning;
CREATE EXTENSION pg_imgsim VERSION '$previous';
SELECT setseed(0.5);
CREATE TABLE items (id int PRIMARY KEY, v embedding(24), c embedding(24));
INSERT INTO items SELECT i, ARRAY(SELECT (i % 17) + random() FROM generate_series(1, 24))::embedding,
                            ARRAY(SELECT random() - 0.5 FROM generate_series(1, 24))::embedding
  FROM generate_series(1, 3000) i;
CREATE INDEX items_v ON items USING lsh (v);
CREATE INDEX items_c ON items USING lsh (c embedding_cosine_ops);
CREATE TABLE queries AS SELECT id AS qid, v, c FROM items WHERE id % 300 = 7;
SQL
expect_eq "previous version $previous installed" "$(qd old -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_imgsim'")" "$previous"

# answers DB: every query's top 10 through the indexes, plus a digest of the rows.
answers() {
  qd "$1" -c "SET enable_seqscan = off" -c "
    SELECT string_agg(r, ';' ORDER BY qid) FROM (
      SELECT q.qid, (SELECT string_agg(id::text, ',') FROM (SELECT id FROM items ORDER BY v <-> q.v LIMIT 10) s) ||
                    '|' || (SELECT string_agg(id::text, ',') FROM (SELECT id FROM items ORDER BY c <=> q.c LIMIT 10) s) AS r
      FROM queries q) t" -c "SELECT md5(string_agg(v::text || c::text, ',' ORDER BY id)) FROM items"
}
before=$(answers old)
qd old -c "ALTER EXTENSION pg_imgsim UPDATE" >/dev/null 2>&1 || fail "ALTER EXTENSION pg_imgsim UPDATE: $(qd old -c 'ALTER EXTENSION pg_imgsim UPDATE' 2>&1)"
expect_eq "updated to $current" "$(qd old -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_imgsim'")" "$current"
expect_eq "same rows and index answers after the update" "$(answers old)" "$before"
expect_eq "index written by $previous checks clean after the update" \
  "$(qd old -c "SELECT count(*) FROM lsh_index_check('items_v')" 2>/dev/null)" "0"
qd old -c "INSERT INTO items SELECT i, v, c FROM items, generate_series(3001, 3001) i WHERE id = 1" >/dev/null
expect_eq "an index written by $previous takes inserts after the update" \
  "$(qd old -c "SET enable_seqscan = off" -c "SELECT count(*) FROM (SELECT id FROM items ORDER BY v <-> (SELECT v FROM items WHERE id = 1) LIMIT 2) s WHERE id IN (1, 3001)")" "2"
qd old -c "DELETE FROM items WHERE id = 3001" >/dev/null

# The upgraded extension equals a fresh install: its member objects and their definitions.
qd fresh -c "SET client_min_messages = warning" -c "CREATE EXTENSION pg_imgsim" >/dev/null
catalog() {
  qd "$1" <<'SQL'
SELECT pg_describe_object(classid, objid, 0) || ' ' ||
       coalesce((SELECT md5(pg_get_functiondef(p.oid)) FROM pg_proc p
                  WHERE classid = 'pg_proc'::regclass AND p.oid = objid AND p.prokind <> 'a'), '') || ' ' ||
       coalesce(obj_description(objid, classid::regclass::name), '')
  FROM pg_depend WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_imgsim')
 ORDER BY 1;
SQL
}
fresh_catalog=$(catalog fresh)
upgraded_catalog=$(catalog old)
expect_eq "upgraded extension has the same objects as a fresh install" \
  "$(diff <(printf '%s\n' "$upgraded_catalog") <(printf '%s\n' "$fresh_catalog") | grep '^[<>]' | head -5 | paste -sd' ')" ""
[ "$(printf '%s\n' "$fresh_catalog" | wc -l)" -gt 50 ] && pass "fresh install lists its objects" ||
  fail "fresh install lists too few objects: $(printf '%s\n' "$fresh_catalog" | wc -l)"

# pg_dump of the upgraded database restores with the same answers.
if "$PG_BIN/pg_dump" -h "$(cluster_sock u)" -p "$(cluster_port u)" -U postgres -d old |
  qd restored >/dev/null 2>&1; then
  expect_eq "pg_dump of the upgraded database restores with the same answers" "$(answers restored)" "$before"
else
  fail "restore of the upgraded database's dump ran with errors"
fi
expect_eq "no backend terminated by a signal" "$(grep -c 'terminated by signal' "$(cluster_log u)")" "0"
finish
