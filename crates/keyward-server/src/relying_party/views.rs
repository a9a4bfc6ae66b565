//! Stored rows as the wire types clients see. Only what a client may see is copied.

use keyward_core::store::{Account, Authenticator, Device, PendingRecovery, Session, Tx};
use keyward_proto::{AccountView, AuthenticatorView, DeviceView, RecoveryWindow, SessionView};
use uuid::Uuid;

use super::RelyingParty;
use crate::error::{Result, ServerError};

pub(super) fn authenticator_view(a: &Authenticator) -> AuthenticatorView {
    AuthenticatorView {
        id: a.id,
        credential_id: keyward_core::secret::b64(&a.credential_id),
        nickname: a.nickname.clone(),
        aaguid: a.aaguid,
        model: a
            .aaguid
            .as_ref()
            .and_then(keyward_core::aaguid::model_name)
            .map(str::to_string),
        transports: a.transports.clone(),
        backup_eligible: a.backup_eligible,
        backup_state: a.backup_state,
        created_at: a.created_at,
        last_used_at: a.last_used_at,
        sign_count: a.sign_count,
        status: a.status,
    }
}

fn device_view(d: &Device, place: Option<String>) -> DeviceView {
    DeviceView {
        id: d.id,
        name: d.name.clone(),
        platform: d.platform.clone(),
        first_seen_at: d.first_seen_at,
        last_seen_at: d.last_seen_at,
        address: d.address.clone(),
        place,
    }
}

pub(super) fn account_view(a: &Account) -> AccountView {
    AccountView {
        id: a.id,
        username: a.username.clone(),
        display_name: a.display_name.clone(),
        created_at: a.created_at,
        state: a.state,
        recovery: a.recovery.as_ref().map(window_view),
    }
}

pub(super) fn window_view(r: &PendingRecovery) -> RecoveryWindow {
    RecoveryWindow {
        started_at: r.started_at,
        ends_at: r.ends_at,
        device_name: r.device_name.clone(),
        address: r.address.clone(),
    }
}

impl RelyingParty {
    /// A session with its device and place; `current` marks the asking session.
    pub(super) fn session_view(
        &self,
        tx: &Tx<'_>,
        s: &Session,
        current: Option<Uuid>,
    ) -> Result<SessionView> {
        let device = tx
            .device(s.device_id)?
            .ok_or_else(|| ServerError::Internal("session without device".into()))?;
        Ok(SessionView {
            id: s.id,
            device: device_view(&device, self.places.lookup(&device.address)),
            scope: s.scope,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            idle_expires_at: s.idle_expires_at(self.policy.session_idle_ms),
            expires_at: s.expires_at,
            verified_at: s.verified_at,
            opened_by: s.opened_by,
            address: s.address.clone(),
            current: Some(s.id) == current,
            // A browser's binding lives in its own table; a device key's on the session.
            binding: match self.browser_binding_of(tx, s.id)? {
                keyward_proto::SessionBinding::Unbound => s.binding,
                browser => browser,
            },
            kind: match s.agent_client_id {
                Some(_) => keyward_proto::SessionKind::Agent,
                None => keyward_proto::SessionKind::Person,
            },
            agent_client_id: s.agent_client_id.clone(),
        })
    }
}
