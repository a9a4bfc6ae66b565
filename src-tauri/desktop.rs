//! The desktop app's state and behaviour, free of Tauri: which server, which session, which
//! keys. Tauri commands in `commands.rs` are one-line calls into this.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keyward_client::{Api, Authenticator, Ceremonies, write_private};

use crate::keys::{KeyKind, Keys, PromptRelay};
use keyward_proto::*;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, watch};
use ts_rs::TS;
use url::Url;
use uuid::Uuid;

use crate::error::{DesktopError, Result};
use crate::vault::{OsVault, SavedSession, TokenVault};
use keyward_core::proof_key::ProofKey;

fn client_error(e: keyward_client::AuthenticatorError) -> DesktopError {
    DesktopError::Client(e.into())
}

/// A passkey on the security key, set beside the account.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
pub struct KeyPasskeyView {
    pub passkey: KeyPasskey,
    /// For this Keyward server's site (RP ID).
    pub this_site: bool,
    /// The account key it is, by nickname; none for this site means the account no longer
    /// knows it (removed from the account, still on the key).
    pub account_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, TS)]
pub struct KeyPasskeysView {
    pub passkeys: Vec<KeyPasskeyView>,
    /// Room for this many more passkeys: a registration beyond it would fail.
    pub free_slots: u32,
    /// The account's keys of this key's model whose passkey is not on this key (see
    /// `Desktop::key_passkeys`).
    pub missing_on_key: Vec<String>,
}

/// What the UI needs to draw its frame.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
pub struct AppStatus {
    pub server: Option<String>,
    pub embedded: bool,
    /// The origin every ceremony signs for, taken from the address chosen (never from the
    /// server), and the RP ID the server declared, checked to belong to it.
    pub origin: Option<String>,
    pub rp_id: Option<String>,
    pub account: Option<AccountView>,
    pub session_id: Option<Uuid>,
    /// The authenticator the app uses: the virtual key until hardware is chosen.
    pub key_label: String,
    pub virtual_keys: usize,
    pub key_kind: KeyKind,
    /// The session was dropped because the app sat idle past the server's idle timeout: a
    /// touch of the key unlocks it.
    pub locked: bool,
    /// This machine holds the recovery session (it redeemed the recovery key).
    pub recovering: bool,
    /// The server's security log does not extend the signed head this app saw before: events
    /// may have been removed or changed. Shown prominently until the log extends it again.
    pub log_alarm: Option<String>,
}

/// Everything the overview screen shows, in one call.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
pub struct Overview {
    pub account: AccountView,
    pub readiness: Readiness,
    pub sessions: Vec<SessionView>,
    pub authenticators: Vec<AuthenticatorView>,
}

/// A recovery key to show once.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
pub struct NewRecoveryKey {
    pub key: String,
    pub status: RecoveryKeyStatus,
}

struct Session {
    /// The API with the session's token. A step-up replaces the token; the live feed follows
    /// this channel, so it reconnects with the new one.
    api: watch::Sender<Api>,
    id: Uuid,
    account: AccountView,
    /// Last time this app used the session; the server's idle clock runs from the same moment.
    last_used: Millis,
    /// Opened by redeeming a recovery key.
    recovery: bool,
}

#[derive(Default)]
struct Connection {
    embedded: Option<keyward_server::RunningServer>,
    ceremonies: Option<Arc<Ceremonies>>,
    session: Option<Session>,
    /// The server's idle timeout (ms), from /api/v1/server.
    idle_ms: Option<i64>,
    locked: bool,
    /// Why the server's log cannot be vouched for (see `Desktop::watch_log`).
    log_alarm: Option<String>,
    /// A desktop notification for a newly raised log alarm, not yet shown.
    log_notice: Option<Alert>,
}

impl Connection {
    /// Drops a session that has sat idle past the server's timeout; true if it did. Local
    /// only: asking the server would itself count as activity and keep the session alive.
    fn lock_if_idle(&mut self, now: Millis) -> bool {
        let idle = self.idle_ms.unwrap_or(15 * 60_000);
        let idle_too_long = self
            .session
            .as_ref()
            // A recovery session is exempt: the person may come back days after the window
            // (the server bounds it by the enrolment deadline, with no idle timeout).
            .is_some_and(|s| !s.recovery && now - s.last_used >= idle);
        if idle_too_long {
            self.session = None;
            self.locked = true;
        }
        idle_too_long
    }
}

pub struct Desktop {
    data_dir: PathBuf,
    client: ClientInfo,
    clock: Arc<dyn keyward_core::Clock>,
    /// What dates the DPoP proofs: the server's time. The system clock, unless a test runs
    /// keywardd on a clock of its own.
    proof_clock: Arc<dyn keyward_core::Clock>,
    vault: Box<dyn TokenVault>,
    conn: Mutex<Connection>,
    keys: Mutex<Keys>,
    pub prompts: Arc<PromptRelay>,
}

impl Desktop {
    pub fn new(data_dir: &Path, client: ClientInfo) -> Result<Desktop> {
        let vault = Box::new(OsVault::new(data_dir));
        Self::with(data_dir, client, Arc::new(keyward_core::SystemClock), vault)
    }

    /// With a clock and a token vault of the caller's (tests move the clock instead of
    /// waiting, and keep tokens out of the real secret store).
    pub fn with(
        data_dir: &Path,
        client: ClientInfo,
        clock: Arc<dyn keyward_core::Clock>,
        vault: Box<dyn TokenVault>,
    ) -> Result<Desktop> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| DesktopError::EmbeddedServer(format!("{}: {e}", data_dir.display())))?;
        let prompts = Arc::new(PromptRelay::default());
        let keys =
            Keys::open(data_dir, prompts.clone()).map_err(|e| DesktopError::Client(e.into()))?;
        migrate_device_secret(data_dir, vault.as_ref());
        Ok(Desktop {
            data_dir: data_dir.to_path_buf(),
            client,
            clock,
            proof_clock: Arc::new(keyward_core::SystemClock),
            vault,
            conn: Mutex::new(Connection::default()),
            keys: Mutex::new(keys),
            prompts,
        })
    }

    /// Dates the session's DPoP proofs by `clock` (a test whose keywardd keeps manual time).
    pub fn dating_proofs_by(mut self, clock: Arc<dyn keyward_core::Clock>) -> Desktop {
        self.proof_clock = clock;
        self
    }

    /// Connects to `server`, or with None starts the built-in keywardd on loopback with its
    /// database in the app's data folder.
    pub async fn connect(&self, server: Option<Url>) -> Result<AppStatus> {
        let mut conn = self.conn.lock().await;
        if let Some(old) = conn.embedded.take() {
            old.shutdown(std::time::Duration::from_secs(1)).await;
        }
        *conn = Connection::default();
        let base = match server {
            Some(url) => url,
            None => {
                // The same port as last time if free: the origin, and so a resting session,
                // stay valid across restarts.
                let port_file = self.data_dir.join("embedded-port");
                let last: u16 = std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or(0);
                let listener = std::net::TcpListener::bind(("127.0.0.1", last))
                    .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))
                    .map_err(|e| DesktopError::EmbeddedServer(e.to_string()))?;
                let port = listener
                    .local_addr()
                    .map_err(|e| DesktopError::EmbeddedServer(e.to_string()))?
                    .port();
                let _ = std::fs::write(&port_file, port.to_string());
                let origin = Url::parse(&format!("http://localhost:{port}"))
                    .map_err(|e| DesktopError::EmbeddedServer(e.to_string()))?;
                let mut config =
                    keyward_server::Config::local(self.data_dir.join("keyward.db"), origin.clone());
                // Only this app signs in here, and it binds every session to its own key.
                config.policy.require_bound_sessions = true;
                let running =
                    keyward_server::start_on(listener, config, Arc::new(keyward_core::SystemClock))
                        .await
                        .map_err(|e| DesktopError::EmbeddedServer(e.to_string()))?;
                conn.embedded = Some(running);
                // Reached by its origin's name: the origin comes from the address.
                origin
            }
        };
        let ceremonies = Ceremonies::connect(base, self.client.clone()).await?;
        conn.idle_ms = ceremonies
            .api
            .server_info()
            .await
            .ok()
            .map(|i| i.session_idle_ms);
        // A session resting in the secret store resumes if the server still accepts it.
        if let Some(saved) = self
            .vault
            .load()
            .filter(|s| s.server == ceremonies.api.base().as_str())
        {
            let api = match self
                .vault
                .load_session_key()
                .and_then(|k| ProofKey::from_secret(&k).ok())
            {
                Some(key) => {
                    ceremonies
                        .api
                        .with_bound_token_at(&saved.token, key, self.proof_clock.clone())
                }
                None => ceremonies.api.with_token(&saved.token),
            };
            let current = current_session_id(&api).await;
            match (api.account().await, current) {
                (Ok(account), Some(id)) => {
                    conn.session = Some(Session {
                        api: watch::Sender::new(api),
                        id,
                        account,
                        last_used: self.clock.now(),
                        recovery: saved.recovery,
                    });
                }
                _ => self.vault.clear(),
            }
        }
        // The log head is the account's, so only a resumed full session can look at it.
        let watched = conn
            .session
            .as_ref()
            .filter(|s| !s.recovery)
            .map(|s| (s.api.borrow().clone(), s.account.id));
        conn.ceremonies = Some(Arc::new(ceremonies));
        drop(conn);
        if let Some((api, account)) = watched {
            self.watch_log(&api, account).await;
        }
        self.status().await
    }

    fn log_heads_path(&self) -> PathBuf {
        self.data_dir.join("log-heads.json")
    }

    /// Holds the server's log to the newest signed head this app has seen of it for the
    /// signed-in `account` (remembered per server and account in the data folder): the same
    /// log key, a head no older, and the log's digest at the remembered event unchanged. If
    /// not, raises the alarm and keeps the old head, so the alarm stands on every later check.
    /// A server that cannot be asked (offline, or too old to sign its log) changes nothing.
    /// (Heads remembered by earlier versions were the global log's, which servers no longer
    /// serve: such a file reads as empty and is replaced.)
    pub async fn watch_log(&self, api: &Api, account: Uuid) {
        use keyward_client::log_watch::{SeenHead, check_head};
        type Heads = std::collections::BTreeMap<String, std::collections::BTreeMap<Uuid, SeenHead>>;
        let server = api.base().to_string();
        let path = self.log_heads_path();
        let mut heads: Heads = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let remembered = heads.get(&server).and_then(|h| h.get(&account)).cloned();
        let head = match api.log_head(remembered.as_ref().map(|h| h.id)).await {
            Ok(head) => head,
            Err(e) => {
                tracing::info!(error = %e, "could not read the server's log checkpoint");
                return;
            }
        };
        match check_head(account, remembered.as_ref(), &head) {
            Ok(Some(newer)) if remembered.as_ref() != Some(&newer) => {
                heads.entry(server).or_default().insert(account, newer);
                match serde_json::to_vec_pretty(&heads) {
                    Ok(json) => {
                        if let Err(e) = write_private(&path, &json) {
                            tracing::warn!(error = %e, "could not remember the log's head");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not remember the log's head"),
                }
            }
            Ok(_) => {}
            Err(alarm) => {
                let text = format!(
                    "This server's security log does not extend what Keyward saw before: \
                     {alarm}. Events may have been removed or changed. Tell whoever runs the server."
                );
                tracing::warn!(%server, %alarm, "the server's log does not extend the head seen before");
                let mut conn = self.conn.lock().await;
                if conn.log_alarm.as_deref() != Some(text.as_str()) {
                    conn.log_notice = Some(Alert {
                        title: "Keyward cannot vouch for this server's log".into(),
                        body: text.clone(),
                        session_id: None,
                    });
                }
                conn.log_alarm = Some(text);
            }
        }
    }

    /// The desktop notification for a log alarm raised since the last call, once.
    pub async fn take_log_notice(&self) -> Option<Alert> {
        self.conn.lock().await.log_notice.take()
    }

    /// Which key the next ceremonies use.
    pub async fn choose_key(&self, kind: KeyKind) -> Result<AppStatus> {
        self.keys
            .lock()
            .await
            .choose(kind)
            .map_err(|e| DesktopError::Client(e.into()))?;
        self.status().await
    }

    pub async fn status(&self) -> Result<AppStatus> {
        let mut conn = self.conn.lock().await;
        if conn.lock_if_idle(self.clock.now()) {
            self.vault.clear();
        }
        let keys = self.keys.lock().await;
        Ok(AppStatus {
            server: conn.ceremonies.as_ref().map(|c| c.api.base().to_string()),
            embedded: conn.embedded.is_some(),
            origin: conn.ceremonies.as_ref().map(|c| c.origin()),
            rp_id: conn.ceremonies.as_ref().map(|c| c.rp_id().to_string()),
            account: conn.session.as_ref().map(|s| s.account.clone()),
            session_id: conn.session.as_ref().map(|s| s.id),
            key_label: keys.label(),
            virtual_keys: keys.virtual_keys.len(),
            key_kind: keys.kind(),
            locked: conn.locked,
            recovering: conn.session.as_ref().is_some_and(|s| s.recovery),
            log_alarm: conn.log_alarm.clone(),
        })
    }

    async fn ceremonies(&self) -> Result<Arc<Ceremonies>> {
        self.conn
            .lock()
            .await
            .ceremonies
            .clone()
            .ok_or(DesktopError::NotConnected)
    }

    /// The session, about to be used (unless the idle lock dropped it), or NotSignedIn.
    fn in_use<'c>(&self, conn: &'c mut Connection) -> Result<&'c mut Session> {
        if conn.lock_if_idle(self.clock.now()) {
            self.vault.clear();
        }
        let s = conn.session.as_mut().ok_or(DesktopError::NotSignedIn)?;
        s.last_used = self.clock.now();
        Ok(s)
    }

    /// The signed-in API, or NotSignedIn.
    pub async fn session(&self) -> Result<(Api, Uuid)> {
        let mut conn = self.conn.lock().await;
        let s = self.in_use(&mut conn)?;
        Ok((s.api.borrow().clone(), s.id))
    }

    /// The signed-in API as it changes (a step-up replaces the token), for the live feed.
    pub async fn watch_session(&self) -> Result<(watch::Receiver<Api>, Uuid)> {
        let mut conn = self.conn.lock().await;
        let s = self.in_use(&mut conn)?;
        Ok((s.api.subscribe(), s.id))
    }

    /// After a ceremony that may have stepped up: if the server replaced session `id`'s token
    /// (`api` no longer holds `before`'s), the new one is used from now on, by the live feed
    /// too, and rests in the secret store in place of the old one, which the server refuses.
    /// Whatever the operation's outcome: the step-up itself succeeded.
    async fn renewed(&self, id: Uuid, before: &Api, api: &Api) {
        let Some(token) = api.token().filter(|t| Some(*t) != before.token()) else {
            return;
        };
        let mut conn = self.conn.lock().await;
        // Signed out or in again meanwhile: that session is not this one.
        let Some(s) = conn.session.as_mut().filter(|s| s.id == id) else {
            return;
        };
        s.api.send_replace(api.clone());
        self.vault.save(&SavedSession {
            server: api.base().to_string(),
            token: token.to_string(),
            recovery: s.recovery,
        });
    }

    /// A session the server refuses is forgotten here too, so the UI returns to sign-in.
    async fn checked<T>(&self, r: keyward_client::Result<T>) -> Result<T> {
        if let Err(e) = &r
            && matches!(
                e.code(),
                Some(ErrorCode::Unauthenticated | ErrorCode::SessionExpired)
            )
        {
            self.conn.lock().await.session = None;
        }
        Ok(r?)
    }

    fn device_secret(&self) -> Option<String> {
        self.vault.load_device_secret()
    }

    fn remember(&self, signed: &SignedIn) {
        // Lets the server tell this machine's sign-ins from a stranger's: in the secret store.
        if !signed.device_secret.is_empty() {
            self.vault.save_device_secret(&signed.device_secret);
        }
    }

    /// Ceremonies whose new session is bound to a fresh P-256 key, kept in the secret store
    /// apart from the token (software-bound: no TPM or Secure Enclave path yet).
    async fn binding_ceremonies(&self) -> Result<(Ceremonies, ProofKey)> {
        let key = ProofKey::generate();
        Ok((
            self.ceremonies().await?.binding_sessions_to(key.clone()),
            key,
        ))
    }

    /// Holds a new session (or a recovery session's new token), bound to `key` if it is.
    async fn adopt(&self, signed: SignedIn, key: Option<ProofKey>) -> Result<AccountView> {
        let c = self.ceremonies().await?;
        self.remember(&signed);
        let account = signed.account.clone();
        if let Some(k) = &key {
            self.vault.save_session_key(&k.to_secret());
        }
        self.vault.save(&SavedSession {
            server: c.api.base().to_string(),
            token: signed.token.clone(),
            recovery: false,
        });
        let mut conn = self.conn.lock().await;
        conn.locked = false;
        conn.session = Some(Session {
            api: watch::Sender::new(match key {
                Some(k) => c
                    .api
                    .with_bound_token_at(&signed.token, k, self.proof_clock.clone()),
                None => c.api.with_token(&signed.token),
            }),
            id: signed.session.id,
            account: signed.account,
            last_used: self.clock.now(),
            recovery: false,
        });
        Ok(account)
    }

    pub async fn create_account(
        &self,
        username: &str,
        display_name: Option<&str>,
    ) -> Result<AccountView> {
        let (c, key) = self.binding_ceremonies().await?;
        let mut keys = self.keys.lock().await;
        let signed = c
            .create_account(&mut *keys, username, display_name, None)
            .await?;
        drop(keys);
        self.adopt(signed, Some(key)).await
    }

    pub async fn sign_in(&self, username: Option<&str>) -> Result<AccountView> {
        let (c, key) = self.binding_ceremonies().await?;
        let mut keys = self.keys.lock().await;
        let signed = c
            .sign_in(
                &mut *keys,
                username.filter(|u| !u.trim().is_empty()),
                self.device_secret(),
            )
            .await?;
        drop(keys);
        self.adopt(signed, Some(key)).await
    }

    pub async fn sign_out(&self) -> Result<()> {
        let session = self.conn.lock().await.session.take();
        self.vault.clear();
        if let Some(s) = session {
            let api = s.api.borrow().clone();
            let _ = api.sign_out().await;
        }
        Ok(())
    }

    pub async fn overview(&self) -> Result<Overview> {
        let (api, _) = self.session().await?;
        let r = async {
            Ok(Overview {
                account: api.account().await?,
                readiness: api.readiness().await?,
                sessions: api.sessions().await?,
                authenticators: api.authenticators().await?,
            })
        }
        .await;
        let overview = self.checked(r).await?;
        if let Some(s) = self.conn.lock().await.session.as_mut() {
            s.account = overview.account.clone();
        }
        self.watch_log(&api, overview.account.id).await;
        Ok(overview)
    }

    pub async fn sessions(&self) -> Result<Vec<SessionView>> {
        let (api, _) = self.session().await?;
        self.checked(api.sessions().await).await
    }

    /// Sensitive operations: a fresh touch of the key is asked for only if the server wants it.
    async fn sensitive<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(Api) -> Fut,
        Fut: std::future::Future<Output = keyward_client::Result<T>>,
    {
        let c = self.ceremonies().await?;
        let (mut api, id) = self.session().await?;
        let before = api.clone();
        let mut keys = self.keys.lock().await;
        let r = c.with_step_up(&mut api, &mut *keys, op).await;
        drop(keys);
        self.renewed(id, &before, &api).await;
        self.checked(r).await
    }

    pub async fn end_session(&self, id: Uuid) -> Result<EndedSessions> {
        let (_, mine) = self.session().await?;
        let ended = self
            .sensitive(|api| async move { api.end_session(id).await })
            .await?;
        if id == mine {
            self.conn.lock().await.session = None;
            self.vault.clear();
        }
        Ok(ended)
    }

    /// Deletes the account after a fresh touch of the key; this app is signed out.
    pub async fn delete_account(&self) -> Result<()> {
        self.sensitive(|api| async move { api.delete_account().await })
            .await?;
        self.conn.lock().await.session = None;
        self.vault.clear();
        Ok(())
    }

    pub async fn export_log(&self) -> Result<LogExport> {
        let (api, _) = self.session().await?;
        self.checked(api.export_log().await).await
    }

    pub async fn end_other_sessions(&self) -> Result<EndedSessions> {
        self.sensitive(|api| async move { api.end_other_sessions().await })
            .await
    }

    pub async fn authenticators(&self) -> Result<Vec<AuthenticatorView>> {
        let (api, _) = self.session().await?;
        self.checked(api.authenticators().await).await
    }

    // -----------------------------------------------------------------------------------
    // The security key itself (USB or NFC): what it is, its PIN, the passkeys it holds.

    pub async fn key_info(&self) -> Result<KeyInfo> {
        let keys = self.keys.lock().await;
        keys.admin().and_then(|k| k.info()).map_err(client_error)
    }

    pub async fn key_set_pin(&self, new_pin: &str) -> Result<KeyInfo> {
        let keys = self.keys.lock().await;
        let admin = keys.admin().map_err(client_error)?;
        admin.set_pin(new_pin).map_err(client_error)?;
        admin.info().map_err(client_error)
    }

    pub async fn key_change_pin(&self, old_pin: &str, new_pin: &str) -> Result<KeyInfo> {
        let keys = self.keys.lock().await;
        let admin = keys.admin().map_err(client_error)?;
        admin.change_pin(old_pin, new_pin).map_err(client_error)?;
        admin.info().map_err(client_error)
    }

    /// The passkeys on the key, set beside the account: which are this account's keys, which
    /// belong to this site but no account key (left over), and which are other sites'.
    pub async fn key_passkeys(&self) -> Result<KeyPasskeysView> {
        let listed = {
            let keys = self.keys.lock().await;
            keys.admin()
                .and_then(|k| k.passkeys())
                .map_err(client_error)?
        };
        self.beside_account(listed).await
    }

    pub async fn key_delete_passkey(&self, credential_id: &str) -> Result<KeyPasskeysView> {
        let id = keyward_core::secret::unb64(credential_id)
            .ok_or_else(|| DesktopError::InvalidInput("not a credential ID".into()))?;
        let listed = {
            let keys = self.keys.lock().await;
            keys.admin()
                .and_then(|k| k.delete_passkey(&id))
                .map_err(client_error)?
        };
        self.beside_account(listed).await
    }

    /// Labels each passkey on the key: this account's key, left over (this site, but the
    /// account no longer knows it), or another site's; and lists the account's keys of this
    /// model whose passkey the key does not hold (if this key is one of them, it was reset).
    async fn beside_account(&self, listed: KeyPasskeys) -> Result<KeyPasskeysView> {
        let on_account = match self.session().await {
            Ok((api, _)) => Some(self.checked(api.authenticators().await).await?),
            Err(_) => None,
        };
        let rp_id = self.ceremonies().await?.rp_id().to_string();
        let passkeys: Vec<KeyPasskeyView> = listed
            .passkeys
            .into_iter()
            .map(|p| {
                let this_site = p.rp_id == rp_id;
                let account_key = on_account.as_ref().and_then(|keys| {
                    keys.iter()
                        .find(|k| k.credential_id == p.credential_id)
                        .map(|k| k.nickname.clone())
                });
                KeyPasskeyView {
                    passkey: p,
                    this_site,
                    account_key,
                }
            })
            .collect();
        let missing_on_key = match (&on_account, listed.aaguid) {
            (Some(keys), Some(model)) => keys
                .iter()
                .filter(|k| k.aaguid == Some(model) && k.status == AuthenticatorStatus::Active)
                .filter(|k| {
                    !passkeys
                        .iter()
                        .any(|p| p.this_site && p.passkey.credential_id == k.credential_id)
                })
                .map(|k| k.nickname.clone())
                .collect(),
            _ => Vec::new(),
        };
        Ok(KeyPasskeysView {
            passkeys,
            free_slots: listed.free_slots,
            missing_on_key,
        })
    }

    pub async fn key_reset(&self) -> Result<KeyInfo> {
        let keys = self.keys.lock().await;
        let admin = keys.admin().map_err(client_error)?;
        admin.factory_reset().map_err(client_error)?;
        admin.info().map_err(client_error)
    }

    pub async fn add_key(&self, nickname: Option<String>) -> Result<AuthenticatorView> {
        let c = self.ceremonies().await?;
        let (mut api, id) = self.session().await?;
        let before = api.clone();
        let mut keys = self.keys.lock().await;
        let r = c.add_key(&mut api, &mut *keys, nickname.as_deref()).await;
        drop(keys);
        self.renewed(id, &before, &api).await;
        let added = self.checked(r).await?;
        self.finish_recovery().await?;
        Ok(added)
    }

    /// A recovery session that has enrolled a new key and a new recovery key becomes a full
    /// session with a new token, which replaces the recovery token here and in the vault.
    async fn finish_recovery(&self) -> Result<()> {
        let api = {
            let conn = self.conn.lock().await;
            match conn.session.as_ref() {
                Some(s) if s.recovery => s.api.borrow().clone(),
                _ => return Ok(()),
            }
        };
        match api.complete_recovery().await {
            Ok(signed) => {
                // The same session, so the same key it is bound to.
                self.adopt(signed, api.proof_key().cloned()).await?;
                Ok(())
            }
            // Not both enrolled yet: the next enrolment step finishes it.
            Err(e) if e.code() == Some(ErrorCode::RecoveryInProgress) => Ok(()),
            Err(e) => self.checked(Err(e)).await,
        }
    }

    pub async fn rename_key(&self, id: Uuid, nickname: &str) -> Result<AuthenticatorView> {
        let (api, _) = self.session().await?;
        self.checked(api.rename_authenticator(id, nickname).await)
            .await
    }

    pub async fn removal_impact(&self, id: Uuid) -> Result<RemovalImpact> {
        let (api, _) = self.session().await?;
        self.checked(api.removal_impact(id).await).await
    }

    pub async fn remove_key(&self, id: Uuid) -> Result<EndedSessions> {
        self.sensitive(|api| async move { api.remove_authenticator(id).await })
            .await
    }

    pub async fn report_lost(&self, id: Uuid) -> Result<EndedSessions> {
        self.sensitive(|api| async move { api.report_lost(id).await })
            .await
    }

    pub async fn events(&self, before: Option<i64>) -> Result<EventPage> {
        let (api, _) = self.session().await?;
        self.checked(api.events(before, 50).await).await
    }

    pub async fn create_recovery_key(&self) -> Result<NewRecoveryKey> {
        let c = self.ceremonies().await?;
        let (mut api, id) = self.session().await?;
        let before = api.clone();
        let mut keys = self.keys.lock().await;
        let r = c.new_recovery_key(&mut api, &mut *keys).await;
        drop(keys);
        self.renewed(id, &before, &api).await;
        let (key, status) = self.checked(r).await?;
        self.finish_recovery().await?;
        Ok(NewRecoveryKey {
            key: key.to_display(),
            status,
        })
    }

    pub async fn prove_recovery_key(
        &self,
        typed: &str,
        purpose: RecoveryPurpose,
    ) -> Result<RecoveryKeyStatus> {
        let c = self.ceremonies().await?;
        let (api, _) = self.session().await?;
        let r = c.prove_recovery_key(&api, typed, purpose).await;
        self.checked(r).await
    }

    /// On a new machine: redeem and hold the recovery session.
    pub async fn redeem_recovery_key(
        &self,
        username: &str,
        typed: &str,
    ) -> Result<RecoveryStarted> {
        let (c, key) = self.binding_ceremonies().await?;
        let started = c.redeem_recovery_key(username, typed).await?;
        self.vault.save_session_key(&key.to_secret());
        self.vault.save(&SavedSession {
            server: c.api.base().to_string(),
            token: started.token.clone(),
            recovery: true,
        });
        let api = c
            .api
            .with_bound_token_at(&started.token, key, self.proof_clock.clone());
        let id = current_session_id(&api).await.unwrap_or_default();
        self.conn.lock().await.session = Some(Session {
            api: watch::Sender::new(api),
            id,
            account: started.account.clone(),
            last_used: self.clock.now(),
            recovery: true,
        });
        Ok(started)
    }

    pub async fn cancel_recovery(&self) -> Result<AccountView> {
        let c = self.ceremonies().await?;
        let mut keys = self.keys.lock().await;
        Ok(c.cancel_recovery(&mut *keys).await?)
    }
}

/// Earlier versions kept the device secret in a plain file of the data folder: it moves into
/// the secret store once, and the file goes (where no secret store answers, the secret lives in
/// memory for this run only: a plain file is what this closes).
fn migrate_device_secret(data_dir: &Path, vault: &dyn TokenVault) {
    let path = data_dir.join("device-secret");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    let secret = text.trim();
    if !secret.is_empty() && vault.load_device_secret().is_none() {
        vault.save_device_secret(secret);
    }
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(error = %e, "could not delete the old device-secret file");
    }
}

/// The ID of the session `api`'s token belongs to (answers carry the account, not always the
/// session).
async fn current_session_id(api: &Api) -> Option<Uuid> {
    api.current_session().await.ok().map(|s| s.id)
}

/// What the live feed sends the UI: an event, or "open this session" when the user acted on a
/// desktop notification.
#[derive(Debug, Clone, Serialize, Deserialize, TS)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedMessage {
    /// Events in order, oldest first: a burst travels as one message.
    Events {
        events: Vec<SecurityEvent>,
    },
    Open {
        session_id: Option<Uuid>,
    },
}

/// A desktop alert for an event, or None when it should stay quiet: this session's own doings,
/// known devices signing in again, routine checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub title: String,
    pub body: String,
    /// The session to open when the user acts on the alert.
    pub session_id: Option<Uuid>,
}

/// A name a client chose for itself (or for a key), as alert text: quoted, its own quotes and
/// line breaks replaced, at most 40 characters, so it cannot pose as the server's words.
pub fn chosen_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| match c {
            '“' | '”' | '"' | '«' | '»' | '„' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    let cleaned = cleaned.trim();
    let short: String = cleaned.chars().take(40).collect();
    let ellipsis = if cleaned.chars().count() > 40 {
        "…"
    } else {
        ""
    };
    format!("“{short}{ellipsis}”")
}

pub fn alert_for(event: &SecurityEvent, my_session: Uuid) -> Option<Alert> {
    if event.urgency != Urgency::Urgent || event.session_id == Some(my_session) {
        return None;
    }
    // What the server knows, said as its own: the address, the coarse place, whether the
    // device is new to the account. The device's name is the client's own choice and says so.
    let address = event.address.as_deref().unwrap_or("an unknown address");
    let place = event
        .detail
        .place
        .as_ref()
        .map(|p| format!(" ({p})"))
        .unwrap_or_default();
    let device = match &event.device_name {
        Some(name) => format!("a device that calls itself {}", chosen_name(name)),
        None => "an unknown device".to_string(),
    };
    let seen = if event.detail.known_device == Some(false) {
        "A device new to your account"
    } else {
        "A device"
    };
    let from = format!("from {address}{place}, on {device}");
    let key = event
        .detail
        .authenticator_name
        .as_deref()
        .map(|k| format!("the key {}", chosen_name(k)))
        .unwrap_or_else(|| "a key".into());
    let (title, body) = match event.kind {
        EventKind::SignIn => (
            "New sign-in to your account".to_string(),
            format!(
                "{seen} signed in with {key} {from}. The name is the device's own and proves nothing. Not you? Open Keyward to end that session."
            ),
        ),
        EventKind::AuthenticatorAdded => (
            "A security key was added".into(),
            format!("{key} was added {from}."),
        ),
        EventKind::AuthenticatorRemoved => (
            "A security key was removed".into(),
            format!("{key} was removed {from}."),
        ),
        EventKind::AuthenticatorReportedLost => (
            "A security key was reported lost".into(),
            format!("{key} was disabled {from}."),
        ),
        EventKind::RecoveryKeyGenerated => (
            "A new recovery key was made".into(),
            format!("Made {from}. The old recovery key no longer works."),
        ),
        EventKind::RecoveryStarted => (
            "Someone is recovering your account".into(),
            format!(
                "A recovery key was used {from}. If this was not you, cancel it now with your security key."
            ),
        ),
        EventKind::RecoveryCancelled => (
            "Account recovery was cancelled".into(),
            format!("Cancelled {from}."),
        ),
        EventKind::RecoveryCompleted => (
            "Account recovery completed".into(),
            "Every other session was ended.".into(),
        ),
        EventKind::ClonedKeyWarning => (
            "A security key may have been cloned".into(),
            format!(
                "{key} sent an out-of-order counter {from}. The sign-in was refused; consider reporting the key lost."
            ),
        ),
        EventKind::AccountDisabled => (
            "Your account was disabled".into(),
            format!(
                "The service's operator disabled it and ended every session: {}",
                event.detail.reason.as_deref().unwrap_or("no reason given")
            ),
        ),
        EventKind::AccountEnabled => (
            "Your account was enabled again".into(),
            "The service's operator enabled it; sign in with your security key.".into(),
        ),
        EventKind::AppSignIn => (
            format!(
                "Signed in to {}",
                event.detail.client_name.as_deref().unwrap_or("an app")
            ),
            format!(
                "An app sign-in through Keyward {from}. If this was not you, end that session."
            ),
        ),
        EventKind::AppTokenReused => (
            "A copy of an app's sign-in was used".into(),
            format!(
                "Someone presented {}'s old token again. That app sign-in was ended; sign in to the app again.",
                event.detail.client_name.as_deref().unwrap_or("an app")
            ),
        ),
        EventKind::AccountDeleted => (
            "Your account was deleted".into(),
            "Every session was ended and its keys removed. This app is signed out.".into(),
        ),
        EventKind::AgentAuthorized => (
            format!(
                "{} may now act for you",
                event.detail.client_name.as_deref().unwrap_or("An agent")
            ),
            format!(
                "A device code was approved with {key} {from}: the agent has a session of its own. If this was not you, end it in Sessions."
            ),
        ),
        _ => return None,
    };
    Some(Alert {
        title,
        body,
        session_id: event.session_id,
    })
}
