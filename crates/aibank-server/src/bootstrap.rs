//! `AIBANK_BOOTSTRAP_MASTER_KEY`: make sure an operator-chosen master key exists, so a
//! scripted install (docker-compose) has a platform key from its first start.

use aibank_auth::keys::{self, KeyKind, MIN_CUSTOM_KEY_LEN};
use aibank_core::SecretString;
use aibank_store::models::MasterKey;
use aibank_store::repo::keys as key_repo;
use aibank_store::{is_unique_violation, DbPool, StoreError};

use crate::startup::StartupError;

/// What start-up found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Created {
        id: String,
    },
    Present {
        id: String,
    },
    /// It exists but was revoked through the API; revocation is not undone by a restart.
    Revoked {
        id: String,
    },
}

/// Ensures the key exists (blocking; called once at start-up).
pub fn ensure_master_key(
    pool: &DbPool,
    key: &SecretString,
    now: i64,
) -> Result<Outcome, StartupError> {
    let bad = |m: &str| StartupError::Bootstrap(m.to_owned());
    let presented = key.expose();
    let parsed = keys::parse(presented)
        .filter(|p| p.kind == KeyKind::Master)
        .ok_or_else(|| bad("AIBANK_BOOTSTRAP_MASTER_KEY must start with mk_ and contain only printable ASCII without spaces"))?;
    if !parsed.standard && presented.len() < MIN_CUSTOM_KEY_LEN {
        return Err(bad(&format!(
            "AIBANK_BOOTSTRAP_MASTER_KEY must be at least {MIN_CUSTOM_KEY_LEN} characters long"
        )));
    }
    let mut conn = pool.get()?;
    let existing = key_repo::find_master_key(&mut conn, &parsed.id).map_err(StoreError::from)?;
    if let Some(found) = existing {
        return classify(&found, presented);
    }
    let phc = keys::hash(key).map_err(|e| StartupError::Bootstrap(e.to_string()))?;
    let row = MasterKey {
        id: parsed.id.clone(),
        platform_id: aibank_core::ids::new_id("plt"),
        name: "bootstrap".into(),
        owner_email: None,
        secret_hash: phc,
        last4: keys::last4(presented),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    let audit = crate::audit::Audit {
        actor: &crate::audit::Actor::OPERATOR,
        action: "master_key.created",
        platform_id: Some(&row.platform_id),
        agent_id: None,
        target_id: &row.id,
        details: Some(serde_json::json!({ "name": "bootstrap" })),
    }
    .row(now);
    let res = key_repo::create_master_key(&mut conn, &row, Some("bootstrap"), &audit);
    match res {
        Ok(()) => Ok(Outcome::Created { id: parsed.id }),
        // Another instance sharing the database created it first.
        Err(e) if is_unique_violation(&e) => {
            let found = key_repo::find_master_key(&mut conn, &parsed.id)
                .map_err(StoreError::from)?
                .ok_or_else(|| bad("bootstrap master key vanished during creation"))?;
            classify(&found, presented)
        }
        Err(e) => Err(StoreError::from(e).into()),
    }
}

fn classify(found: &MasterKey, presented: &str) -> Result<Outcome, StartupError> {
    if !keys::verify(presented, &found.secret_hash) {
        return Err(StartupError::Bootstrap(format!(
            "a different master key already uses id {}; choose another AIBANK_BOOTSTRAP_MASTER_KEY",
            found.id
        )));
    }
    let id = found.id.clone();
    Ok(if found.revoked_at.is_some() {
        Outcome::Revoked { id }
    } else {
        Outcome::Present { id }
    })
}
