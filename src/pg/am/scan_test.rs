//! `cargo pgrx test`: the server's sketch scan (scan.rs) returns exactly what the in-memory twin
//! `imgsim_algo::lsh::MemIndex::search` returns for the same model, rows and settings, so that the
//! simulations that choose defaults and the index that serves queries cannot drift apart.

#[pgrx::pg_schema]
mod tests {
    use crate::pg::am::shape;
    use imgsim_algo::estimator::gaussian_unit_vectors;
    use imgsim_algo::lsh::{LshModel, MemIndex, ScanMode, SearchParams};
    use pgrx::prelude::*;
    use std::sync::Arc;

    const DIMS: usize = 32;
    const ROWS: usize = 2000;

    fn literal(v: &[f32]) -> String {
        let parts: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
        format!("'[{}]'", parts.join(","))
    }

    #[pg_test]
    fn sketch_scan_matches_the_in_memory_twin() {
        // Gaussian directions: no clusters, many rows at similar distances (hard for the sketch).
        let data = gaussian_unit_vectors(10, ROWS, DIMS);
        let queries = gaussian_unit_vectors(11, 15, DIMS);
        Spi::run(&format!(
            "CREATE TABLE twin_t (id int, v embedding({DIMS}))"
        ))
        .unwrap();
        let values: Vec<String> = data
            .chunks_exact(DIMS)
            .enumerate()
            .map(|(i, r)| format!("({i}, {})", literal(r)))
            .collect();
        Spi::run(&format!("INSERT INTO twin_t VALUES {}", values.join(","))).unwrap();
        Spi::run("CREATE INDEX twin_idx ON twin_t USING lsh (v embedding_cosine_ops)").unwrap();
        let oid = Spi::get_one::<pg_sys::Oid>("SELECT 'twin_idx'::regclass::oid")
            .unwrap()
            .unwrap();
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        // SAFETY: the index exists (created above, in this transaction) and stays open and locked
        // while its meta page is read.
        let model = unsafe {
            let index = pg_sys::index_open(oid, lock);
            let s = shape::load(index).expect("index built");
            pg_sys::index_close(index, lock);
            LshModel::new(*s.params(), s.model.mean().to_vec()).unwrap()
        };
        assert_eq!(model.params().tables, 1, "a small index has one table");
        let mem = MemIndex::with_model(model, Arc::from(data.as_slice())).unwrap();
        Spi::run("SET LOCAL enable_seqscan = off").unwrap();
        Spi::run("SET LOCAL lsh.scan_mode = 'sketches'").unwrap();
        for rerank in [10usize, 40, 150] {
            Spi::run(&format!("SET LOCAL lsh.rerank = {rerank}")).unwrap();
            for q in queries.chunks_exact(DIMS) {
                let sp = SearchParams {
                    k: 10,
                    max_candidates: 0,
                    max_probes: 0,
                    rerank,
                    mode: ScanMode::Sketches,
                };
                let want: Vec<i32> = mem
                    .search(q, &sp)
                    .unwrap()
                    .neighbors
                    .iter()
                    .map(|n| n.id as i32)
                    .collect();
                let got = Spi::get_one::<Vec<i32>>(&format!(
                    "SELECT array_agg(id) FROM (SELECT id FROM twin_t ORDER BY v <=> {}::embedding LIMIT 10) s",
                    literal(q)
                ))
                .unwrap()
                .unwrap();
                assert_eq!(got, want, "rerank {rerank}");
            }
        }
    }
}
