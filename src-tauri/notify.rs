//! Desktop notifications (notify-rust) for urgent events from other sessions. A missing
//! notification service only loses the pop-up: the event is still in the timeline.

use crate::desktop::Alert;

/// Shows the alert and, where the desktop reports it (Linux), calls `on_open` when the user
/// acts on it. Blocks until the notification is acted on or closed: call it off the async
/// workers. Returns false if the desktop has no notification service.
pub fn show(alert: &Alert, on_open: impl FnOnce()) -> bool {
    let mut n = notify_rust::Notification::new();
    n.appname("Keyward")
        .summary(&alert.title)
        .body(&body_text(&alert.body));
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

/// Freedesktop notification bodies may carry markup (`<b>`, `<a href>`, `<img>`): the body is
/// escaped there, so a name a client chose shows as typed and cannot style or link the alert.
/// Elsewhere bodies are plain text.
pub fn body_text(body: &str) -> String {
    if cfg!(all(unix, not(target_os = "macos"))) {
        escape_markup(body)
    } else {
        body.to_string()
    }
}

/// `& < > " '` as entities.
pub fn escape_markup(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_a_body_is_shown_as_text() {
        assert_eq!(
            escape_markup(r#"<a href="x">it's</a> & <b>"#),
            "&lt;a href=&quot;x&quot;&gt;it&apos;s&lt;/a&gt; &amp; &lt;b&gt;"
        );
        assert_eq!(escape_markup("plain"), "plain");
    }
}
