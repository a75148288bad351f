-- The lsh index access method and its operator classes (src/pg/am/).

CREATE FUNCTION lsh_handler(internal) RETURNS index_am_handler
    AS 'MODULE_PATHNAME', 'lsh_handler' LANGUAGE C;
CREATE ACCESS METHOD lsh TYPE INDEX HANDLER lsh_handler;
COMMENT ON ACCESS METHOD lsh IS 'random-hyperplane LSH with multi-probe, sketch ranking and exact rerank for ORDER BY embedding distance LIMIT k';

-- Support function 1 tells the index which metric its operator class uses.
CREATE FUNCTION lsh_metric_l2(embedding) RETURNS integer
    AS 'MODULE_PATHNAME', 'lsh_metric_l2' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION lsh_metric_cosine(embedding) RETURNS integer
    AS 'MODULE_PATHNAME', 'lsh_metric_cosine' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION lsh_metric_ip(embedding) RETURNS integer
    AS 'MODULE_PATHNAME', 'lsh_metric_ip' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE OPERATOR CLASS embedding_l2_ops DEFAULT FOR TYPE embedding USING lsh AS
    OPERATOR 1 <-> (embedding, embedding) FOR ORDER BY float_ops,
    FUNCTION 1 lsh_metric_l2(embedding);
CREATE OPERATOR CLASS embedding_cosine_ops FOR TYPE embedding USING lsh AS
    OPERATOR 1 <=> (embedding, embedding) FOR ORDER BY float_ops,
    FUNCTION 1 lsh_metric_cosine(embedding);
CREATE OPERATOR CLASS embedding_ip_ops FOR TYPE embedding USING lsh AS
    OPERATOR 1 <#> (embedding, embedding) FOR ORDER BY float_ops,
    FUNCTION 1 lsh_metric_ip(embedding);

CREATE FUNCTION lsh_index_check(index regclass) RETURNS SETOF text
    LANGUAGE sql VOLATILE STRICT AS $$ SELECT problem FROM @extschema@.lsh_index_check_oid($1::pg_catalog.oid) $$;
COMMENT ON FUNCTION lsh_index_check(regclass) IS 'verifies an lsh index against its table; returns one row per problem (none when clean)';

CREATE FUNCTION lsh_index_info(index regclass) RETURNS TABLE (
        dims int, metric text, bits int, tables int, sketch_bits int, superbuckets int, layout_rows bigint,
        blocks bigint)
    LANGUAGE sql VOLATILE STRICT AS $$ SELECT * FROM @extschema@.lsh_index_info_oid($1::pg_catalog.oid) $$;
COMMENT ON FUNCTION lsh_index_info(regclass) IS 'the layout of an lsh index: bits per table, superbuckets, and the row count it was laid out for (no row while it was built empty and has no rows)';
