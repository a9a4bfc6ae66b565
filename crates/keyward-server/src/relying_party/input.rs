//! Cleaning what clients send: names and nicknames are shown to the person later (in lists,
//! alerts and notifications), so control characters go and lengths are bounded.

use keyward_proto::ClientInfo;

use crate::error::{Result, ServerError};

/// Control characters removed, at most `max` characters, trimmed.
pub(super) fn clean_text(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The one spelling of a username: trimmed, lower-case, 1 to 64 of a small character set.
pub(super) fn normalize_username(raw: &str) -> Result<String> {
    let name = raw.trim().to_lowercase();
    let ok_chars = name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'));
    if name.is_empty() || name.chars().count() > 64 || !ok_chars {
        return Err(ServerError::InvalidInput(
            "a username is 1 to 64 letters, digits or . _ - @ +".into(),
        ));
    }
    Ok(name)
}

pub(super) fn clean_nickname(raw: &str) -> Result<String> {
    let n = clean_text(raw, 64);
    if n.is_empty() {
        return Err(ServerError::InvalidInput(
            "a key's nickname cannot be empty".into(),
        ));
    }
    Ok(n)
}

/// The client's own name for itself, else its User-Agent, else "Unknown client".
pub(super) fn clean_client(c: &ClientInfo, user_agent: &str) -> ClientInfo {
    let name = clean_text(&c.name, 100);
    let name = if name.is_empty() {
        let ua = clean_text(user_agent, 100);
        if ua.is_empty() {
            "Unknown client".to_string()
        } else {
            ua
        }
    } else {
        name
    };
    ClientInfo {
        name,
        platform: clean_text(&c.platform, 50),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn usernames_have_one_spelling_and_a_small_alphabet() {
        assert_eq!(
            normalize_username("  Ada.L@Example ").unwrap(),
            "ada.l@example"
        );
        for bad in ["", "   ", "ada lovelace", "ada/1", &"a".repeat(65)] {
            assert!(normalize_username(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn client_names_lose_control_characters_and_fall_back_to_the_user_agent() {
        let c = clean_client(
            &ClientInfo {
                name: "Lap\u{7}top\n".into(),
                platform: "linux".into(),
            },
            "ua",
        );
        assert_eq!(c.name, "Laptop");
        let unnamed = ClientInfo {
            name: " ".into(),
            platform: String::new(),
        };
        assert_eq!(clean_client(&unnamed, "Firefox").name, "Firefox");
        assert_eq!(clean_client(&unnamed, "").name, "Unknown client");
        assert!(clean_nickname("\u{1b}").is_err());
    }
}
