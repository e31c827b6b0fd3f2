//! The route table. Routes are registered only from here, so the table is exactly what the
//! server serves; a test checks it against `openapi/openapi.yaml` both ways.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, Route};

use crate::handlers::{
    account, agents, audit, catalog, dashboard, device, keys, master_keys, meta, payments,
    platform, platform_agents, services, trading, wallets,
};
use aibank_core::ApiError;

pub struct RouteDef {
    pub method: Method,
    /// As the OpenAPI document writes it.
    pub path: &'static str,
    /// As actix matches it (differs only for the gateway's catch-all tail).
    pattern: &'static str,
    make: fn() -> Route,
}

fn def(method: Method, path: &'static str, make: fn() -> Route) -> RouteDef {
    RouteDef {
        method,
        path,
        pattern: path,
        make,
    }
}

const CATALOG_PROXY_SPEC: &str = "/v1/proxy/{service_id}/{path}";
const CATALOG_PROXY_PATTERN: &str = "/v1/proxy/{service_id}/{tail:.*}";

fn catalog_proxy(method: Method, make: fn() -> Route) -> RouteDef {
    RouteDef {
        method,
        path: CATALOG_PROXY_SPEC,
        pattern: CATALOG_PROXY_PATTERN,
        make,
    }
}

const GATEWAY_SPEC: &str = "/v1/gateway/{provider}/{path}";
const GATEWAY_PATTERN: &str = "/v1/gateway/{provider}/{tail:.*}";

fn gateway(method: Method, make: fn() -> Route) -> RouteDef {
    RouteDef {
        method,
        path: GATEWAY_SPEC,
        pattern: GATEWAY_PATTERN,
        make,
    }
}

// One flat entry per route reads best as a table.
#[allow(clippy::too_many_lines)]
pub fn table() -> Vec<RouteDef> {
    vec![
        def(Method::GET, "/v1/health", || web::get().to(meta::health)),
        def(Method::GET, "/metrics", || {
            web::get().to(crate::metrics::scrape)
        }),
        def(Method::GET, "/v1/providers", || {
            web::get().to(meta::providers)
        }),
        def(Method::GET, "/openapi.json", || {
            web::get().to(meta::openapi)
        }),
        def(Method::POST, "/v1/agents/register", || {
            web::post().to(agents::register)
        }),
        def(Method::GET, "/v1/agents/me", || web::get().to(account::me)),
        // Before `/v1/device/{code}`, so `claim` is never read as a code.
        def(Method::POST, "/v1/device/claim", || {
            web::post().to(device::claim)
        }),
        def(Method::GET, "/v1/device/{code}", || {
            web::get().to(device::status)
        }),
        def(Method::GET, "/device", || web::get().to(device::page)),
        def(Method::POST, "/device", || web::post().to(device::submit)),
        def(Method::GET, "/dashboard", || {
            web::get().to(dashboard::fleet)
        }),
        def(Method::GET, "/dashboard/sign-in", || {
            web::get().to(dashboard::sign_in_page)
        }),
        def(Method::POST, "/dashboard/sign-in", || {
            web::post().to(dashboard::sign_in)
        }),
        def(Method::POST, "/dashboard/sign-out", || {
            web::post().to(dashboard::sign_out)
        }),
        def(Method::GET, "/dashboard/agents/{id}", || {
            web::get().to(dashboard::agent)
        }),
        def(Method::POST, "/dashboard/agents/{id}/credits", || {
            web::post().to(dashboard::grant)
        }),
        def(Method::POST, "/dashboard/agents/{id}/limits", || {
            web::post().to(dashboard::limits)
        }),
        def(Method::POST, "/dashboard/agents/{id}/pause", || {
            web::post().to(dashboard::pause)
        }),
        def(Method::POST, "/dashboard/agents/{id}/resume", || {
            web::post().to(dashboard::resume)
        }),
        def(Method::POST, "/dashboard/agents/{id}/rotate-key", || {
            web::post().to(dashboard::rotate_key)
        }),
        def(Method::POST, "/v1/keys", || {
            web::post().to(agents::create_gateway_key)
        }),
        def(Method::GET, "/v1/keys", || web::get().to(keys::list)),
        def(Method::POST, "/v1/keys/create", || {
            web::post().to(keys::create)
        }),
        def(Method::POST, "/v1/keys/rsa", || {
            web::post().to(keys::register_rsa)
        }),
        def(Method::POST, "/v1/keys/rsa/generate", || {
            web::post().to(keys::generate_rsa)
        }),
        def(Method::PATCH, "/v1/keys/{id}", || {
            web::patch().to(keys::update)
        }),
        def(Method::DELETE, "/v1/keys/{id}", || {
            web::delete().to(keys::delete)
        }),
        def(Method::GET, "/v1/balance", || {
            web::get().to(account::balance)
        }),
        def(Method::GET, "/v1/usage", || web::get().to(account::usage)),
        def(Method::POST, "/v1/platform/agents", || {
            web::post().to(platform_agents::create)
        }),
        def(Method::GET, "/v1/platform/agents", || {
            web::get().to(platform_agents::list)
        }),
        def(Method::GET, "/v1/platform/agents/{id}", || {
            web::get().to(platform_agents::get)
        }),
        def(Method::PATCH, "/v1/platform/agents/{id}", || {
            web::patch().to(platform_agents::update)
        }),
        def(Method::POST, "/v1/platform/agents/{id}/credits", || {
            web::post().to(platform_agents::grant_credits)
        }),
        def(Method::POST, "/v1/platform/agents/{id}/rotate-key", || {
            web::post().to(platform_agents::rotate_key)
        }),
        def(Method::POST, "/v1/platform/agents/{id}/charges", || {
            web::post().to(platform_agents::charge)
        }),
        def(Method::GET, "/v1/platform/agents/{id}/usage", || {
            web::get().to(platform_agents::usage)
        }),
        def(Method::GET, "/v1/platform/agents/{id}/keys", || {
            web::get().to(platform_agents::keys)
        }),
        def(Method::POST, "/v1/platform/agents/{id}/pause", || {
            web::post().to(platform_agents::pause)
        }),
        def(Method::POST, "/v1/platform/agents/{id}/resume", || {
            web::post().to(platform_agents::resume)
        }),
        def(Method::GET, "/v1/platform/audit", || {
            web::get().to(audit::list)
        }),
        def(Method::GET, "/v1/platform", || web::get().to(platform::get)),
        def(Method::PATCH, "/v1/platform", || {
            web::patch().to(platform::update)
        }),
        def(Method::POST, "/v1/platform/master-keys", || {
            web::post().to(master_keys::create)
        }),
        def(Method::GET, "/v1/platform/master-keys", || {
            web::get().to(master_keys::list)
        }),
        gateway(Method::GET, || web::get().to(aibank_gateway::proxy::proxy)),
        gateway(Method::POST, || {
            web::post().to(aibank_gateway::proxy::proxy)
        }),
        // Only http providers list endpoints with these methods.
        gateway(Method::PUT, || web::put().to(aibank_gateway::proxy::proxy)),
        gateway(Method::PATCH, || {
            web::patch().to(aibank_gateway::proxy::proxy)
        }),
        gateway(Method::DELETE, || {
            web::delete().to(aibank_gateway::proxy::proxy)
        }),
        def(Method::GET, "/v1/trading/bankr/balances", || {
            web::get().to(aibank_gateway::bankr::balances)
        }),
        def(Method::POST, "/v1/trading/bankr/prompt", || {
            web::post().to(aibank_gateway::bankr::prompt)
        }),
        def(Method::GET, "/v1/trading/bankr/jobs/{jobId}", || {
            web::get().to(aibank_gateway::bankr::job)
        }),
        def(Method::GET, "/v1/trading/bankr/job", || {
            web::get().to(aibank_gateway::bankr::job_by_query)
        }),
        def(
            Method::POST,
            "/v1/trading/bankr/jobs/{jobId}/cancel",
            || web::post().to(aibank_gateway::bankr::cancel),
        ),
        def(Method::POST, "/v1/credits/topup", || {
            web::post().to(payments::topup)
        }),
        def(Method::GET, "/v1/payments/{hash}", || {
            web::get().to(payments::get)
        }),
        def(Method::GET, "/v1/provider-keys/{provider}", || {
            web::get().to(aibank_gateway::byok::get)
        }),
        def(Method::POST, "/v1/provider-keys/{provider}", || {
            web::post().to(aibank_gateway::byok::put)
        }),
        def(Method::DELETE, "/v1/provider-keys/{provider}", || {
            web::delete().to(aibank_gateway::byok::delete)
        }),
        def(Method::DELETE, "/v1/platform/master-keys/{id}", || {
            web::delete().to(master_keys::revoke)
        }),
        def(Method::GET, "/v1/wallets", || web::get().to(wallets::list)),
        def(Method::GET, "/v1/wallets/{id}", || {
            web::get().to(wallets::get)
        }),
        def(Method::GET, "/v1/wallets/{id}/balances", || {
            web::get().to(wallets::balances)
        }),
        def(Method::GET, "/v1/wallets/{id}/transactions", || {
            web::get().to(wallets::transactions)
        }),
        def(Method::POST, "/v1/wallets/{id}/transfer", || {
            web::post().to(wallets::transfer)
        }),
        def(Method::GET, "/v1/wallets/{id}/allowlist", || {
            web::get().to(wallets::allowlist)
        }),
        def(Method::POST, "/v1/wallets/{id}/allowlist", || {
            web::post().to(wallets::allow)
        }),
        def(
            Method::DELETE,
            "/v1/wallets/{id}/allowlist/{address}",
            || web::delete().to(wallets::disallow),
        ),
        def(Method::POST, "/v1/trading/hyperliquid", || {
            web::post().to(trading::hyperliquid)
        }),
        def(Method::POST, "/v1/services", || {
            web::post().to(services::create)
        }),
        def(Method::GET, "/v1/services/{id}", || {
            web::get().to(services::get)
        }),
        def(Method::PUT, "/v1/services/{id}", || {
            web::put().to(services::update)
        }),
        def(Method::DELETE, "/v1/services/{id}", || {
            web::delete().to(services::delete)
        }),
        def(Method::GET, "/v1/catalog", || web::get().to(catalog::list)),
        def(Method::GET, "/v1/catalog/{id}", || {
            web::get().to(catalog::get)
        }),
        def(Method::POST, "/v1/catalog/{id}/subscribe", || {
            web::post().to(catalog::subscribe)
        }),
        def(Method::DELETE, "/v1/catalog/{id}/subscribe", || {
            web::delete().to(catalog::unsubscribe)
        }),
        catalog_proxy(Method::GET, || {
            web::get().to(aibank_gateway::catalog::proxy)
        }),
        catalog_proxy(Method::POST, || {
            web::post().to(aibank_gateway::catalog::proxy)
        }),
        catalog_proxy(Method::PUT, || {
            web::put().to(aibank_gateway::catalog::proxy)
        }),
        catalog_proxy(Method::PATCH, || {
            web::patch().to(aibank_gateway::catalog::proxy)
        }),
        catalog_proxy(Method::DELETE, || {
            web::delete().to(aibank_gateway::catalog::proxy)
        }),
    ]
}

/// Registers every route, one resource per path so a wrong method gets a clear answer.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let table = table();
    let mut paths: Vec<&'static str> = Vec::new();
    for d in &table {
        if !paths.contains(&d.pattern) {
            paths.push(d.pattern);
        }
    }
    for path in paths {
        let mut resource = web::resource(path);
        let mut allowed = Vec::new();
        for d in table.iter().filter(|d| d.pattern == path) {
            resource = resource.route((d.make)());
            allowed.push(d.method.as_str());
        }
        let allowed = allowed.join(", ");
        resource = resource.default_service(web::to(move |req: HttpRequest| {
            let allowed = allowed.clone();
            async move { Err::<actix_web::HttpResponse, _>(method_not_allowed(&req, &allowed)) }
        }));
        cfg.service(resource);
    }
}

fn method_not_allowed(req: &HttpRequest, allowed: &str) -> ApiError {
    ApiError::method_not_allowed(
        format!(
            "{} is not supported on {}; allowed: {allowed}",
            req.method(),
            req.path()
        ),
        allowed,
    )
}

/// Any path outside the table.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "No route for {} {}",
        req.method(),
        req.path()
    )))
}
