//! Names for authenticator models by AAGUID, and which AAGUIDs belong to sync providers (whose
//! passkeys are lost together, so they count as one independent authenticator).

use uuid::{Uuid, uuid};

/// Keyward's own software authenticator ("virtual key"): not secure, for trying Keyward.
pub const KEYWARD_VIRTUAL_KEY: Uuid = uuid!("6b657977-6172-4476-8972-7475616c6b79");

struct Model {
    aaguid: Uuid,
    name: &'static str,
}

const MODELS: &[Model] = &[
    Model {
        aaguid: KEYWARD_VIRTUAL_KEY,
        name: "Keyward virtual key (not secure)",
    },
    Model {
        aaguid: uuid!("cb69481e-8ff7-4039-93ec-0a2729a154a8"),
        name: "YubiKey 5 Series",
    },
    Model {
        aaguid: uuid!("ee882879-721c-4913-9775-3dfcce97072a"),
        name: "YubiKey 5 Series",
    },
    Model {
        aaguid: uuid!("fa2b99dc-9e39-4257-8f92-4a30d23c4118"),
        name: "YubiKey 5 Series with NFC",
    },
    Model {
        aaguid: uuid!("2fc0579f-8113-47ea-b116-bb5a8db9202a"),
        name: "YubiKey 5 Series with NFC",
    },
    Model {
        aaguid: uuid!("ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"),
        name: "Google Password Manager",
    },
    Model {
        aaguid: uuid!("fbfc3007-154e-4ecc-8c0b-6e020557d7bd"),
        name: "iCloud Keychain",
    },
    Model {
        aaguid: uuid!("bada5566-a7aa-401f-bd96-45619a55120d"),
        name: "1Password",
    },
    Model {
        aaguid: uuid!("d548826e-79b4-db40-a3d8-11116f7e8349"),
        name: "Bitwarden",
    },
    Model {
        aaguid: uuid!("08987058-cadc-4b81-b6e1-30de50dcbe96"),
        name: "Windows Hello",
    },
];

pub fn model_name(aaguid: &Uuid) -> Option<&'static str> {
    MODELS.iter().find(|m| &m.aaguid == aaguid).map(|m| m.name)
}
