//! Moving a deployment from SQLite to PostgreSQL (`keywardd migrate`): every row of every
//! table copied as it is, in one transaction on the target, so the security log keeps its
//! numbers and hashes and its signed checkpoints still hold. Both databases are at the same
//! schema version (opening each brings it up to date), so their columns are the same; only
//! the types' spellings differ, and a value is converted where they do (SQLite's 0/1 flags
//! into PostgreSQL's BOOLEAN).

use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::sql::Param;
use super::{Backend, Store};
use crate::error::{CoreError, Result};
use crate::security_log::ChainReport;

/// Every table, parents before children (foreign keys hold at every insert).
pub const TABLES: &[&str] = &[
    "meta",
    "accounts",
    "authenticators",
    "devices",
    "sessions",
    "ceremonies",
    "recovery_keys",
    "events",
    "log_checkpoints",
    "limit_hits",
    "oidc_keys",
    "oidc_clients",
    "oidc_requests",
    "oidc_consents",
    "oidc_grants",
    "oidc_tokens",
    "oidc_assertions",
    "oidc_logouts",
    "browser_bindings",
    "account_keys",
    "oidc_device_codes",
    "proof_replays",
];

/// What a copy moved, and the log as the target now holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub rows: Vec<(String, u64)>,
    pub log: ChainReport,
}

/// One SQLite value on its way to either engine.
#[derive(Debug)]
struct Value(rusqlite::types::Value);

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use rusqlite::types::Value as V;
        match &self.0 {
            V::Null => Ok(IsNull::Yes),
            V::Integer(n) if *ty == Type::BOOL => (*n != 0).to_sql(ty, out),
            V::Integer(n) => n.to_sql(ty, out),
            V::Real(x) => x.to_sql(ty, out),
            V::Text(t) => t.to_sql(ty, out),
            V::Blob(b) => b.to_sql(ty, out),
        }
    }

    /// Checked per value in `to_sql`: a mismatch fails there, with the column's type named.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl Store {
    /// Copies everything in this (SQLite) store into `target`, which must be empty, in one
    /// transaction on the target; then walks the target's log. Nothing is written to the
    /// target if any row fails.
    pub fn copy_into(&self, target: &Store) -> Result<CopyReport> {
        let Backend::Sqlite(source) = &self.backend else {
            return Err(CoreError::BadLocation(
                "the database to copy from must be SQLite".into(),
            ));
        };
        let source = source.lock();
        let rows = target.write(|tx| {
            for table in TABLES {
                let n: i64 = tx.query_value(&format!("SELECT COUNT(*) FROM {table}"), &[])?;
                if n > 0 {
                    return Err(CoreError::BadLocation(format!(
                        "the database to copy into is not empty ({table} has {n} rows)"
                    )));
                }
            }
            let mut rows = Vec::new();
            for table in TABLES {
                let mut stmt = source.prepare(&format!("SELECT * FROM {table}"))?;
                let columns: Vec<String> =
                    stmt.column_names().iter().map(|c| c.to_string()).collect();
                let insert = format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    columns.join(", "),
                    (1..=columns.len())
                        .map(|i| format!("?{i}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let mut copied = 0u64;
                let mut read = stmt.query([])?;
                while let Some(row) = read.next()? {
                    let values = (0..columns.len())
                        .map(|i| row.get::<_, rusqlite::types::Value>(i).map(Value))
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    let args: Vec<&dyn Param> = values.iter().map(|v| v as &dyn Param).collect();
                    tx.execute(&insert, &args)?;
                    copied += 1;
                }
                rows.push((table.to_string(), copied));
            }
            Ok(rows)
        })?;
        drop(source);
        Ok(CopyReport {
            rows,
            log: target.verify_chain()?,
        })
    }
}
