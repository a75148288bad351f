-- The lsh index in the flows applications run (issue 11): index created before the data, single-row
-- inserts with odd dimensions (item sizes that are not MAXALIGNed), DELETE/VACUUM/INSERT churn with line
-- pointers reused, reltuples kept by an insert-only VACUUM, and ORDER BY ... <-> NULL.
SET client_min_messages = warning;
CREATE FUNCTION vec(n int, seed int) RETURNS embedding LANGUAGE sql IMMUTABLE AS
  $$ SELECT ARRAY(SELECT sin(seed * 7.31 + i * 1.7) FROM generate_series(1, n) i)::embedding $$;

-- Single-row inserts into an index created on the empty table, for dimensions whose items do not fill
-- an aligned size: every INSERT succeeds and every row is its own nearest neighbour through the index.
CREATE TABLE odd (dims int, id int, v embedding);
DO $$
DECLARE d int; i int; n int;
BEGIN
  FOREACH d IN ARRAY ARRAY[1, 3, 9, 153, 1999] LOOP
    EXECUTE format('CREATE TABLE odd_%s (id int, v embedding(%s))', d, d);
    EXECUTE format('CREATE INDEX odd_%s_v ON odd_%s USING lsh (v)', d, d);
    n := CASE WHEN d > 1000 THEN 300 ELSE 1200 END;
    FOR i IN 1 .. n LOOP
      EXECUTE format('INSERT INTO odd_%s VALUES ($1, $2)', d) USING i, vec(d, i);
    END LOOP;
  END LOOP;
END $$;
SELECT d, (SELECT count(*) FROM lsh_index_check(format('odd_%s_v', d)::regclass)) AS problems
  FROM unnest(ARRAY[1, 3, 9, 153, 1999]) d;
-- automatic options: one table up to a million rows; a 512-bit sketch from 256 dimensions up
SELECT d, i.tables, i.sketch_bits FROM unnest(ARRAY[153, 1999]) d, lsh_index_info(format('odd_%s_v', d)::regclass) i;
SET enable_seqscan = off;
SELECT count(*) AS rows_finding_themselves FROM odd_9 o
  WHERE (SELECT id FROM odd_9 ORDER BY v <-> o.v LIMIT 1) = o.id;
SELECT count(*) AS rows_finding_themselves FROM odd_153 o
  WHERE (SELECT id FROM odd_153 ORDER BY v <-> o.v LIMIT 1) = o.id;
RESET enable_seqscan;

-- Churn: delete a third, VACUUM, insert as many again, four times: freed room and line pointers are
-- reused, so the index does not grow after the first round, and it stays consistent.
CREATE TABLE churn (id int, v embedding(9));
CREATE INDEX churn_v ON churn USING lsh (v);
INSERT INTO churn SELECT i, vec(9, i) FROM generate_series(1, 3000) i;
DELETE FROM churn WHERE id % 3 = 0;
VACUUM churn;
INSERT INTO churn SELECT i, vec(9, i + 10000) FROM generate_series(1, 3000) i WHERE i % 3 = 0;
SELECT pg_relation_size('churn_v') AS size1 \gset
DELETE FROM churn WHERE id % 3 = 1;
VACUUM churn;
INSERT INTO churn SELECT i, vec(9, i + 20000) FROM generate_series(1, 3000) i WHERE i % 3 = 1;
DELETE FROM churn WHERE id % 3 = 2;
VACUUM churn;
INSERT INTO churn SELECT i, vec(9, i + 30000) FROM generate_series(1, 3000) i WHERE i % 3 = 2;
DELETE FROM churn WHERE id % 3 = 0;
VACUUM churn;
INSERT INTO churn SELECT i, vec(9, i + 40000) FROM generate_series(1, 3000) i WHERE i % 3 = 0;
SELECT pg_relation_size('churn_v') <= :size1 * 1.05 AS no_growth_after_churn;
SELECT count(*) AS problems FROM lsh_index_check('churn_v');
SELECT count(*) FROM churn;

-- An insert-only VACUUM keeps the index's row count (the automatic scan settings scale with it).
CREATE TABLE grow (id int, v embedding(9));
INSERT INTO grow SELECT i, vec(9, i) FROM generate_series(1, 2000) i;
CREATE INDEX grow_v ON grow USING lsh (v);
INSERT INTO grow SELECT i, vec(9, i) FROM generate_series(2001, 4000) i;
VACUUM grow;
SELECT reltuples > 0 AS reltuples_kept FROM pg_class WHERE relname = 'grow_v';
VACUUM ANALYZE grow;
SELECT reltuples AS reltuples_after_analyze FROM pg_class WHERE relname = 'grow_v';

-- ORDER BY v <-> NULL: the same rows whatever the plan (all of them, distances NULL).
INSERT INTO grow VALUES (0, NULL);
-- (With enable_seqscan = off, PostgreSQL 15 still prefers the seq scan, the index being costed at
-- infinity; 18 counts disabled plan nodes first and takes the index, which lacks the NULL row.)
EXPLAIN (COSTS OFF) SELECT id FROM grow ORDER BY v <-> NULL LIMIT 5;
SELECT count(*) AS seqscan_rows FROM (SELECT id FROM grow ORDER BY v <-> NULL) s;
SET enable_seqscan = off;
-- A generic plan chosen before the parameter is known still runs through the index: a NULL parameter
-- then returns every indexed row (the row whose v is NULL is not in the index).
PREPARE q(embedding) AS SELECT id FROM grow ORDER BY v <-> $1 LIMIT 5000;
SET plan_cache_mode = force_generic_plan;
EXPLAIN (COSTS OFF) EXECUTE q(NULL);
CREATE TEMP TABLE generic_rows AS EXECUTE q(NULL);
SELECT count(*) AS generic_plan_rows, count(DISTINCT id) AS distinct_rows FROM generic_rows;
RESET plan_cache_mode;
RESET enable_seqscan;

-- An index created on the empty table grows its layout as rows arrive (grow.rs): superbuckets and bits
-- follow the row count, the mean follows the data, and recall matches a REINDEX of the same rows.
CREATE FUNCTION clustered(i int) RETURNS embedding LANGUAGE sql IMMUTABLE AS
  $$ SELECT ARRAY(SELECT 3 + sin((i % 40) * 7.31 + j * 1.7) + 0.15 * sin(i * 3.1 + j * 0.37)
                  FROM generate_series(1, 32) j)::embedding $$;
CREATE FUNCTION recall10(tbl regclass, col text, nq int) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE q int; hits int := 0; a int[]; b int[];
BEGIN
  FOR q IN 1 .. nq LOOP
    SET LOCAL enable_seqscan = off; SET LOCAL enable_indexscan = on;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM %s ORDER BY %I <-> clustered(%s + 100000) LIMIT 10) s',
                   tbl, col, q * 37) INTO a;
    SET LOCAL enable_seqscan = on; SET LOCAL enable_indexscan = off;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM %s ORDER BY %I <-> clustered(%s + 100000) LIMIT 10) s',
                   tbl, col, q * 37) INTO b;
    hits := hits + (SELECT count(*) FROM unnest(a) x WHERE x = ANY (b));
  END LOOP;
  RETURN hits::numeric / (10 * nq);
END $$;
CREATE TABLE g (id int, v embedding(32));
CREATE INDEX g_v ON g USING lsh (v);
SELECT superbuckets, layout_rows FROM lsh_index_info('g_v');
INSERT INTO g SELECT i, clustered(i) FROM generate_series(1, 20000) i;
SELECT superbuckets > 1 AS superbuckets_grew, layout_rows >= 5000 AS laid_out_for_the_rows
  FROM lsh_index_info('g_v');
SELECT count(*) AS problems FROM lsh_index_check('g_v');
SELECT recall10('g', 'v', 20) AS grown_recall \gset
REINDEX INDEX g_v;
SELECT recall10('g', 'v', 20) AS reindexed_recall \gset
SELECT :grown_recall >= :reindexed_recall - 0.01 AS grown_recall_matches_reindex;
-- TRUNCATE rebuilds the index empty; the reload grows it again.
TRUNCATE g;
INSERT INTO g SELECT i, clustered(i) FROM generate_series(1, 20000) i;
SELECT superbuckets > 1 AS superbuckets_grew_after_truncate FROM lsh_index_info('g_v');
SELECT recall10('g', 'v', 20) >= :reindexed_recall - 0.01 AS reload_recall_matches_reindex;
SELECT count(*) AS problems FROM lsh_index_check('g_v');
-- Memory bounds. CREATE INDEX holds the bucket structure in memory (bytes per row: codes of every table,
-- the sketch, sort order, address): beyond maintenance_work_mem it refuses with 54000 and says what to set.
SET maintenance_work_mem = '1MB';
\set VERBOSITY default
CREATE INDEX g_v_small ON g USING lsh (v) WITH (tables = 8);
\set VERBOSITY terse
-- The automatic 512-bit sketch (256+ dimensions) falls back to 256 bits rather than need more memory:
-- 16,000 rows x 80 bytes do not fit 1 MB, x 48 bytes do.
CREATE TABLE wide AS SELECT i AS id, vec(256, i)::embedding(256) AS v FROM generate_series(1, 16000) i;
CREATE INDEX wide_v ON wide USING lsh (v);
SELECT tables, sketch_bits FROM lsh_index_info('wide_v');
RESET maintenance_work_mem;
REINDEX INDEX wide_v;
SELECT tables, sketch_bits FROM lsh_index_info('wide_v');
DROP TABLE wide;
SET maintenance_work_mem = '1MB';
-- An insert that would rebuild a grown index's layout (grow.rs) keeps the layout instead (NOTICE once per
-- backend and layout); the insert itself succeeds.
CREATE TABLE gm (id int, v embedding(32));
CREATE INDEX gm_v ON gm USING lsh (v) WITH (sketch_bits = 1024);
SET client_min_messages = notice;
INSERT INTO gm SELECT i, clustered(i) FROM generate_series(1, 20000) i;
SET client_min_messages = warning;
SELECT count(*) AS rows_inserted FROM gm;
SELECT layout_rows < 10000 AS layout_kept FROM lsh_index_info('gm_v');
SELECT count(*) AS problems FROM lsh_index_check('gm_v');
RESET maintenance_work_mem;
-- A scan holds its candidates within work_mem × hash_mem_multiplier: past that it stops probing (NOTICE)
-- and returns what it found. (A sketch scan's passes are capped by the same budget.)
SET lsh.scan_mode = buckets;
SET work_mem = '64kB';
SET hash_mem_multiplier = 1;
SET lsh.max_candidates = 1000000;
SET lsh.probes = 4096;
SET enable_seqscan = off;
SET client_min_messages = notice;
SELECT count(*) AS top10 FROM (SELECT id FROM g ORDER BY v <-> clustered(7) LIMIT 10) s;
SET client_min_messages = warning;
RESET work_mem;
RESET hash_mem_multiplier;
SELECT count(*) AS top10_default_memory FROM (SELECT id FROM g ORDER BY v <-> clustered(7) LIMIT 10) s;
RESET lsh.max_candidates;
RESET lsh.probes;
RESET lsh.scan_mode;
RESET enable_seqscan;
DROP TABLE gm;
