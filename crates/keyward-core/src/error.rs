use thiserror::Error;

pub type Result<T, E = CoreError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum CoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
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
