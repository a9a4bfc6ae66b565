use thiserror::Error;

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum CoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("database error: {}", postgres_detail(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// The database cannot be reached (PostgreSQL down, pool exhausted for too long).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("the database location is not usable: {0}")]
    BadLocation(String),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error(
        "the database was written by a newer Keyward (schema {found}, this build knows {known})"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("that username is taken")]
    UsernameTaken,
    #[error("that credential is already registered")]
    CredentialInUse,
    #[error("the store was given no log key to sign with")]
    NoLogKey,
    #[error("too many ceremonies are in flight; try again shortly")]
    TooManyCeremonies,
    #[error(transparent)]
    RecoveryKeyFormat(#[from] crate::recovery_key::RecoveryKeyFormatError),
}

impl From<serde_json::Error> for CoreError {
    fn from(e: serde_json::Error) -> Self {
        CoreError::Corrupt(format!("stored JSON: {e}"))
    }
}

impl CoreError {
    /// A PostgreSQL transaction lost a serialisation conflict (or a deadlock) and may succeed
    /// if run again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, CoreError::Postgres(e) if crate::store::sql::is_conflict(e))
    }
}

/// tokio-postgres shows a server's error as "db error"; the server's code and message say what.
fn postgres_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
