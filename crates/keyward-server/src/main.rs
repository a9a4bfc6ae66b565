//! `keywardd`: run the Keyward relying party. See `keywardd --help`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use keyward_core::SystemClock;
use keyward_core::store::Location;
use keyward_server::config::{ClientCommand, Command, LogFormat};
use keyward_server::{Args, Config, log_seal};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    // The log goes to stderr: stdout is for what a command answers (JSON from `admin`, the
    // listening address), so it stays parseable whatever the log says.
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    match args.log_format {
        LogFormat::Text => logs.init(),
        // One object per line: the event's fields at the top, the request's span beside.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    match args.command.take() {
        Some(Command::VerifyLog { db, log_key }) => return verify_log(&db, log_key),
        Some(Command::Migrate { from, to, log_key }) => return migrate(&from, &to, log_key),
        Some(Command::Backup { db, to }) => return backup(&db, &to),
        Some(Command::CheckConfig) => return check_config(args),
        Some(Command::Admin { command }) => return admin(args, command),
        Some(Command::Restore { from, db, log_key }) => return restore(&from, &db, log_key),
        Some(Command::Client { action }) => return client(action),
        Some(Command::RotateSigningKey { db, log_key }) => return rotate_signing_key(&db, log_key),
        None => {}
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

/// `--db` for a tool: the location, with the password and TLS files from the environment.
fn tool_database(db: &str) -> Result<Location, String> {
    let files = keyward_server::config::DbFiles::from_env();
    keyward_server::config::database(Some(db.into()), files, None).map_err(|e| e.to_string())
}

/// `keywardd check-config`: 0 everything readable and valid, 2 not.
fn check_config(args: Args) -> ExitCode {
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keywardd: {e}");
            return ExitCode::from(2);
        }
    };
    let findings = keyward_server::check::check(&config);
    for f in &findings {
        match &f.problem {
            None => println!("ok: {}", f.what),
            Some(problem) => println!("problem: {}: {problem}", f.what),
        }
    }
    if findings.iter().all(|f| f.problem.is_none()) {
        println!("the configuration is fine");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

/// `keywardd admin …`: 0 done, 2 refused (the reason on stderr).
fn admin(args: Args, command: keyward_server::config::AdminCommand) -> ExitCode {
    let done = Config::from_args(args)
        .map_err(|e| e.to_string())
        .and_then(|config| keyward_server::admin::run(&config, command, Arc::new(SystemClock)));
    match done {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keywardd: {e}");
            ExitCode::from(2)
        }
    }
}

/// `keywardd backup`: 0 written, 2 nothing written.
fn backup(db: &str, to: &std::path::Path) -> ExitCode {
    let made = tool_database(db).and_then(|location| {
        keyward_core::store::backup::backup(&location, to)
            .map(|r| (location, r))
            .map_err(|e| e.to_string())
    });
    match made {
        Ok((location, report)) => {
            println!(
                "backed up {location} to {} ({} bytes); keep the log key apart from it",
                to.display(),
                report.bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keywardd: {e}");
            ExitCode::from(2)
        }
    }
}

/// `keywardd restore`: 0 restored and intact, 1 the restored log fails verification, 2 nothing
/// restored.
fn restore(from: &std::path::Path, db: &str, log_key: Option<std::path::PathBuf>) -> ExitCode {
    let location = match tool_database(db) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("keywardd: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(key_path) = keyward_server::config::log_key_path(log_key, &location) else {
        eprintln!("keywardd: with PostgreSQL, --log-key must name the log key's file");
        return ExitCode::from(2);
    };
    if !key_path.is_file() {
        eprintln!(
            "keywardd: no log key at {}: name the deployment's with --log-key",
            key_path.display()
        );
        return ExitCode::from(2);
    }
    if let Err(e) = keyward_core::store::backup::restore(from, &location) {
        eprintln!("keywardd: nothing restored: {e}");
        return ExitCode::from(2);
    }
    println!("restored {} into {location}", from.display());
    verify_log(db, Some(key_path))
}

/// `keywardd verify-log`: 0 intact, 1 tampered with, 2 unreadable.
fn verify_log(db: &str, log_key: Option<std::path::PathBuf>) -> ExitCode {
    let db = match tool_database(db) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("keywardd: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(key_path) = keyward_server::config::log_key_path(log_key, &db) else {
        eprintln!("keywardd: with PostgreSQL, --log-key must name the log key's file");
        return ExitCode::from(2);
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

/// `keywardd client add|list|remove|new-secret`: 0 done, 2 nothing changed.
fn client(action: ClientCommand) -> ExitCode {
    use keyward_server::oidc::{NewClient, clients};
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("keywardd: {e}");
        ExitCode::from(2)
    };
    let open = |db: &str| {
        tool_database(db).and_then(|l| keyward_core::Store::connect(&l).map_err(|e| e.to_string()))
    };
    let now = || keyward_core::Clock::now(&SystemClock);
    match action {
        ClientCommand::Add {
            db,
            name,
            redirect_uris,
            post_logout_redirect_uris,
            scopes,
            auth_method,
            backchannel_logout_uri,
            client_id,
            jwks_file,
            device,
        } => {
            let jwks = match jwks_file.map(std::fs::read_to_string).transpose() {
                Ok(j) => j,
                Err(e) => return fail(&format!("--jwks-file: {e}")),
            };
            let store = match open(&db) {
                Ok(s) => s,
                Err(e) => return fail(&e),
            };
            let new = NewClient {
                client_id,
                name,
                redirect_uris,
                post_logout_redirect_uris,
                scopes,
                auth_method,
                secret_hash: None,
                backchannel_logout_uri,
                jwks,
                device_grant: device,
            };
            match clients::add(&store, &new, now()) {
                Ok(r) => {
                    println!(
                        "registered {} as client_id {}",
                        r.client.name, r.client.client_id
                    );
                    println!("auth method: {}", r.client.auth_method.as_str());
                    if let Some(secret) = r.secret {
                        println!("client_secret: {secret}");
                        println!("(shown this once; Keyward keeps only its hash)");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        ClientCommand::List { db } => {
            let listed = open(&db).and_then(|s| clients::list(&s).map_err(|e| e.to_string()));
            match listed {
                Ok(list) => {
                    for c in &list {
                        println!(
                            "{}\t{}\t{}\tscopes: {}\tredirect: {}\t({})",
                            c.client_id,
                            c.name,
                            c.auth_method.as_str(),
                            c.scopes.join(" "),
                            c.redirect_uris.join(" "),
                            match c.source {
                                keyward_core::store::ClientSource::Command => "keywardd client add",
                                keyward_core::store::ClientSource::Config => "config file",
                            }
                        );
                    }
                    if list.is_empty() {
                        println!("no apps registered");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        ClientCommand::Remove { db, client_id } => {
            let removed =
                open(&db).and_then(|s| clients::remove(&s, &client_id).map_err(|e| e.to_string()));
            match removed {
                Ok(true) => {
                    println!("removed {client_id}: its consents, sign-ins and tokens ended");
                    ExitCode::SUCCESS
                }
                Ok(false) => fail(&format!("no client {client_id}")),
                Err(e) => fail(&e),
            }
        }
        ClientCommand::NewSecret => {
            let (secret, hash) = clients::new_secret_and_hash();
            println!("client_secret: {secret}");
            println!("secret_hash = \"{hash}\"");
            ExitCode::SUCCESS
        }
    }
}

/// `keywardd rotate-signing-key`: 0 rotated, 2 nothing changed.
fn rotate_signing_key(db: &str, log_key: Option<std::path::PathBuf>) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("keywardd: {e}");
        ExitCode::from(2)
    };
    let location = match tool_database(db) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let Some(key_path) = keyward_server::config::log_key_path(log_key, &location) else {
        return fail(&"with PostgreSQL, --log-key must name the log key's file");
    };
    let key = match log_seal::load_key(&key_path) {
        Ok(Some(k)) => k,
        Ok(None) => return fail(&format!("no log key at {}", key_path.display())),
        Err(e) => return fail(&e),
    };
    let store = match keyward_core::Store::connect(&location) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let now = keyward_core::Clock::now(&SystemClock);
    match keyward_server::oidc::keys::rotate(&store, &key, now) {
        Ok(r) => {
            println!(
                "rotated: {} signs from now on; the previous key stays published for {} s",
                r.new_kid,
                (r.previous_published_until - now) / 1000
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
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

/// `keywardd migrate`: 0 copied and verified, 1 the copy's log fails verification, 2 nothing
/// copied (bad arguments, a source that does not exist, a target that is not empty).
fn migrate(from: &str, to: &str, log_key: Option<std::path::PathBuf>) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("keywardd: {e}");
        ExitCode::from(2)
    };
    let Ok(Location::Sqlite(source_path)) = Location::parse(from) else {
        return fail(&"--from must name a SQLite database (sqlite:PATH)");
    };
    if !source_path.is_file() {
        return fail(&format!("{} does not exist", source_path.display()));
    }
    let files = keyward_server::config::DbFiles::from_env();
    let target_location = match keyward_server::config::database(Some(to.into()), files, None) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    let key_path = log_key.unwrap_or_else(|| log_seal::default_key_path(&source_path));
    let key = match log_seal::load_key(&key_path) {
        Ok(Some(key)) => key,
        Ok(None) => return fail(&format!("no log key at {}", key_path.display())),
        Err(e) => return fail(&e),
    };
    let source = match keyward_core::Store::open(&source_path) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // The source must be intact: a copy of a tampered log would only launder it.
    match source.verify_log(Some(&key.verifying_key())) {
        Ok(report) if report.problem.is_none() => {}
        Ok(report) => {
            return fail(&format!(
                "the security log in {} fails verification, nothing copied: {}",
                source_path.display(),
                report.problem.map(|p| p.to_string()).unwrap_or_default()
            ));
        }
        Err(e) => return fail(&e),
    }
    let target = match keyward_core::Store::connect(&target_location) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let report = match source.copy_into(&target) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    for (table, n) in &report.rows {
        println!("{table}: {n} rows");
    }
    match target.verify_log(Some(&key.verifying_key())) {
        Ok(r) if r.problem.is_none() => {
            println!(
                "copied into {target_location}; its security log is intact: {} events, head {} \
                 signed by the log key. Start keywardd with --db on it and --log-key {}",
                r.events,
                r.checkpoint.unwrap_or(0),
                key_path.display()
            );
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!(
                "keywardd: the copy's security log fails verification: {}",
                r.problem.map(|p| p.to_string()).unwrap_or_default()
            );
            ExitCode::from(1)
        }
        Err(e) => fail(&e),
    }
}
