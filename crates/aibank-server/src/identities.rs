//! Creating identities: agents (with their first key, account, wallet and claim code),
//! master keys (with a new platform when asked), and the accounts of x402 payers, which
//! the payment crate asks for. Handlers, the CLI and start-up all create them here.

use aibank_auth::{GeneratedKey, KeyKind};
use aibank_core::ids::new_id;
use aibank_core::{ApiError, Usd};
use aibank_ledger::{EntryKind, LedgerError};
use aibank_store::models::{Agent, AgentClaim, ApiKey, MasterKey, Wallet, AGENT_KIND_GATEWAY};
use aibank_store::repo::keys as key_repo;
use aibank_store::{is_unique_violation, repo, AnyConnection, StoreError, TxStop};

use crate::audit::{Actor, Audit};
use crate::state::AppState;
use crate::views::agents::SpendingControls;

/// What a new agent starts with.
#[derive(Debug)]
pub struct NewAgentSpec {
    pub actor: Actor,
    pub platform_id: Option<String>,
    pub key_kind: KeyKind,
    pub name: String,
    pub email: Option<String>,
    pub credits: Usd,
    pub grant_kind: EntryKind,
    pub controls: SpendingControls,
}

/// A newly created agent with what it was given.
#[derive(Debug)]
pub struct CreatedAgent {
    pub agent: Agent,
    /// Its full value must be shown exactly once.
    pub key: GeneratedKey,
    /// Agents (not gateway-only keys) get a wallet and a claim code.
    pub wallet: Option<Wallet>,
    pub claim: Option<AgentClaim>,
}

/// A claim code: four letters, a dash, four digits (`XKCD-4291`).
pub fn new_claim_code() -> String {
    let mut rng = rand::rng();
    let letters: String = (0..4)
        .map(|_| char::from(b'A' + rand::Rng::random_range(&mut rng, 0..26u8)))
        .collect();
    let digits: u16 = rand::Rng::random_range(&mut rng, 0..10_000);
    format!("{letters}-{digits:04}")
}

/// Creates an agent, its key, its account (with the opening credits journaled) and, for
/// agents, its wallet and claim code, in one transaction. A platform's own agents are
/// claimed by that platform from the start.
pub async fn create_agent(state: &AppState, spec: NewAgentSpec) -> Result<CreatedAgent, ApiError> {
    let key = GeneratedKey::new(spec.key_kind);
    let secret_hash = state.auth.hash_key(&key.full).await?;
    let now = state.clock.now_ms();
    let ttl = i64::try_from(state.config.claim_code_ttl.as_millis()).unwrap_or(i64::MAX);
    // A claim code collision (about one in 4.5e9 per pair) is retried with a new code.
    for _ in 0..3 {
        match create_agent_once(state, &spec, &key, secret_hash.clone(), now, ttl).await {
            Err(TxStop::Stopped(CodeTaken)) => {}
            Err(TxStop::Failed(e)) => return Err(e.into()),
            Ok((agent, wallet, claim)) => {
                return Ok(CreatedAgent {
                    agent,
                    key,
                    wallet,
                    claim,
                })
            }
        }
    }
    Err(ApiError::internal("could not allocate a unique claim code"))
}

/// A claim code already given to another agent: retry with a new one.
struct CodeTaken;

async fn create_agent_once(
    state: &AppState,
    spec: &NewAgentSpec,
    key: &GeneratedKey,
    secret_hash: String,
    now: i64,
    claim_ttl_ms: i64,
) -> Result<(Agent, Option<Wallet>, Option<AgentClaim>), TxStop<CodeTaken, LedgerError>> {
    let agent = Agent {
        per_tx_limit_micros: spec.controls.per_tx_limit_usd.micros(),
        daily_limit_micros: spec.controls.daily_limit_usd.micros(),
        weekly_limit_micros: spec.controls.weekly_limit_usd.micros(),
        monthly_limit_micros: spec.controls.monthly_limit_usd.micros(),
        ..Agent::new(
            new_id("agt"),
            spec.platform_id.clone(),
            key.kind.db_kind(),
            spec.name.clone(),
            spec.email.clone(),
            now,
        )
    };
    let row = api_key_row(key, &agent.id, secret_hash, now);
    let is_agent = key.kind == KeyKind::Agent;
    let wallets = state.wallets.clone();
    let claim = is_agent.then(|| AgentClaim {
        agent_id: agent.id.clone(),
        code: new_claim_code(),
        expires_at: now.saturating_add(claim_ttl_ms),
        claimed_at: spec.platform_id.as_ref().map(|_| now),
        claimed_email: None,
        claimed_platform_id: spec.platform_id.clone(),
    });
    let (credits, grant_kind, actor) = (spec.credits, spec.grant_kind, spec.actor.clone());
    state
        .pool
        .run(move |c| {
            // Key generation and sealing are CPU work: here, off the HTTP workers.
            let wallet = is_agent.then(|| wallets.new_wallet(&agent.id, now));
            c.write_tx(|c| {
                repo::agents::insert(c, &agent)?;
                if let Some(w) = &wallet {
                    aibank_store::repo::wallets::insert(c, w)?;
                }
                if let Some(cl) = &claim {
                    match repo::claims::insert(c, cl) {
                        Ok(()) => {}
                        Err(e) if is_unique_violation(&e) => {
                            return Err(TxStop::Stopped(CodeTaken))
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                key_repo::insert_api_key(c, &row)?;
                aibank_ledger::open_account(c, &agent.id, credits, grant_kind, now)
                    .map_err(TxStop::Failed)?;
                Audit {
                    actor: &actor,
                    action: "api_key.created",
                    platform_id: agent.platform_id.as_deref(),
                    agent_id: Some(&agent.id),
                    target_id: &row.id,
                    details: Some(serde_json::json!({ "reason": "agent created" })),
                }
                .write(c, now)?;
                Ok((agent, wallet, claim))
            })
        })
        .await
}

/// The stored form of a newly generated agent or gateway key.
pub fn api_key_row(key: &GeneratedKey, agent_id: &str, secret_hash: String, now: i64) -> ApiKey {
    ApiKey::new(
        key.id.clone(),
        agent_id.to_owned(),
        key.kind.db_kind(),
        secret_hash,
        key.last4.clone(),
        now,
    )
}

/// Creates a master key; with `platform_id` `None`, also a new platform named `name`.
// Each argument is a separate fact about the new key.
#[allow(clippy::too_many_arguments)]
pub fn create_master_key(
    conn: &mut AnyConnection,
    actor: &Actor,
    platform_id: Option<&str>,
    name: &str,
    owner_email: Option<&str>,
    key: &GeneratedKey,
    secret_hash: String,
    now: i64,
) -> Result<MasterKey, StoreError> {
    let row = MasterKey {
        id: key.id.clone(),
        platform_id: platform_id.map_or_else(|| new_id("plt"), str::to_owned),
        name: name.to_owned(),
        owner_email: owner_email.map(str::to_owned),
        secret_hash,
        last4: key.last4.clone(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    let audit = Audit {
        actor,
        action: "master_key.created",
        platform_id: Some(&row.platform_id),
        agent_id: None,
        target_id: &row.id,
        details: Some(serde_json::json!({ "name": name })),
    }
    .row(now);
    key_repo::create_master_key(conn, &row, platform_id.is_none().then_some(name), &audit)?;
    Ok(row)
}

/// Spending limits of an x402 payer's account: what it paid is its limit.
const PAYER_LIMIT_MICROS: i64 = 1_000_000_000 * 1_000_000;

/// Creates x402 payers' accounts on their first payment, for the payment crate: a
/// gateway-only agent named after the payer's address, with an empty account.
#[derive(Debug)]
pub struct X402Payers;

impl aibank_x402::PayerAccounts for X402Payers {
    fn ensure_payer(
        &self,
        conn: &mut AnyConnection,
        account_id: &str,
        payer: &str,
        now: i64,
    ) -> Result<(), LedgerError> {
        if repo::agents::find(conn, account_id)?.is_some() {
            return Ok(());
        }
        let agent = Agent {
            per_tx_limit_micros: PAYER_LIMIT_MICROS,
            daily_limit_micros: PAYER_LIMIT_MICROS,
            weekly_limit_micros: PAYER_LIMIT_MICROS,
            monthly_limit_micros: PAYER_LIMIT_MICROS,
            ..Agent::new(
                account_id.to_owned(),
                None,
                AGENT_KIND_GATEWAY,
                format!("x402 payer {payer}"),
                None,
                now,
            )
        };
        // A concurrent first payment of the same payer may create them first; the
        // savepoint keeps the caller's transaction usable.
        let created = conn.write_tx(|c| {
            repo::agents::insert(c, &agent)?;
            aibank_ledger::open_account(c, account_id, Usd::ZERO, EntryKind::TopUp, now)?;
            Ok::<_, LedgerError>(())
        });
        match created {
            Err(LedgerError::Store(StoreError::Query(e))) if is_unique_violation(&e) => Ok(()),
            other => other,
        }
    }
}
