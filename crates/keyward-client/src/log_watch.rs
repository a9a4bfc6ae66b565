//! Keeping watch over a server's security log from the outside. The server signs a checkpoint
//! of its log's head with its log key; a client remembers the newest one it has seen and, each
//! time it looks again, holds the server to it: the same key, a valid signature, a head no
//! older, and the remembered event still in the log with the remembered hash. The operator can
//! rewrite the database and even re-sign it, but cannot make a client forget what it saw.

use keyward_core::security_log::Checkpoint;
use keyward_proto::{LogCheckpoint, LogHead, Millis};
use serde::{Deserialize, Serialize};

/// A signed head a client has seen and checked: what it holds the server to next time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenHead {
    /// The server's log key (base64url) that signed it.
    pub public_key: String,
    pub id: i64,
    /// Lower-case hex.
    pub hash: String,
    pub at: Millis,
    pub signature: String,
}

/// Why a server's log does not extend the head a client remembers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogAlarm {
    #[error("the server signs its log with a different key than before")]
    KeyChanged,
    #[error("the server's log checkpoint is not validly signed")]
    BadSignature,
    #[error(
        "the server's log is shorter than before: it ends at event {now}, but event {seen} was seen"
    )]
    Shorter { seen: i64, now: i64 },
    #[error("event {id} of the server's log is not what it was when seen: the log was rewritten")]
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

/// Whether `checkpoint` is signed by `public_key` (both as on the wire).
pub fn checkpoint_is_valid(public_key: &str, checkpoint: &LogCheckpoint) -> bool {
    let (Some(key), Some(hash), Some(signature)) = (
        bytes::<32>(public_key),
        unhex(&checkpoint.hash),
        bytes::<64>(&checkpoint.signature),
    ) else {
        return false;
    };
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&key) else {
        return false;
    };
    Checkpoint {
        seq: checkpoint.id,
        hash,
        at: checkpoint.at,
        signature,
    }
    .is_signed_by(&key)
}

/// Holds `head` (fetched with `seen = remembered id`) to the `remembered` one. Ok: the head to
/// remember from now on (None while nothing has been signed yet). Err: the alarm; keep the old
/// head remembered, so the alarm stands until someone looks into it.
pub fn check_head(
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
    if !checkpoint_is_valid(&head.public_key, checkpoint) {
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
        id: checkpoint.id,
        hash: checkpoint.hash.clone(),
        at: checkpoint.at,
        signature: checkpoint.signature.clone(),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use ed25519_dalek::SigningKey;
    use keyward_core::secret::b64;
    use keyward_core::security_log::hex;

    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn head(key: &SigningKey, id: i64, hash: u8, seen_hash: Option<u8>) -> LogHead {
        let c = Checkpoint::sign(key, id, [hash; 32], 1000 + id);
        LogHead {
            public_key: b64(key.verifying_key().as_bytes()),
            checkpoint: Some(LogCheckpoint {
                id,
                hash: hex(&c.hash),
                at: c.at,
                signature: b64(&c.signature),
            }),
            seen_hash: seen_hash.map(|h| hex(&[h; 32])),
        }
    }

    #[test]
    fn a_log_that_grew_is_remembered_further_on() {
        let first = check_head(None, &head(&key(1), 3, 0xa3, None))
            .unwrap()
            .unwrap();
        assert_eq!(first.id, 3);
        // Event 3 still has the hash seen before; the head moved to 5.
        let later = check_head(Some(&first), &head(&key(1), 5, 0xa5, Some(0xa3)))
            .unwrap()
            .unwrap();
        assert_eq!(
            (later.id, later.hash.as_str()),
            (5, hex(&[0xa5; 32]).as_str())
        );
        // Nothing new: the same head again.
        assert_eq!(
            check_head(Some(&later), &head(&key(1), 5, 0xa5, Some(0xa5))).unwrap(),
            Some(later)
        );
        let empty = LogHead {
            public_key: b64(key(1).verifying_key().as_bytes()),
            checkpoint: None,
            seen_hash: None,
        };
        assert_eq!(check_head(None, &empty).unwrap(), None);
    }

    #[test]
    fn a_log_that_does_not_extend_what_was_seen_raises_the_alarm() {
        let seen = check_head(None, &head(&key(1), 5, 0xa5, None))
            .unwrap()
            .unwrap();
        // Cut short, even if re-signed with the same key.
        assert_eq!(
            check_head(Some(&seen), &head(&key(1), 4, 0xa4, None)),
            Err(LogAlarm::Shorter { seen: 5, now: 4 })
        );
        // Rewritten: event 5 now has another hash, at the same head or under a longer one.
        assert_eq!(
            check_head(Some(&seen), &head(&key(1), 5, 0xee, Some(0xee))),
            Err(LogAlarm::Rewritten { id: 5 })
        );
        assert_eq!(
            check_head(Some(&seen), &head(&key(1), 9, 0xa9, Some(0xee))),
            Err(LogAlarm::Rewritten { id: 5 })
        );
        assert_eq!(
            check_head(Some(&seen), &head(&key(1), 9, 0xa9, None)),
            Err(LogAlarm::Rewritten { id: 5 })
        );
        // Started over with a new key (a wiped database and key file).
        assert_eq!(
            check_head(Some(&seen), &head(&key(2), 7, 0xa7, Some(0xa5))),
            Err(LogAlarm::KeyChanged)
        );
        // Emptied.
        let empty = LogHead {
            checkpoint: None,
            ..head(&key(1), 1, 0, None)
        };
        assert_eq!(
            check_head(Some(&seen), &empty),
            Err(LogAlarm::Shorter { seen: 5, now: 0 })
        );
    }

    #[test]
    fn a_checkpoint_not_signed_by_the_published_key_raises_the_alarm() {
        let mut forged = head(&key(1), 5, 0xa5, None);
        forged.public_key = b64(key(2).verifying_key().as_bytes());
        assert_eq!(check_head(None, &forged), Err(LogAlarm::BadSignature));
        let mut garbled = head(&key(1), 5, 0xa5, None);
        garbled.checkpoint.as_mut().unwrap().hash = "zz".into();
        assert_eq!(check_head(None, &garbled), Err(LogAlarm::BadSignature));
    }
}
