//! `keywardd admin`: the operator's console, a thin layer over the relying party's operator
//! rules (`relying_party/operator.rs`), acting on the configured database directly. What it
//! cannot do is as deliberate as what it can: see `operator.rs`.

use std::sync::Arc;

use keyward_core::Clock;
use serde_json::json;

use crate::config::{AdminCommand, Config};
use crate::http::serve::open_relying_party;

/// Runs one admin command; the JSON to print, or why it was refused.
pub fn run(
    config: &Config,
    command: AdminCommand,
    clock: Arc<dyn Clock>,
) -> Result<String, String> {
    let rp = open_relying_party(config, clock).map_err(|e| e.to_string())?;
    let out = match command {
        AdminCommand::Accounts => {
            json!({ "accounts": rp.operator_accounts().map_err(|e| e.to_string())? })
        }
        AdminCommand::Report => {
            serde_json::to_value(rp.operator_report().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?
        }
        AdminCommand::Disable { username, reason } => {
            let changed = rp
                .operator_disable(&username, &reason)
                .map_err(|e| e.to_string())?;
            json!({ "username": username, "disabled": true, "changed": changed })
        }
        AdminCommand::Enable { username } => {
            let changed = rp.operator_enable(&username).map_err(|e| e.to_string())?;
            json!({ "username": username, "disabled": false, "changed": changed })
        }
        AdminCommand::Delete { username } => {
            rp.operator_delete(&username).map_err(|e| e.to_string())?;
            json!({ "username": username, "deleted": true })
        }
    };
    serde_json::to_string_pretty(&out).map_err(|e| e.to_string())
}
