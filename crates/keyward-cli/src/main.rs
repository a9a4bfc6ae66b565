//! `keyward`: sign in and inspect an account from the command line. Authenticators: a virtual
//! key file (the same format the desktop app keeps). Output is JSON on stdout; errors are the
//! `{code, message}` shape on stderr with a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keyward_client::{Api, Ceremonies, ClientError, VirtualKey};
use keyward_proto::ClientInfo;
use url::Url;

#[derive(Parser)]
#[command(name = "keyward", version, about = "Keyward from the command line")]
struct Cli {
    /// The keywardd to talk to.
    #[arg(long, env = "KEYWARD_SERVER", default_value = "http://localhost:8443")]
    server: Url,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account with a virtual key; prints the new session.
    SignUp {
        username: String,
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long, default_value = "keyward command line")]
        name: String,
    },
    /// Sign in with a virtual key (usernameless unless --username); prints the new session.
    SignIn {
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long)]
        username: Option<String>,
        #[arg(long, default_value = "keyward command line")]
        name: String,
    },
    /// Print the account a session token belongs to.
    Account {
        #[arg(long, env = "KEYWARD_TOKEN")]
        token: String,
    },
    /// Print the account's live sessions.
    Sessions {
        #[arg(long, env = "KEYWARD_TOKEN")]
        token: String,
    },
}

fn client(name: &str) -> ClientInfo {
    ClientInfo {
        name: name.to_string(),
        platform: std::env::consts::OS.to_string(),
    }
}

async fn run(cli: Cli) -> Result<serde_json::Value, ClientError> {
    let api = Api::new(cli.server.clone());
    match cli.command {
        Command::SignUp {
            username,
            key_file,
            name,
        } => {
            let c = Ceremonies::connect(cli.server, client(&name)).await?;
            let mut key = VirtualKey::open(&key_file)?;
            Ok(json(
                &c.create_account(&mut key, &username, None, None).await?,
            ))
        }
        Command::SignIn {
            key_file,
            username,
            name,
        } => {
            let c = Ceremonies::connect(cli.server, client(&name)).await?;
            let mut key = VirtualKey::open(&key_file)?;
            Ok(json(&c.sign_in(&mut key, username.as_deref(), None).await?))
        }
        Command::Account { token } => Ok(json(&api.with_token(token).account().await?)),
        Command::Sessions { token } => Ok(json(&api.with_token(token).sessions().await?)),
    }
}

fn json(v: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = e
                .code()
                .and_then(|c| serde_json::to_value(c).ok())
                .unwrap_or_else(|| "error".into());
            eprintln!(
                "{}",
                serde_json::json!({ "code": code, "message": e.to_string() })
            );
            ExitCode::FAILURE
        }
    }
}
