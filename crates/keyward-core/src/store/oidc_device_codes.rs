//! Device authorization requests (`oidc_device_codes`, RFC 8628): an agent's device code and
//! the user code the person types, both stored only hashed, waiting for the person's decision
//! and then exchanged once.

use keyward_proto::Millis;
use uuid::Uuid;

use super::sql::{Row, args};
use super::{Tx, bad_value, opt_uuid};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCodeStatus {
    /// Waiting for the person.
    Pending,
    /// Approved with a key ceremony: the grant is made, its tokens not yet taken.
    Approved,
    Denied,
    /// The agent took its tokens: the code is spent.
    Used,
}

impl DeviceCodeStatus {
    fn as_str(self) -> &'static str {
        match self {
            DeviceCodeStatus::Pending => "pending",
            DeviceCodeStatus::Approved => "approved",
            DeviceCodeStatus::Denied => "denied",
            DeviceCodeStatus::Used => "used",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCode {
    pub device_code_hash: Vec<u8>,
    pub user_code_hash: Vec<u8>,
    pub client_id: String,
    /// Space-separated.
    pub scopes: String,
    /// Where the agent asked from.
    pub address: String,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// The least time between two polls; grows by 5 s at every `slow_down`.
    pub interval_ms: i64,
    pub last_polled_at: Option<Millis>,
    pub status: DeviceCodeStatus,
    pub account_id: Option<Uuid>,
    pub grant_id: Option<Uuid>,
    pub decided_at: Option<Millis>,
}

const COLS: &str = "device_code_hash, user_code_hash, client_id, scopes, address, created_at,
    expires_at, interval_ms, last_polled_at, status, account_id, grant_id, decided_at";

fn from_row(r: &Row<'_>) -> Result<DeviceCode> {
    let status: String = r.get(9)?;
    Ok(DeviceCode {
        device_code_hash: r.get(0)?,
        user_code_hash: r.get(1)?,
        client_id: r.get(2)?,
        scopes: r.get(3)?,
        address: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        interval_ms: r.get(7)?,
        last_polled_at: r.get(8)?,
        status: match status.as_str() {
            "pending" => DeviceCodeStatus::Pending,
            "approved" => DeviceCodeStatus::Approved,
            "denied" => DeviceCodeStatus::Denied,
            "used" => DeviceCodeStatus::Used,
            _ => return Err(bad_value("device code status", status)),
        },
        account_id: opt_uuid(r.get(10)?)?,
        grant_id: opt_uuid(r.get(11)?)?,
        decided_at: r.get(12)?,
    })
}

impl Tx<'_> {
    pub fn insert_device_code(&self, d: &DeviceCode) -> Result<()> {
        self.execute(
            &format!(
                "INSERT INTO oidc_device_codes ({COLS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ),
            args![
                d.device_code_hash,
                d.user_code_hash,
                d.client_id,
                d.scopes,
                d.address,
                d.created_at,
                d.expires_at,
                d.interval_ms,
                d.last_polled_at,
                d.status.as_str(),
                d.account_id.map(|u| u.as_bytes().to_vec()),
                d.grant_id.map(|u| u.as_bytes().to_vec()),
                d.decided_at
            ],
        )?;
        Ok(())
    }

    pub fn device_code(&self, device_code_hash: &[u8]) -> Result<Option<DeviceCode>> {
        self.query_row(
            &format!("SELECT {COLS} FROM oidc_device_codes WHERE device_code_hash = ?1"),
            args![device_code_hash],
            from_row,
        )
    }

    /// The request a user code names, if it is still waiting for a decision at `now`.
    pub fn pending_device_code(
        &self,
        user_code_hash: &[u8],
        now: Millis,
    ) -> Result<Option<DeviceCode>> {
        self.query_row(
            &format!(
                "SELECT {COLS} FROM oidc_device_codes
                 WHERE user_code_hash = ?1 AND status = 'pending' AND expires_at > ?2"
            ),
            args![user_code_hash, now],
            from_row,
        )
    }

    /// Records the agent's poll at `now`, and its interval from now on.
    pub fn poll_device_code(&self, hash: &[u8], now: Millis, interval_ms: i64) -> Result<()> {
        self.execute(
            "UPDATE oidc_device_codes SET last_polled_at = ?2, interval_ms = ?3
             WHERE device_code_hash = ?1",
            args![hash, now, interval_ms],
        )?;
        Ok(())
    }

    /// The person's decision on a pending request: false if it was no longer pending (decided
    /// already, by another request that won the race).
    pub fn decide_device_code(
        &self,
        user_code_hash: &[u8],
        status: DeviceCodeStatus,
        account_id: Uuid,
        grant_id: Option<Uuid>,
        now: Millis,
    ) -> Result<bool> {
        Ok(self.execute(
            "UPDATE oidc_device_codes SET status = ?2, account_id = ?3, grant_id = ?4,
                 decided_at = ?5
             WHERE user_code_hash = ?1 AND status = 'pending'",
            args![
                user_code_hash,
                status.as_str(),
                account_id.as_bytes(),
                grant_id.map(|u| u.as_bytes().to_vec()),
                now
            ],
        )? == 1)
    }

    /// Spends an approved code (the agent takes its tokens); false if it was not approved and
    /// unspent, so of two exchanges only one wins.
    pub fn use_device_code(&self, hash: &[u8]) -> Result<bool> {
        Ok(self.execute(
            "UPDATE oidc_device_codes SET status = 'used'
             WHERE device_code_hash = ?1 AND status = 'approved'",
            args![hash],
        )? == 1)
    }

    /// Deletes up to `batch` requests that expired before `before`.
    pub fn prune_device_codes(&self, before: Millis, batch: u32) -> Result<usize> {
        self.execute(
            "DELETE FROM oidc_device_codes WHERE device_code_hash IN (
                 SELECT device_code_hash FROM oidc_device_codes WHERE expires_at < ?1 LIMIT ?2)",
            args![before, i64::from(batch)],
        )
    }
}
