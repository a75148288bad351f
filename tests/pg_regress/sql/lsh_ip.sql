-- Inner product (embedding_ip_ops) with norm augmentation (issue 11 item 5): rows whose norms vary are
-- hashed as x' = [x/M, sqrt(1 - |x|^2/M^2)] (M = the largest norm at build) and queries as [q/|q|, 0],
-- so the index finds the largest inner products, not just the closest directions.
SET client_min_messages = warning;
CREATE SCHEMA lsh_ip;
SET search_path = lsh_ip, public;
SELECT setseed(0.17);
-- clustered non-negative 32-d rows (as in lsh.sql), each scaled by a factor uniform in [0.5, 2]
CREATE TABLE centres AS SELECT c, (SELECT array_agg(random() * 4)::real[] FROM generate_series(1, 32) WHERE c > 0) AS a
  FROM generate_series(1, 40) c;
CREATE TABLE scale AS SELECT i, 0.5 + 1.5 * random() AS f FROM generate_series(1, 30000) i;
CREATE TABLE items (id int PRIMARY KEY, v embedding(32));
INSERT INTO items SELECT i,
  (SELECT array_agg(f * greatest(0, a[j] + (random() - 0.5)))::embedding FROM generate_series(1, 32) j)
  FROM scale JOIN centres ON c = 1 + i % 40;
CREATE TABLE queries AS SELECT q, (SELECT array_agg(greatest(0, a[j] + (random() - 0.5)))::embedding FROM generate_series(1, 32) j) AS v
  FROM generate_series(1, 20) q JOIN centres ON c = 1 + (q * 7) % 40;
ANALYZE items;

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

-- recall@10 of inner product at default settings, within 0.02 of cosine's on the same rows (issue 11)
CREATE INDEX items_ip ON items USING lsh (v embedding_ip_ops);
CREATE INDEX items_cos ON items USING lsh (v embedding_cosine_ops);
SELECT count(*) AS problems FROM lsh_index_check('items_ip');
SELECT recall_at_10('<#>') AS ip_recall, recall_at_10('<=>') AS cos_recall \gset
SELECT :ip_recall >= 0.9 AS ip_recall_ok, :ip_recall >= :cos_recall - 0.02 AS ip_close_to_cosine;
-- results come back in exact inner-product order (the rerank is exact)
SET enable_seqscan = off;
SELECT bool_and(d >= lag) AS ordered FROM (
  SELECT d, lag(d, 1, '-infinity'::float8) OVER () FROM (
    SELECT v <#> (SELECT v FROM queries WHERE q = 1) AS d FROM items
    ORDER BY v <#> (SELECT v FROM queries WHERE q = 1) LIMIT 50) s) t;
-- the row with the largest inner product comes first, even when it is not the closest direction
SELECT (SELECT id FROM items ORDER BY v <#> (SELECT v FROM queries WHERE q = 2) LIMIT 1)
     = (SELECT id FROM items ORDER BY (v <#> (SELECT v FROM queries WHERE q = 2)) + 0 LIMIT 1) AS top_is_exact;
RESET enable_seqscan;
-- rows longer than the build's M are still indexed and found; REINDEX takes them into M
INSERT INTO items SELECT id + 100000, (SELECT array_agg(x * 10)::embedding FROM unnest(v::real[]) x)
  FROM items WHERE id % 1000 = 1;
SELECT count(*) AS problems FROM lsh_index_check('items_ip');
-- (queries whose exact best row is one of the long rows, and how many of those the index finds first)
SET enable_seqscan = off;
SELECT count(*) FILTER (WHERE ex > 100000) AS long_row_best,
       count(*) FILTER (WHERE ex > 100000 AND ix = ex) AS found_by_index
  FROM (SELECT (SELECT id FROM items ORDER BY (v <#> queries.v) + 0 LIMIT 1) AS ex,
               (SELECT id FROM items ORDER BY v <#> queries.v LIMIT 1) AS ix FROM queries) s;
RESET enable_seqscan;
REINDEX INDEX items_ip;
SELECT count(*) AS problems FROM lsh_index_check('items_ip');
SELECT recall_at_10('<#>') >= 0.9 AS ip_recall_after_reindex_ok;
DROP INDEX items_cos;

-- an ip index on an empty table (dimensions known) is set up by its first insert (M = 2 x its norm)
CREATE TABLE small (id int, v embedding(3));
CREATE INDEX small_ip ON small USING lsh (v embedding_ip_ops);
SET enable_seqscan = off;
SELECT * FROM small ORDER BY v <#> '[1,2,3]' LIMIT 3;
INSERT INTO small VALUES (1, '[1,2,3]');
SELECT id FROM small ORDER BY v <#> '[1,2,3]' LIMIT 3;
-- a longer row than M (2 x |[1,2,3]|), a zero row, a NULL: every non-NULL row through the index, exact
-- order (the NULL row is not in the index)
INSERT INTO small VALUES (2, '[30,20,10]'), (3, '[0,0,0]'), (4, NULL), (5, '[-1,-2,-3]');
SELECT id, v <#> '[1,2,3]' AS d FROM small ORDER BY v <#> '[1,2,3]' LIMIT 10;
SELECT count(*) AS problems FROM lsh_index_check('small_ip');
RESET enable_seqscan;
-- an ip index on a table without a typmod, built empty, likewise
CREATE TABLE untyped (id int, v embedding);
CREATE INDEX untyped_ip ON untyped USING lsh (v embedding_ip_ops);
INSERT INTO untyped VALUES (1, '[0.5,0.5]'), (2, '[4,4]'), (3, '[1,-1]');
SET enable_seqscan = off;
SELECT id FROM untyped ORDER BY v <#> '[1,1]' LIMIT 3;
RESET enable_seqscan;
SELECT count(*) AS problems FROM lsh_index_check('untyped_ip');
DROP SCHEMA lsh_ip CASCADE;
