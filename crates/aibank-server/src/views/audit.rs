//! Audit log entries as the API shows them.

use aibank_core::clock::rfc3339;
use aibank_store::models::AuditEvent;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct ActorView {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
}

/// One audit log entry.
#[derive(Debug, Serialize)]
pub struct AuditView {
    pub id: String,
    pub action: String,
    pub actor: ActorView,
    #[serde(rename = "agentId")]
    pub agent_id: Option<String>,
    pub target_id: String,
    pub details: Option<serde_json::Value>,
    pub created_at: String,
}

impl From<AuditEvent> for AuditView {
    fn from(e: AuditEvent) -> Self {
        AuditView {
            id: e.id,
            action: e.action,
            actor: ActorView {
                kind: e.actor_type,
                id: e.actor_id,
            },
            agent_id: e.agent_id,
            target_id: e.target_id,
            details: e.details.and_then(|d| serde_json::from_str(&d).ok()),
            created_at: rfc3339(e.created_at),
        }
    }
}
