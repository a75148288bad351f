//! `cargo pgrx test`: an lsh index whose meta page carries another on-disk format version is refused by
//! its readers (scan, insert, `lsh_index_check`) with SQLSTATE 55000 and the hint `REINDEX INDEX <name>`,
//! and REINDEX makes it usable again. The version is changed through the page code itself
//! (`page::read_meta` / `build::write_meta_page`), as a pg_imgsim with another `page::VERSION` would leave it.
//! A version-1 index (before split vectors) is read, and inserts into it store whole vectors only.

#[pgrx::pg_schema]
mod tests {
    use crate::pg::am::buffer::{Lock, Locked};
    use crate::pg::am::{build, page, shape};
    use pgrx::prelude::*;

    /// Runs `f` on the open index `name` (RowExclusiveLock) with its meta page exclusively locked.
    fn with_meta(name: &str, f: impl FnOnce(pg_sys::Relation, &mut Locked)) {
        let oid = Spi::get_one::<pg_sys::Oid>(&format!("SELECT '{name}'::regclass::oid"))
            .unwrap()
            .unwrap();
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        // SAFETY: the index exists (created by the test, in this transaction) and stays open and locked
        // while its block 0 (the meta page) is read and rewritten under an exclusive buffer lock.
        unsafe {
            let index = pg_sys::index_open(oid, lock);
            let mut buf = Locked::read(index, page::META_BLOCK, Lock::Exclusive);
            f(index, &mut buf);
            drop(buf);
            pg_sys::index_close(index, lock);
        }
    }

    /// Sets the meta page's format version of index `name`.
    fn set_version(name: &str, version: u32) {
        with_meta(name, |index, buf| {
            let mut meta = buf.page().read_meta(index);
            meta.version = version;
            build::write_meta_page(index, buf, &meta);
        });
    }

    /// (format version, split vectors) of index `name`.
    fn version_and_splits(name: &str) -> (u32, usize) {
        let mut out = (0, 0);
        with_meta(name, |index, buf| {
            out.0 = buf.page().read_meta(index).version;
            for blk in 1..shape::nblocks(index) {
                let b = Locked::read(index, blk, Lock::Share);
                let p = b.page();
                if p.kind() == page::KIND_VECTOR {
                    out.1 += (1..=p.max_offset())
                        .filter_map(|o| p.item(o).and_then(page::VectorItem::parse))
                        .filter(|i| i.tail.is_some())
                        .count();
                }
            }
        });
        out
    }

    #[pg_test]
    fn version_1_index_is_read_and_gets_no_split_vectors() {
        Spi::run(
            "CREATE TABLE v1_t (id int, v embedding(600));
             CREATE INDEX v1_idx ON v1_t USING lsh (v);
             INSERT INTO v1_t SELECT 1, ARRAY(SELECT sin(j) FROM generate_series(1, 600) j)::embedding",
        )
        .unwrap();
        set_version("v1_idx", 1);
        Spi::run(
            "INSERT INTO v1_t SELECT i, ARRAY(SELECT sin(i * 0.7 + j) FROM generate_series(1, 600) j)::embedding
               FROM generate_series(2, 100) i",
        )
        .unwrap();
        assert_eq!(
            version_and_splits("v1_idx"),
            (1, 0),
            "version 1 after inserts"
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM lsh_index_check('v1_idx')").unwrap(),
            Some(0)
        );
        let nearest = "SET LOCAL enable_seqscan = off; SET LOCAL lsh.rerank = 1000;
             SELECT id FROM v1_t ORDER BY v <-> (SELECT v FROM v1_t WHERE id = 42) LIMIT 1";
        assert_eq!(Spi::get_one::<i32>(nearest).unwrap(), Some(42));

        Spi::run("REINDEX INDEX v1_idx").unwrap();
        let (version, splits) = version_and_splits("v1_idx");
        assert_eq!(
            version,
            page::VERSION_WITHOUT_LEARNED,
            "REINDEX of a 100-row index (no learned planes) writes version 2"
        );
        assert!(
            splits >= 15,
            "a 600-d build splits about one vector in five: {splits}"
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM lsh_index_check('v1_idx')").unwrap(),
            Some(0)
        );
        assert_eq!(Spi::get_one::<i32>(nearest).unwrap(), Some(42));
    }

    /// Runs `sql` inside a PL/pgSQL exception block (a subtransaction) and returns "ok" or
    /// "SQLSTATE|message|hint".
    fn outcome(sql: &str) -> String {
        Spi::get_one::<String>(&format!("SELECT pg_temp.outcome($q${sql}$q$)"))
            .expect("outcome() runs")
            .expect("outcome() returns text")
    }

    #[pg_test]
    fn other_format_version_is_refused_with_reindex_hint() {
        Spi::run(
            "CREATE TABLE fmt_t (id int, v embedding(3));
             INSERT INTO fmt_t SELECT i, ('[' || i || ',' || i % 7 || ',1]')::embedding
               FROM generate_series(1, 200) i;
             CREATE INDEX fmt_idx ON fmt_t USING lsh (v embedding_l2_ops);
             CREATE FUNCTION pg_temp.outcome(q text) RETURNS text LANGUAGE plpgsql AS $f$
             DECLARE st text; msg text; hint text;
             BEGIN
               EXECUTE q;
               RETURN 'ok';
             EXCEPTION WHEN others THEN
               GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
               RETURN st || '|' || msg || '|' || hint;
             END $f$;
             SET LOCAL enable_seqscan = off",
        )
        .unwrap();
        let scan = "SELECT id FROM fmt_t ORDER BY v <-> '[3,3,1]' LIMIT 5";
        assert_eq!(outcome(scan), "ok");

        set_version("fmt_idx", page::VERSION + 1);

        let schema = Spi::get_one::<String>("SELECT current_schema()::text")
            .unwrap()
            .unwrap();
        let want = format!(
            "55000|lsh index \"fmt_idx\" has on-disk format version {}, this pg_imgsim reads versions {} to {}|REINDEX INDEX {schema}.fmt_idx",
            page::VERSION + 1,
            page::OLDEST_READABLE_VERSION,
            page::VERSION
        );
        assert_eq!(outcome(scan), want, "index scan");
        assert_eq!(
            outcome("INSERT INTO fmt_t VALUES (0, '[1,2,3]')"),
            want,
            "insert"
        );
        assert_eq!(
            outcome("SELECT * FROM lsh_index_check('fmt_idx')"),
            want,
            "lsh_index_check"
        );

        Spi::run("REINDEX INDEX fmt_idx").unwrap();
        assert_eq!(outcome(scan), "ok", "after REINDEX");
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM lsh_index_check('fmt_idx')").unwrap(),
            Some(0),
            "lsh_index_check after REINDEX"
        );
    }
}
