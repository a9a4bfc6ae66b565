//! The security log's rules, apart from any database: how loud each event is, how an event is
//! hashed into the chain, and how a chain is checked. Pure functions, so they are tested without
//! SQLite and every storage engine seals and verifies the log the same way.

use sha2::{Digest, Sha256};

use keyward_proto::{EventDetail, EventKind, SecurityEvent, Urgency};

/// The "previous hash" of the first event in the log.
pub const GENESIS_HASH: [u8; 32] = [0u8; 32];

/// How loudly clients should tell the user. A new device, a key change or a recovery is urgent;
/// a known device signing in again, a failed attempt or a routine check is quiet.
pub fn urgency_of(kind: EventKind, detail: &EventDetail) -> Urgency {
    match kind {
        EventKind::SignIn if detail.known_device == Some(true) => Urgency::Quiet,
        EventKind::SignIn
        | EventKind::AuthenticatorAdded
        | EventKind::AuthenticatorRemoved
        | EventKind::AuthenticatorReportedLost
        | EventKind::RecoveryKeyGenerated
        | EventKind::RecoveryStarted
        | EventKind::RecoveryCancelled
        | EventKind::RecoveryCompleted
        | EventKind::ClonedKeyWarning => Urgency::Urgent,
        EventKind::AccountCreated
        | EventKind::SignInFailed
        | EventKind::SessionEnded
        | EventKind::AuthenticatorRenamed
        | EventKind::RecoveryKeyConfirmed
        | EventKind::RecoveryKeyVerified => Urgency::Quiet,
    }
}

/// hash = SHA-256(previous hash ‖ the event's canonical JSON, without its own hash).
pub fn event_hash(prev: &[u8; 32], event: &SecurityEvent) -> [u8; 32] {
    let canonical = serde_json::json!([
        event.id,
        event.account_id,
        event.kind,
        event.at,
        event.urgency,
        event.session_id,
        event.device_id,
        event.device_name,
        event.address,
        event.detail,
    ]);
    Sha256::new_with_prefix(prev)
        .chain_update(canonical.to_string().as_bytes())
        .finalize()
        .into()
}

/// Lower-case hex, for showing a hash to a person (operators' tools).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Result of walking the whole hash chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub events: u64,
    /// The first event whose hash does not follow from its predecessor, if any.
    pub first_broken: Option<i64>,
}

/// Walks `(event, stored hash)` pairs in log order, recomputing each hash from its predecessor's
/// stored one. Stops at the first mismatch (counting it in `events`), or at the first error the
/// source yields, so an engine can stream rows straight from its cursor.
pub fn verify_chain<E>(
    log: impl IntoIterator<Item = Result<(SecurityEvent, [u8; 32]), E>>,
) -> Result<ChainReport, E> {
    let mut prev = GENESIS_HASH;
    let mut count = 0u64;
    for entry in log {
        let (event, stored) = entry?;
        count += 1;
        if event_hash(&prev, &event) != stored {
            return Ok(ChainReport {
                events: count,
                first_broken: Some(event.id),
            });
        }
        prev = stored;
    }
    Ok(ChainReport {
        events: count,
        first_broken: None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::convert::Infallible;

    use uuid::Uuid;

    use super::*;

    /// A correctly chained log of `n` events, as an engine would have stored it.
    fn chain(n: i64) -> Vec<(SecurityEvent, [u8; 32])> {
        let account_id = Uuid::new_v4();
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|id| {
                let event = SecurityEvent {
                    id,
                    account_id,
                    kind: EventKind::SignIn,
                    at: 1000 + id,
                    urgency: Urgency::Urgent,
                    session_id: None,
                    device_id: None,
                    device_name: Some("laptop".into()),
                    address: Some("127.0.0.1".into()),
                    detail: EventDetail::default(),
                };
                let hash = event_hash(&prev, &event);
                prev = hash;
                (event, hash)
            })
            .collect()
    }

    fn verify(log: Vec<(SecurityEvent, [u8; 32])>) -> ChainReport {
        verify_chain(log.into_iter().map(Ok::<_, Infallible>)).unwrap()
    }

    #[test]
    fn an_intact_chain_passes() {
        assert_eq!(
            verify(chain(4)),
            ChainReport {
                events: 4,
                first_broken: None
            }
        );
        assert_eq!(
            verify(Vec::new()),
            ChainReport {
                events: 0,
                first_broken: None
            }
        );
    }

    #[test]
    fn a_modified_event_is_reported() {
        let mut log = chain(4);
        log[1].0.address = Some("203.0.113.9".into());
        assert_eq!(
            verify(log),
            ChainReport {
                events: 2,
                first_broken: Some(2)
            }
        );
    }

    #[test]
    fn a_swapped_order_is_reported() {
        let mut log = chain(4);
        log.swap(1, 2);
        assert_eq!(
            verify(log),
            ChainReport {
                events: 2,
                first_broken: Some(3)
            }
        );
    }

    #[test]
    fn a_broken_link_is_reported() {
        // Event 3 re-sealed as if it followed the genesis, not event 2: its own hash is
        // self-consistent but does not follow from its predecessor.
        let mut log = chain(4);
        log[2].1 = event_hash(&GENESIS_HASH, &log[2].0);
        assert_eq!(
            verify(log.clone()),
            ChainReport {
                events: 3,
                first_broken: Some(3)
            }
        );
        // A missing event breaks the link to the one after it.
        log.remove(1);
        assert_eq!(verify(log).first_broken, Some(3));
    }

    #[test]
    fn a_source_error_stops_the_walk() {
        let log = chain(2).into_iter().map(Ok).chain([Err("disk")]);
        assert_eq!(verify_chain(log), Err("disk"));
    }

    #[test]
    fn a_known_device_signing_in_is_quiet() {
        let known = EventDetail {
            known_device: Some(true),
            ..EventDetail::default()
        };
        assert_eq!(urgency_of(EventKind::SignIn, &known), Urgency::Quiet);
        assert_eq!(
            urgency_of(EventKind::SignIn, &EventDetail::default()),
            Urgency::Urgent
        );
    }

    #[test]
    fn the_hash_is_lower_case_hex() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }
}
