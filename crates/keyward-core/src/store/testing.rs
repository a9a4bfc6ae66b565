//! Test support: the engine every store- and HTTP-level test runs on. Set
//! `KEYWARD_TEST_POSTGRES` to a PostgreSQL URL (`./dev test` starts a throwaway server and
//! runs the suites once per engine) and each test gets a schema of its own there; unset, a
//! SQLite file or an in-memory database.

use std::path::Path;

use uuid::Uuid;

use super::{Location, PostgresOptions, Store};
use crate::error::Result;

/// The variable naming the test PostgreSQL server.
pub const POSTGRES_VARIABLE: &str = "KEYWARD_TEST_POSTGRES";

/// Where a test's data lives: a fresh PostgreSQL schema if `KEYWARD_TEST_POSTGRES` is set,
/// else the SQLite file `sqlite_path`.
pub fn location(sqlite_path: &Path) -> Result<Location> {
    match std::env::var(POSTGRES_VARIABLE) {
        Ok(url) if !url.is_empty() => Ok(Location::Postgres(fresh_schema(&url)?)),
        _ => Ok(Location::Sqlite(sqlite_path.to_path_buf())),
    }
}

/// A store on a fresh PostgreSQL schema if `KEYWARD_TEST_POSTGRES` is set, else in memory.
pub fn store() -> Result<Store> {
    match std::env::var(POSTGRES_VARIABLE) {
        Ok(url) if !url.is_empty() => Store::connect(&Location::Postgres(fresh_schema(&url)?)),
        _ => Store::open_in_memory(),
    }
}

/// Whether the suites are running on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(POSTGRES_VARIABLE).is_ok_and(|u| !u.is_empty())
}

/// Creates an empty schema on the server at `url` and options whose connections use it.
pub fn fresh_schema(url: &str) -> Result<PostgresOptions> {
    let mut options = PostgresOptions::from_url(url)?;
    let schema = format!("t_{}", Uuid::new_v4().simple());
    options
        .connect_once()?
        .batch_execute(&format!("CREATE SCHEMA {schema}"))?;
    options.set_server_option(&format!("-c search_path={schema}"));
    Ok(options)
}
