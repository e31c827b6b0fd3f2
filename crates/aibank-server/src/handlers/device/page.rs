//! The `/device` pages: plain server-rendered HTML with inline CSS, no script and no
//! external asset. Every interpolated value goes through [`esc`].

use std::fmt::Write as _;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError as _};
use aibank_core::clock::rfc3339;
use aibank_core::ApiError;

use super::{Claimed, Found};

/// The headers of every page: nothing cached (a page may show a master key), nothing
/// loaded or framed, forms posted only here.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

const STYLE: &str = "
body{margin:0;background:#f5f6f8;color:#1c1e21;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}
main{max-width:40rem;margin:2rem auto;padding:2rem;background:#fff;border-radius:12px;box-shadow:0 1px 4px rgba(0,0,0,.08)}
h1{margin-top:0;font-size:1.5rem}h2{font-size:1.2rem;margin-bottom:.25rem}
label{display:block;font-weight:600;margin-top:1rem}
input{box-sizing:border-box;width:100%;padding:.55rem .7rem;margin-top:.25rem;font:inherit;border:1px solid #c4c8cf;border-radius:8px}
button{margin-top:1.25rem;padding:.6rem 1.2rem;font:inherit;font-weight:600;color:#fff;background:#2457d6;border:0;border-radius:8px;cursor:pointer}
code{font:.9em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1rem;margin:.75rem 0}dt{font-weight:600}dd{margin:0}
.hint{color:#5b6270;font-size:.9rem;margin:.25rem 0 0}
.status{padding:.6rem .8rem;border-radius:8px;background:#eef2fb}
.status[data-status=claimed]{background:#e6f4ea}
.error{padding:.6rem .8rem;border-radius:8px;background:#fdecea;color:#8a1c12}
.secret{padding:1rem;border:2px solid #d69e2e;border-radius:8px;background:#fffaf0}
.secret .key{display:block;font-size:1rem;margin:.5rem 0;user-select:all}
";

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn respond(status: StatusCode, title: &str, body: &str) -> HttpResponse {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{} · aibank</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n\
         <h1>Claim an agent</h1>\n{body}</main>\n</body>\n</html>\n",
        esc(title)
    );
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(html)
}

/// The page status of an outcome: the API's status for an error, 200 otherwise.
fn status_of(error: Option<&ApiError>) -> StatusCode {
    error.map_or(StatusCode::OK, |e| e.code().status())
}

fn error_block(out: &mut String, error: Option<&ApiError>) {
    if let Some(e) = error {
        let _ = writeln!(
            out,
            "<p id=\"error\" class=\"error\" role=\"alert\" data-code=\"{}\">{}</p>",
            esc(e.code().as_str()),
            esc(e.message())
        );
    }
}

/// Carries the API error's headers that matter to a page (`Retry-After` on 429).
fn with_error_headers(mut res: HttpResponse, error: Option<&ApiError>) -> HttpResponse {
    if let Some(e) = error {
        let api = e.error_response();
        if let Some(v) = api.headers().get(header::RETRY_AFTER) {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::clone(v));
        }
    }
    res
}

/// A refusal that leaves nothing to show but the message (a spent guess budget).
pub fn error_page(error: &ApiError) -> HttpResponse {
    let mut body = String::new();
    error_block(&mut body, Some(error));
    with_error_headers(
        respond(status_of(Some(error)), "Claim an agent", &body),
        Some(error),
    )
}

/// The code form, with the code entered and the reason it was refused, if any.
pub fn enter_code(code: Option<&str>, error: Option<&ApiError>) -> HttpResponse {
    let mut body = String::new();
    error_block(&mut body, error);
    let _ = write!(
        body,
        "<p>Enter the claim code your agent gave you (like <code>XKCD-4291</code>).</p>\n\
         <form id=\"code-form\" method=\"get\" action=\"/device\">\n\
         <label for=\"code\">Claim code</label>\n\
         <input id=\"code\" name=\"code\" value=\"{}\" required autocomplete=\"off\" \
         autocapitalize=\"characters\" spellcheck=\"false\" maxlength=\"32\">\n\
         <button id=\"lookup-button\" type=\"submit\">Continue</button>\n</form>\n",
        esc(code.unwrap_or_default())
    );
    with_error_headers(respond(status_of(error), "Claim an agent", &body), error)
}

/// The wallet's public addresses (the same EVM address on Ethereum and Base).
fn wallet_block(out: &mut String, found: &Found) {
    if let Some(w) = &found.wallet {
        let _ = writeln!(
            out,
            "<dl id=\"wallet\" data-wallet-id=\"{}\">\n\
             <dt>Ethereum</dt><dd><code id=\"address-ethereum\">{}</code></dd>\n\
             <dt>Base</dt><dd><code id=\"address-base\">{}</code></dd>\n\
             <dt>Solana</dt><dd><code id=\"address-solana\">{}</code></dd>\n</dl>",
            esc(&w.id),
            esc(&w.addresses.ethereum),
            esc(&w.addresses.base),
            esc(&w.addresses.solana),
        );
    }
}

/// The agent's name, wallet and claim state.
fn agent_block(out: &mut String, found: &Found) {
    let _ = writeln!(
        out,
        "<section id=\"agent\" data-agent-id=\"{}\">\n<h2 id=\"agent-name\">{}</h2>\n\
         <p class=\"hint\">Agent <code>{}</code> · claim code <code id=\"claim-code\">{}</code></p>",
        esc(&found.agent.id),
        esc(&found.agent.name),
        esc(&found.agent.id),
        esc(&found.claim.code),
    );
    wallet_block(out, found);
    match found.claim.claimed_at {
        Some(at) => {
            let _ = writeln!(
                out,
                "<p id=\"status\" class=\"status\" data-status=\"claimed\">Claimed on {}. \
                 It is managed by its platform now.</p>",
                esc(&rfc3339(at))
            );
        }
        None => {
            let _ = writeln!(
                out,
                "<p id=\"status\" class=\"status\" data-status=\"unclaimed\">Not claimed yet. \
                 The code works until {}.</p>",
                esc(&rfc3339(found.claim.expires_at))
            );
        }
    }
    out.push_str("</section>\n");
}

/// The agent page; while unclaimed, with the claim form (the email as entered, never
/// the master key).
pub fn agent(found: &Found, email: Option<&str>, error: Option<&ApiError>) -> HttpResponse {
    let mut body = String::new();
    error_block(&mut body, error);
    agent_block(&mut body, found);
    if !found.is_claimed() {
        let lock = if found.email_locked() {
            "<p class=\"hint\" id=\"email-locked\">This agent was registered with an email \
             address: only that address can claim it.</p>\n"
        } else {
            ""
        };
        let _ = write!(
            body,
            "<form id=\"claim-form\" method=\"post\" action=\"/device\">\n\
             <input type=\"hidden\" name=\"code\" value=\"{}\">\n\
             <label for=\"email\">Your email address</label>\n\
             <input id=\"email\" name=\"email\" type=\"email\" value=\"{}\" required \
             autocomplete=\"email\" maxlength=\"254\">\n{lock}\
             <label for=\"master_key\">Master key (optional)</label>\n\
             <input id=\"master_key\" name=\"master_key\" type=\"password\" autocomplete=\"off\" \
             spellcheck=\"false\">\n\
             <p class=\"hint\">Only if your email already has an aibank platform: enter one of \
             its master keys (<code>mk_…</code>) to add this agent to it. Leave it empty the \
             first time: a new platform and its master key are created for you.</p>\n\
             <button id=\"claim-button\" type=\"submit\">Claim this agent</button>\n</form>\n",
            esc(&found.claim.code),
            esc(email.unwrap_or_default()),
        );
    }
    with_error_headers(respond(status_of(error), &found.agent.name, &body), error)
}

/// The outcome of a successful claim; the only page that ever shows the master key.
pub fn claimed(found: &Found, claimed: &Claimed) -> HttpResponse {
    let mut body = String::new();
    let _ = writeln!(
        body,
        "<section id=\"agent\" data-agent-id=\"{}\">\n<h2 id=\"agent-name\">{}</h2>",
        esc(&found.agent.id),
        esc(&found.agent.name),
    );
    wallet_block(&mut body, found);
    let _ = writeln!(
        body,
        "<p id=\"status\" class=\"status\" data-status=\"claimed\" data-platform-id=\"{}\">\
         Claimed on {}.</p>\n</section>",
        esc(&claimed.platform_id),
        esc(&claimed.claimed_at),
    );
    match &claimed.master_key {
        Some(key) => {
            let _ = writeln!(
                body,
                "<section id=\"new-platform\" class=\"secret\">\n\
                 <p>A new aibank platform (<code>{}</code>) was created for your email \
                 address, and this agent is its first. This is its master key:</p>\n\
                 <code id=\"master-key\" class=\"key\">{}</code>\n\
                 <p><strong>Copy it now, it will not be shown again.</strong> Use it in the \
                 <code>X-Master-Key</code> header to manage your agents, and enter it here \
                 when you claim your next agent.</p>\n</section>",
                esc(&claimed.platform_id),
                esc(key),
            );
        }
        None => {
            let _ = writeln!(
                body,
                "<p id=\"joined\">The agent joined your existing platform <code>{}</code>. \
                 Manage it with that platform's master keys.</p>",
                esc(&claimed.platform_id),
            );
        }
    }
    respond(StatusCode::OK, &found.agent.name, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }
}
