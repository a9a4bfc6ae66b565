//! One SQL surface over the two engines. The table modules write each statement once, in the
//! dialect both engines share (numbered `?N` parameter markers, `ON CONFLICT`, `RETURNING`, `CASE`
//! instead of SQLite's two-argument `MAX`), pass arguments as [`Param`]s and read columns
//! through [`Row::get`]; this module runs it on SQLite (rusqlite) or PostgreSQL (tokio-postgres),
//! translating the markers to `$N` for the latter. PostgreSQL calls are tokio-postgres
//! futures completed in place (`block_on`): the store's API is synchronous, its connections'
//! I/O runs on a runtime of its own (see `pg.rs`), so a call works from any thread, a tokio
//! worker included (keywardd still makes them from its blocking pool). Column types are chosen so that one
//! Rust type reads both: `i64` for every number (`INTEGER` / `BIGINT`), `bool` for flags,
//! `Vec<u8>` for UUIDs and hashes (`BLOB` / `BYTEA`), `String` for text.

use std::cell::RefCell;
use std::collections::HashMap;

use futures::executor::block_on;
use tokio_postgres::error::SqlState;

use super::Tx;
use crate::error::{CoreError, Result};

/// A value bound to a parameter marker: anything both drivers can send.
pub trait Param: rusqlite::ToSql + Sync {
    fn pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync);
}

impl<T: rusqlite::ToSql + tokio_postgres::types::ToSql + Sync> Param for T {
    fn pg(&self) -> &(dyn tokio_postgres::types::ToSql + Sync) {
        self
    }
}

/// `args![a, b]`: the arguments of one statement, in marker order.
macro_rules! args {
    ($($arg:expr),* $(,)?) => {
        &[$(&$arg as &dyn $crate::store::sql::Param),*] as &[&dyn $crate::store::sql::Param]
    };
}
pub(crate) use args;

/// A column value either driver can read.
pub trait Column: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a> {}
impl<T: rusqlite::types::FromSql + for<'a> tokio_postgres::types::FromSql<'a>> Column for T {}

/// One result row, from either engine.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r tokio_postgres::Row),
}

impl Row<'_> {
    pub fn get<T: Column>(&self, index: usize) -> Result<T> {
        match self {
            Row::Sqlite(r) => Ok(r.get(index)?),
            Row::Postgres(r) => Ok(r.try_get(index)?),
        }
    }
}

/// The open transaction a [`Tx`] wraps.
pub(super) enum Db<'c> {
    Sqlite(rusqlite::Transaction<'c>),
    /// postgres' calls take `&mut`, the store API `&self`: a `Tx` never leaves its thread.
    Postgres(RefCell<PgTx<'c>>),
}

pub(super) struct PgTx<'c> {
    pub(super) tx: tokio_postgres::Transaction<'c>,
    /// Prepared statements of this connection, by their SQLite-dialect text.
    pub(super) statements: &'c mut HashMap<String, tokio_postgres::Statement>,
    /// A statement failed with a serialisation failure or deadlock: the transaction is dead
    /// and [`super::Store::write`] runs it again, whatever the caller made of the error.
    pub(super) conflicted: bool,
}

impl PgTx<'_> {
    fn statement(&mut self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let prepared = block_on(self.tx.prepare(&postgres_dialect(sql)));
        let prepared = self.check(prepared)?;
        self.statements.insert(sql.to_string(), prepared.clone());
        Ok(prepared)
    }

    /// Notes a conflict before handing the error on.
    fn check<T>(&mut self, outcome: std::result::Result<T, tokio_postgres::Error>) -> Result<T> {
        outcome.map_err(|e| {
            if is_conflict(&e) {
                self.conflicted = true;
            }
            CoreError::from(e)
        })
    }

    fn pg_args<'a>(
        args: &'a [&'a dyn Param],
    ) -> impl ExactSizeIterator<Item = &'a (dyn tokio_postgres::types::ToSql + Sync)> {
        args.iter().map(|a| a.pg())
    }
}

/// PostgreSQL's "try again" errors: under SERIALIZABLE, a transaction that lost a conflict.
pub(crate) fn is_conflict(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// PostgreSQL is away for now rather than refusing the statement: the connection is closed
/// or could not be made (no SQLSTATE, a socket error), or the server said so (class 08,
/// connection exceptions; 57P01-03, shutting down or starting up; 53300, out of connections).
pub(crate) fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code().map(SqlState::code) {
        Some(code) => code.starts_with("08") || code.starts_with("57P") || code == "53300",
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// A PostgreSQL error in words: the server's severity, message and SQLSTATE if it sent one,
/// else tokio-postgres's description and its cause.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        // A TLS handshake's or a connection's failure is in the causes.
        None => crate::error::with_causes(e),
    }
}

impl Tx<'_> {
    /// Runs a statement; the number of rows it changed.
    pub(super) fn execute(&self, sql: &str, args: &[&dyn Param]) -> Result<usize> {
        match &self.db {
            Db::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(sql)?;
                Ok(stmt.execute(&*sqlite_args(args))?)
            }
            Db::Postgres(cell) => {
                let mut pg = cell.borrow_mut();
                let stmt = pg.statement(sql)?;
                let n = block_on(pg.tx.execute(&stmt, &pg_slice(args)));
                Ok(pg.check(n)? as usize)
            }
        }
    }

    /// The first row a query returns, if any, read by `read`.
    pub(super) fn query_row<T>(
        &self,
        sql: &str,
        args: &[&dyn Param],
        read: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        match &self.db {
            Db::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(sql)?;
                let mut rows = stmt.query(&*sqlite_args(args))?;
                match rows.next()? {
                    Some(r) => read(&Row::Sqlite(r)).map(Some),
                    None => Ok(None),
                }
            }
            Db::Postgres(cell) => {
                let mut pg = cell.borrow_mut();
                let stmt = pg.statement(sql)?;
                let outcome = block_on(pg.tx.query_opt(&stmt, &pg_slice(args)));
                match pg.check(outcome)? {
                    Some(r) => read(&Row::Postgres(&r)).map(Some),
                    None => Ok(None),
                }
            }
        }
    }

    /// A query's one value (an aggregate such as `COUNT(*)`).
    pub(super) fn query_value<T: Column>(&self, sql: &str, args: &[&dyn Param]) -> Result<T> {
        self.query_row(sql, args, |r| r.get(0))?
            .ok_or_else(|| CoreError::Corrupt(format!("no row from: {sql}")))
    }

    /// Every row a query returns, each read by `read`.
    pub(super) fn query_rows<T>(
        &self,
        sql: &str,
        args: &[&dyn Param],
        mut read: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.stream(sql, args, &mut read, |rows| rows.collect())
    }

    /// Hands a query's rows, read by `read`, to `consume` one at a time, without loading
    /// them all (the log walk reads every event ever written).
    pub(super) fn stream<R, T>(
        &self,
        sql: &str,
        args: &[&dyn Param],
        read: &mut dyn FnMut(&Row<'_>) -> Result<R>,
        consume: impl FnOnce(&mut dyn Iterator<Item = Result<R>>) -> Result<T>,
    ) -> Result<T> {
        match &self.db {
            Db::Sqlite(tx) => {
                let mut stmt = tx.prepare_cached(sql)?;
                let mut rows = stmt.query(&*sqlite_args(args))?;
                let mut iter = std::iter::from_fn(|| match rows.next() {
                    Ok(Some(r)) => Some(read(&Row::Sqlite(r))),
                    Ok(None) => None,
                    Err(e) => Some(Err(e.into())),
                });
                consume(&mut iter)
            }
            Db::Postgres(cell) => {
                let mut pg = cell.borrow_mut();
                let stmt = pg.statement(sql)?;
                let PgTx { tx, conflicted, .. } = &mut *pg;
                let rows = match block_on(tx.query_raw(&stmt, PgTx::pg_args(args))) {
                    Ok(rows) => rows,
                    Err(e) => {
                        *conflicted |= is_conflict(&e);
                        return Err(e.into());
                    }
                };
                let mut rows = futures::executor::block_on_stream(Box::pin(rows));
                let mut iter = std::iter::from_fn(|| match rows.next()? {
                    Ok(r) => Some(read(&Row::Postgres(&r))),
                    Err(e) => {
                        *conflicted |= is_conflict(&e);
                        Some(Err(e.into()))
                    }
                });
                consume(&mut iter)
            }
        }
    }

    /// Which engine this transaction runs on.
    pub fn engine(&self) -> Engine {
        match self.db {
            Db::Sqlite(_) => Engine::Sqlite,
            Db::Postgres(_) => Engine::Postgres,
        }
    }

    /// Runs SQL text outside the store API, on either engine. Only tests use it (keyward-core's
    /// and keyward-server's integration tests, which `cfg(test)` cannot reach): to prove the log
    /// refuses updates and deletes, and to tamper with rows as an attacker with the database
    /// would. Not for production code.
    pub fn raw_execute(&self, sql: &str) -> Result<()> {
        match &self.db {
            Db::Sqlite(tx) => Ok(tx.execute_batch(sql)?),
            Db::Postgres(cell) => {
                let mut pg = cell.borrow_mut();
                let outcome = block_on(pg.tx.batch_execute(sql));
                pg.check(outcome)
            }
        }
    }

    /// A test's query of one value (see [`Tx::raw_execute`]), in the shared dialect.
    pub fn raw_value<T: Column>(&self, sql: &str, args: &[&dyn Param]) -> Result<T> {
        self.query_value(sql, args)
    }

    /// The SQLite connection under this transaction, for SQLite-only tests (pragmas).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.db {
            Db::Sqlite(tx) => Some(tx),
            Db::Postgres(_) => None,
        }
    }
}

/// The two engines the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

fn sqlite_args<'a>(args: &'a [&'a dyn Param]) -> Vec<&'a dyn rusqlite::ToSql> {
    args.iter().map(|a| *a as &dyn rusqlite::ToSql).collect()
}

fn pg_slice<'a>(args: &'a [&'a dyn Param]) -> Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)> {
    args.iter().map(|a| a.pg()).collect()
}

/// SQLite's parameter markers in PostgreSQL's spelling: `?N` becomes `$N`, and a bare `?` takes the
/// next number after the largest so far, as SQLite numbers it. Quoted text is left alone.
pub(super) fn postgres_dialect(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut largest = 0u32;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if c == '\'' {
            quoted = !quoted;
            out.push(c);
            continue;
        }
        if c != '?' || quoted {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        let n = if digits.is_empty() {
            largest + 1
        } else {
            digits.parse().unwrap_or(u32::MAX)
        };
        largest = largest.max(n);
        out.push('$');
        out.push_str(&n.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::postgres_dialect;

    #[test]
    fn parameter_markers_are_renumbered_as_sqlite_numbers_them() {
        assert_eq!(
            postgres_dialect("SELECT ?1, ?2 WHERE a = ?2 AND b = ?10"),
            "SELECT $1, $2 WHERE a = $2 AND b = $10"
        );
        assert_eq!(
            postgres_dialect("a = ? AND b IN (?, ?)"),
            "a = $1 AND b IN ($2, $3)"
        );
        assert_eq!(postgres_dialect("x = ?3 AND y = ?"), "x = $3 AND y = $4");
        assert_eq!(
            postgres_dialect("COALESCE(n, '?') = ?1"),
            "COALESCE(n, '?') = $1"
        );
    }
}
