-- img_embed: image embeddings through ONNX Runtime (src/pg/embed.rs, src/pipeline/).

CREATE FUNCTION img_embed(image bytea, model text) RETURNS embedding
    AS 'MODULE_PATHNAME', 'img_embed' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE COST 10000;
COMMENT ON FUNCTION img_embed(bytea, text) IS
    'embedding of an image by a named model; IMMUTABLE: a named model''s files must never change (install a new name instead)';
CREATE FUNCTION img_embed(image bytea) RETURNS embedding
    AS 'MODULE_PATHNAME', 'img_embed_default' LANGUAGE C STABLE STRICT PARALLEL SAFE COST 10000;
COMMENT ON FUNCTION img_embed(bytea) IS 'embedding of an image by the model named in pg_imgsim.model';
CREATE FUNCTION img_embed_batch(images bytea[], model text DEFAULT NULL) RETURNS embedding[]
    AS 'MODULE_PATHNAME', 'img_embed_batch' LANGUAGE C STABLE PARALLEL SAFE COST 10000;
COMMENT ON FUNCTION img_embed_batch(bytea[], text) IS
    'embeddings of many images at once: parallel decoding, one batched inference (NULL model = pg_imgsim.model)';

-- imgsim_models() (src/pg/embed.rs) lists the installed models. (A schema cannot be called pg_imgsim:
-- PostgreSQL reserves the pg_ prefix for system schemas, so there is no pg_imgsim.models().)
COMMENT ON FUNCTION imgsim_models() IS 'models installed in pg_imgsim.model_dir, with their dimensions, weights and ONNX file SHA-256';
COMMENT ON FUNCTION imgsim_service_stats() IS 'the inference service (pg_imgsim in shared_preload_libraries): per model, requests waiting, batches, images, mean batch size, provider, failed requests, worker pid, slots in use';

-- Fills an embedding column for a whole table in batches, committing after each batch and reporting
-- progress; rows whose embedding is already set are skipped, so it resumes after an interruption.
-- Images that cannot be embedded (not an image 22P03, over a limit 54000, unsupported 0A000) are reported
-- (WARNING) and left NULL; any other error (model missing, library missing, no CUDA, out of memory) stops
-- the procedure with that error. A row is updated only if it still holds the image that was embedded and
-- still has no embedding (re-checked in the UPDATE), so concurrent changes are never overwritten.
-- Every name is schema-qualified: the procedure works whatever the caller's search_path is (it cannot pin
-- one with SET, which would forbid its COMMITs).
CREATE PROCEDURE img_embed_fill(
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
