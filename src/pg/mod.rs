//! PostgreSQL glue: everything that talks to the server (types, SQL functions, GUCs, the access method).

// The `pub unsafe extern "C-unwind"` V1 functions here are called only by PostgreSQL's fmgr; their
// safety contract is their SQL declaration in sql/*.sql (argument types, STRICT), stated at each body.
#![allow(clippy::missing_safety_doc)]
// Relation, Buffer and scan handles are raw pointers handed to us by PostgreSQL for the duration of a
// callback; the small helpers taking them are safe to call with such handles, as PostgreSQL's own C
// helpers are.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

pub mod am;
pub mod compat;
pub mod embed;
pub mod fmgr;
pub mod gucs;
pub mod service;
pub mod types;
