//! pg_imgsim: image similarity search inside PostgreSQL.
//!
//! Three worlds, kept apart:
//! - `imgsim-algo` (src/algo): pure algorithms — distances, LSH hashing, multi-probe. Plain `cargo test`.
//! - `imgsim-pipeline` (src/pipeline): image decode, preprocessing, ONNX Runtime sessions. No PostgreSQL.
//! - this crate (src/pg): the PostgreSQL glue — the `embedding` type, SQL functions, GUCs, the `lsh` AM.

use pgrx::prelude::*;

pub mod pg;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/embedding.sql", name = "embedding", bootstrap);
extension_sql_file!(
    "../sql/embed.sql",
    name = "embed",
    requires = [
        "embedding",
        pg::embed::imgsim_models,
        pg::service::imgsim_service_stats
    ]
);
extension_sql_file!("../sql/lsh.sql", name = "lsh", finalize);

/// Registers GUCs and index options when the library is loaded; with `shared_preload_libraries`, also the
/// inference service's shared memory and background worker.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    pg::gucs::init();
    pg::service::init();
    pg::embed::init_gucs();
    pg::am::options::init();
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn embedding_round_trip() {
        let s = Spi::get_one::<String>("SELECT '[1,2.5,-3e-2]'::embedding::text").unwrap();
        assert_eq!(s.as_deref(), Some("[1,2.5,-0.03]"));
    }
}

/// Hooks for `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
