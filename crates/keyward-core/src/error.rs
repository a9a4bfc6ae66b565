use thiserror::Error;

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum CoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// Shown with its causes: tokio-postgres's own text is only the kind ("db error").
    #[error("database error: {}", with_causes(.0))]
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

/// An error and the errors under it, "a: b: c": tokio-postgres keeps the server's message, and
/// why a TLS handshake or a URL failed, in the causes. (None of them holds the password: the
/// server's messages name the user, the URL's errors name the key.)
pub(crate) fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}
