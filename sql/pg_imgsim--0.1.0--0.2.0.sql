-- pg_imgsim 0.1.0 -> 0.2.0 (ALTER EXTENSION pg_imgsim UPDATE). Upgrade scripts are frozen once released.
\echo Use "ALTER EXTENSION pg_imgsim UPDATE TO '0.2.0'" to load this file. \quit

-- imgsim_models() gains onnx_sha256: the model file's content hash, so a model replaced on disk is visible
-- (the session cache is keyed on the file's identity). A new result type needs DROP + CREATE.
DROP FUNCTION imgsim_models();
CREATE FUNCTION imgsim_models() RETURNS TABLE (name text, dims int, weights text, onnx_sha256 text)
    STRICT STABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'imgsim_models_wrapper';
COMMENT ON FUNCTION imgsim_models() IS 'models installed in pg_imgsim.model_dir, with their dimensions, weights and ONNX file SHA-256';

-- The inference service's statistics (issue 13): empty unless pg_imgsim is in shared_preload_libraries.
CREATE FUNCTION imgsim_service_stats() RETURNS TABLE (
    model text, provider text, queued int, batches bigint, images bigint, mean_batch double precision,
    failed bigint, worker_pid int, slots_in_use int)
    STRICT VOLATILE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'imgsim_service_stats_wrapper';
COMMENT ON FUNCTION imgsim_service_stats() IS 'the inference service (pg_imgsim in shared_preload_libraries): per model, requests waiting, batches, images, mean batch size, provider, failed requests, worker pid, slots in use';

-- img_embed_fill: every name schema-qualified (works with any search_path), the UPDATE re-checks that the
-- row still holds the embedded image and no embedding, only bad images are skipped.
CREATE OR REPLACE PROCEDURE img_embed_fill(
    tbl regclass, image_column name, embedding_column name,
    model text DEFAULT NULL, batch_size integer DEFAULT 64)
LANGUAGE plpgsql AS $proc$
DECLARE
    total bigint;
    done bigint := 0;
    failed bigint := 0;
    started timestamptz := pg_catalog.clock_timestamp();
    last tid := '(0,0)';
    ids tid[];
    imgs bytea[];
    embs @extschema@.embedding[];
    i int;
    n int;
    rate numeric;
BEGIN
    IF batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s WHERE %I IS NULL AND %I IS NOT NULL',
                              tbl, embedding_column, image_column)
        INTO total;
    RAISE NOTICE 'img_embed_fill: % rows to embed in %', total, tbl;
    LOOP
        EXECUTE pg_catalog.format(
            'SELECT pg_catalog.array_agg(ctid ORDER BY ctid), pg_catalog.array_agg(%I ORDER BY ctid) FROM (
                 SELECT ctid, %I FROM %s
                 WHERE %I IS NULL AND %I IS NOT NULL AND ctid OPERATOR(pg_catalog.>) $1
                 ORDER BY ctid LIMIT $2) s',
            image_column, image_column, tbl, embedding_column, image_column)
            INTO ids, imgs USING last, batch_size;
        EXIT WHEN ids IS NULL;
        n := pg_catalog.array_length(ids, 1);
        last := ids[n];
        BEGIN
            embs := @extschema@.img_embed_batch(imgs, model);
        EXCEPTION WHEN OTHERS THEN
            -- one bad image fails the batch: embed one by one, skipping only images that are bad
            embs := '{}';
            FOR i IN 1 .. n LOOP
                BEGIN
                    embs := pg_catalog.array_append(embs, (@extschema@.img_embed_batch(ARRAY[imgs[i]], model))[1]);
                EXCEPTION WHEN invalid_binary_representation OR program_limit_exceeded
                               OR feature_not_supported THEN
                    embs := pg_catalog.array_append(embs, NULL::@extschema@.embedding);
                    failed := failed OPERATOR(pg_catalog.+) 1;
                    RAISE WARNING 'img_embed_fill: row % skipped: %', ids[i], SQLERRM;
                END;
            END LOOP;
        END;
        FOR i IN 1 .. n LOOP
            IF embs[i] IS NOT NULL THEN
                EXECUTE pg_catalog.format(
                    'UPDATE %s SET %I = $1 WHERE ctid OPERATOR(pg_catalog.=) $2 AND %I IS NULL
                                                 AND %I OPERATOR(pg_catalog.=) $3',
                    tbl, embedding_column, embedding_column, image_column)
                    USING embs[i], ids[i], imgs[i];
            END IF;
        END LOOP;
        done := done OPERATOR(pg_catalog.+) n;
        COMMIT;
        rate := pg_catalog.round(done::numeric OPERATOR(pg_catalog./)
                    GREATEST(EXTRACT(epoch FROM pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) started), 0.001), 1);
        RAISE NOTICE 'img_embed_fill: %/% rows (% rows/s)', done, total, rate;
    END LOOP;
    RAISE NOTICE 'img_embed_fill: finished, % rows embedded, % skipped', done OPERATOR(pg_catalog.-) failed, failed;
END
$proc$;

-- lsh_index_check: qualified call (search_path-safe); the C function now checks privileges.
CREATE OR REPLACE FUNCTION lsh_index_check(index regclass) RETURNS SETOF text
    LANGUAGE sql VOLATILE STRICT AS $$ SELECT problem FROM @extschema@.lsh_index_check_oid($1::pg_catalog.oid) $$;

-- lsh_index_info(regclass): the layout an lsh index runs with (indexes now grow their layout, grow.rs).
CREATE FUNCTION lsh_index_info_oid(index oid) RETURNS TABLE (
        dims int, metric text, bits int, tables int, sketch_bits int, superbuckets int, layout_rows bigint,
        blocks bigint)
    STRICT VOLATILE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'lsh_index_info_wrapper';
CREATE FUNCTION lsh_index_info(index regclass) RETURNS TABLE (
        dims int, metric text, bits int, tables int, sketch_bits int, superbuckets int, layout_rows bigint,
        blocks bigint)
    LANGUAGE sql VOLATILE STRICT AS $$ SELECT * FROM @extschema@.lsh_index_info_oid($1::pg_catalog.oid) $$;
COMMENT ON FUNCTION lsh_index_info(regclass) IS 'the layout of an lsh index: bits per table, superbuckets, and the row count it was laid out for (no row while it was built empty and has no rows)';
