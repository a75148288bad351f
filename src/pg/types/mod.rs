//! The `embedding` SQL type: storage, text/binary I/O, operators, casts and aggregates.

pub mod aggregates;
pub mod casts;
pub mod embedding;
pub mod io;
pub mod ops;
pub mod text;
