//! `keywardd check-config`: everything `keywardd` would read at start, read now, without
//! serving or changing anything: the settings (flags, environment, TOML), the log key, the TLS
//! certificate and key, the web UI folder, the place table and whether the database answers.
//! What an operator (or a package's post-install step) runs before starting the service.

use keyward_core::store::Location;

use crate::config::Config;

/// One thing looked at, and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub what: String,
    pub problem: Option<String>,
}

/// Looks at everything `config` names. Nothing is created or migrated: a SQLite file that
/// does not exist yet, or a log key still to be made, is reported as what the first start does.
pub fn check(config: &Config) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut note = |what: String, problem: Option<String>| found.push(Finding { what, problem });

    note(
        format!(
            "settings (RP ID {}, origins {:?})",
            config.rp_id,
            origin_list(config)
        ),
        config.validate().err().map(|e| e.to_string()),
    );

    match &config.db {
        Location::Sqlite(path) => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            let problem = match dir {
                Some(d) if !d.is_dir() => {
                    Some(format!("its folder {} does not exist", d.display()))
                }
                _ if path.exists() && !path.is_file() => Some("it is not a file".into()),
                _ => None,
            };
            let what = if path.exists() {
                format!("SQLite database {}", path.display())
            } else {
                format!(
                    "SQLite database {} (made at the first start)",
                    path.display()
                )
            };
            note(what, problem);
        }
        Location::Postgres(options) => {
            let problem = options.connect_once().err().map(|e| e.to_string());
            note(format!("PostgreSQL at {options:?} answers"), problem);
        }
    }

    match config.log_key_path() {
        Err(e) => note("the log key".into(), Some(e.to_string())),
        Ok(path) => match crate::log_seal::load_key(&path) {
            Ok(Some(_)) => note(format!("log key {}", path.display()), None),
            Ok(None) if matches!(config.db, Location::Sqlite(_)) => note(
                format!("log key {} (made at the first start)", path.display()),
                None,
            ),
            Ok(None) => note(
                format!("log key {}", path.display()),
                Some("missing: with PostgreSQL every instance needs the deployment's key".into()),
            ),
            Err(e) => note(format!("log key {}", path.display()), Some(e.to_string())),
        },
    }

    if let Some(tls) = &config.tls {
        note(
            format!(
                "TLS certificate {} and key {}",
                tls.cert.display(),
                tls.key.display()
            ),
            tls_problem(&tls.cert, &tls.key),
        );
    }
    if let Some(dir) = &config.web_ui {
        let problem = (!dir.join("index.html").is_file()).then(|| {
            format!(
                "{} has no index.html (build the UI: npm run build)",
                dir.display()
            )
        });
        note(format!("web UI {}", dir.display()), problem);
    }
    if let Some(path) = &config.place_db {
        let problem = std::fs::metadata(path).err().map(|e| e.to_string());
        note(format!("place table {}", path.display()), problem);
    }
    for client in &config.oidc_clients {
        note(
            format!(
                "OpenID client {} ({})",
                client.client_id.as_deref().unwrap_or("?"),
                client.name
            ),
            crate::oidc::clients::check_config_client(client)
                .err()
                .map(|e| e.to_string()),
        );
    }
    found
}

fn origin_list(config: &Config) -> Vec<String> {
    config
        .origins
        .iter()
        .map(|o| o.as_str().trim_end_matches('/').to_string())
        .collect()
}

/// Both files read and parsed as PEM: at least one certificate, one private key.
fn tls_problem(cert: &std::path::Path, key: &std::path::Path) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Result<Vec<_>, _> = match CertificateDer::pem_file_iter(cert) {
        Ok(iter) => iter.collect(),
        Err(e) => return Some(format!("{}: {e}", cert.display())),
    };
    match certs {
        Ok(c) if c.is_empty() => return Some(format!("{}: no certificate in it", cert.display())),
        Err(e) => return Some(format!("{}: {e}", cert.display())),
        Ok(_) => {}
    }
    PrivateKeyDer::from_pem_file(key)
        .err()
        .map(|e| format!("{}: {e}", key.display()))
}
