//! The Keyward desktop app: a Tauri 2 shell over `desktop::Desktop`, which runs ceremonies with
//! keyward-client and, with no server configured, an embedded keywardd on loopback.

pub mod commands;
pub mod desktop;
pub mod error;
pub mod keys;
pub mod notify;
pub mod tray;
pub mod vault;

use keyward_proto::ClientInfo;
use tauri::Manager;

/// The platform name shown in device lists.
pub fn platform() -> String {
    std::env::consts::OS
        .replace("linux", "Linux")
        .replace("windows", "Windows")
        .replace("macos", "macOS")
}

fn client_info() -> ClientInfo {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this computer".into());
    ClientInfo {
        name: format!("Keyward desktop on {host}"),
        platform: platform(),
    }
}

/// Registers every command with the builder. Shared by `run` and the mock-runtime tests.
pub fn with_commands<R: tauri::Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder.invoke_handler(tauri::generate_handler![
        commands::status,
        commands::connect,
        commands::create_account,
        commands::sign_in,
        commands::sign_out,
        commands::overview,
        commands::sessions,
        commands::end_session,
        commands::end_other_sessions,
        commands::delete_account,
        commands::export_log,
        commands::authenticators,
        commands::add_key,
        commands::rename_key,
        commands::removal_impact,
        commands::remove_key,
        commands::report_lost,
        commands::events,
        commands::watch_events,
        commands::create_recovery_key,
        commands::prove_recovery_key,
        commands::redeem_recovery_key,
        commands::cancel_recovery,
        commands::choose_key,
        commands::watch_key_prompts,
        commands::answer_pin,
        commands::cancel_key,
        commands::key_info,
        commands::key_set_pin,
        commands::key_change_pin,
        commands::key_passkeys,
        commands::key_delete_passkey,
        commands::key_reset,
    ])
}

pub fn run() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let app = with_commands(tauri::Builder::default())
        .setup(|app| {
            // KEYWARD_DATA_DIR lets tests and portable installs keep state elsewhere.
            let data_dir = match std::env::var_os("KEYWARD_DATA_DIR") {
                Some(d) => d.into(),
                None => app.path().app_data_dir()?,
            };
            #[cfg(target_os = "linux")]
            if let Some(window) = app.get_webview_window("main") {
                let _ = window.with_webview(|webview| {
                    use webkit2gtk::{SettingsExt, WebViewExt};
                    let view = webview.inner();
                    // WebKitGTK's accelerated compositing costs the web process ~80 MB
                    // (measured under Xvfb: ~100 vs ~180 MiB PSS) and buys a page of lists and
                    // forms nothing. KEYWARD_WEBKIT_COMPOSITING=on keeps WebKit's default:
                    // WebKitWebDriver's screenshots hang without compositing, so the
                    // end-to-end tests set it.
                    if std::env::var("KEYWARD_WEBKIT_COMPOSITING").as_deref() != Ok("on")
                        && let Some(settings) = view.settings()
                    {
                        settings.set_hardware_acceleration_policy(
                            webkit2gtk::HardwareAccelerationPolicy::Never,
                        );
                    }
                    // If the page's process dies (a WebKit crash, its memory limit), say why in
                    // the log and load the dashboard again rather than leave a blank window;
                    // the session lives in the Rust side, so nothing is lost.
                    view.connect_web_process_terminated(|view, reason| {
                        tracing::warn!(?reason, "the window's web process ended; reloading");
                        view.reload();
                    });
                });
            }
            let desktop = desktop::Desktop::new(&data_dir, client_info())?;
            app.manage(desktop);
            // Without a tray (no status-notifier host), closing the window quits as usual.
            match tray::install(app.handle()) {
                Ok(()) => {
                    app.manage(tray::Installed);
                }
                Err(e) => tracing::info!(error = %e, "no tray icon; closing the window will quit"),
            }
            Ok(())
        })
        .on_window_event(|window, event| {
            // With a tray, closing the window keeps Keyward watching in the background.
            if let tauri::WindowEvent::CloseRequested { api, .. } = event
                && window.try_state::<tray::Installed>().is_some()
            {
                api.prevent_close();
                let _ = window.hide();
            }
        })
        .run(tauri::generate_context!());
    if let Err(e) = app {
        eprintln!("keyward: {e}");
        std::process::exit(1);
    }
}
