//! One connection type over SQLite and PostgreSQL, with the slice of rusqlite's API the
//! control uses (`execute`, `query_row`, `prepare_cached` + `query_map`/`exists`, transactions),
//! so the store's queries and the service's transactions are the same code on both.
//!
//! SQL is written once, in the dialect both accept; for PostgreSQL it is rewritten as
//! `?N` → `$N` and two-argument `MAX`/`MIN` → `GREATEST`/`LEAST` (`dialect`). The schema is
//! written once as well and rendered for each database (`render_schema`); PostgreSQL's keeps
//! integers as BIGINT, so values cross as i64 on both.
//!
//! The parts: `value` (values and their Rust conversions), `params` (parameters in, rows out),
//! `error`, `dialect` (the rewriting), `connection` (the one connection type and its
//! transactions), `sqlite` (rusqlite called in place), `pg` (PostgreSQL on a thread of its
//! own).

mod connection;
mod dialect;
mod error;
mod params;
mod pg;
mod sqlite;
mod value;

// The facade names every public type of the layer.
pub use connection::{Connection, Statement, Transaction};
pub use dialect::{render_schema, to_postgres, Dialect};
pub use error::{Error, OptionalExtension, Result};
pub use params::{Params, Row, RowIndex};
pub use pg::{Pg, GENERIC_PLAN};
pub use value::{FromSql, ToSql, TypeError, Value};

/// `params![a, b]`: parameters of mixed types.
#[macro_export]
macro_rules! params {
    () => { &[] as &[&dyn $crate::sql::ToSql] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::sql::ToSql),+] as &[&dyn $crate::sql::ToSql] };
}
pub use crate::params;
