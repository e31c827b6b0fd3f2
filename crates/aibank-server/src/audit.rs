//! The audit log's vocabulary: who acted ([`Actor`]) and what an entry says happened
//! ([`Audit`]), written in the transaction of the change it records.

use aibank_core::ids::new_id;
use aibank_store::models::AuditEvent;
use aibank_store::{repo, AnyConnection};
use serde_json::Value;

/// Who made a change, as the audit log records it.
#[derive(Debug, Clone)]
pub struct Actor {
    pub kind: &'static str,
    pub id: Option<String>,
}

impl Actor {
    /// Unauthenticated self-service sign-up.
    pub const PUBLIC: Actor = Actor {
        kind: "public",
        id: None,
    };
    /// The server operator (CLI, bootstrap key).
    pub const OPERATOR: Actor = Actor {
        kind: "operator",
        id: None,
    };

    pub fn master_key(id: &str) -> Actor {
        Actor {
            kind: "master_key",
            id: Some(id.to_owned()),
        }
    }

    pub fn api_key(id: &str) -> Actor {
        Actor {
            kind: "api_key",
            id: Some(id.to_owned()),
        }
    }
}

/// What an audit entry says happened.
#[derive(Debug)]
pub struct Audit<'a> {
    pub actor: &'a Actor,
    pub action: &'a str,
    pub platform_id: Option<&'a str>,
    pub agent_id: Option<&'a str>,
    pub target_id: &'a str,
    /// A JSON object of what changed; never a secret.
    pub details: Option<Value>,
}

impl Audit<'_> {
    pub fn row(self, now: i64) -> AuditEvent {
        AuditEvent {
            id: new_id("aud"),
            platform_id: self.platform_id.map(str::to_owned),
            agent_id: self.agent_id.map(str::to_owned),
            actor_type: self.actor.kind.to_owned(),
            actor_id: self.actor.id.clone(),
            action: self.action.to_owned(),
            target_id: self.target_id.to_owned(),
            details: self.details.map(|d| d.to_string()),
            created_at: now,
        }
    }

    /// Writes the entry; call it inside the transaction of the change it records.
    pub fn write(self, conn: &mut AnyConnection, now: i64) -> diesel::QueryResult<()> {
        repo::audit::insert(conn, &self.row(now))
    }
}
