//! The security log's rules, apart from any database: how loud each event is, how an event is
//! hashed into the chain, and how a chain is checked. Pure functions, so they are tested without
//! SQLite and every storage engine seals and verifies the log the same way.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use keyward_proto::{EventDetail, EventKind, Millis, SecurityEvent, Urgency};

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
        | EventKind::ClonedKeyWarning
        | EventKind::AccountDisabled
        | EventKind::AccountEnabled
        | EventKind::AppSignIn
        | EventKind::AppTokenReused
        | EventKind::AccountDeleted
        | EventKind::AgentAuthorized => Urgency::Urgent,
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

/// hash = SHA-256(previous hash ‖ the canonical JSON of a sealed event): format 2, for events
/// written since the details are sealed ([`crate::details`]). It covers what is in the clear
/// (place in the log, account, kind, time, urgency, session and device IDs, all opaque) and
/// the ciphertext of the details instead of the details, so it verifies with the account's data
/// key gone. The leading 2 keeps it from ever equalling a format-1 hash's input.
pub fn sealed_event_hash(prev: &[u8; 32], event: &SecurityEvent, sealed: &[u8]) -> [u8; 32] {
    let canonical = serde_json::json!([
        2,
        event.id,
        event.account_id,
        event.kind,
        event.at,
        event.urgency,
        event.session_id,
        event.device_id,
        hex(sealed),
    ]);
    Sha256::new_with_prefix(prev)
        .chain_update(canonical.to_string().as_bytes())
        .finalize()
        .into()
}

/// One row of the log as the chain has it: the event (its `id` the global place), its sealed
/// details if it is of format 2 (then its own detail fields are not part of the hash), and
/// the hash stored with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEntry {
    pub event: SecurityEvent,
    pub sealed: Option<Vec<u8>>,
    pub hash: [u8; 32],
}

/// A format-1 entry: the event's details in the clear and hashed as they are.
impl From<(SecurityEvent, [u8; 32])> for ChainEntry {
    fn from((event, hash): (SecurityEvent, [u8; 32])) -> Self {
        ChainEntry {
            event,
            sealed: None,
            hash,
        }
    }
}

impl ChainEntry {
    /// The hash this entry should have after `prev`, by its format.
    pub fn expected_hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        match &self.sealed {
            Some(sealed) => sealed_event_hash(prev, &self.event, sealed),
            None => event_hash(prev, &self.event),
        }
    }
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
    log: impl IntoIterator<Item = Result<ChainEntry, E>>,
) -> Result<ChainReport, E> {
    let mut prev = GENESIS_HASH;
    let mut count = 0u64;
    for entry in log {
        let entry = entry?;
        count += 1;
        if entry.expected_hash(&prev) != entry.hash {
            return Ok(ChainReport {
                events: count,
                first_broken: Some(entry.event.id),
            });
        }
        prev = entry.hash;
    }
    Ok(ChainReport {
        events: count,
        first_broken: None,
    })
}

/// The server's signed statement "event `seq` of the log has hash `hash`", made when that event
/// was the head. Unkeyed hashes alone anchor nothing (anyone with the file can recompute them);
/// a checkpoint ties the head to the server's log key, and a client that remembers one can later
/// tell a log that was cut short or rewritten from one that grew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: [u8; 32],
    /// The head event's time.
    pub at: Millis,
    pub signature: [u8; 64],
}

/// Domain separation: a checkpoint signature can never be mistaken for any other signature.
const CHECKPOINT_CONTEXT: &[u8] = b"keyward log checkpoint v1\0";

/// The bytes a checkpoint signs: context ‖ seq (8 bytes, big-endian) ‖ hash ‖ at (8 bytes).
pub fn checkpoint_message(seq: i64, hash: &[u8; 32], at: Millis) -> Vec<u8> {
    let mut m = Vec::with_capacity(CHECKPOINT_CONTEXT.len() + 48);
    m.extend_from_slice(CHECKPOINT_CONTEXT);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m.extend_from_slice(&at.to_be_bytes());
    m
}

impl Checkpoint {
    pub fn sign(key: &SigningKey, seq: i64, hash: [u8; 32], at: Millis) -> Checkpoint {
        let signature = key.sign(&checkpoint_message(seq, &hash, at)).to_bytes();
        Checkpoint {
            seq,
            hash,
            at,
            signature,
        }
    }

    pub fn is_signed_by(&self, key: &VerifyingKey) -> bool {
        key.verify_strict(
            &checkpoint_message(self.seq, &self.hash, self.at),
            &Signature::from_bytes(&self.signature),
        )
        .is_ok()
    }
}

/// The server's signed statement to one account's clients: "event `number` of account
/// `account_id` (its own numbering, as clients see it) was written at `at`, and the log up to
/// and including it digests to `digest`". The global [`Checkpoint`] stays on the server: its
/// position counts every account's events, so serving it would tell anyone polling it whether
/// a failed sign-in against a name was logged, i.e. whether the name exists.
///
/// The digest is keyed ([`account_digest`]), over the chain hash at that event. The chain hash
/// commits to every event before it, so a client remembering a digest later notices any of
/// them changed or gone; the key means even a client that knows every earlier event cannot
/// recompute it, so two of its own digests say nothing of what was logged between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountCheckpoint {
    pub account_id: Uuid,
    pub number: i64,
    pub digest: [u8; 32],
    pub at: Millis,
    pub signature: [u8; 64],
}

/// Domain separation from [`Checkpoint`]'s signatures, and of the digest key.
const ACCOUNT_CHECKPOINT_CONTEXT: &[u8] = b"keyward account log checkpoint v1\0";
const ACCOUNT_DIGEST_KEY_INFO: &[u8] = b"keyward account log digest key v1";

/// HMAC-SHA256 under a key derived from the log key (HKDF-SHA256 over its seed): account ‖
/// number (8 bytes, big-endian) ‖ the chain hash stored with that event.
pub fn account_digest(
    log_key: &SigningKey,
    account_id: Uuid,
    number: i64,
    chain_hash: &[u8; 32],
) -> [u8; 32] {
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8,160-byte limit: cannot fail.
    let _ = Hkdf::<Sha256>::new(None, log_key.as_bytes()).expand(ACCOUNT_DIGEST_KEY_INFO, &mut key);
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return [0; 32]; // HMAC takes keys of any length; unreachable.
    };
    mac.update(account_id.as_bytes());
    mac.update(&number.to_be_bytes());
    mac.update(chain_hash);
    mac.finalize().into_bytes().into()
}

/// The bytes an account checkpoint signs: context ‖ account (16 bytes) ‖ number (8 bytes,
/// big-endian) ‖ digest ‖ at (8 bytes, big-endian).
pub fn account_checkpoint_message(
    account_id: Uuid,
    number: i64,
    digest: &[u8; 32],
    at: Millis,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(ACCOUNT_CHECKPOINT_CONTEXT.len() + 64);
    m.extend_from_slice(ACCOUNT_CHECKPOINT_CONTEXT);
    m.extend_from_slice(account_id.as_bytes());
    m.extend_from_slice(&number.to_be_bytes());
    m.extend_from_slice(digest);
    m.extend_from_slice(&at.to_be_bytes());
    m
}

impl AccountCheckpoint {
    /// Signs account `account_id`'s event `number`, stored in the chain with `chain_hash`.
    pub fn sign(
        key: &SigningKey,
        account_id: Uuid,
        number: i64,
        chain_hash: &[u8; 32],
        at: Millis,
    ) -> AccountCheckpoint {
        let digest = account_digest(key, account_id, number, chain_hash);
        let signature = key
            .sign(&account_checkpoint_message(account_id, number, &digest, at))
            .to_bytes();
        AccountCheckpoint {
            account_id,
            number,
            digest,
            at,
            signature,
        }
    }

    pub fn is_signed_by(&self, key: &VerifyingKey) -> bool {
        key.verify_strict(
            &account_checkpoint_message(self.account_id, self.number, &self.digest, self.at),
            &Signature::from_bytes(&self.signature),
        )
        .is_ok()
    }
}

/// Domain separation of an export's signature.
const EXPORT_CONTEXT: &[u8] = b"keyward log export v1\0";

/// What an export's signature covers: context ‖ account ‖ exported_at (8 bytes, big-endian) ‖
/// for each event, seq (8 bytes, big-endian) ‖ its chain hash.
pub fn export_message(
    account_id: Uuid,
    exported_at: Millis,
    entries: &[(i64, [u8; 32])],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(EXPORT_CONTEXT.len() + 24 + entries.len() * 40);
    m.extend_from_slice(EXPORT_CONTEXT);
    m.extend_from_slice(account_id.as_bytes());
    m.extend_from_slice(&exported_at.to_be_bytes());
    for (seq, hash) in entries {
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(hash);
    }
    m
}

/// The format an export names.
pub const EXPORT_FORMAT: &str = "keyward-log-export-v1";

/// Why an export does not verify, found by [`verify_export`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportProblem {
    #[error("not a keyward-log-export-v1 file")]
    Format,
    #[error("the export's public key is not the one expected")]
    OtherKey,
    #[error("a field is not valid {0}")]
    Encoding(&'static str),
    #[error("event {0} is not in log order or not the account's")]
    Order(i64),
    #[error("event {0}'s details are not what its sealed details hold")]
    Details(i64),
    #[error("event {0}'s hash does not follow from the hash before it: it was changed")]
    Hash(i64),
    #[error(
        "the server's signature over the export does not verify: events were changed, added or removed"
    )]
    Signature,
    #[error("the account checkpoint is not signed by the log key or is not the newest event")]
    Checkpoint,
}

fn unhex32(text: &str) -> Result<[u8; 32], ExportProblem> {
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or(ExportProblem::Encoding("hex"))
}

fn unb64(text: &str) -> Result<Vec<u8>, ExportProblem> {
    crate::secret::unb64(text).ok_or(ExportProblem::Encoding("base64url"))
}

/// Checks a person's export on its own: every event's hash recomputed from the hash before it
/// (over its sealed details, opened with the export's data key and compared with the details
/// shown, or over the details in the clear for an event written before sealing), in log order
/// and all the account's; the server's signature over every (seq, hash) with `public_key`; and
/// the account checkpoint, if any, signed by it and naming the newest event. With `expected`,
/// the public key must be that one (the key a client remembers). Returns the number of events.
pub fn verify_export(
    export: &keyward_proto::LogExport,
    expected: Option<&VerifyingKey>,
) -> Result<usize, ExportProblem> {
    use crate::details::{DataKey, Details};
    if export.format != EXPORT_FORMAT {
        return Err(ExportProblem::Format);
    }
    let key_bytes = <[u8; 32]>::try_from(unb64(&export.public_key)?.as_slice())
        .map_err(|_| ExportProblem::Encoding("public key"))?;
    let key =
        VerifyingKey::from_bytes(&key_bytes).map_err(|_| ExportProblem::Encoding("public key"))?;
    if expected.is_some_and(|e| *e != key) {
        return Err(ExportProblem::OtherKey);
    }
    let data_key = export
        .data_key
        .as_deref()
        .map(|k| {
            <[u8; 32]>::try_from(unb64(k)?.as_slice())
                .map(DataKey::from_bytes)
                .map_err(|_| ExportProblem::Encoding("data key"))
        })
        .transpose()?;
    let mut signed = Vec::with_capacity(export.events.len());
    let (mut last_seq, mut last_number) = (0, 0);
    for e in &export.events {
        let number = e.event.id;
        if e.seq <= last_seq || number <= last_number || e.event.account_id != export.account_id {
            return Err(ExportProblem::Order(number));
        }
        (last_seq, last_number) = (e.seq, number);
        let (prev, stored) = (unhex32(&e.prev_hash)?, unhex32(&e.hash)?);
        let mut event = e.event.clone();
        event.id = e.seq;
        let expected_hash = match &e.sealed {
            Some(sealed) => {
                let sealed = unb64(sealed)?;
                let opened = data_key
                    .as_ref()
                    .and_then(|k| k.open_details(event.account_id, e.seq, &sealed).ok())
                    .ok_or(ExportProblem::Details(number))?;
                if opened != Details::take(&mut event) {
                    return Err(ExportProblem::Details(number));
                }
                sealed_event_hash(&prev, &event, &sealed)
            }
            None => event_hash(&prev, &event),
        };
        if expected_hash != stored {
            return Err(ExportProblem::Hash(number));
        }
        signed.push((e.seq, stored));
    }
    let signature = <[u8; 64]>::try_from(unb64(&export.signature)?.as_slice())
        .map_err(|_| ExportProblem::Encoding("signature"))?;
    key.verify_strict(
        &export_message(export.account_id, export.exported_at, &signed),
        &Signature::from_bytes(&signature),
    )
    .map_err(|_| ExportProblem::Signature)?;
    if let Some(c) = &export.checkpoint {
        let newest = export.events.last().ok_or(ExportProblem::Checkpoint)?;
        let checkpoint = AccountCheckpoint {
            account_id: c.account_id,
            number: c.id,
            digest: unhex32(&c.hash)?,
            at: c.at,
            signature: <[u8; 64]>::try_from(unb64(&c.signature)?.as_slice())
                .map_err(|_| ExportProblem::Encoding("signature"))?,
        };
        if !checkpoint.is_signed_by(&key)
            || (c.account_id, c.id, c.at) != (export.account_id, newest.event.id, newest.event.at)
        {
            return Err(ExportProblem::Checkpoint);
        }
    }
    Ok(export.events.len())
}

/// What is wrong with a log, found by [`verify_log`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogProblem {
    #[error("event {0} does not follow from the event before it: the log was edited")]
    Broken(i64),
    #[error(
        "the log ends at event {head} but event {checkpoint} was signed: events were removed from its end"
    )]
    Truncated { head: i64, checkpoint: i64 },
    #[error("event {seq}'s hash is not the one its signed checkpoint holds: the log was rewritten")]
    Rewritten { seq: i64 },
    #[error("checkpoint {seq} is not signed by this server's log key")]
    BadSignature { seq: i64 },
    #[error(
        "events after {checkpoint} (up to {head}) carry no signed checkpoint: they were not written by this server"
    )]
    Unsigned { checkpoint: i64, head: i64 },
    #[error("the log holds events up to {head} but no signed checkpoint")]
    NoCheckpoint { head: i64 },
    #[error("the log has signed checkpoints but the log key that signed them is missing")]
    KeyMissing,
}

/// Result of [`verify_log`]: the chain walked, and how it stands against its latest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogReport {
    pub events: u64,
    /// The last event's id and stored hash.
    pub head: Option<(i64, [u8; 32])>,
    /// The latest checkpoint's event id.
    pub checkpoint: Option<i64>,
    pub problem: Option<LogProblem>,
}

/// Walks the chain (as [`verify_chain`]) and holds it to the latest signed `checkpoint`: signed
/// by `key`, its event still in the log with the hash it signed, and nothing after it (every
/// commit that appends events also writes a checkpoint of the new head). Truncating the tail,
/// recomputing every hash, or appending without the key is each caught here.
pub fn verify_log<E>(
    log: impl IntoIterator<Item = Result<ChainEntry, E>>,
    checkpoint: Option<&Checkpoint>,
    key: Option<&VerifyingKey>,
) -> Result<LogReport, E> {
    let mut prev = GENESIS_HASH;
    let mut events = 0u64;
    let mut head = None;
    let mut at_checkpoint = None;
    let report = |events, head, problem| LogReport {
        events,
        head,
        checkpoint: checkpoint.map(|c| c.seq),
        problem,
    };
    for entry in log {
        let entry = entry?;
        let (event, stored) = (&entry.event, entry.hash);
        events += 1;
        if entry.expected_hash(&prev) != stored {
            return Ok(report(events, head, Some(LogProblem::Broken(event.id))));
        }
        if checkpoint.is_some_and(|c| c.seq == event.id) {
            at_checkpoint = Some(stored);
        }
        head = Some((event.id, stored));
        prev = stored;
    }
    let head_seq = head.map(|(seq, _)| seq);
    let problem = match (checkpoint, key) {
        (None, _) => head_seq.map(|head| LogProblem::NoCheckpoint { head }),
        (Some(_), None) => Some(LogProblem::KeyMissing),
        (Some(c), Some(key)) => {
            if !c.is_signed_by(key) {
                Some(LogProblem::BadSignature { seq: c.seq })
            } else if head_seq.is_none_or(|h| h < c.seq) {
                Some(LogProblem::Truncated {
                    head: head_seq.unwrap_or(0),
                    checkpoint: c.seq,
                })
            } else if at_checkpoint != Some(c.hash) {
                Some(LogProblem::Rewritten { seq: c.seq })
            } else {
                match head_seq {
                    Some(h) if h > c.seq => Some(LogProblem::Unsigned {
                        checkpoint: c.seq,
                        head: h,
                    }),
                    _ => None,
                }
            }
        }
    };
    Ok(report(events, head, problem))
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
        verify_chain(log.into_iter().map(|e| Ok::<_, Infallible>(e.into()))).unwrap()
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
        let log = chain(2)
            .into_iter()
            .map(|e| Ok(ChainEntry::from(e)))
            .chain([Err("disk")]);
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

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// The checkpoint the server would have signed with `log`'s event `seq` as the head.
    fn checkpoint_at(log: &[(SecurityEvent, [u8; 32])], seq: i64, key: &SigningKey) -> Checkpoint {
        let (event, hash) = &log[(seq - 1) as usize];
        Checkpoint::sign(key, seq, *hash, event.at)
    }

    fn check(
        log: Vec<(SecurityEvent, [u8; 32])>,
        checkpoint: Option<&Checkpoint>,
        key: Option<&VerifyingKey>,
    ) -> Option<LogProblem> {
        verify_log(
            log.into_iter().map(|e| Ok::<_, Infallible>(e.into())),
            checkpoint,
            key,
        )
        .unwrap()
        .problem
    }

    #[test]
    fn a_log_matching_its_signed_checkpoint_passes() {
        let k = key(1);
        let log = chain(4);
        let cp = checkpoint_at(&log, 4, &k);
        let report = verify_log(
            log.clone()
                .into_iter()
                .map(|e| Ok::<_, Infallible>(e.into())),
            Some(&cp),
            Some(&k.verifying_key()),
        )
        .unwrap();
        assert_eq!(report.problem, None);
        assert_eq!(report.head, Some((4, log[3].1)));
        assert_eq!(report.checkpoint, Some(4));
        assert_eq!(check(Vec::new(), None, None), None, "an empty log");
    }

    #[test]
    fn a_truncated_tail_is_caught_by_the_checkpoint() {
        // The chain that is left is intact: only the checkpoint shows anything is missing.
        let k = key(1);
        let mut log = chain(4);
        let cp = checkpoint_at(&log, 4, &k);
        log.truncate(2);
        assert_eq!(verify(log.clone()).first_broken, None);
        assert_eq!(
            check(log, Some(&cp), Some(&k.verifying_key())),
            Some(LogProblem::Truncated {
                head: 2,
                checkpoint: 4
            })
        );
        assert_eq!(
            check(Vec::new(), Some(&cp), Some(&k.verifying_key())),
            Some(LogProblem::Truncated {
                head: 0,
                checkpoint: 4
            })
        );
    }

    #[test]
    fn a_recomputed_chain_is_caught_by_the_checkpoint() {
        // Someone with the file edits event 2 and re-seals every hash after it: the chain is
        // self-consistent again, but no longer ends at the signed hash.
        let k = key(1);
        let log = chain(3);
        let cp = checkpoint_at(&log, 3, &k);
        let mut prev = GENESIS_HASH;
        let rewritten: Vec<_> = log
            .into_iter()
            .map(|(mut event, _)| {
                if event.id == 2 {
                    event.address = Some("203.0.113.9".into());
                }
                let hash = event_hash(&prev, &event);
                prev = hash;
                (event, hash)
            })
            .collect();
        assert_eq!(verify(rewritten.clone()).first_broken, None);
        assert_eq!(
            check(rewritten.clone(), Some(&cp), Some(&k.verifying_key())),
            Some(LogProblem::Rewritten { seq: 3 })
        );
        // Re-signing the new head needs the key; another key's signature does not count.
        let forged = checkpoint_at(&rewritten, 3, &key(2));
        assert_eq!(
            check(rewritten, Some(&forged), Some(&k.verifying_key())),
            Some(LogProblem::BadSignature { seq: 3 })
        );
    }

    #[test]
    fn events_past_the_last_checkpoint_are_unsigned() {
        let k = key(1);
        let log = chain(3);
        let cp = checkpoint_at(&log, 2, &k);
        assert_eq!(
            check(log.clone(), Some(&cp), Some(&k.verifying_key())),
            Some(LogProblem::Unsigned {
                checkpoint: 2,
                head: 3
            })
        );
        assert_eq!(
            check(log.clone(), None, Some(&k.verifying_key())),
            Some(LogProblem::NoCheckpoint { head: 3 })
        );
        assert_eq!(check(log, Some(&cp), None), Some(LogProblem::KeyMissing));
    }

    #[test]
    fn a_checkpoint_signature_covers_every_field() {
        let k = key(1);
        let cp = Checkpoint::sign(&k, 7, [9; 32], 1234);
        assert!(cp.is_signed_by(&k.verifying_key()));
        for tampered in [
            Checkpoint {
                seq: 8,
                ..cp.clone()
            },
            Checkpoint {
                hash: [8; 32],
                ..cp.clone()
            },
            Checkpoint {
                at: 1235,
                ..cp.clone()
            },
        ] {
            assert!(!tampered.is_signed_by(&k.verifying_key()));
        }
        assert!(!cp.is_signed_by(&key(2).verifying_key()));
    }

    #[test]
    fn an_account_checkpoint_signature_covers_every_field_and_is_not_a_log_checkpoint() {
        let k = key(1);
        let account = Uuid::from_u128(7);
        let cp = AccountCheckpoint::sign(&k, account, 3, &[9; 32], 1234);
        assert!(cp.is_signed_by(&k.verifying_key()));
        for tampered in [
            AccountCheckpoint {
                account_id: Uuid::from_u128(8),
                ..cp.clone()
            },
            AccountCheckpoint {
                number: 4,
                ..cp.clone()
            },
            AccountCheckpoint {
                digest: [8; 32],
                ..cp.clone()
            },
            AccountCheckpoint {
                at: 1235,
                ..cp.clone()
            },
        ] {
            assert!(!tampered.is_signed_by(&k.verifying_key()));
        }
        assert!(!cp.is_signed_by(&key(2).verifying_key()));
        // A global checkpoint's signature never verifies as an account checkpoint's.
        let global = Checkpoint::sign(&k, 3, cp.digest, 1234);
        assert!(
            !AccountCheckpoint {
                signature: global.signature,
                ..cp
            }
            .is_signed_by(&k.verifying_key())
        );
    }

    #[test]
    fn the_account_digest_is_keyed_and_follows_the_chain_hash() {
        let (k, account) = (key(1), Uuid::from_u128(7));
        let d = account_digest(&k, account, 3, &[9; 32]);
        assert_eq!(d, account_digest(&k, account, 3, &[9; 32]), "deterministic");
        // Anything else changes it: the chain hash (so any earlier event), the place, the
        // account, and the key (without which no one can recompute it).
        for other in [
            account_digest(&k, account, 3, &[8; 32]),
            account_digest(&k, account, 4, &[9; 32]),
            account_digest(&k, Uuid::from_u128(8), 3, &[9; 32]),
            account_digest(&key(2), account, 3, &[9; 32]),
        ] {
            assert_ne!(d, other);
        }
        assert_ne!(d, [9; 32], "not the chain hash itself");
    }

    #[test]
    fn the_hash_is_lower_case_hex() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }
}
