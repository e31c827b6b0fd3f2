//! Header policy, both ways: what of a caller's request goes upstream (never a credential,
//! hop-by-hop header or encoding; the upstream's credential is the dialect's to add), and
//! what of the upstream's answer comes back.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use aibank_core::ApiError;
use bytes::Bytes;

use crate::deployments::Deployment;
use crate::providers::Provider;
use crate::proxy::Gateway;

/// Request headers never forwarded: credentials of ours or the client's, hop-by-hop
/// headers, and encodings (the gateway reads the response to meter it).
pub(crate) fn forwardable(name: &str) -> bool {
    !matches!(
        name,
        "host"
            | "content-length"
            | "x-api-key"
            | "x-master-key"
            | "authorization"
            | "x-goog-api-key"
            | "cookie"
            | "connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "accept-encoding"
            | "x-forwarded-for"
            | "x-real-ip"
            | "forwarded"
    ) && !name.starts_with("x-payment")
        && !name.starts_with("payment-")
        && !name.starts_with("x-aibank-")
}

/// Response headers not passed back: hop-by-hop ones, cookies, and ours (the gateway
/// sets its own `x-aibank-*` and request id).
pub(crate) fn returnable(name: &str) -> bool {
    !matches!(
        name,
        "content-length"
            | "content-encoding"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "set-cookie"
            | "x-request-id"
    ) && !name.starts_with("x-aibank-")
}

/// Headers that choose or name the account behind an upstream key: a caller may send them
/// with its own key, never with the platform's, and the platform's are not shown to callers.
fn names_the_key_owner(name: &str) -> bool {
    matches!(
        name,
        "openai-organization" | "openai-project" | "anthropic-organization-id"
    )
}

/// The header names the `Connection` header values list: hop-by-hop for this message only.
pub(crate) fn connection_listed<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Whether a `Content-Type` value is of `media` (compared without regard to case).
pub(crate) fn is_media(content_type: &str, media: &str) -> bool {
    content_type
        .get(..media.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(media))
}

/// The query string to send upstream: the caller's, less the parameters the dialect does not
/// forward (compared by their decoded names; the rest is passed on as written).
fn upstream_query(provider: &Provider, query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let decoded = reqwest::Url::parse(&format!("q:?{name}"))
                .ok()
                .and_then(|u| u.query_pairs().next().map(|(n, _)| n.into_owned()))
                .unwrap_or_default();
            !pair.is_empty() && provider.dialect.forwards_query_param(&decoded)
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The upstream request: same method, path, query and safe headers, the upstream's
/// credential instead of ours.
// Each part of the request is its own input; a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn upstream_request(
    gw: &Gateway,
    req: &HttpRequest,
    provider: &Provider,
    deployment: &Deployment,
    tail: &str,
    key: &str,
    own_key: bool,
    body: Bytes,
) -> Result<reqwest::RequestBuilder, ApiError> {
    let query = upstream_query(provider, req.query_string());
    let url = if query.is_empty() {
        format!("{}/{tail}", deployment.base_url)
    } else {
        format!("{}/{tail}?{query}", deployment.base_url)
    };
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(ApiError::internal)?;
    let mut out = gw.client().request(method, &url);
    let listed = connection_listed(
        req.headers()
            .get_all("connection")
            .map(actix_web::http::header::HeaderValue::as_bytes),
    );
    let mut incoming = reqwest::header::HeaderMap::new();
    for (name, value) in req.headers() {
        let name = name.as_str();
        if provider.dialect.sets_header(name) {
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
            ) {
                incoming.append(n, v);
            }
        } else if forwardable(name)
            && !listed.iter().any(|n| n == name)
            && (own_key || !names_the_key_owner(name))
        {
            out = out.header(name, value.as_bytes());
        }
    }
    out = provider.dialect.authenticate(out, key, &incoming);
    if !body.is_empty() {
        out = out.body(body);
    }
    Ok(out)
}

/// Our response head: the upstream's status and headers, less hop-by-hop ones (and,
/// on the platform's key, those naming its account).
pub(crate) fn response_head(
    upstream: &reqwest::Response,
    own_key: bool,
) -> actix_web::HttpResponseBuilder {
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut res = HttpResponse::build(status);
    let listed = connection_listed(
        upstream
            .headers()
            .get_all("connection")
            .iter()
            .map(reqwest::header::HeaderValue::as_bytes),
    );
    for (name, value) in upstream.headers() {
        let name = name.as_str();
        if returnable(name)
            && !listed.iter().any(|n| n == name)
            && (own_key || !names_the_key_owner(name))
        {
            res.append_header((name, value.as_bytes()));
        }
    }
    if let Some(v) = upstream.headers().get("x-request-id") {
        res.insert_header(("x-upstream-request-id", v.as_bytes()));
    }
    res
}
