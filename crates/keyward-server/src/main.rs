//! `keywardd`: run the Keyward relying party. See `keywardd --help`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use keyward_core::SystemClock;
use keyward_core::store::Location;
use keyward_server::config::Command;
use keyward_server::{Args, Config, log_seal};

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args = Args::parse();
    if let Some(Command::VerifyLog { db, log_key }) = args.command.take() {
        return verify_log(&db, log_key);
    }
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keywardd: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match keyward_server::start(config, Arc::new(SystemClock)).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keywardd: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("keywardd listening on {}", server.addr);
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        handle.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    match server.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keywardd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `keywardd verify-log`: 0 intact, 1 tampered with, 2 unreadable.
fn verify_log(db: &str, log_key: Option<std::path::PathBuf>) -> ExitCode {
    let password_file = std::env::var_os("KEYWARD_DB_PASSWORD_FILE").map(Into::into);
    let ca_file = std::env::var_os("KEYWARD_DB_CA_FILE").map(Into::into);
    let db = match keyward_server::config::database(Some(db.into()), password_file, None, ca_file) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("keywardd: {e}");
            return ExitCode::from(2);
        }
    };
    let key_path = match (log_key, &db) {
        (Some(path), _) => path,
        (None, Location::Sqlite(path)) => log_seal::default_key_path(path),
        (None, Location::Postgres(_)) => {
            eprintln!("keywardd: with PostgreSQL, --log-key must name the log key's file");
            return ExitCode::from(2);
        }
    };
    match log_seal::verify_file(&db, &key_path) {
        Ok(report) => match report.problem {
            None => {
                println!(
                    "the security log is intact: {} events, head {} signed by the log key",
                    report.events,
                    report.checkpoint.unwrap_or(0)
                );
                ExitCode::SUCCESS
            }
            Some(problem) => {
                eprintln!("keywardd: the security log in {db} fails verification: {problem}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("keywardd: {e}");
            ExitCode::from(2)
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
