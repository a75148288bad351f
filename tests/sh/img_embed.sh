#!/usr/bin/env bash
# img_embed in the server on real photos (the gcompris PD/CC0 set from scripts/install-deps.sh):
# models listed, errors with SQLSTATEs, batch = single, img_embed_fill (resumable), and retrieval quality:
# leave-one-out precision@5 through img_embed + exact ORDER BY <=> must hold a floor of 0.88.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ -z "${PG_IMGSIM_IN_VENV:-}" ]; then
  photos=$(mktemp -d /tmp/pg_imgsim-photos.XXXXXX)
  cp -r "$root/.cache/data/gcompris/." "$photos/" && chmod -R a+rX "$photos"
  PG_IMGSIM_PHOTOS=$photos PG_IMGSIM_IN_VENV=1 bash "$here/with_cluster.sh" bash "$0" "$@"
  rc=$?; rm -rf "$photos"; exit $rc
fi
. "$here/lib.sh"
q() { psql -qXAt -v ON_ERROR_STOP=1 -d postgres "$@"; }
state() { psql -qXAt -d postgres -c "DO \$\$ BEGIN PERFORM $1; RAISE NOTICE 'ok'; EXCEPTION WHEN others THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed 's/^NOTICE: *//'; }
P=$PG_IMGSIM_PHOTOS
q -c "CREATE EXTENSION pg_imgsim" >/dev/null
expect_eq "imgsim_models lists the default model" "$(q -c "SELECT dims FROM imgsim_models() WHERE name = 'efficientnet_lite0'")" "1280"
one=$(find "$P/fish" -type f | head -1)
expect_eq "img_embed: 1280-d EfficientNet-Lite0 embedding" "$(q -c "SELECT dims(img_embed(pg_read_binary_file('$one')))")" "1280"
expect_eq "img_embed(bytea, model) = img_embed(bytea) with the default model" \
  "$(q -c "SELECT img_embed(pg_read_binary_file('$one'), 'efficientnet_lite0') = img_embed(pg_read_binary_file('$one'))")" "t"
expect_eq "not an image: 22P03" "$(state "img_embed('\\x00010203'::bytea)")" "22P03"
expect_eq "empty input: 22P03" "$(state "img_embed(''::bytea)")" "22P03"
expect_eq "truncated image: 22P03" "$(state "img_embed(substring(pg_read_binary_file('$one') for 300))")" "22P03"
expect_eq "missing model: 42704" "$(state "img_embed(pg_read_binary_file('$one'), 'no_such_model')")" "42704"
expect_eq "model name outside model_dir refused" "$(state "img_embed(pg_read_binary_file('$one'), '../../etc/passwd')")" "42704"
expect_eq "over max_input_bytes: 54000" "$(psql -qXAt -d postgres -c "SET pg_imgsim.max_input_bytes = 1000" -c "DO \$\$ BEGIN PERFORM img_embed(pg_read_binary_file('$one')); EXCEPTION WHEN others THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed 's/^NOTICE: *//')" "54000"
expect_eq "over max_pixels: 54000" "$(psql -qXAt -d postgres -c "SET pg_imgsim.max_pixels = 1000" -c "DO \$\$ BEGIN PERFORM img_embed(pg_read_binary_file('$one')); EXCEPTION WHEN others THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed 's/^NOTICE: *//')" "54000"
expect_eq "CUDA asked for on a machine without it: 55000" "$(psql -qXAt -d postgres -c "SET pg_imgsim.execution_provider = 'cuda'" -c "DO \$\$ BEGIN PERFORM img_embed(pg_read_binary_file('$one'), 'efficientnet_lite0'); EXCEPTION WHEN others THEN RAISE NOTICE '%', SQLSTATE; END \$\$" 2>&1 | sed 's/^NOTICE: *//')" "55000"
expect_eq "library setting is superuser-only" "$(q -c "LOAD 'pg_imgsim'" -c "SELECT context FROM pg_settings WHERE name = 'pg_imgsim.onnxruntime_library'")" "superuser"
expect_eq "backend survives bad input" "$(q -c "SELECT 1")" "1"

q >/dev/null <<SQL
CREATE TABLE photos (id serial PRIMARY KEY, cls text, img bytea, emb embedding);
INSERT INTO photos (cls, img)
  SELECT c, pg_read_binary_file('$P/' || c || '/' || f)
  FROM unnest(ARRAY['animals','buildings','energy','fish','tools']) c, pg_ls_dir('$P/' || c) f ORDER BY 1, 2;
-- a row that is not an image: skipped with a warning, left NULL
INSERT INTO photos (cls, img) VALUES ('junk', '\x0102');
SQL
n=$(q -c "SELECT count(*) FROM photos WHERE cls <> 'junk'")
# first run interrupted after two batches (statement_timeout), then resumed
psql -qX -d postgres -c "SET statement_timeout = '1ms'" -c "CALL img_embed_fill('photos', 'img', 'emb', NULL, 16)" >/dev/null 2>&1
q -c "CALL img_embed_fill('photos', 'img', 'emb', NULL, 16)" >/dev/null 2>/tmp/pg_imgsim_fill.$$
expect_eq "img_embed_fill embeds every photo (resumable)" "$(q -c "SELECT count(emb) FROM photos")" "$n"
expect_eq "img_embed_fill skips the bad row with a warning" "$(grep -c 'row .* skipped' /tmp/pg_imgsim_fill.$$)" "1"
rm -f /tmp/pg_imgsim_fill.$$
expect_eq "img_embed_batch = img_embed, NULLs kept" \
  "$(q -c "SELECT bool_and(b[1] = img_embed(img) AND b[2] IS NULL AND b[3] = img_embed(img)) FROM (SELECT img, img_embed_batch(ARRAY[img, NULL, img]) b FROM photos WHERE cls = 'tools' LIMIT 3) s")" "t"
p5=$(q -c "SELECT round(avg(p), 3) FROM (SELECT (SELECT count(*) FROM (SELECT o.cls FROM photos o WHERE o.id <> x.id AND o.emb IS NOT NULL ORDER BY o.emb <=> x.emb LIMIT 5) s WHERE s.cls = x.cls) / 5.0 AS p FROM photos x WHERE x.emb IS NOT NULL) t")
echo "leave-one-out precision@5 on $n photos: $p5"
expect_eq "precision@5 >= 0.88 (reference 0.893)" "$(q -c "SELECT $p5 >= 0.88")" "t"
q -c "CREATE INDEX photos_emb ON photos USING lsh (emb embedding_cosine_ops)" >/dev/null
expect_eq "lsh index over img_embed vectors is clean" "$(q -c "SELECT count(*) FROM lsh_index_check('photos_emb')" 2>/dev/null)" "0"
expect_eq "a photo finds itself first through the index" \
  "$(psql -qXAt -d postgres -c "SET enable_seqscan = off" -c "SELECT (SELECT id FROM photos ORDER BY emb <=> x.emb LIMIT 1) = x.id FROM photos x WHERE id = 7")" "t"
finish
