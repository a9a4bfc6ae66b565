//! Backups taken while keywardd serves, and restores into an empty database.
//!
//! - SQLite: the online backup API copies every page inside one read transaction of the
//!   source, so the copy is the database as of one commit while writers go on (WAL). The copy
//!   is written beside its destination, synced, then renamed into place: a crash leaves either
//!   no backup or a whole one.
//! - PostgreSQL: `pg_dump`'s custom format, which reads one consistent snapshot; restored with
//!   `pg_restore` in one transaction. Both get the connection from libpq's environment
//!   variables (the password never appears on a command line), and dump only the schema the
//!   store uses.
//!
//! Neither holds the log key: it stays in its own file, and a restored log is verified with it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Location, PostgresOptions};
use crate::error::{CoreError, Result};

/// What a backup or restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The size of the backup file, in bytes.
    pub bytes: u64,
}

/// Copies the database at `location` into the new file `to` (refused if it exists).
pub fn backup(location: &Location, to: &Path) -> Result<BackupReport> {
    if to.exists() {
        return Err(bad(format!("{} exists already", to.display())));
    }
    let partial = partial_path(to);
    let made = match location {
        Location::Sqlite(path) => sqlite_copy(path, &partial),
        Location::Postgres(options) => pg_dump(options, &partial),
    };
    if let Err(e) = made {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    put_in_place(&partial, to)?;
    Ok(BackupReport {
        bytes: std::fs::metadata(to).map_err(|e| file_error(to, e))?.len(),
    })
}

/// Restores the backup `from` into the database at `location`, which must hold no Keyward
/// data: a SQLite file that does not exist yet, or a PostgreSQL schema without Keyward's tables.
pub fn restore(from: &Path, location: &Location) -> Result<BackupReport> {
    if !from.is_file() {
        return Err(bad(format!("{} is not a backup file", from.display())));
    }
    match location {
        Location::Sqlite(path) => {
            if path.exists() {
                return Err(bad(format!(
                    "{} exists already: restore into a new file",
                    path.display()
                )));
            }
            let partial = partial_path(path);
            if let Err(e) = sqlite_copy(from, &partial) {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
            put_in_place(&partial, path)?;
        }
        Location::Postgres(options) => pg_restore(from, options)?,
    }
    Ok(BackupReport {
        bytes: std::fs::metadata(from)
            .map_err(|e| file_error(from, e))?
            .len(),
    })
}

fn bad(message: String) -> CoreError {
    CoreError::BadLocation(message)
}

fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Syncs `partial`, renames it to `to`, and syncs the directory, so the name survives a crash.
fn put_in_place(partial: &Path, to: &Path) -> Result<()> {
    std::fs::File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(|e| file_error(partial, e))?;
    std::fs::rename(partial, to).map_err(|e| file_error(to, e))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| file_error(dir, e))?;
    }
    Ok(())
}

fn file_error(path: &Path, e: std::io::Error) -> CoreError {
    CoreError::File(format!("{}: {e}", path.display()))
}

/// The source's pages, all in one step (one read transaction: the copy is one commit's state).
fn sqlite_copy(source: &Path, to: &Path) -> Result<()> {
    use rusqlite::{Connection, OpenFlags};
    if !source.is_file() {
        return Err(bad(format!("{} does not exist", source.display())));
    }
    let from = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    from.busy_timeout(Duration::from_secs(5))?;
    let mut into = Connection::open(to)?;
    {
        use rusqlite::backup::{Backup, StepResult};
        let copy = Backup::new(&from, &mut into)?;
        // -1: every page in one step. Busy only while a writer checkpoints; then it waits.
        let mut tries = 0;
        loop {
            match copy.step(-1)? {
                StepResult::Done => break,
                _ if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    return Err(CoreError::Unavailable(format!(
                        "{} stayed busy for 5 s: no backup made",
                        source.display()
                    )));
                }
            }
        }
    }
    // A restored file is opened by keywardd, which sets WAL itself; a backup stays one file.
    into.pragma_update(None, "journal_mode", "DELETE")?;
    Ok(())
}

fn pg_dump(options: &PostgresOptions, to: &Path) -> Result<()> {
    let schema = current_schema(options)?;
    let mut dump = Command::new("pg_dump");
    dump.envs(options.libpq_env())
        .args(["--format=custom", "--no-owner", "--no-privileges"])
        .arg(format!("--schema={schema}"))
        .arg("--file")
        .arg(to);
    run(dump, "pg_dump")
}

fn pg_restore(from: &Path, options: &PostgresOptions) -> Result<()> {
    let client = options.connect_once()?;
    use futures::executor::block_on as block;
    let has_tables: bool =
        block(client.query_one("SELECT to_regclass('meta') IS NOT NULL", &[]))?.get(0);
    if has_tables {
        return Err(bad(format!(
            "{options:?} holds Keyward data already: restore into an empty database"
        )));
    }
    // The dump creates its schema; where that schema exists already (every database has
    // `public`), that one statement is left out of the restore and the rest goes into it.
    let existing: Vec<String> = block(client.query("SELECT nspname::text FROM pg_namespace", &[]))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(client);
    let mut list = Command::new("pg_restore");
    list.arg("--list").arg(from);
    let listed = output(list, "pg_restore --list")?;
    let kept: String = listed
        .lines()
        .filter(|line| {
            !existing
                .iter()
                .any(|schema| line.contains(&format!(" SCHEMA - {schema} ")))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let list_file =
        std::env::temp_dir().join(format!("keyward-restore-{}.list", uuid::Uuid::new_v4()));
    std::fs::write(&list_file, kept).map_err(|e| file_error(&list_file, e))?;
    let mut restore = Command::new("pg_restore");
    restore
        .envs(options.libpq_env())
        .args([
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
        ])
        .arg("--use-list")
        .arg(&list_file)
        .arg(format!("--dbname={}", options.database()))
        .arg(from);
    let restored = run(restore, "pg_restore");
    let _ = std::fs::remove_file(&list_file);
    restored
}

fn current_schema(options: &PostgresOptions) -> Result<String> {
    let client = options.connect_once()?;
    let row = futures::executor::block_on(client.query_one("SELECT current_schema()::text", &[]))?;
    row.get::<_, Option<String>>(0)
        .ok_or_else(|| bad(format!("{options:?} has no schema on its search_path")))
}

/// Runs a PostgreSQL tool; its own words if it fails.
fn run(command: Command, what: &str) -> Result<()> {
    output(command, what).map(|_| ())
}

fn output(mut command: Command, what: &str) -> Result<String> {
    let out = command.output().map_err(|e| {
        CoreError::Unavailable(format!(
            "{what} could not be run ({e}); it comes with PostgreSQL's client tools \
             (Debian: postgresql-client)"
        ))
    })?;
    if !out.status.success() {
        return Err(CoreError::Unavailable(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl PostgresOptions {
    /// The connection as libpq's environment variables, for PostgreSQL's own tools: nothing
    /// secret goes on a command line, where any local user could read it.
    pub(super) fn libpq_env(&self) -> Vec<(&'static str, OsString)> {
        use tokio_postgres::config::Host;
        let config = &self.config;
        let mut env: Vec<(&'static str, OsString)> = Vec::new();
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        if !hosts.is_empty() {
            env.push(("PGHOST", hosts.join(",").into()));
        }
        let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
        if !ports.is_empty() {
            env.push(("PGPORT", ports.join(",").into()));
        }
        if let Some(user) = config.get_user() {
            env.push(("PGUSER", user.into()));
        }
        env.push(("PGDATABASE", self.database().into()));
        if let Some(password) = config.get_password() {
            env.push((
                "PGPASSWORD",
                String::from_utf8_lossy(password).into_owned().into(),
            ));
        }
        if let Some(options) = config.get_options() {
            env.push(("PGOPTIONS", options.into()));
        }
        env.extend(self.tls.libpq_env());
        env
    }

    /// The database name: the URL's, or (as libpq) the user's name.
    pub(super) fn database(&self) -> String {
        self.config
            .get_dbname()
            .or(self.config.get_user())
            .unwrap_or("postgres")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_connection_reaches_pg_dump_through_the_environment_only() {
        let options = PostgresOptions::from_url(
            "postgres://kw:s3cret@db.example:6543/keyward?sslmode=require&options=-c%20search_path%3Dk",
        )
        .unwrap();
        let env: std::collections::HashMap<_, _> = options.libpq_env().into_iter().collect();
        assert_eq!(env["PGHOST"], "db.example");
        assert_eq!(env["PGPORT"], "6543");
        assert_eq!(env["PGUSER"], "kw");
        assert_eq!(env["PGDATABASE"], "keyward");
        assert_eq!(env["PGPASSWORD"], "s3cret");
        assert_eq!(env["PGOPTIONS"], "-c search_path=k");
        assert_eq!(env["PGSSLMODE"], "require");
    }

    #[test]
    fn a_backup_never_overwrites_and_a_restore_never_lands_on_data() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("k.db");
        drop(super::super::Store::open(&db).unwrap());
        let taken = dir.path().join("taken");
        std::fs::write(&taken, b"something").unwrap();
        let location = Location::Sqlite(db.clone());
        assert!(matches!(
            backup(&location, &taken),
            Err(CoreError::BadLocation(_))
        ));
        assert_eq!(std::fs::read(&taken).unwrap(), b"something");
        let copy = dir.path().join("copy");
        backup(&location, &copy).unwrap();
        assert!(matches!(
            restore(&copy, &location),
            Err(CoreError::BadLocation(_))
        ));
        assert!(matches!(
            restore(
                &dir.path().join("none"),
                &Location::Sqlite(dir.path().join("new.db"))
            ),
            Err(CoreError::BadLocation(_))
        ));
        assert!(!dir.path().join("new.db").exists());
    }
}
