//! The dashboard's pages, rendered with maud (escaped by construction) into plain HTML:
//! one stylesheet in the page, whose hash the CSP names, and no script, image or other
//! asset. Every page is `no-store`, since any may show a balance and one shows a new key.

use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use aibank_core::clock::rfc3339;
use aibank_core::{ApiError, Usd};
use aibank_store::models::{Agent, ApiKey, AuditEvent, UsageEvent, KEY_STATUS_ACTIVE};
use base64::Engine as _;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use sha2::{Digest, Sha256};

use super::chart;
use super::session::SignedIn;
use super::{AgentDetail, Fleet, Notice};
use crate::handlers::platform_agents::Rotated;

const STYLE: &str = "
body{margin:0;background:#f5f6f8;color:#1c1e21;font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}
header{display:flex;align-items:center;gap:1rem;padding:.75rem 1.5rem;background:#1c2a4a;color:#fff}
header a{color:#fff;text-decoration:none;font-weight:600}header .who{margin-left:auto;opacity:.85;font-size:.9rem}
header form{margin:0}header button{margin:0;background:#3b4d75}
main{max-width:72rem;margin:1.5rem auto;padding:0 1.5rem}
section{background:#fff;border-radius:12px;box-shadow:0 1px 4px rgba(0,0,0,.08);padding:1.25rem 1.5rem;margin-bottom:1.25rem}
h1{font-size:1.4rem;margin:0 0 1rem}h2{font-size:1.1rem;margin:0 0 .75rem}
table{width:100%;border-collapse:collapse;font-size:.9rem}
th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid #eceef2;vertical-align:top}
th{color:#5b6270;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
label{display:block;font-weight:600;margin:.5rem 0 .2rem}
input{box-sizing:border-box;padding:.45rem .6rem;font:inherit;border:1px solid #c4c8cf;border-radius:8px}
button{padding:.5rem 1rem;font:inherit;font-weight:600;color:#fff;background:#2457d6;border:0;border-radius:8px;cursor:pointer}
button.danger{background:#b3261e}
code{font:.85em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0}dt{font-weight:600}dd{margin:0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(16rem,1fr));gap:1.25rem}
.actions form{margin:0 0 1rem}.actions .row{display:flex;gap:.5rem;align-items:end;flex-wrap:wrap}
.limits{display:grid;grid-template-columns:repeat(4,minmax(7rem,1fr));gap:.5rem}.limits input{width:100%}
.search{display:flex;gap:.5rem;margin-bottom:1rem}.search input{flex:1}
.hint{color:#5b6270;font-size:.85rem}
.pill{display:inline-block;padding:0 .5rem;border-radius:999px;background:#e6f4ea;font-size:.8rem}
.pill.off{background:#fdecea}.pill.paused{background:#fff4d6}
.notice{padding:.6rem .8rem;border-radius:8px;background:#e6f4ea;margin-bottom:1rem}
.error{padding:.6rem .8rem;border-radius:8px;background:#fdecea;color:#8a1c12;margin-bottom:1rem}
.secret{border:2px solid #d69e2e;background:#fffaf0}.secret .key{display:block;font-size:1rem;margin:.5rem 0;user-select:all}
.pages{display:flex;gap:1rem;margin-top:1rem}
.signin{max-width:28rem;margin:3rem auto}.signin input{width:100%}.signin button{margin-top:1rem}
";

/// Nothing loads but the page's own stylesheet; forms post only here; nothing frames it.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self' data:; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
});

pub fn content_security_policy() -> &'static str {
    &CSP
}

/// An amount as people read it: a dollar sign, at least two decimals, never rounded.
pub fn money(u: Usd) -> String {
    let mut d = u.to_decimal();
    if d.scale() < 2 {
        d.rescale(2);
    }
    if d.is_sign_negative() {
        format!("-${}", d.abs())
    } else {
        format!("${d}")
    }
}

/// A moment as people read it, to the minute, in UTC.
fn when(ms: i64) -> String {
    let s = rfc3339(ms);
    match (s.get(..10), s.get(11..16)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => s,
    }
}

fn when_opt(ms: Option<i64>) -> String {
    ms.map_or_else(|| "never".to_owned(), when)
}

/// A key as its owner recognises it: its prefix and its last four characters.
fn key_hint(k: &ApiKey) -> String {
    let prefix = if k.kind == "gateway" { "gw_" } else { "ak_" };
    format!("{prefix}…{}", k.last4)
}

fn page(title: &str, session: Option<(&SignedIn, &str)>, body: &Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · aibank dashboard" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a href="/dashboard" { "aibank dashboard" }
                    @if let Some((s, platform)) = session {
                        span .who #signed-in data-platform-id=(s.auth.platform_id) {
                            @if !platform.is_empty() { (platform) " · " }
                            "master key " code { (s.auth.key_id) }
                        }
                        form #sign-out-form method="post" action="/dashboard/sign-out" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button #sign-out-button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub fn respond(status: StatusCode, markup: &Markup) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, content_security_policy()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(markup.clone().into_string())
}

fn status_of(error: Option<&ApiError>) -> StatusCode {
    error.map_or(StatusCode::OK, |e| e.code().status())
}

/// Carries the headers of the API's answer that matter to a page (`Retry-After`).
fn with_error_headers(mut res: HttpResponse, error: Option<&ApiError>) -> HttpResponse {
    if let Some(v) = error
        .map(ResponseError::error_response)
        .and_then(|api| api.headers().get(header::RETRY_AFTER).cloned())
    {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::clone(&v));
    }
    res
}

fn error_block(error: Option<&ApiError>) -> Markup {
    html! {
        @if let Some(e) = error {
            p #error .error role="alert" data-code=(e.code().as_str()) { (e.message()) }
        }
    }
}

/// The sign-in form; `csrf` is the token its cookie holds too.
pub fn sign_in(csrf: &str, error: Option<&ApiError>) -> HttpResponse {
    let body = html! {
        section .signin {
            h1 { "Sign in" }
            (error_block(error))
            form #sign-in-form method="post" action="/dashboard/sign-in" {
                input type="hidden" name="csrf" value=(csrf);
                label for="master_key" { "Master key" }
                input #master_key name="master_key" type="password" required
                    autocomplete="off" spellcheck="false";
                p .hint { "One of your platform's master keys (" code { "mk_…" } "). \
                    The session lasts 12 hours, until you sign out, or until the key is revoked." }
                button #sign-in-button type="submit" { "Sign in" }
            }
        }
    };
    with_error_headers(
        respond(status_of(error), &page("Sign in", None, &body)),
        error,
    )
}

/// A refusal with nothing else to show; a link to sign in when there is no session.
pub fn error_page(error: &ApiError, session: Option<(&SignedIn, &str)>) -> HttpResponse {
    let body = html! {
        section {
            (error_block(Some(error)))
            @if session.is_some() {
                p { a href="/dashboard" { "Back to the fleet" } }
            } @else {
                p { a #sign-in-link href="/dashboard/sign-in" { "Sign in" } }
            }
        }
    };
    with_error_headers(
        respond(error.code().status(), &page("Dashboard", session, &body)),
        Some(error),
    )
}

fn state_pill(agent: &Agent) -> Markup {
    html! {
        @if !agent.active {
            span .pill.off data-state="inactive" { "inactive" }
        } @else if agent.keys_paused_at.is_some() {
            span .pill.paused data-state="paused" { "keys paused" }
        } @else {
            span .pill data-state="active" { "active" }
        }
    }
}

fn limits_text(agent: &Agent) -> String {
    format!(
        "{} a day · {} a week · {} a month · {} a call",
        money(Usd::from_micros(agent.daily_limit_micros)),
        money(Usd::from_micros(agent.weekly_limit_micros)),
        money(Usd::from_micros(agent.monthly_limit_micros)),
        money(Usd::from_micros(agent.per_tx_limit_micros)),
    )
}

/// A link that keeps the search and names a page of it.
fn fleet_link(search: Option<&str>, cursor: Option<&str>) -> String {
    let mut query = Vec::new();
    if let Some(q) = search {
        query.push(format!("q={}", encode(q)));
    }
    if let Some(c) = cursor {
        query.push(format!("cursor={}", encode(c)));
    }
    if query.is_empty() {
        "/dashboard".to_owned()
    } else {
        format!("/dashboard?{}", query.join("&"))
    }
}

/// Percent-encodes everything but unreserved characters, for a query value.
pub(super) fn encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The fleet: every agent of the platform with its money, limits, state and last use.
pub fn fleet(session: &SignedIn, fleet: &Fleet) -> HttpResponse {
    let search = fleet.search.as_deref();
    let body = html! {
        section {
            h1 { "Fleet" }
            form #search-form .search method="get" action="/dashboard" {
                input #q name="q" type="search" value=[search] placeholder="Agent name or id"
                    aria-label="Search agents";
                button #search-button type="submit" { "Search" }
            }
            @if fleet.rows.is_empty() {
                p #no-agents { @if search.is_some() { "No agent matches." } @else { "No agents yet." } }
            } @else {
                table #fleet {
                    thead { tr {
                        th { "Agent" } th .num { "Balance" } th .num { "Owed" }
                        th .num { "Spent 24 h" } th .num { "Spent 7 days" }
                        th { "Limits" } th { "State" } th { "Last activity" }
                    } }
                    tbody {
                        @for row in &fleet.rows {
                            tr data-agent-id=(row.agent.id) {
                                td {
                                    a .agent-link href={ "/dashboard/agents/" (encode(&row.agent.id)) } { (row.agent.name) }
                                    br; code .hint { (row.agent.id) }
                                }
                                td .num .balance data-micros=(row.account.balance_micros) {
                                    (money(Usd::from_micros(row.account.balance_micros)))
                                }
                                td .num { (money(Usd::from_micros(row.account.owed_micros))) }
                                td .num { (money(row.spent[0])) }
                                td .num { (money(row.spent[1])) }
                                td .hint { (limits_text(&row.agent)) }
                                td { (state_pill(&row.agent)) }
                                td { (when_opt(row.last_active)) }
                            }
                        }
                    }
                }
            }
            nav .pages {
                @if fleet.paged {
                    a #first-page href=(fleet_link(search, None)) { "First page" }
                }
                @if let Some(next) = &fleet.next {
                    a #next-page href=(fleet_link(search, Some(next))) { "Next page" }
                }
            }
        }
    };
    respond(
        StatusCode::OK,
        &page("Fleet", Some((session, &fleet.platform.name)), &body),
    )
}

fn hidden_csrf(session: &SignedIn) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

fn actions(session: &SignedIn, d: &AgentDetail, grant_key: &str) -> Markup {
    let a = &d.agent;
    let base = format!("/dashboard/agents/{}", encode(&a.id));
    let limit = |micros: i64| Usd::from_micros(micros).to_string();
    html! {
        section .actions #actions {
            h2 { "Actions" }
            form #grant-form method="post" action={ (base) "/credits" } {
                (hidden_csrf(session))
                input type="hidden" name="idempotency_key" value=(grant_key);
                label for="amount_usd" { "Grant credits (USD)" }
                div .row {
                    input #amount_usd name="amount_usd" inputmode="decimal" required
                        placeholder="10.00" autocomplete="off";
                    button #grant-button type="submit" { "Grant" }
                }
            }
            form #limits-form method="post" action={ (base) "/limits" } {
                (hidden_csrf(session))
                label { "Spending limits (USD)" }
                div .limits {
                    div { label .hint for="daily_limit_usd" { "Per day" }
                        input #daily_limit_usd name="daily_limit_usd" inputmode="decimal" value=(limit(a.daily_limit_micros)); }
                    div { label .hint for="weekly_limit_usd" { "Per week" }
                        input #weekly_limit_usd name="weekly_limit_usd" inputmode="decimal" value=(limit(a.weekly_limit_micros)); }
                    div { label .hint for="monthly_limit_usd" { "Per month" }
                        input #monthly_limit_usd name="monthly_limit_usd" inputmode="decimal" value=(limit(a.monthly_limit_micros)); }
                    div { label .hint for="per_tx_limit_usd" { "Per call" }
                        input #per_tx_limit_usd name="per_tx_limit_usd" inputmode="decimal" value=(limit(a.per_tx_limit_micros)); }
                }
                p { button #limits-button type="submit" { "Save limits" } }
            }
            div .row {
                @if a.keys_paused_at.is_some() {
                    form #resume-form method="post" action={ (base) "/resume" } {
                        (hidden_csrf(session))
                        button #resume-button type="submit" { "Resume keys" }
                    }
                } @else {
                    form #pause-form method="post" action={ (base) "/pause" } {
                        (hidden_csrf(session))
                        button #pause-button .danger type="submit" { "Pause keys" }
                    }
                }
                form #rotate-form method="post" action={ (base) "/rotate-key" } {
                    (hidden_csrf(session))
                    button #rotate-button .danger type="submit" { "Rotate key" }
                }
            }
            p .hint { "Rotating gives the agent a new key, shown once, and revokes all its others at once." }
        }
    }
}

fn keys_table(d: &AgentDetail) -> Markup {
    let paused = d.agent.keys_paused_at.is_some();
    html! {
        section #keys {
            h2 { "Keys" }
            table {
                thead { tr { th { "Key" } th { "Id" } th { "Status" } th { "Created" } th { "Last used" } } }
                tbody {
                    @for k in &d.keys {
                        @let status = if k.status != KEY_STATUS_ACTIVE { "revoked" } else if paused { "paused" } else { "active" };
                        tr .key data-key-id=(k.id) data-status=(status) {
                            td { code { (key_hint(k)) } }
                            td { code .hint { (k.id) } }
                            td { (status) }
                            td { (when(k.created_at)) }
                            td { (when_opt(k.last_used_at)) }
                        }
                    }
                }
            }
        }
    }
}

fn calls_table(calls: &[UsageEvent]) -> Markup {
    html! {
        section #calls {
            h2 { "Recent calls" }
            @if calls.is_empty() {
                p .hint { "No calls yet." }
            } @else {
                table {
                    thead { tr {
                        th { "When" } th { "Provider" } th { "Model" }
                        th .num { "Input tokens" } th .num { "Output tokens" } th .num { "Cost" }
                    } }
                    tbody {
                        @for u in calls {
                            tr .call data-usage-id=(u.id) {
                                td { (when(u.created_at)) }
                                td { (u.provider) }
                                td { code { (u.model) } }
                                td .num { (u.input_tokens) }
                                td .num { (u.output_tokens) }
                                td .num data-micros=(u.cost_micros) { (money(Usd::from_micros(u.cost_micros))) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn audit_table(entries: &[AuditEvent]) -> Markup {
    html! {
        section #audit {
            h2 { "Audit log" }
            @if entries.is_empty() {
                p .hint { "Nothing recorded yet." }
            } @else {
                table {
                    thead { tr { th { "When" } th { "Action" } th { "By" } th { "Details" } } }
                    tbody {
                        @for e in entries {
                            tr .audit-entry data-action=(e.action) {
                                td { (when(e.created_at)) }
                                td { (e.action) }
                                td { (e.actor_type) @if let Some(id) = &e.actor_id { " " code .hint { (id) } } }
                                td { @if let Some(d) = &e.details { code .hint { (d) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// One agent: its money, limits and state, the actions, keys, spend chart, recent calls,
/// wallet and audit log.
pub fn agent(
    session: &SignedIn,
    d: &AgentDetail,
    notice: Option<Notice>,
    error: Option<&ApiError>,
    grant_key: &str,
) -> HttpResponse {
    let a = &d.agent;
    let body = html! {
        section #agent data-agent-id=(a.id) {
            h1 #agent-name { (a.name) }
            @if let Some(n) = notice {
                p #notice .notice role="status" data-notice=(n.as_str()) { (n.message()) }
            }
            (error_block(error))
            div .grid {
                dl {
                    dt { "Agent" } dd { code { (a.id) } }
                    dt { "Balance" } dd #balance data-micros=(d.account.balance_micros) { (money(Usd::from_micros(d.account.balance_micros))) }
                    dt { "Owed" } dd #owed data-micros=(d.account.owed_micros) { (money(Usd::from_micros(d.account.owed_micros))) }
                    dt { "Held" } dd { (money(Usd::from_micros(d.account.held_micros))) }
                    dt { "State" } dd #state data-keys-paused=(a.keys_paused_at.is_some()) { (state_pill(a)) }
                }
                dl {
                    dt { "Spent 24 h" } dd #spent-day { (money(d.spent[0])) }
                    dt { "Spent 7 days" } dd #spent-week { (money(d.spent[1])) }
                    dt { "Spent 30 days" } dd #spent-month { (money(d.spent[2])) }
                    dt { "Limits" } dd #limits { (limits_text(a)) }
                    dt { "Lifetime spend" } dd { (money(Usd::from_micros(d.account.total_spent_micros))) }
                }
            }
        }
        (actions(session, d, grant_key))
        section #chart {
            h2 { "Daily spend, last " (d.days.len()) " days" }
            (chart::daily_spend(&d.days))
            p .hint { "Charges and gateway calls per UTC day." }
        }
        (keys_table(d))
        (calls_table(&d.calls))
        section #wallet {
            h2 { "Wallet" }
            @if let Some(w) = &d.wallet {
                dl data-wallet-id=(w.id) {
                    dt { "Ethereum" } dd { code #address-ethereum { (w.addresses.ethereum) } }
                    dt { "Base" } dd { code #address-base { (w.addresses.base) } }
                    dt { "Solana" } dd { code #address-solana { (w.addresses.solana) } }
                }
            } @else {
                p .hint { "This agent has no wallet." }
            }
        }
        (audit_table(&d.audit))
    };
    with_error_headers(
        respond(
            status_of(error),
            &page(&a.name, Some((session, &d.platform.name)), &body),
        ),
        error,
    )
}

/// The answer to a rotation: the only page that ever shows the new key.
pub fn rotated(session: &SignedIn, platform: &str, agent: &Agent, r: &Rotated) -> HttpResponse {
    let body = html! {
        section .secret #rotated data-agent-id=(r.agent_id) {
            h1 { "New key for " (agent.name) }
            p { "Every previous key of this agent is revoked. This is its new key:" }
            code #new-key .key { (r.api_key) }
            p { strong { "Copy it now, it will not be shown again." } }
            p { a #back-link href={ "/dashboard/agents/" (encode(&agent.id)) } { "Back to " (agent.name) } }
        }
    };
    respond(
        StatusCode::OK,
        &page("New key", Some((session, platform)), &body),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_keeps_every_digit_and_two_at_least() {
        assert_eq!(money(Usd::from_micros(8_500_000)), "$8.50");
        assert_eq!(money(Usd::from_micros(10_000_000)), "$10.00");
        assert_eq!(money(Usd::from_micros(1)), "$0.000001");
        assert_eq!(money(Usd::from_micros(-20_000)), "-$0.02");
        assert_eq!(money(Usd::ZERO), "$0.00");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(
            fleet_link(Some("x y"), Some("c1")),
            "/dashboard?q=x%20y&cursor=c1"
        );
        assert_eq!(fleet_link(None, None), "/dashboard");
    }

    #[test]
    fn the_policy_names_the_stylesheet_and_allows_no_script() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(!csp.contains("script-src"));
        assert!(!csp.contains("unsafe"));
        assert!(csp.contains("frame-ancestors 'none'"));
    }
}
