//! Desktop notifications (notify-rust) for urgent events from other sessions. A missing
//! notification service only loses the pop-up: the event is still in the timeline.

use crate::desktop::Alert;

/// Shows the alert; returns false if the desktop has no notification service.
pub fn show(alert: &Alert) -> bool {
    let mut n = notify_rust::Notification::new();
    n.appname("Keyward").summary(&alert.title).body(&alert.body);
    #[cfg(all(unix, not(target_os = "macos")))]
    {
        n.urgency(notify_rust::Urgency::Critical)
            .hint(notify_rust::Hint::Category("security".into()));
    }
    match n.show() {
        Ok(_) => true,
        Err(e) => {
            tracing::info!(error = %e, "no notification service; the alert stays in the timeline");
            false
        }
    }
}
