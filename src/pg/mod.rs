//! PostgreSQL glue: everything that talks to the server (types, SQL functions, GUCs, the access method).

pub mod fmgr;
pub mod types;
