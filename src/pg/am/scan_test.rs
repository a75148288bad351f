//! `cargo pgrx test`: the server's index scan (scan.rs) returns exactly what the in-memory twin
//! `imgsim_algo::lsh::MemIndex::search` returns for the same model, rows and settings, in both scan
//! modes, so that the simulations that choose defaults and the index that serves queries cannot
//! drift apart.

#[pgrx::pg_schema]
mod tests {
    use crate::pg::am::shape;
    use imgsim_algo::estimator::gaussian_unit_vectors;
    use imgsim_algo::lsh::{MemIndex, ScanMode, SearchParams};
    use pgrx::prelude::*;
    use std::sync::Arc;

    const DIMS: usize = 32;
    const ROWS: usize = 2000;

    fn literal(v: &[f32]) -> String {
        let parts: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
        format!("'[{}]'", parts.join(","))
    }

    /// Table `name` of `ROWS` Gaussian directions (no clusters, many rows at similar distances: hard for
    /// the sketch) with an lsh cosine index built `with` these options, and the in-memory index with
    /// the server's own model (parameters, mean and learned planes read from the index).
    fn twin(name: &str, with: &str) -> MemIndex {
        let data = gaussian_unit_vectors(10, ROWS, DIMS);
        Spi::run(&format!(
            "CREATE TABLE {name} (id int, v embedding({DIMS}))"
        ))
        .unwrap();
        let values: Vec<String> = data
            .chunks_exact(DIMS)
            .enumerate()
            .map(|(i, r)| format!("({i}, {})", literal(r)))
            .collect();
        Spi::run(&format!("INSERT INTO {name} VALUES {}", values.join(","))).unwrap();
        Spi::run(&format!(
            "CREATE INDEX {name}_idx ON {name} USING lsh (v embedding_cosine_ops) {with}"
        ))
        .unwrap();
        let model = with_index(&format!("{name}_idx"), |index| {
            shape::load(index).expect("index built").model.clone()
        });
        MemIndex::with_model(model, Arc::from(data.as_slice())).unwrap()
    }

    /// `f` of index `name`, open and AccessShareLocked while it runs.
    fn with_index<R>(name: &str, f: impl FnOnce(pg_sys::Relation) -> R) -> R {
        let oid = Spi::get_one::<pg_sys::Oid>(&format!("SELECT '{name}'::regclass::oid"))
            .unwrap()
            .unwrap();
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        // SAFETY: the index exists (created by the test, in this transaction) and stays open and
        // locked while `f` reads it.
        unsafe {
            let index = pg_sys::index_open(oid, lock);
            let r = f(index);
            pg_sys::index_close(index, lock);
            r
        }
    }

    /// Compares the top 10 of 15 queries between the server (settings already SET) and `mem`.
    fn compare(name: &str, mem: &MemIndex, sp: &SearchParams) {
        for q in gaussian_unit_vectors(11, 15, DIMS).chunks_exact(DIMS) {
            let want: Vec<i32> = mem
                .search(q, sp)
                .unwrap()
                .neighbors
                .iter()
                .map(|n| n.id as i32)
                .collect();
            let got = Spi::get_one::<Vec<i32>>(&format!(
                "SELECT array_agg(id) FROM (SELECT id FROM {name} ORDER BY v <=> {}::embedding LIMIT 10) s",
                literal(q)
            ))
            .unwrap()
            .unwrap();
            assert_eq!(got, want, "{sp:?}");
        }
    }

    #[pg_test]
    fn sketch_scan_matches_the_in_memory_twin() {
        let mem = twin("twin_s", "");
        assert_eq!(
            mem.model().params().tables,
            1,
            "a small index has one table"
        );
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        assert!(
            mem.model().learned().is_some(),
            "a one-table index of 2000 rows has learned planes"
        );
        Spi::run("SET LOCAL lsh.scan_mode = 'sketches'").unwrap();
        // Shares of the rows read first (superbuckets nearest the query): 0.1 is less than the
        // shortlist at rerank 150 (the shortlist's size is read then).
        for scan_fraction in [0.1, 0.35, 1.0] {
            for rerank in [10usize, 40, 150] {
                Spi::run(&format!(
                    "SET LOCAL lsh.rerank = {rerank}; SET LOCAL lsh.scan_fraction = {scan_fraction}"
                ))
                .unwrap();
                let sp = SearchParams {
                    k: 10,
                    max_candidates: 0,
                    max_probes: 0,
                    rerank,
                    mode: ScanMode::Sketches,
                    scan_fraction,
                };
                compare("twin_s", &mem, &sp);
            }
        }
    }

    /// A filtered query that fetches every matching row runs through every phase and pass of a
    /// learned sketch scan: each row comes back exactly once, closest first within each batch.
    #[pg_test]
    fn sketch_scan_phases_return_every_row_once() {
        let mem = twin("twin_p", "");
        assert!(mem.model().learned().is_some());
        Spi::run("SET LOCAL enable_seqscan = off; SET LOCAL lsh.scan_mode = 'sketches'").unwrap();
        let q = literal(&gaussian_unit_vectors(12, 1, DIMS));
        for (fraction, rerank) in [(0.05, 10), (0.3, 7), (1.0, 50)] {
            Spi::run(&format!(
                "SET LOCAL lsh.scan_fraction = {fraction}; SET LOCAL lsh.rerank = {rerank}"
            ))
            .unwrap();
            for (filter, want) in [("true", ROWS as i64), ("id % 7 = 3", 286)] {
                let (n, distinct) = Spi::get_two::<i64, i64>(&format!(
                    "SELECT count(*), count(DISTINCT id) FROM (SELECT id FROM twin_p WHERE {filter} \
                     ORDER BY v <=> {q}::embedding LIMIT 100000) s"
                ))
                .unwrap();
                assert_eq!(
                    (n, distinct),
                    (Some(want), Some(want)),
                    "fraction {fraction}, rerank {rerank}, {filter}"
                );
            }
        }
    }

    /// Blocks of index `name` for which this backend holds a buffer guess (buffer::recent).
    fn guessed_blocks(name: &str) -> usize {
        with_index(name, |index| {
            (1..shape::nblocks(index))
                .filter(|&b| crate::pg::am::buffer::recent::guess(index, b).is_some())
                .count()
        })
    }

    /// Scans read bucket and vector pages through this backend's buffer guesses: the second scan
    /// (guesses in place) returns what the first did, and after TRUNCATE (stale guesses: the same
    /// storage, emptied) with a reload, and after REINDEX (new storage), every row of the new data
    /// comes back once and none of the old.
    #[pg_test]
    fn buffer_guesses_survive_truncate_and_reindex() {
        let mem = twin("twin_r", "");
        Spi::run("SET LOCAL enable_seqscan = off; SET LOCAL lsh.scan_mode = 'sketches'").unwrap();
        Spi::run("SET LOCAL lsh.scan_fraction = 1; SET LOCAL lsh.rerank = 150").unwrap();
        let sp = SearchParams {
            k: 10,
            max_candidates: 0,
            max_probes: 0,
            rerank: 150,
            mode: ScanMode::Sketches,
            scan_fraction: 1.0,
        };
        compare("twin_r", &mem, &sp);
        assert!(guessed_blocks("twin_r_idx") > 0, "the scan left guesses");
        compare("twin_r", &mem, &sp);
        let q = literal(&gaussian_unit_vectors(14, 1, DIMS));
        let every_row = format!(
            "SELECT count(*), count(DISTINCT id), min(id) FROM (SELECT id FROM twin_r \
             ORDER BY v <=> {q}::embedding LIMIT 100000) s"
        );
        for step in ["TRUNCATE twin_r", "REINDEX INDEX twin_r_idx"] {
            Spi::run(step).unwrap();
            if step.starts_with("TRUNCATE") {
                // The table was created in this transaction, so TRUNCATE empties its storage in
                // place (same key): the guesses left are stale, PostgreSQL dropped those buffers,
                // and the tag check must refuse them.
                assert!(guessed_blocks("twin_r_idx") > 0, "stale guesses kept");
                let values: Vec<String> = gaussian_unit_vectors(13, 500, DIMS)
                    .chunks_exact(DIMS)
                    .enumerate()
                    .map(|(i, r)| format!("({}, {})", 10_000 + i, literal(r)))
                    .collect();
                Spi::run(&format!("INSERT INTO twin_r VALUES {}", values.join(","))).unwrap();
            }
            for _ in 0..2 {
                let got = Spi::get_three::<i64, i64, i32>(&every_row).unwrap();
                assert_eq!(got, (Some(500), Some(500), Some(10_000)), "after {step}");
            }
        }
    }

    /// A temporary index keeps no guesses (its storage key may equal a permanent index's) and
    /// returns every row once.
    #[pg_test]
    fn temporary_index_keeps_no_buffer_guesses() {
        Spi::run(&format!(
            "CREATE TEMP TABLE tmp_r (id int, v embedding({DIMS})); \
             CREATE INDEX tmp_r_idx ON tmp_r USING lsh (v embedding_cosine_ops)"
        ))
        .unwrap();
        let values: Vec<String> = gaussian_unit_vectors(15, 300, DIMS)
            .chunks_exact(DIMS)
            .enumerate()
            .map(|(i, r)| format!("({i}, {})", literal(r)))
            .collect();
        Spi::run(&format!("INSERT INTO tmp_r VALUES {}", values.join(","))).unwrap();
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        let q = literal(&gaussian_unit_vectors(16, 1, DIMS));
        for _ in 0..2 {
            let got = Spi::get_two::<i64, i64>(&format!(
                "SELECT count(*), count(DISTINCT id) FROM (SELECT id FROM tmp_r \
                 ORDER BY v <=> {q}::embedding LIMIT 100000) s"
            ))
            .unwrap();
            assert_eq!(got, (Some(300), Some(300)));
        }
        assert_eq!(guessed_blocks("tmp_r_idx"), 0);
    }

    #[pg_test]
    fn bucket_probing_matches_the_in_memory_twin() {
        let mem = twin("twin_b", "WITH (tables = 4, bits = 6)");
        let tables = mem.model().params().tables as usize;
        assert_eq!(tables, 4);
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        Spi::run("SET LOCAL lsh.scan_mode = 'buckets'").unwrap();
        for (probes, max_candidates, rerank) in
            [(1usize, 100usize, 20usize), (4, 300, 50), (8, 5000, 200)]
        {
            Spi::run(&format!(
                "SET LOCAL lsh.probes = {probes}; SET LOCAL lsh.max_candidates = {max_candidates}; \
                 SET LOCAL lsh.rerank = {rerank}"
            ))
            .unwrap();
            let sp = SearchParams {
                k: 10,
                max_candidates,
                max_probes: probes * tables,
                rerank,
                mode: ScanMode::Buckets,
                scan_fraction: 1.0,
            };
            compare("twin_b", &mem, &sp);
        }
    }
}
