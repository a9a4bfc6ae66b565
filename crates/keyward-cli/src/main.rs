//! `keyward`: Keyward from the command line, for people who script or run headless machines.
//! The authenticator is a security key over USB or NFC (whichever is presented first), or
//! with `--key-file` a virtual key file (the format the desktop app keeps). Output is JSON on
//! stdout; prompts go to stderr; errors are the `{code, message}` shape on stderr with a
//! non-zero exit.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use keyward_client::{
    Api, Authenticator, AuthenticatorError, CancelSwitch, Ceremonies, ClientError, KeyPrompter,
    SecurityKey, Site, SiteError, UsbOrNfc, VirtualKey,
};
use keyward_core::proof_key::ProofKey;
use keyward_proto::{ClientInfo, CreationChallengeResponse, KeyPrompt, RequestChallengeResponse};
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
    /// Create an account with your key; prints the new session.
    SignUp {
        username: String,
        /// A virtual key file instead of a security key (not secure: for trying Keyward).
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(long, default_value = "keyward command line")]
        name: String,
        /// Bind the new session to a fresh P-256 key kept in this file (owner-only, apart
        /// from the token): its token then works only with proofs by that key (DPoP).
        #[arg(long)]
        session_key: Option<PathBuf>,
    },
    /// Sign in with your key (usernameless unless --username); prints the new session.
    SignIn {
        #[arg(long)]
        key_file: Option<PathBuf>,
        #[arg(long)]
        username: Option<String>,
        #[arg(long, default_value = "keyward command line")]
        name: String,
        /// Bind the new session to a fresh P-256 key kept in this file (owner-only, apart
        /// from the token): its token then works only with proofs by that key (DPoP).
        #[arg(long)]
        session_key: Option<PathBuf>,
    },
    /// Print the account a session token belongs to.
    Account {
        #[arg(long, env = "KEYWARD_TOKEN")]
        token: String,
        /// The session key file the token is bound to (from sign-up or sign-in).
        #[arg(long, env = "KEYWARD_SESSION_KEY")]
        session_key: Option<PathBuf>,
    },
    /// Print the account's live sessions.
    Sessions {
        #[arg(long, env = "KEYWARD_TOKEN")]
        token: String,
        /// The session key file the token is bound to (from sign-up or sign-in).
        #[arg(long, env = "KEYWARD_SESSION_KEY")]
        session_key: Option<PathBuf>,
    },
    /// Manage the security key itself (USB or NFC).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Export the account's security log as JSON, with what verifies it against the chain.
    Export {
        #[arg(long, env = "KEYWARD_TOKEN")]
        token: String,
    },
    /// Check a security-log export (`GET /api/v1/events/export`, the app's "Export my log") on
    /// its own: every event's hash recomputed from the one before it over its sealed details,
    /// the details opened and compared, and the server's signature. Prints the event count.
    VerifyExport {
        /// The export's JSON file ("-" for stdin).
        file: PathBuf,
        /// The server's log key (base64url) you expect, e.g. the one your app remembers.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// A WebAuthn ceremony for any relying party, from its options JSON; prints the
    /// credential as WebAuthn L3's `PublicKeyCredential.toJSON()` writes it, to send back.
    #[command(subcommand)]
    Webauthn(WebauthnCommand),
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Model, versions, transports, whether a PIN is set and the tries left.
    Info,
    /// Set the PIN of a key that has none (asked twice, or KEYWARD_NEW_PIN).
    SetPin,
    /// Change the PIN (current one: KEYWARD_PIN or asked; new one: KEYWARD_NEW_PIN or asked).
    ChangePin,
    /// The passkeys stored on the key, for every site, and the room left.
    Passkeys,
    /// Delete one passkey from the key, by its credential ID (base64url).
    DeletePasskey { credential_id: String },
    /// Erase every passkey and the PIN. Keys only allow it just after being plugged in.
    Reset {
        /// Required: a reset cannot be undone, and every account using this key loses it.
        #[arg(long)]
        yes_erase_everything: bool,
    },
}

#[derive(Subcommand)]
enum WebauthnCommand {
    /// navigator.credentials.create(): OPTIONS is the relying party's
    /// `{"publicKey": …}` creation options ("-" for stdin).
    Register {
        options: PathBuf,
        /// The web origin the relying party expects, e.g. https://login.example.com.
        #[arg(long)]
        origin: Url,
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// navigator.credentials.get(), from the relying party's `{"publicKey": …}` request
    /// options.
    Authenticate {
        options: PathBuf,
        #[arg(long)]
        origin: Url,
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

/// Prompts on stderr; the PIN from KEYWARD_PIN (used once: a wrong one is not retried) or
/// typed without echo.
struct Terminal {
    used_env_pin: AtomicBool,
}

impl KeyPrompter for Terminal {
    fn prompt(&self, prompt: KeyPrompt) {
        let text = match prompt {
            KeyPrompt::InsertOrTap => "Insert your security key, or hold it to the reader…",
            KeyPrompt::Touch => "Touch your security key.",
            KeyPrompt::Processing | KeyPrompt::Pin { .. } | KeyPrompt::Finished => return,
            KeyPrompt::Fingerprint { .. } => "Touch the fingerprint sensor.",
        };
        eprintln!("{text}");
    }

    fn ask_pin(&self, retries: Option<u32>, last_was_wrong: bool) -> Option<String> {
        if let Ok(pin) = std::env::var("KEYWARD_PIN")
            && !self.used_env_pin.swap(true, Ordering::SeqCst)
        {
            return Some(pin);
        }
        if std::env::var_os("KEYWARD_PIN").is_some() {
            return None; // KEYWARD_PIN was wrong: stop before the key locks.
        }
        let left = retries
            .map(|n| format!(" ({n} tries left)"))
            .unwrap_or_default();
        let wrong = if last_was_wrong { "Wrong PIN. " } else { "" };
        rpassword::prompt_password(format!("{wrong}Security key PIN{left}: ")).ok()
    }
}

/// The command's one error type: the client's, or bad input given on the command line.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Input(String),
    #[error("the export does not verify: {0}")]
    Export(#[from] keyward_core::security_log::ExportProblem),
}

impl From<AuthenticatorError> for CliError {
    fn from(e: AuthenticatorError) -> Self {
        CliError::Client(e.into())
    }
}

impl From<SiteError> for CliError {
    fn from(e: SiteError) -> Self {
        CliError::Client(e.into())
    }
}

impl CliError {
    fn code(&self) -> serde_json::Value {
        match self {
            CliError::Input(_) => "invalid_input".into(),
            CliError::Export(_) => "export_invalid".into(),
            CliError::Client(ClientError::Authenticator(a)) => a.code().into(),
            CliError::Client(ClientError::Site(_)) => "wrong_site".into(),
            CliError::Client(other) => other
                .code()
                .and_then(|c| serde_json::to_value(c).ok())
                .unwrap_or_else(|| "error".into()),
        }
    }
}

fn security_key() -> SecurityKey<UsbOrNfc> {
    let terminal = Arc::new(Terminal {
        used_env_pin: AtomicBool::new(false),
    });
    SecurityKey::usb_or_nfc(terminal, CancelSwitch::default())
}

fn authenticator(key_file: Option<&PathBuf>) -> Result<Box<dyn Authenticator>, CliError> {
    Ok(match key_file {
        Some(path) => Box::new(VirtualKey::open(path)?),
        None => Box::new(security_key()),
    })
}

fn new_pin() -> Result<String, CliError> {
    if let Ok(pin) = std::env::var("KEYWARD_NEW_PIN") {
        return Ok(pin);
    }
    let input = |e: std::io::Error| CliError::Input(format!("cannot read the PIN: {e}"));
    let first = rpassword::prompt_password("New PIN: ").map_err(input)?;
    let again = rpassword::prompt_password("The new PIN again: ").map_err(input)?;
    if first != again {
        return Err(CliError::Input("the two PINs differ".into()));
    }
    Ok(first)
}

fn current_pin() -> Result<String, CliError> {
    match std::env::var("KEYWARD_PIN") {
        Ok(pin) => Ok(pin),
        Err(_) => rpassword::prompt_password("Current PIN: ")
            .map_err(|e| CliError::Input(format!("cannot read the PIN: {e}"))),
    }
}

fn read_options<T: serde::de::DeserializeOwned>(path: &PathBuf) -> Result<T, CliError> {
    read_json(path, "WebAuthn options")
}

/// JSON from a file, or stdin for "-".
fn read_json<T: serde::de::DeserializeOwned>(path: &PathBuf, what: &str) -> Result<T, CliError> {
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(path).map(|t| text = t)
    };
    read.map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::Input(format!("{}: not {what}: {e}", path.display())))
}

fn client(name: &str) -> ClientInfo {
    ClientInfo {
        name: name.to_string(),
        platform: std::env::consts::OS.to_string(),
    }
}

/// With `--session-key`: a fresh P-256 key, written owner-only to that file (never beside the
/// token, which is printed), that the new session is bound to.
fn bind(c: Ceremonies, path: Option<&PathBuf>) -> Result<(Ceremonies, bool), CliError> {
    let Some(path) = path else {
        return Ok((c, false));
    };
    let key = ProofKey::generate();
    write_owner_only(path, &key.to_secret())?;
    Ok((c.binding_sessions_to(key), true))
}

/// The new session as JSON, and how its token is bound, in words.
fn signed_in(signed: &keyward_proto::SignedIn, bound: bool) -> serde_json::Value {
    let mut out = json(signed);
    out["binding"] = if bound {
        "software-bound: the token works only with proofs by the key in the session key file".into()
    } else {
        "unbound: whoever holds the token holds the session".into()
    };
    out
}

/// The API acting as `token`, bound to the key in `path` when given.
fn session(api: &Api, token: String, path: Option<&PathBuf>) -> Result<Api, CliError> {
    Ok(match path {
        Some(p) => {
            let secret = std::fs::read_to_string(p)
                .map_err(|e| CliError::Input(format!("{}: {e}", p.display())))?;
            let key = ProofKey::from_secret(&secret)
                .map_err(|e| CliError::Input(format!("{}: {e}", p.display())))?;
            api.with_bound_token(token, key)
        }
        None => api.with_token(token),
    })
}

/// Writes `text` to a new file only its owner may read (0600 on Unix).
fn write_owner_only(path: &PathBuf, text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?;
    }
    file.write_all(text.as_bytes())
        .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))
}

async fn run(cli: Cli) -> Result<serde_json::Value, CliError> {
    let api = Api::new(cli.server.clone());
    match cli.command {
        Command::SignUp {
            username,
            key_file,
            name,
            session_key,
        } => {
            let (c, bound) = bind(
                Ceremonies::connect(cli.server, client(&name)).await?,
                session_key.as_ref(),
            )?;
            let mut key = authenticator(key_file.as_ref())?;
            let signed = c
                .create_account(key.as_mut(), &username, None, None)
                .await?;
            Ok(signed_in(&signed, bound))
        }
        Command::SignIn {
            key_file,
            username,
            name,
            session_key,
        } => {
            let (c, bound) = bind(
                Ceremonies::connect(cli.server, client(&name)).await?,
                session_key.as_ref(),
            )?;
            let mut key = authenticator(key_file.as_ref())?;
            let signed = c.sign_in(key.as_mut(), username.as_deref(), None).await?;
            Ok(signed_in(&signed, bound))
        }
        Command::Export { token } => Ok(json(&api.with_token(token).export_log().await?)),
        Command::VerifyExport { file, public_key } => {
            let export: keyward_proto::LogExport = read_json(&file, "a security-log export")?;
            let expected = public_key
                .map(|k| {
                    keyward_core::secret::unb64(&k)
                        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                        .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
                        .ok_or_else(|| CliError::Input("--public-key is not an Ed25519 key".into()))
                })
                .transpose()?;
            let events = keyward_core::security_log::verify_export(&export, expected.as_ref())?;
            Ok(serde_json::json!({
                "verified": true,
                "events": events,
                "account_id": export.account_id,
                "public_key": export.public_key,
            }))
        }
        Command::Account { token, session_key } => Ok(json(
            &session(&api, token, session_key.as_ref())?
                .account()
                .await?,
        )),
        Command::Sessions { token, session_key } => Ok(json(
            &session(&api, token, session_key.as_ref())?
                .sessions()
                .await?,
        )),
        Command::Key(op) => {
            let key = security_key();
            Ok(match op {
                KeyCommand::Info => json(&key.info()?),
                KeyCommand::SetPin => {
                    key.set_pin(&new_pin()?)?;
                    serde_json::json!({ "pin_set": true })
                }
                KeyCommand::ChangePin => {
                    let old = current_pin()?;
                    key.change_pin(&old, &new_pin()?)?;
                    serde_json::json!({ "pin_changed": true })
                }
                KeyCommand::Passkeys => json(&key.passkeys()?),
                KeyCommand::DeletePasskey { credential_id } => {
                    let id = keyward_core::secret::unb64(&credential_id).ok_or_else(|| {
                        CliError::Input("the credential ID is not base64url".into())
                    })?;
                    json(&key.delete_passkey(&id)?)
                }
                KeyCommand::Reset {
                    yes_erase_everything,
                } => {
                    if !yes_erase_everything {
                        return Err(CliError::Input(
                            "a reset erases every passkey on the key and its PIN, for good: \
                             add --yes-erase-everything to do it"
                                .into(),
                        ));
                    }
                    key.factory_reset()?;
                    serde_json::json!({ "reset": true })
                }
            })
        }
        Command::Webauthn(op) => match op {
            WebauthnCommand::Register {
                options,
                origin,
                key_file,
            } => {
                let options: CreationChallengeResponse = read_options(&options)?;
                // As a browser would: the options' RP ID must belong to the origin.
                Site::of(&origin, &options.public_key.rp.id)?;
                let mut key = authenticator(key_file.as_ref())?;
                let credential = key.register(&origin, &options)?;
                keyward_client::credential_json::registration(&credential)
                    .map_err(|e| CliError::from(AuthenticatorError::Refused(e.to_string())))
            }
            WebauthnCommand::Authenticate {
                options,
                origin,
                key_file,
            } => {
                let options: RequestChallengeResponse = read_options(&options)?;
                Site::of(&origin, &options.public_key.rp_id)?;
                let mut key = authenticator(key_file.as_ref())?;
                Ok(keyward_client::credential_json::assertion(
                    &key.authenticate(&origin, &options)?,
                ))
            }
        },
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
            eprintln!(
                "{}",
                serde_json::json!({ "code": e.code(), "message": e.to_string() })
            );
            ExitCode::FAILURE
        }
    }
}
