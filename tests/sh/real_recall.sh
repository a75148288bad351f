#!/usr/bin/env bash
# The lsh index on real image embeddings: the gcompris PD/CC0 photos plus 7 near-duplicate variants of each
# (scripts/make_variants.py: resize, crop, rotate, JPEG q30, darker, brighter, flip), about 1,500 photos,
# embedded in the server with img_embed_fill. Checks, at the documented default settings:
#   recall@10 of the index against exact search (cosine and l2) >= 0.95;
#   a variant finds its original first among the originals (filtered index query) for >= 95 % of variants.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ -z "${PG_IMGSIM_IN_VENV:-}" ]; then
  photos=$(mktemp -d /tmp/pg_imgsim-variants.XXXXXX)
  "$root/.cache/venv/bin/python" "$root/scripts/make_variants.py" "$root/.cache/data/gcompris" "$photos" || exit 1
  chmod -R a+rX "$photos"
  PG_IMGSIM_PHOTOS=$photos PG_IMGSIM_IN_VENV=1 bash "$here/with_cluster.sh" bash "$0" "$@"
  rc=$?; rm -rf "$photos"; exit $rc
fi
. "$here/lib.sh"
q() { psql -qXAt -v ON_ERROR_STOP=1 -d postgres "$@"; }
P=$PG_IMGSIM_PHOTOS
q >/dev/null <<SQL
CREATE EXTENSION pg_imgsim;
CREATE TABLE imgs (id serial PRIMARY KEY, cls text, stem text, variant text, img bytea, emb embedding(1280));
INSERT INTO imgs (cls, stem, variant, img)
  SELECT c, split_part(f, '__', 1), split_part(split_part(f, '__', 2), '.', 1), pg_read_binary_file('$P/' || c || '/' || f)
  FROM unnest(ARRAY['animals','buildings','energy','fish','tools']) c, pg_ls_dir('$P/' || c) f ORDER BY 1, 2;
SQL
start=$(date +%s.%N)
q -c "CALL img_embed_fill('imgs', 'img', 'emb', NULL, 32)" >/dev/null 2>&1
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
n=$(q -c "SELECT count(emb) FROM imgs")
echo "embedded $n photos in ${secs}s with img_embed_fill"
expect_eq "all photos embedded" "$n" "$(q -c "SELECT count(*) FROM imgs")"
q >/dev/null <<'SQL'
CREATE FUNCTION recall_at_10(op text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE r record; hits int := 0; total int := 0; exact int[]; approx int[];
BEGIN
  FOR r IN SELECT emb FROM imgs WHERE id % 15 = 0 LOOP
    SET LOCAL enable_indexscan = off;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM imgs ORDER BY emb %s $1 LIMIT 10) s', op) INTO exact USING r.emb;
    SET LOCAL enable_indexscan = on; SET LOCAL enable_seqscan = off;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM imgs ORDER BY emb %s $1 LIMIT 10) s', op) INTO approx USING r.emb;
    RESET enable_seqscan;
    hits := hits + (SELECT count(*) FROM unnest(approx) a WHERE a = ANY (exact));
    total := total + 10;
  END LOOP;
  RETURN hits::float8 / total;
END $$;
SQL
for opc in "embedding_cosine_ops <=>" "embedding_l2_ops <->"; do
  set -- $opc
  q -c "DROP INDEX IF EXISTS imgs_emb" -c "CREATE INDEX imgs_emb ON imgs USING lsh (emb $1)" >/dev/null
  r=$(q -c "SELECT round(recall_at_10('$2')::numeric, 3)")
  echo "recall@10 ($1, defaults, $n real embeddings): $r"
  expect_eq "recall@10 >= 0.95 on real embeddings ($1)" "$(q -c "SELECT $r >= 0.95")" "t"
  expect_eq "lsh_index_check clean ($1)" "$(q -c "SELECT count(*) FROM lsh_index_check('imgs_emb')" 2>/dev/null)" "0"
done
top1=$(psql -qXAt -d postgres -c "SET enable_seqscan = off" -c "
  SELECT round(avg(((SELECT o.stem FROM imgs o WHERE o.variant = 'orig' ORDER BY o.emb <-> v.emb LIMIT 1) = v.stem)::int), 3)
  FROM imgs v WHERE v.variant <> 'orig'")
echo "near-duplicate top-1 (variant finds its original among originals, through the index): $top1"
expect_eq "near-duplicate top-1 >= 0.95" "$(q -c "SELECT $top1 >= 0.95")" "t"
finish
