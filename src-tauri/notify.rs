//! Desktop notifications (notify-rust) for urgent events from other sessions. A missing
//! notification service only loses the pop-up: the event is still in the timeline.

use crate::desktop::Alert;

/// Shows the alert and, where the desktop reports it (Linux), calls `on_open` when the user
/// acts on it. Blocks until the notification is acted on or closed: call it off the async
/// workers. Returns false if the desktop has no notification service.
pub fn show(alert: &Alert, on_open: impl FnOnce()) -> bool {
    let mut n = notify_rust::Notification::new();
    n.appname("Keyward").summary(&alert.title).body(&alert.body);
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        n.urgency(notify_rust::Urgency::Critical)
            .hint(notify_rust::Hint::Category("security".into()))
            .action("default", "Open Keyward");
    }
    match n.show() {
        Ok(handle) => {
            #[cfg(all(unix, not(target_os = "macos")))]
            handle.wait_for_action(|action| {
                if action == "default" {
                    on_open();
                }
            });
            #[cfg(not(all(unix, not(target_os = "macos"))))]
            let _ = (handle, on_open);
            true
        }
        Err(e) => {
            tracing::info!(error = %e, "no notification service; the alert stays in the timeline");
            false
        }
    }
}
