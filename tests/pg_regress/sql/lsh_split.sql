-- Split vectors (format version 2): a vector that does not fit the room left on a vector page is stored
-- as a head there and a tail on a later page, so 600- and 1280-d indexes are about the size of their raw
-- vectors. Every flow keeps the index consistent (lsh_index_check) and exact (with a rerank covering
-- every row, the index returns the same rows and distances as a seq scan).
SET client_min_messages = warning;
CREATE FUNCTION svec(n int, seed int) RETURNS embedding LANGUAGE sql IMMUTABLE AS
  $$ SELECT ARRAY(SELECT sin(seed * 3.17 + i * 0.61) + cos(seed * 0.37 * i) FROM generate_series(1, n) i)::embedding $$;
-- Rows whose 10 nearest neighbours of query q differ between the index and a seq scan (0 when exact).
CREATE FUNCTION split_mismatches(tbl regclass, q embedding) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE by_index bigint[]; exact bigint[];
BEGIN
  SET LOCAL enable_seqscan = off; SET LOCAL lsh.rerank = 100000;
  EXECUTE format('SELECT array_agg(id ORDER BY d, id) FROM (SELECT id, v <-> $1 AS d FROM %s ORDER BY v <-> $1 LIMIT 10) s', tbl)
    INTO by_index USING q;
  SET LOCAL enable_seqscan = on; SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off;
  EXECUTE format('SELECT array_agg(id ORDER BY d, id) FROM (SELECT id, v <-> $1 AS d FROM %s ORDER BY v <-> $1 LIMIT 10) s', tbl)
    INTO exact USING q;
  RETURN (SELECT count(*) FROM unnest(exact) e WHERE NOT e = ANY (by_index)) + abs(cardinality(exact) - cardinality(by_index));
END $$;

-- Built from 600 rows of 600 dimensions (2,408-byte items: three whole items fill 74 % of a page, the
-- fourth is split): the index is close to the raw vectors' size (1.17x with whole items).
CREATE TABLE s600 (id int, v embedding(600));
INSERT INTO s600 SELECT i, svec(600, i) FROM generate_series(1, 600) i;
CREATE INDEX s600_v ON s600 USING lsh (v);
SELECT count(*) AS problems FROM lsh_index_check('s600_v');
SELECT round(pg_relation_size('s600_v') / (600 * 600 * 4.0), 2) AS index_to_raw;
SELECT sum(split_mismatches('s600', svec(600, q))) AS mismatches FROM generate_series(1000, 1004) q;

-- VACUUM frees heads with their tails; inserts reuse the room (splitting there too).
DELETE FROM s600 WHERE id % 3 = 0;
VACUUM s600;
SELECT count(*) AS problems FROM lsh_index_check('s600_v');
SELECT sum(split_mismatches('s600', svec(600, q))) AS mismatches FROM generate_series(1000, 1004) q;
INSERT INTO s600 SELECT i, svec(600, i) FROM generate_series(601, 900) i;
SELECT count(*) AS problems FROM lsh_index_check('s600_v');
SELECT sum(split_mismatches('s600', svec(600, q))) AS mismatches FROM generate_series(1000, 1004) q;
SELECT count(*) AS rows FROM s600;

-- Room VACUUM frees is reused by later inserts (whole vectors first, splits only when no page has room):
-- deleting 90 % twice and refilling to about the same row count leaves the index about its built size.
CREATE TABLE sre (id int, v embedding(600)) WITH (autovacuum_enabled = off);
INSERT INTO sre SELECT i, svec(600, i) FROM generate_series(1, 1000) i;
CREATE INDEX sre_v ON sre USING lsh (v);
CREATE TEMP TABLE sre_size AS SELECT pg_relation_size('sre_v') AS built;
DELETE FROM sre WHERE id % 10 <> 0;
VACUUM sre;
INSERT INTO sre SELECT i, svec(600, i) FROM generate_series(1001, 1900) i;
DELETE FROM sre WHERE id % 10 <> 0;
VACUUM sre;
INSERT INTO sre SELECT i, svec(600, i) FROM generate_series(2001, 2900) i;
SELECT count(*) AS rows, (SELECT round(pg_relation_size('sre_v')::numeric / built, 2) FROM sre_size) AS size_to_built
  FROM sre;
SELECT count(*) AS problems FROM lsh_index_check('sre_v');
SELECT sum(split_mismatches('sre', svec(600, q))) AS mismatches FROM generate_series(1000, 1004) q;
DROP TABLE sre;

-- Index created before the data, single-row inserts of 1280-d rows (EfficientNet-Lite0's size: one whole
-- 5,128-byte item per page before), then TRUNCATE and a reload.
CREATE TABLE s1280 (id int, v embedding(1280));
CREATE INDEX s1280_v ON s1280 USING lsh (v embedding_cosine_ops);
DO $$ BEGIN FOR i IN 1 .. 300 LOOP INSERT INTO s1280 VALUES (i, svec(1280, i)); END LOOP; END $$;
SELECT count(*) AS problems FROM lsh_index_check('s1280_v');
SELECT round(pg_relation_size('s1280_v') / (300 * 1280 * 4.0), 2) AS index_to_raw;
SET enable_seqscan = off; SET lsh.rerank = 100000;
SELECT count(*) AS rows_finding_themselves FROM s1280 o
  WHERE (SELECT id FROM s1280 ORDER BY v <=> o.v LIMIT 1) = o.id;
RESET enable_seqscan; RESET lsh.rerank;
TRUNCATE s1280;
INSERT INTO s1280 SELECT i, svec(1280, i) FROM generate_series(1, 200) i;
SELECT count(*) AS problems FROM lsh_index_check('s1280_v');
REINDEX INDEX s1280_v;
SELECT count(*) AS problems FROM lsh_index_check('s1280_v');
SELECT round(pg_relation_size('s1280_v') / (200 * 1280 * 4.0), 2) AS index_to_raw;

-- Inner product and the NULL-query scan (every row once, tails not counted as rows).
CREATE TABLE sip (id int, v embedding(700));
INSERT INTO sip SELECT i, svec(700, i) FROM generate_series(1, 250) i;
CREATE INDEX sip_v ON sip USING lsh (v embedding_ip_ops);
SELECT count(*) AS problems FROM lsh_index_check('sip_v');
SET enable_seqscan = off;
SELECT count(*), count(DISTINCT id) FROM (SELECT id FROM sip ORDER BY v <#> NULL) s;
SET lsh.rerank = 100000;
SELECT (SELECT array_agg(id) FROM (SELECT id FROM sip ORDER BY v <#> svec(700, 7) LIMIT 5) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM sip ORDER BY (v <#> svec(700, 7)) + 0 LIMIT 5) b) AS ip_exact;
RESET enable_seqscan; RESET lsh.rerank;
DROP TABLE s600, s1280, sip;
