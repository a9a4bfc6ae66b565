//! Tauri commands: validate, call `Desktop`, return. Logic lives in `desktop.rs` and the crates.

use keyward_proto::*;
use tauri::ipc::Channel;
use tauri::{AppHandle, Runtime, State};
use url::Url;
use uuid::Uuid;

use crate::desktop::{AppStatus, Desktop, FeedMessage, KeyPasskeysView, NewRecoveryKey, Overview};
use crate::error::{DesktopError, Result};
use crate::keys::KeyKind;

#[tauri::command]
pub async fn status(desktop: State<'_, Desktop>) -> Result<AppStatus> {
    desktop.status().await
}

/// `server`: a keywardd URL, or none for the built-in server.
#[tauri::command]
pub async fn connect<R: Runtime>(
    app: AppHandle<R>,
    desktop: State<'_, Desktop>,
    server: Option<String>,
) -> Result<AppStatus> {
    let url = match server.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Some(
            Url::parse(s)
                .map_err(|e| DesktopError::InvalidInput(format!("'{s}' is not a URL: {e}")))?,
        ),
        None => None,
    };
    let status = desktop.connect(url).await;
    notify_log_alarm(&app, &desktop).await;
    status
}

/// A newly raised log alarm (`Desktop::watch_log`) as a desktop notification and in the tray.
async fn notify_log_alarm<R: Runtime>(app: &AppHandle<R>, desktop: &Desktop) {
    let Some(alert) = desktop.take_log_notice().await else {
        return;
    };
    crate::tray::note(app, &alert.title);
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        crate::notify::show(&alert, || crate::tray::show_main(&app))
    });
}

#[tauri::command]
pub async fn create_account(
    desktop: State<'_, Desktop>,
    username: String,
    display_name: Option<String>,
) -> Result<AccountView> {
    desktop
        .create_account(&username, display_name.as_deref())
        .await
}

#[tauri::command]
pub async fn sign_in(desktop: State<'_, Desktop>, username: Option<String>) -> Result<AccountView> {
    desktop.sign_in(username.as_deref()).await
}

#[tauri::command]
pub async fn sign_out(desktop: State<'_, Desktop>) -> Result<()> {
    desktop.sign_out().await
}

#[tauri::command]
pub async fn overview<R: Runtime>(
    app: AppHandle<R>,
    desktop: State<'_, Desktop>,
) -> Result<Overview> {
    let overview = desktop.overview().await;
    notify_log_alarm(&app, &desktop).await;
    overview
}

#[tauri::command]
pub async fn sessions(desktop: State<'_, Desktop>) -> Result<Vec<SessionView>> {
    desktop.sessions().await
}

#[tauri::command]
pub async fn end_session(desktop: State<'_, Desktop>, id: Uuid) -> Result<EndedSessions> {
    desktop.end_session(id).await
}

#[tauri::command]
pub async fn end_other_sessions(desktop: State<'_, Desktop>) -> Result<EndedSessions> {
    desktop.end_other_sessions().await
}

#[tauri::command]
pub async fn delete_account(desktop: State<'_, Desktop>) -> Result<()> {
    desktop.delete_account().await
}

#[tauri::command]
pub async fn export_log(desktop: State<'_, Desktop>) -> Result<LogExport> {
    desktop.export_log().await
}

#[tauri::command]
pub async fn authenticators(desktop: State<'_, Desktop>) -> Result<Vec<AuthenticatorView>> {
    desktop.authenticators().await
}

#[tauri::command]
pub async fn add_key(
    desktop: State<'_, Desktop>,
    nickname: Option<String>,
) -> Result<AuthenticatorView> {
    desktop.add_key(nickname).await
}

#[tauri::command]
pub async fn rename_key(
    desktop: State<'_, Desktop>,
    id: Uuid,
    nickname: String,
) -> Result<AuthenticatorView> {
    desktop.rename_key(id, &nickname).await
}

#[tauri::command]
pub async fn removal_impact(desktop: State<'_, Desktop>, id: Uuid) -> Result<RemovalImpact> {
    desktop.removal_impact(id).await
}

#[tauri::command]
pub async fn remove_key(desktop: State<'_, Desktop>, id: Uuid) -> Result<EndedSessions> {
    desktop.remove_key(id).await
}

#[tauri::command]
pub async fn report_lost(desktop: State<'_, Desktop>, id: Uuid) -> Result<EndedSessions> {
    desktop.report_lost(id).await
}

#[tauri::command]
pub async fn events(desktop: State<'_, Desktop>, before: Option<i64>) -> Result<EventPage> {
    desktop.events(before).await
}

/// Streams this account's security events into `channel` and raises desktop alerts for the
/// urgent ones from elsewhere, until the session ends.
/// Events reach the window at most this late, and at most this many per message.
const FEED_BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(30);
const FEED_BATCH_MAX: usize = 500;

#[tauri::command]
pub async fn watch_events<R: Runtime>(
    app: AppHandle<R>,
    desktop: State<'_, Desktop>,
    channel: Channel<FeedMessage>,
    after: Option<i64>,
) -> Result<()> {
    // Follows the session's token: a step-up replaces it, and the feed reconnects with it.
    let (api, session_id) = desktop.watch_session().await?;
    let (mut rx, _task) = keyward_client::EventFeed::follow(api, session_id, after);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // What else arrives within a moment goes in the same message: each channel
            // message is a script evaluated in the webview, and a burst of thousands of them
            // costs the web process memory it keeps.
            let mut events = vec![first];
            let window = tokio::time::sleep(FEED_BATCH_WINDOW);
            tokio::pin!(window);
            while events.len() < FEED_BATCH_MAX {
                tokio::select! {
                    more = rx.recv() => match more {
                        Some(e) => events.push(e),
                        None => break,
                    },
                    _ = &mut window => break,
                }
            }
            for event in &events {
                let Some(alert) = crate::desktop::alert_for(event, session_id) else {
                    continue;
                };
                crate::tray::note(&app, &alert.title);
                let (app, opener) = (app.clone(), channel.clone());
                tokio::task::spawn_blocking(move || {
                    crate::notify::show(&alert, || {
                        crate::tray::show_main(&app);
                        let _ = opener.send(FeedMessage::Open {
                            session_id: alert.session_id,
                        });
                    })
                });
            }
            if channel.send(FeedMessage::Events { events }).is_err() {
                break; // the window went away
            }
        }
    });
    Ok(())
}

#[tauri::command]
pub async fn create_recovery_key(desktop: State<'_, Desktop>) -> Result<NewRecoveryKey> {
    desktop.create_recovery_key().await
}

#[tauri::command]
pub async fn prove_recovery_key(
    desktop: State<'_, Desktop>,
    typed: String,
    purpose: RecoveryPurpose,
) -> Result<RecoveryKeyStatus> {
    desktop.prove_recovery_key(&typed, purpose).await
}

#[tauri::command]
pub async fn redeem_recovery_key(
    desktop: State<'_, Desktop>,
    username: String,
    typed: String,
) -> Result<RecoveryStarted> {
    desktop.redeem_recovery_key(&username, &typed).await
}

#[tauri::command]
pub async fn cancel_recovery(desktop: State<'_, Desktop>) -> Result<AccountView> {
    desktop.cancel_recovery().await
}

/// Which key the next ceremonies use: a security key (USB or NFC) or the virtual key.
#[tauri::command]
pub async fn choose_key(desktop: State<'_, Desktop>, kind: KeyKind) -> Result<AppStatus> {
    desktop.choose_key(kind).await
}

/// Prompts from running security-key ceremonies ("tap your key", "enter your PIN", …).
#[tauri::command]
pub fn watch_key_prompts(desktop: State<'_, Desktop>, channel: Channel<KeyPrompt>) {
    desktop.prompts.set_sink(move |prompt| {
        let _ = channel.send(prompt);
    });
}

/// The PIN the key asked for, or none when the person cancels the prompt.
#[tauri::command]
pub fn answer_pin(desktop: State<'_, Desktop>, pin: Option<String>) -> Result<()> {
    if desktop.prompts.answer_pin(pin) {
        Ok(())
    } else {
        Err(DesktopError::InvalidInput(
            "no key is waiting for a PIN".into(),
        ))
    }
}

/// Stops the running security-key ceremony.
#[tauri::command]
pub fn cancel_key(desktop: State<'_, Desktop>) {
    desktop.prompts.cancel();
}

/// The security key itself: model, versions, transports, PIN set, tries left.
#[tauri::command]
pub async fn key_info(desktop: State<'_, Desktop>) -> Result<KeyInfo> {
    desktop.key_info().await
}

#[tauri::command]
pub async fn key_set_pin(desktop: State<'_, Desktop>, new_pin: String) -> Result<KeyInfo> {
    desktop.key_set_pin(&new_pin).await
}

#[tauri::command]
pub async fn key_change_pin(
    desktop: State<'_, Desktop>,
    old_pin: String,
    new_pin: String,
) -> Result<KeyInfo> {
    desktop.key_change_pin(&old_pin, &new_pin).await
}

/// The passkeys on the key beside the account's keys (the key asks for its PIN).
#[tauri::command]
pub async fn key_passkeys(desktop: State<'_, Desktop>) -> Result<KeyPasskeysView> {
    desktop.key_passkeys().await
}

#[tauri::command]
pub async fn key_delete_passkey(
    desktop: State<'_, Desktop>,
    credential_id: String,
) -> Result<KeyPasskeysView> {
    desktop.key_delete_passkey(&credential_id).await
}

/// Factory reset: every passkey on the key and its PIN, gone.
#[tauri::command]
pub async fn key_reset(desktop: State<'_, Desktop>) -> Result<KeyInfo> {
    desktop.key_reset().await
}
