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

/// Where a test's data lives, as `--db` would name it: a fresh PostgreSQL schema if
/// `KEYWARD_TEST_POSTGRES` is set, else the SQLite file `sqlite_path`.
pub fn database_url(sqlite_path: &Path) -> Result<String> {
    match std::env::var(POSTGRES_VARIABLE) {
        Ok(url) if !url.is_empty() => fresh_schema(&url),
        _ => Ok(sqlite_path.display().to_string()),
    }
}

/// [`database_url`], parsed.
pub fn location(sqlite_path: &Path) -> Result<Location> {
    Location::parse(&database_url(sqlite_path)?)
}

/// A store on a fresh PostgreSQL schema if `KEYWARD_TEST_POSTGRES` is set, else in memory.
pub fn store() -> Result<Store> {
    match std::env::var(POSTGRES_VARIABLE) {
        Ok(url) if !url.is_empty() => Store::connect(&Location::parse(&fresh_schema(&url)?)?),
        _ => Store::open_in_memory(),
    }
}

/// Whether the suites are running on PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(POSTGRES_VARIABLE).is_ok_and(|u| !u.is_empty())
}

/// Creates an empty schema on the server at `url`; the URL of a database whose connections
/// use it (through the `options` parameter's `search_path`).
pub fn fresh_schema(url: &str) -> Result<String> {
    let schema = format!("t_{}", Uuid::new_v4().simple());
    let client = PostgresOptions::from_url(url)?.connect_once()?;
    futures::executor::block_on(client.batch_execute(&format!("CREATE SCHEMA {schema}")))?;
    let join = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{join}options=-c%20search_path%3D{schema}"))
}
