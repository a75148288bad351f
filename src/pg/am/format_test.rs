//! `cargo pgrx test`: an lsh index whose meta page carries another on-disk format version is refused by
//! its readers (scan, insert, `lsh_index_check`) with SQLSTATE 55000 and the hint `REINDEX INDEX <name>`,
//! and REINDEX makes it usable again. The version is changed through the page code itself
//! (`page::read_meta` / `build::write_meta_page`), as a pg_imgsim with another `page::VERSION` would leave it.

#[pgrx::pg_schema]
mod tests {
    use crate::pg::am::buffer::{Lock, Locked};
    use crate::pg::am::{build, page};
    use pgrx::prelude::*;

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

        let oid = Spi::get_one::<pg_sys::Oid>("SELECT 'fmt_idx'::regclass::oid")
            .unwrap()
            .unwrap();
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        // SAFETY: the index exists (created above, in this transaction) and stays open and locked while
        // its block 0 (the meta page) is read and rewritten under an exclusive buffer lock.
        unsafe {
            let index = pg_sys::index_open(oid, lock);
            let mut buf = Locked::read(index, page::META_BLOCK, Lock::Exclusive);
            let mut meta = buf.page().read_meta(index);
            meta.version = page::VERSION + 1;
            build::write_meta_page(index, &mut buf, &meta);
            drop(buf);
            pg_sys::index_close(index, lock);
        }

        let schema = Spi::get_one::<String>("SELECT current_schema()::text")
            .unwrap()
            .unwrap();
        let want = format!(
            "55000|lsh index \"fmt_idx\" has on-disk format version {}, this pg_imgsim reads version {}|REINDEX INDEX {schema}.fmt_idx",
            page::VERSION + 1,
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
