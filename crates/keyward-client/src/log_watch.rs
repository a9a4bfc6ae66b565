//! Keeping watch over a server's security log from the outside. The server signs its
//! account's log head with its log key: the account's newest event and a digest of the whole
//! log up to it. A client remembers the newest one it has seen for that account and, each time
//! it looks again, holds the server to it: the same key, a valid signature, a head no older,
//! and the log still digesting at the remembered event to what it did. The digest commits to
//! every event logged before that one, any account's, so the operator can rewrite the
//! database and even re-sign it, but cannot make a client forget what it saw.

use keyward_core::security_log::AccountCheckpoint;
use keyward_proto::{LogCheckpoint, LogHead, Millis};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A signed head a client has seen and checked: what it holds the server to next time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenHead {
    /// The server's log key (base64url) that signed it.
    pub public_key: String,
    pub account_id: Uuid,
    /// The account's event number.
    pub id: i64,
    /// The log's digest at that event, lower-case hex.
    pub hash: String,
    pub at: Millis,
    pub signature: String,
}

/// Why a server's log does not extend the head a client remembers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogAlarm {
    #[error("the server signs its log with a different key than before")]
    KeyChanged,
    #[error("the server's log checkpoint is not validly signed for this account")]
    BadSignature,
    #[error(
        "the server's log is shorter than before: this account's events end at {now}, but \
         event {seen} was seen"
    )]
    Shorter { seen: i64, now: i64 },
    #[error(
        "the server's log up to this account's event {id} is not what it was when seen: the log \
         was rewritten"
    )]
    Rewritten { id: i64 },
}

fn bytes<const N: usize>(b64: &str) -> Option<[u8; N]> {
    keyward_core::secret::unb64(b64)?.try_into().ok()
}

fn unhex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let v: Option<Vec<u8>> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect();
    v?.try_into().ok()
}

/// Whether `checkpoint` is account `account_id`'s, signed by `public_key` (both as on the
/// wire).
pub fn checkpoint_is_valid(public_key: &str, account_id: Uuid, checkpoint: &LogCheckpoint) -> bool {
    let (Some(key), Some(digest), Some(signature)) = (
        bytes::<32>(public_key),
        unhex(&checkpoint.hash),
        bytes::<64>(&checkpoint.signature),
    ) else {
        return false;
    };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&key) else {
        return false;
    };
    checkpoint.account_id == account_id
        && AccountCheckpoint {
            account_id,
            number: checkpoint.id,
            digest,
            at: checkpoint.at,
            signature,
        }
        .is_signed_by(&key)
}

/// Holds account `account_id`'s `head` (fetched with `seen = remembered id`) to the
/// `remembered` one. Ok: the head to remember from now on (None while the log holds none of
/// the account's events). Err: the alarm; keep the old head remembered, so the alarm stands
/// until someone looks into it.
pub fn check_head(
    account_id: Uuid,
    remembered: Option<&SeenHead>,
    head: &LogHead,
) -> Result<Option<SeenHead>, LogAlarm> {
    if let Some(seen) = remembered
        && seen.public_key != head.public_key
    {
        return Err(LogAlarm::KeyChanged);
    }
    let Some(checkpoint) = &head.checkpoint else {
        return match remembered {
            Some(seen) => Err(LogAlarm::Shorter {
                seen: seen.id,
                now: 0,
            }),
            None => Ok(None),
        };
    };
    if !checkpoint_is_valid(&head.public_key, account_id, checkpoint)
        || remembered.is_some_and(|seen| seen.account_id != account_id)
    {
        return Err(LogAlarm::BadSignature);
    }
    if let Some(seen) = remembered {
        if checkpoint.id < seen.id {
            return Err(LogAlarm::Shorter {
                seen: seen.id,
                now: checkpoint.id,
            });
        }
        let now_at_seen = if checkpoint.id == seen.id {
            Some(&checkpoint.hash)
        } else {
            head.seen_hash.as_ref()
        };
        if now_at_seen != Some(&seen.hash) {
            return Err(LogAlarm::Rewritten { id: seen.id });
        }
    }
    Ok(Some(SeenHead {
        public_key: head.public_key.clone(),
        account_id,
        id: checkpoint.id,
        hash: checkpoint.hash.clone(),
        at: checkpoint.at,
        signature: checkpoint.signature.clone(),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use ed25519_dalek::{Signer, SigningKey};
    use keyward_core::secret::b64;
    use keyward_core::security_log::{account_checkpoint_message, hex};

    use super::*;

    const ADA: Uuid = Uuid::from_u128(1);

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// Ada's head at her event `id`, the log digesting to `[hash; 32]` there, signed by `key`.
    fn head(key: &SigningKey, id: i64, hash: u8, seen_hash: Option<u8>) -> LogHead {
        let at = 1000 + id;
        let signature = key.sign(&account_checkpoint_message(ADA, id, &[hash; 32], at));
        LogHead {
            public_key: b64(key.verifying_key().as_bytes()),
            checkpoint: Some(LogCheckpoint {
                account_id: ADA,
                id,
                hash: hex(&[hash; 32]),
                at,
                signature: b64(&signature.to_bytes()),
            }),
            seen_hash: seen_hash.map(|h| hex(&[h; 32])),
        }
    }

    #[test]
    fn a_log_that_grew_is_remembered_further_on() {
        let first = check_head(ADA, None, &head(&key(1), 3, 0xa3, None))
            .unwrap()
            .unwrap();
        assert_eq!(first.id, 3);
        // Event 3 still has the hash seen before; the head moved to 5.
        let later = check_head(ADA, Some(&first), &head(&key(1), 5, 0xa5, Some(0xa3)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (later.id, later.hash.as_str()),
            (5, hex(&[0xa5; 32]).as_str())
        );
        // Nothing new: the same head again.
        assert_eq!(
            check_head(ADA, Some(&later), &head(&key(1), 5, 0xa5, Some(0xa5))).unwrap(),
            Some(later)
        );
        let empty = LogHead {
            public_key: b64(key(1).verifying_key().as_bytes()),
            checkpoint: None,
            seen_hash: None,
        };
        assert_eq!(check_head(ADA, None, &empty).unwrap(), None);
    }

    #[test]
    fn a_log_that_does_not_extend_what_was_seen_raises_the_alarm() {
        let seen = check_head(ADA, None, &head(&key(1), 5, 0xa5, None))
            .unwrap()
            .unwrap();
        // Cut short, even if re-signed with the same key.
        assert_eq!(
            check_head(ADA, Some(&seen), &head(&key(1), 4, 0xa4, None)),
            Err(LogAlarm::Shorter { seen: 5, now: 4 })
        );
        // Rewritten: event 5 now has another hash, at the same head or under a longer one.
        assert_eq!(
            check_head(ADA, Some(&seen), &head(&key(1), 5, 0xee, Some(0xee))),
            Err(LogAlarm::Rewritten { id: 5 })
        );
        assert_eq!(
            check_head(ADA, Some(&seen), &head(&key(1), 9, 0xa9, Some(0xee))),
            Err(LogAlarm::Rewritten { id: 5 })
        );
        assert_eq!(
            check_head(ADA, Some(&seen), &head(&key(1), 9, 0xa9, None)),
            Err(LogAlarm::Rewritten { id: 5 })
        );
        // Started over with a new key (a wiped database and key file).
        assert_eq!(
            check_head(ADA, Some(&seen), &head(&key(2), 7, 0xa7, Some(0xa5))),
            Err(LogAlarm::KeyChanged)
        );
        // Emptied.
        let empty = LogHead {
            checkpoint: None,
            ..head(&key(1), 1, 0, None)
        };
        assert_eq!(
            check_head(ADA, Some(&seen), &empty),
            Err(LogAlarm::Shorter { seen: 5, now: 0 })
        );
    }

    #[test]
    fn a_checkpoint_not_signed_by_the_published_key_raises_the_alarm() {
        let mut forged = head(&key(1), 5, 0xa5, None);
        forged.public_key = b64(key(2).verifying_key().as_bytes());
        assert_eq!(check_head(ADA, None, &forged), Err(LogAlarm::BadSignature));
        let mut garbled = head(&key(1), 5, 0xa5, None);
        garbled.checkpoint.as_mut().unwrap().hash = "zz".into();
        assert_eq!(check_head(ADA, None, &garbled), Err(LogAlarm::BadSignature));
        // Another account's head, validly signed, is not this account's.
        let bob = Uuid::from_u128(2);
        assert_eq!(
            check_head(bob, None, &head(&key(1), 5, 0xa5, None)),
            Err(LogAlarm::BadSignature)
        );
        let mut relabelled = head(&key(1), 5, 0xa5, None);
        relabelled.checkpoint.as_mut().unwrap().account_id = bob;
        assert_eq!(
            check_head(bob, None, &relabelled),
            Err(LogAlarm::BadSignature)
        );
    }
}
