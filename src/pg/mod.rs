//! PostgreSQL glue: everything that talks to the server (types, SQL functions, GUCs, the access method).

// The `pub unsafe extern "C-unwind"` V1 functions here are called only by PostgreSQL's fmgr; their
// safety contract is their SQL declaration in sql/*.sql (argument types, STRICT), stated at each body.
#![allow(clippy::missing_safety_doc)]

pub mod am;
pub mod embed;
pub mod fmgr;
pub mod gucs;
pub mod types;
