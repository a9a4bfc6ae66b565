use thiserror::Error;

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum CoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// Shown with PostgreSQL's own message (tokio-postgres says only "db error").
    #[error("database error: {}", crate::store::sql::describe(.0))]
    Postgres(#[source] tokio_postgres::Error),
    /// The database cannot be reached (PostgreSQL down or restarting, pool exhausted for too
    /// long) or is too busy to commit: worth trying again shortly.
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
    #[error("a client with that ID is already registered")]
    ClientExists,
    #[error("that credential is already registered")]
    CredentialInUse,
    #[error("the store was given no log key to sign with")]
    NoLogKey,
    #[error("too many ceremonies are in flight; try again shortly")]
    TooManyCeremonies,
    /// A file a backup, restore or tool reads or writes (the message names it).
    #[error("{0}")]
    File(String),
    /// A stored session key (proof_key.rs) that is not one.
    #[error("{0}")]
    BadKey(String),
    #[error(transparent)]
    RecoveryKeyFormat(#[from] crate::recovery_key::RecoveryKeyFormatError),
}

/// A PostgreSQL error, or [`CoreError::Unavailable`] when it says the server is away for now
/// (a connection lost or refused, a shutdown or restart under way): that is not a fault of the
/// request, and the client may try again.
impl From<tokio_postgres::Error> for CoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if crate::store::sql::is_unavailable(&e) {
            CoreError::Unavailable(crate::store::sql::describe(&e))
        } else {
            CoreError::Postgres(e)
        }
    }
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
