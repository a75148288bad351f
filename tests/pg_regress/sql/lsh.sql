-- The lsh index access method: opclasses, options, GUCs, NULLs, edge cases, plans, maintenance, recall.
CREATE SCHEMA lsh_test;
SET search_path = lsh_test, public;
SELECT setseed(0.42);
-- clustered synthetic data: 40 centres in 32-d, rows = centre + noise (non-negative like CNN features)
CREATE TABLE centres AS SELECT c, (SELECT array_agg(random() * 4)::real[] FROM generate_series(1, 32) WHERE c > 0) AS a
  FROM generate_series(1, 40) c;
CREATE TABLE items (id int PRIMARY KEY, cat int, v embedding(32));
INSERT INTO items SELECT i, i % 10,
  (SELECT array_agg(greatest(0, a[j] + (random() - 0.5)))::embedding FROM generate_series(1, 32) j)
  FROM generate_series(1, 30000) i JOIN centres ON c = 1 + i % 40;
CREATE TABLE queries AS SELECT q, (SELECT array_agg(greatest(0, a[j] + (random() - 0.5)))::embedding FROM generate_series(1, 32) j) AS v
  FROM generate_series(1, 20) q JOIN centres ON c = 1 + (q * 7) % 40;
ANALYZE items;

-- recall@10 against exact search, per operator class
CREATE FUNCTION recall_at_10(op text) RETURNS float8 LANGUAGE plpgsql AS $$
DECLARE r record; hits int := 0; total int := 0; exact int[]; approx int[];
BEGIN
  FOR r IN SELECT * FROM queries LOOP
    SET LOCAL enable_indexscan = off;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v %s $1 LIMIT 10) s', op) INTO exact USING r.v;
    SET LOCAL enable_indexscan = on; SET LOCAL enable_seqscan = off;
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v %s $1 LIMIT 10) s', op) INTO approx USING r.v;
    RESET enable_seqscan;
    hits := hits + (SELECT count(*) FROM unnest(approx) a WHERE a = ANY (exact));
    total := total + 10;
  END LOOP;
  RETURN hits::float8 / total;
END $$;

CREATE INDEX items_l2 ON items USING lsh (v embedding_l2_ops);
SELECT count(*) AS problems FROM lsh_index_check('items_l2');
SELECT recall_at_10('<->') >= 0.95 AS l2_recall_ok;
-- the planner picks the index for ORDER BY ... LIMIT on a large table, and not for filters alone
EXPLAIN (COSTS OFF) SELECT id FROM items ORDER BY v <-> '[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]' LIMIT 10;
EXPLAIN (COSTS OFF) SELECT id FROM items WHERE v <-> '[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]' < 1;
-- results come back in exact distance order
SELECT bool_and(d >= lag) AS ordered FROM (
  SELECT d, lag(d, 1, 0::float8) OVER () FROM (
    SELECT v <-> (SELECT v FROM queries WHERE q = 1) AS d FROM items
    ORDER BY v <-> (SELECT v FROM queries WHERE q = 1) LIMIT 50) s) t;
-- a filtered query keeps probing until it has its LIMIT
SET enable_seqscan = off;
SELECT count(*) FROM (SELECT id FROM items WHERE cat = 3 ORDER BY v <-> (SELECT v FROM queries WHERE q = 2) LIMIT 40) s;
SELECT count(*) FROM (SELECT id FROM items WHERE id % 1000 = 7 ORDER BY v <-> (SELECT v FROM queries WHERE q = 2) LIMIT 40) s;
RESET enable_seqscan;

-- the other operator classes
CREATE INDEX items_cos ON items USING lsh (v embedding_cosine_ops);
CREATE INDEX items_ip ON items USING lsh (v embedding_ip_ops);
SELECT recall_at_10('<=>') >= 0.95 AS cosine_recall_ok;
-- inner product is hashed norm-augmented (Simple LSH); lsh_ip.sql checks it on rows with varying norms
SELECT recall_at_10('<#>') >= 0.7 AS ip_recall_ok;
SELECT count(*) FROM lsh_index_check('items_cos');
SELECT count(*) FROM lsh_index_check('items_ip');
DROP INDEX items_cos, items_ip;

-- GUCs
SHOW lsh.probes;
SET lsh.probes = 1;
SET lsh.rerank = 10;
SELECT recall_at_10('<->') < 0.95 AS less_work_lower_recall;
SET lsh.probes = -1;
SET lsh.max_candidates = -1;
SET lsh.max_candidates = 0;
SET lsh.rerank = 10;
RESET ALL;
SET search_path = lsh_test, public;
SET lsh.prboes = 3;
-- scan modes: automatic (a sketch scan at this size), sketches, buckets; both reach the recall
SHOW lsh.scan_mode;
SET lsh.scan_mode = sketches;
SELECT recall_at_10('<->') >= 0.95 AS sketch_recall_ok;
SET lsh.scan_mode = buckets;
SELECT recall_at_10('<->') >= 0.95 AS bucket_recall_ok;
-- bucket probing over several tables (the layout above the sketch-scan size limit)
ALTER INDEX items_l2 SET (tables = 8);
REINDEX INDEX items_l2;
SELECT tables FROM lsh_index_info('items_l2');
SELECT recall_at_10('<->') >= 0.95 AS eight_table_bucket_recall_ok;
SET lsh.probes = 1;
SET lsh.rerank = 10;
SELECT recall_at_10('<->') < 0.95 AS buckets_less_work_lower_recall;
RESET lsh.probes;
ALTER INDEX items_l2 RESET (tables);
REINDEX INDEX items_l2;
SET lsh.scan_mode = everything;
-- a sketch scan in small batches (7 rows per batch, passes of 7, 14, 28, ... rows) returns every row
-- exactly once through the index, and a filtered query gets its LIMIT
SET lsh.scan_mode = sketches;
SET lsh.rerank = 7;
SET enable_seqscan = off;
SET enable_sort = off;
EXPLAIN (COSTS OFF) SELECT id FROM items WHERE id <= 300 OR id % 1000 = 0 ORDER BY v <-> '[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]';
SELECT count(*) AS rows_returned, count(DISTINCT id) AS distinct_rows FROM (
  SELECT id FROM items WHERE id <= 300 OR id % 1000 = 0 ORDER BY v <-> (SELECT v FROM queries WHERE q = 3)) s;
SELECT count(*) FROM (SELECT id FROM items WHERE id % 1000 = 7 ORDER BY v <-> (SELECT v FROM queries WHERE q = 2) LIMIT 40) s;
SET lsh.rerank = 100000;
SELECT array_agg(id) = (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <-> (SELECT v FROM queries WHERE q = 4), id LIMIT 10) e)
  AS rerank_all_is_exact FROM (SELECT id FROM items ORDER BY v <-> (SELECT v FROM queries WHERE q = 4) LIMIT 10) s;
RESET ALL;
SET search_path = lsh_test, public;

-- options
CREATE INDEX items_opts ON items USING lsh (v) WITH (bits = 10, tables = 4, sketch_bits = 128, seed = 7);
SELECT reloptions FROM pg_class WHERE relname = 'items_opts';
SELECT count(*) FROM lsh_index_check('items_opts');
DROP INDEX items_opts;
CREATE INDEX bad ON items USING lsh (v) WITH (sketch_bits = 100);
CREATE INDEX bad ON items USING lsh (v) WITH (tables = 65);
CREATE INDEX bad ON items USING lsh (v) WITH (bits = 99);
CREATE INDEX bad ON items USING lsh (v) WITH (colour = 1);
CREATE INDEX bad ON items USING lsh (id);
CREATE INDEX bad ON items USING lsh (v, id);

-- REINDEX rebuilds the same planes (fixed default seed): same answers
CREATE TABLE before AS SELECT q, (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <-> queries.v LIMIT 10) s) AS ids FROM queries;
REINDEX INDEX items_l2;
SET enable_seqscan = off;
SELECT count(*) AS same_after_reindex FROM queries
  WHERE (SELECT array_agg(id) FROM (SELECT id FROM items ORDER BY v <-> queries.v LIMIT 10) s) = (SELECT ids FROM before b WHERE b.q = queries.q);
RESET enable_seqscan;

-- DELETE + VACUUM: deleted rows never come back, their space is reused
SELECT pg_relation_size('items_l2') AS size_before \gset
DELETE FROM items WHERE id % 3 = 0;
SET enable_seqscan = off;
SELECT count(*) AS deleted_returned FROM (SELECT id FROM items ORDER BY v <-> (SELECT v FROM queries WHERE q = 3) LIMIT 100) s WHERE id % 3 = 0;
VACUUM items;
SELECT count(*) AS deleted_returned FROM (SELECT id FROM items ORDER BY v <-> (SELECT v FROM queries WHERE q = 3) LIMIT 100) s WHERE id % 3 = 0;
SELECT count(*) FROM lsh_index_check('items_l2');
INSERT INTO items SELECT id + 100000, cat, v FROM items WHERE id % 3 = 1;
SELECT pg_relation_size('items_l2') <= :size_before * 1.15 AS space_reused;
SELECT count(*) FROM lsh_index_check('items_l2');
-- UPDATE: the new version is found, the old one is not
UPDATE items SET v = '[9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9]' WHERE id = 1;
SELECT id FROM items ORDER BY v <-> '[9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9]' LIMIT 1;
SELECT recall_at_10('<->') >= 0.95 AS recall_after_changes_ok;
RESET enable_seqscan;

-- NULLs, empty table, one row, duplicates, dimension mismatch
CREATE TABLE small (id int, v embedding);
CREATE INDEX small_idx ON small USING lsh (v);
SET enable_seqscan = off;
SELECT * FROM small ORDER BY v <-> '[1,2,3]' LIMIT 3;
INSERT INTO small VALUES (1, '[1,2,3]');
SELECT id FROM small ORDER BY v <-> '[1,2,3]' LIMIT 3;
INSERT INTO small VALUES (2, NULL), (3, '[1,2,3]'), (4, '[1,2,3]'), (5, '[3,2,1]');
-- NULL distances sort last. A seq scan: the index holds no NULL embeddings, and PostgreSQL 18 (not 15)
-- would use it for the first sort key under an Incremental Sort, leaving row 2 out.
SET enable_indexscan = off;
SELECT id, v <-> '[1,2,3]' AS d FROM small ORDER BY v <-> '[1,2,3]', id LIMIT 10;
RESET enable_indexscan;
SELECT id FROM small ORDER BY v <-> NULL LIMIT 3;
SELECT id FROM small ORDER BY v <-> '[1,2]' LIMIT 3;
INSERT INTO small VALUES (6, '[1,2]');
SELECT count(*) FROM lsh_index_check('small_idx');
RESET enable_seqscan;
-- a tiny table is answered by a seq scan
EXPLAIN (COSTS OFF) SELECT id FROM small ORDER BY v <-> '[1,2,3]' LIMIT 3;
-- too many dimensions for an index
CREATE TABLE wide (v embedding(2001));
CREATE INDEX ON wide USING lsh (v);

-- UNLOGGED tables
CREATE UNLOGGED TABLE ul (id int, v embedding(3));
INSERT INTO ul SELECT i, ARRAY[i, i % 7, 1]::embedding FROM generate_series(1, 200) i;
CREATE INDEX ul_idx ON ul USING lsh (v);
SET enable_seqscan = off;
SELECT id FROM ul ORDER BY v <-> '[50,1,1]' LIMIT 3;
RESET enable_seqscan;
SELECT count(*) FROM lsh_index_check('ul_idx');
