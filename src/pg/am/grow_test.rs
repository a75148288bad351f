//! `cargo pgrx test`: structure pages left unused by a layout rebuild that a crash interrupted (grow.rs)
//! are found and reused by VACUUM's cleanup. The crash is simulated with the rebuild's own steps: the
//! "rebuild pending" mark, then a complete new structure written but never switched to.

#[pgrx::pg_schema]
mod tests {
    use crate::pg::am::{build, grow, shape};
    use pgrx::prelude::*;

    #[pg_test]
    fn vacuum_reuses_pages_of_an_interrupted_rebuild() {
        Spi::run(
            "CREATE TABLE orphan_t (id int, v embedding(8));
             INSERT INTO orphan_t SELECT i, ARRAY(SELECT (i % 13) + j * 0.01 FROM generate_series(1, 8) j)::embedding
               FROM generate_series(1, 3000) i;
             CREATE INDEX orphan_idx ON orphan_t USING lsh (v)",
        )
        .unwrap();
        let oid = Spi::get_one::<pg_sys::Oid>("SELECT 'orphan_idx'::regclass::oid")
            .unwrap()
            .unwrap();
        let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
        // SAFETY: the index exists (created above, in this transaction) and stays open and locked while
        // its pages are written and read.
        let (written, first, second) = unsafe {
            let index = pg_sys::index_open(oid, lock);
            let old = shape::load(index).expect("index set up");
            let mut vrefs = Vec::new();
            shape::for_each_live_vector(index, false, |v, _, _| vrefs.push(v));
            let before = shape::nblocks(index);
            grow::set_rebuild_pending(index, true);
            let mean = old.model.mean().to_vec();
            build::write_structure(index, *old.params(), mean, &vrefs, false);
            let written = shape::nblocks(index) - before;
            let first = grow::reclaim_unused_structure_pages(index);
            let second = grow::reclaim_unused_structure_pages(index);
            pg_sys::index_close(index, lock);
            (written, first, second)
        };
        assert!(written > 8, "the new structure took {written} pages");
        assert_eq!(
            first, written,
            "every page of the unused structure is reclaimed"
        );
        assert_eq!(second, 0, "the mark is cleared: nothing more to do");
        let problems = Spi::get_one::<i64>("SELECT count(*) FROM lsh_index_check('orphan_idx')")
            .unwrap()
            .unwrap();
        assert_eq!(problems, 0);
        // The reclaimed pages take new rows, and the index still answers.
        Spi::run(
            "INSERT INTO orphan_t SELECT i, ARRAY(SELECT (i % 13) + j * 0.01 FROM generate_series(1, 8) j)::embedding
               FROM generate_series(3001, 3500) i",
        )
        .unwrap();
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        let found = Spi::get_one::<i64>(
            "SELECT count(*) FROM (SELECT id FROM orphan_t ORDER BY v <-> (SELECT v FROM orphan_t WHERE id = 3333) LIMIT 5) s",
        )
        .unwrap()
        .unwrap();
        assert_eq!(found, 5);
    }
}
