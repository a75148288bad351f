-- Operators, functions, casts and aggregates of the embedding type.
SELECT '[1,2,3]'::embedding <-> '[3,2,1]' AS l2,
       '[1,2,3]'::embedding <=> '[3,2,1]' AS cosine,
       '[1,2,3]'::embedding <#> '[3,2,1]' AS neg_ip;
SELECT l2_distance('[0,0]', '[3,4]'), l2_squared_distance('[0,0]', '[3,4]'),
       cosine_distance('[1,0]', '[0,1]'), cosine_distance('[1,1]', '[2,2]'), cosine_distance('[1,0]', '[-1,0]'),
       inner_product('[1,2]', '[3,4]'), negative_inner_product('[1,2]', '[3,4]');
-- cosine with a zero vector is undefined: NaN (sorts after every number)
SELECT cosine_distance('[0,0]', '[1,2]'), '[0,0]'::embedding <=> '[0,0]';
SELECT l2_norm('[3,4]'), l2_norm('[0,0]'), l2_normalize('[3,4]'), l2_normalize('[0,0]'), dims('[1,2,3]');
SELECT '[1,2]'::embedding + '[3,4]', '[1,2]'::embedding - '[3,4]', '[1,2]'::embedding * '[3,4]';
SELECT '[3e38]'::embedding + '[3e38]';
SELECT '[1,2]'::embedding <-> '[1,2,3]';
SELECT '[1,2]'::embedding <=> '[1,2,3]';
SELECT '[1,2]'::embedding <#> '[1,2,3]';
SELECT '[1,2]'::embedding + '[1,2,3]';
SELECT inner_product('[1]', NULL) IS NULL AS strict;

-- comparison and btree
SELECT '[1,2]'::embedding = '[1,2]', '[1,2]'::embedding <> '[1,3]', '[1,2]'::embedding < '[1,3]',
       '[1,2]'::embedding < '[1,2,0]', '[2]'::embedding > '[1,9]', '[1,2]'::embedding <= '[1,2]', '[1,2]'::embedding >= '[1,3]';
CREATE TABLE cmp (v embedding);
INSERT INTO cmp VALUES ('[3,1]'), ('[1,2,3]'), ('[1,2]'), ('[-1,5]'), ('[1,2]');
CREATE INDEX cmp_v ON cmp (v);
SELECT v FROM cmp ORDER BY v;
SELECT DISTINCT v FROM cmp ORDER BY v;
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT v FROM cmp WHERE v = '[1,2]';
SELECT count(*) FROM cmp WHERE v = '[1,2]';
RESET enable_seqscan;

-- casts
SELECT ARRAY[1,2,3]::embedding, ARRAY[1.5,2.25]::real[]::embedding, ARRAY[0.1,0.2]::float8[]::embedding,
       ARRAY[1.25,3]::numeric[]::embedding;
SELECT '[1,2.5]'::embedding::real[], ('[1,2.5]'::embedding::real[])[2];
SELECT ARRAY[1,2,3]::embedding(3);
SELECT ARRAY[1,2]::embedding(3);
SELECT ARRAY[1,NULL,3]::int[]::embedding;
SELECT ARRAY[]::int[]::embedding;
SELECT ARRAY[[1,2],[3,4]]::embedding;
SELECT ARRAY['NaN']::float8[]::embedding;
SELECT ARRAY[1e300]::float8[]::embedding;
CREATE TABLE fromarr (v embedding(2));
INSERT INTO fromarr VALUES (ARRAY[1,2]::real[]), ('{3,4}'::float8[]);
SELECT * FROM fromarr;

-- aggregates
CREATE TABLE agg (g int, v embedding);
INSERT INTO agg SELECT i % 3, ARRAY[i, i * 2, 1]::embedding FROM generate_series(1, 3000) i;
INSERT INTO agg VALUES (0, NULL);
SELECT g, avg(v), sum(v) FROM agg GROUP BY g ORDER BY g;
SELECT avg(v), sum(v) FROM agg WHERE false;
SELECT avg(v) FROM (VALUES ('[1,2]'::embedding), ('[1,2,3]')) t(v);
-- parallel plan: partial aggregates merged with the combine function
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
EXPLAIN (COSTS OFF) SELECT avg(v), sum(v) FROM agg;
SELECT avg(v), sum(v) FROM agg;
RESET ALL;
SELECT p.proname, p.provolatile, p.proisstrict, p.proparallel FROM pg_proc p
  JOIN pg_depend d ON d.objid = p.oid JOIN pg_extension e ON e.oid = d.refobjid
  WHERE e.extname = 'pg_imgsim' AND (p.provolatile <> 'i' OR p.proparallel <> 's') ORDER BY 1;
