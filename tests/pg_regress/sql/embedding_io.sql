-- Text and binary I/O of the embedding type, typmods, and every input error with its SQLSTATE.
CREATE FUNCTION sqlstate_of(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE q;
  RETURN 'ok';
EXCEPTION WHEN others THEN
  RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- pgvector-identical text form: whitespace tolerated, shortest round-trip output
SELECT '[1,2.5,-3e-2]'::embedding;
SELECT '  [ 1 ,	2 , 3 ]  '::embedding;
SELECT '[1e-30,3.4e38,-0,0.1,16777217,1.17549435e-38]'::embedding;
SELECT '[+1,.5,5.,1E3]'::embedding;
SELECT '[0.1]'::embedding::text::embedding = '[0.1]'::embedding AS round_trip;
SELECT '[1,2,3]'::embedding(3);
SELECT NULL::embedding;

-- typmod
CREATE TABLE items (id int, v embedding(3));
INSERT INTO items VALUES (1, '[1,2,3]'), (2, '[4,5,6]'), (3, NULL);
INSERT INTO items VALUES (4, '[1,2]');
INSERT INTO items VALUES (4, '[1,2,3,4]');
UPDATE items SET v = '[1,2]' WHERE id = 1;
SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'v';
SELECT '[1,2]'::embedding::embedding(3);
SELECT sqlstate_of($$SELECT '[1]'::embedding(0)$$);
SELECT sqlstate_of($$SELECT '[1]'::embedding(16001)$$);
SELECT sqlstate_of($$SELECT '[1]'::embedding(1,2)$$);

-- binary I/O through COPY BINARY (send and recv), and pgvector's wire layout
COPY items TO '/tmp/pg_imgsim_regress_items.bin' (FORMAT binary);
CREATE TABLE items2 (LIKE items);
COPY items2 FROM '/tmp/pg_imgsim_regress_items.bin' (FORMAT binary);
SELECT a.id, a.v, b.v, a.v = b.v AS same FROM items a JOIN items2 b USING (id) ORDER BY id;
SELECT embedding_send('[1,-2.5]');
-- a binary value whose dimensions do not match the column's typmod
CREATE TABLE small (v embedding(2));
COPY (SELECT v FROM items) TO '/tmp/pg_imgsim_regress_items.bin' (FORMAT binary);
COPY small FROM '/tmp/pg_imgsim_regress_items.bin' (FORMAT binary);

-- input errors: message names the problem and the position
SELECT '[1,a]'::embedding;
SELECT '[]'::embedding;
SELECT '[ ]'::embedding;
SELECT '1,2'::embedding;
SELECT '[1,2'::embedding;
SELECT '[1,,2]'::embedding;
SELECT '[1 2]'::embedding;
SELECT '[1,2] x'::embedding;
SELECT '[NaN]'::embedding;
SELECT '[1,-Infinity]'::embedding;
SELECT '[1e39]'::embedding;
SELECT '[0x10]'::embedding;
SELECT sqlstate_of($$SELECT '[1,a]'::embedding$$);
SELECT sqlstate_of($$SELECT '[]'::embedding$$);
SELECT sqlstate_of($$SELECT '[nan]'::embedding$$);
SELECT sqlstate_of($$SELECT '[1e39]'::embedding$$);
SELECT sqlstate_of($$SELECT '[1,2]'::embedding(3)$$);
SELECT sqlstate_of(format('SELECT %L::embedding', '[' || repeat('1,', 16000) || '1]'));
SELECT dims(format('[%s1]', repeat('0.5,', 15999))::embedding);
