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
COMMENT ON FUNCTION imgsim_models() IS 'models installed in pg_imgsim.model_dir, with their dimensions and weights';

-- Fills an embedding column for a whole table in batches, committing after each batch and reporting
-- progress; rows whose embedding is already set are skipped, so it resumes after an interruption.
-- Images that cannot be embedded are reported (WARNING) and left NULL.
CREATE PROCEDURE img_embed_fill(
    tbl regclass, image_column name, embedding_column name,
    model text DEFAULT NULL, batch_size integer DEFAULT 64)
LANGUAGE plpgsql AS $proc$
DECLARE
    total bigint;
    done bigint := 0;
    failed bigint := 0;
    started timestamptz := clock_timestamp();
    last tid := '(0,0)';
    ids tid[];
    imgs bytea[];
    embs embedding[];
    i int;
    rate numeric;
BEGIN
    IF batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL AND %I IS NOT NULL', tbl, embedding_column, image_column)
        INTO total;
    RAISE NOTICE 'img_embed_fill: % rows to embed in %', total, tbl;
    LOOP
        EXECUTE format('SELECT array_agg(ctid ORDER BY ctid), array_agg(%I ORDER BY ctid) FROM (
                          SELECT ctid, %I FROM %s WHERE %I IS NULL AND %I IS NOT NULL AND ctid > $1
                          ORDER BY ctid LIMIT $2) s',
                       image_column, image_column, tbl, embedding_column, image_column)
            INTO ids, imgs USING last, batch_size;
        EXIT WHEN ids IS NULL;
        last := ids[array_upper(ids, 1)];
        BEGIN
            embs := img_embed_batch(imgs, model);
        EXCEPTION WHEN OTHERS THEN
            -- one bad image fails the batch: embed one by one, skipping the bad ones
            embs := '{}';
            FOR i IN 1 .. array_length(imgs, 1) LOOP
                BEGIN
                    embs := embs || img_embed_batch(ARRAY[imgs[i]], model);
                EXCEPTION WHEN OTHERS THEN
                    embs := embs || NULL::embedding;
                    failed := failed + 1;
                    RAISE WARNING 'img_embed_fill: row % skipped: %', ids[i], SQLERRM;
                END;
            END LOOP;
        END;
        FOR i IN 1 .. array_length(ids, 1) LOOP
            IF embs[i] IS NOT NULL THEN
                EXECUTE format('UPDATE %s SET %I = $1 WHERE ctid = $2', tbl, embedding_column) USING embs[i], ids[i];
            END IF;
        END LOOP;
        done := done + array_length(ids, 1);
        COMMIT;
        rate := round(done / greatest(extract(epoch FROM clock_timestamp() - started), 0.001)::numeric, 1);
        RAISE NOTICE 'img_embed_fill: %/% rows (% rows/s)', done, total, rate;
    END LOOP;
    RAISE NOTICE 'img_embed_fill: finished, % rows embedded, % skipped', done - failed, failed;
END
$proc$;
