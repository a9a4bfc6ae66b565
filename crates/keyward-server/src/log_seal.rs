//! The log key and the start-up check of the security log. The key (Ed25519) signs a checkpoint
//! of the log's head in every commit that appends events; it rests in a file of its own beside
//! the database (`<db>.log-key` unless configured), owner-only, never logged. It also signs
//! each account's own head for that account's sessions (`GET /api/v1/log/checkpoint`, with the
//! public half), so clients can remember a signed head and notice a log that no longer extends
//! it.

use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use keyward_core::Store;
use keyward_core::store::{Location, LogProblem, LogReport};

/// Why the log could not be sealed at start-up or verified on demand.
#[derive(Debug, thiserror::Error)]
pub enum LogSealError {
    #[error("the log key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the database: {0}")]
    Store(#[from] keyward_core::CoreError),
    #[error(
        "the security log fails verification: {0}. keywardd will not serve a log that may have \
         been tampered with; restore the database and its log key from a backup, or inspect it \
         with `keywardd verify-log --db PATH`"
    )]
    Tampered(LogProblem),
}

/// Where the log key of the database at `db` rests unless configured: `<db>.log-key`.
pub fn default_key_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".log-key");
    PathBuf::from(name)
}

fn key_error(path: &Path, reason: impl std::fmt::Display) -> LogSealError {
    LogSealError::Key {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads the log key at `path`; None if there is no file. Refuses a file others can read.
pub fn load_key(path: &Path) -> Result<Option<SigningKey>, LogSealError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(key_error(path, e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| key_error(path, e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(key_error(
                path,
                format!("readable by others (mode {:o}); chmod 600 it", mode & 0o777),
            ));
        }
    }
    let seed: [u8; 32] = keyward_core::secret::unb64(text.trim())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| key_error(path, "not a log key (32 bytes, base64url)"))?;
    Ok(Some(SigningKey::from_bytes(&seed)))
}

/// Makes a new log key at `path` (owner-only; never over an existing file).
fn create_key(path: &Path) -> Result<SigningKey, LogSealError> {
    use std::io::Write;
    let key = SigningKey::from_bytes(&keyward_core::secret::random_bytes::<32>());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| key_error(path, e))?;
    file.write_all(format!("{}\n", keyward_core::secret::b64(key.as_bytes())).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| key_error(path, e))?;
    Ok(key)
}

/// At start-up: verifies the log against its latest signed checkpoint with the key at
/// `key_path`, and hands the key to the store so every commit that appends events signs the
/// new head. The key is made on first start; a log that has events but no checkpoint yet (a
/// database from before checkpoints) is adopted then, and only then. Refuses on any mismatch.
pub fn seal(store: &Store, key_path: &Path) -> Result<VerifyingKey, LogSealError> {
    let key = match load_key(key_path)? {
        Some(key) => key,
        None => {
            // No key: only a log that was never signed may get a new one. A log with
            // checkpoints whose key is gone, or one that does not verify, stays refused.
            match store.verify_log(None)?.problem {
                None | Some(LogProblem::NoCheckpoint { .. }) => {}
                Some(problem) => return Err(LogSealError::Tampered(problem)),
            }
            let key = create_key(key_path)?;
            if let Some(adopted) = store.write(|tx| tx.checkpoint_head(&key))? {
                tracing::warn!(
                    head = adopted.seq,
                    "the security log had no signed checkpoint: its current head is now signed"
                );
            }
            key
        }
    };
    let public = key.verifying_key();
    if let Some(problem) = store.verify_log(Some(&public))?.problem {
        return Err(LogSealError::Tampered(problem));
    }
    store.set_log_key(key);
    Ok(public)
}

/// `keywardd verify-log`: the log of the database at `db`, verified with the key at `key_path`
/// (never made here). Err when it cannot be read at all.
pub fn verify_file(db: &Location, key_path: &Path) -> Result<LogReport, LogSealError> {
    if let Location::Sqlite(path) = db
        && !path.is_file()
    {
        return Err(LogSealError::Store(keyward_core::CoreError::Corrupt(
            format!("{} does not exist", path.display()),
        )));
    }
    let store = Store::connect(db)?;
    let key = load_key(key_path)?;
    Ok(store.verify_log(key.map(|k| k.verifying_key()).as_ref())?)
}
