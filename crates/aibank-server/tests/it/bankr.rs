//! Bankr, built in: agents' own Bankr keys, key resolution (own, then platform, else 503
//! `needsKey`), the `/v1/trading/bankr/*` routes over the mock Agent API, Bankr's failures
//! and its 429 mapped into our envelope, per-route prices, and the trading capability and
//! read-only keys.

use crate::support::mock_bankr::{MockBankr, RESET_AT_MS};
use crate::support::use_mock_bankr;
use crate::support::Agent;
use crate::support::{assert_books_balance, spawn_app_with, TestApp};
use aibank_core::Usd;
use aibank_gateway::bankr::BankrPrices;
use serde_json::json;

const PLATFORM: &str = "bk_platform";
const OWN: &str = "bk_own";

async fn setup(platform: Option<&'static str>, prices: BankrPrices) -> (TestApp, MockBankr) {
    let mock = MockBankr::start(&[PLATFORM, OWN]).await;
    let base = mock.base.clone();
    let app = spawn_app_with(move |c| use_mock_bankr(c, &base, platform, prices)).await;
    (app, mock)
}

async fn credits(app: &TestApp, key: &str) -> i64 {
    let r = app.get("/v1/balance", &[("X-API-Key", key)]).await;
    let v: Usd = serde_json::from_value(r.body["credits_usd"].clone()).unwrap();
    v.micros()
}

async fn store_own(app: &TestApp, key: &str, own: &str) -> crate::support::Resp {
    app.post(
        "/v1/provider-keys/bankr",
        json!({ "apiKey": own }),
        &[("X-API-Key", key)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_own_key_is_stored_sealed_checked_and_never_returned() {
    let (app, _mock) = setup(None, BankrPrices::default()).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let h = [("X-API-Key", key.as_str())];
    let r = app.get("/v1/provider-keys/bankr", &h).await;
    assert_eq!(
        r.body,
        json!({"provider": "bankr", "configured": false}),
        "{}",
        r.text
    );

    for bad in [String::new(), "   ".into(), "k".repeat(513)] {
        let r = store_own(&app, &key, &bad).await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (400, Some("INVALID_INPUT")),
            "{}",
            r.text
        );
    }
    let r = app.post("/v1/provider-keys/bankr", json!({}), &h).await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = store_own(&app, &key, &"k".repeat(512)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = store_own(&app, &key, OWN).await;
    assert_eq!(r.body, json!({"provider": "bankr", "configured": true}));
    assert!(!r.text.contains(OWN));
    let r = app.get("/v1/provider-keys/bankr", &h).await;
    assert_eq!(r.body["configured"], true);
    assert!(!r.text.contains(OWN));

    // Sealed at rest: the stored value is not the key.
    let pool = app.pool.clone();
    let stored = tokio::task::spawn_blocking(move || {
        let mut c = pool.get().unwrap();
        aibank_store::repo::provider_keys::find(&mut c, &agent, "bankr").unwrap()
    })
    .await
    .unwrap()
    .expect("a stored key");
    assert!(!stored.contains(OWN));
    let r = app.delete("/v1/provider-keys/bankr", &h).await;
    assert_eq!(r.body, json!({"provider": "bankr", "configured": false}));
    let r = app.get("/v1/provider-keys/bankr", &h).await;
    assert_eq!(r.body["configured"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_key_wins_then_the_platform_key_else_503_needs_key() {
    let (app, mock) = setup(Some(PLATFORM), BankrPrices::default()).await;
    let Agent { key, .. } = app.agent().await;
    let h = [("X-API-Key", key.as_str())];

    let r = app.get("/v1/trading/bankr/balances", &h).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["balances"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["base", "polygon", "mainnet", "solana", "unichain"]
    );
    store_own(&app, &key, OWN).await;
    let r = app
        .get("/v1/trading/bankr/balances?chains=base,solana", &h)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"success": true, "balances": {
        "base": {"nativeBalance": "0.05", "nativeUsd": "150.00", "tokenBalances": []},
        "solana": {"nativeBalance": "0.05", "nativeUsd": "150.00", "tokenBalances": []}}})
    );
    app.delete("/v1/provider-keys/bankr", &h).await;
    app.get("/v1/trading/bankr/balances?chains=base", &h).await;
    assert_eq!(
        mock.seen(),
        vec![
            (
                "GET /agent/balances?chains=base,polygon,mainnet,solana,unichain".to_owned(),
                Some(PLATFORM.to_owned())
            ),
            (
                "GET /agent/balances?chains=base,solana".to_owned(),
                Some(OWN.to_owned())
            ),
            (
                "GET /agent/balances?chains=base".to_owned(),
                Some(PLATFORM.to_owned())
            ),
        ]
    );
    let r = app
        .get("/v1/trading/bankr/balances?chains=base;rm", &h)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);

    // Without a platform key, only an agent's own key serves.
    let (app, mock) = setup(None, BankrPrices::default()).await;
    let Agent { key, .. } = app.agent().await;
    let h = [("X-API-Key", key.as_str())];
    for (method, path) in [
        ("GET", "/v1/trading/bankr/balances"),
        ("GET", "/v1/trading/bankr/jobs/job_1"),
        ("POST", "/v1/trading/bankr/jobs/job_1/cancel"),
    ] {
        let r = app.send(method, path, None, &h).await;
        assert_eq!(
            (r.status, &r.body),
            (
                503,
                &json!({"error": "No Bankr API key configured", "code": "UNAVAILABLE",
                        "needsKey": true})
            ),
            "{method} {path}"
        );
    }
    let r = app
        .post("/v1/trading/bankr/prompt", json!({"prompt": "hi"}), &h)
        .await;
    assert_eq!((r.status, r.body["needsKey"].clone()), (503, json!(true)));
    assert!(mock.seen().is_empty());
    store_own(&app, &key, OWN).await;
    let r = app.get("/v1/trading/bankr/balances", &h).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(mock.seen()[0].1.as_deref(), Some(OWN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_then_job_status_then_cancel() {
    let prices = BankrPrices {
        prompt: Usd::from_micros(50_000),
        job: Usd::from_micros(1_000),
        cancel: Usd::from_micros(2_000),
        balances: Usd::ZERO,
    };
    let (app, mock) = setup(Some(PLATFORM), prices).await;
    let Agent { key, .. } = app.agent().await;
    let h = [("X-API-Key", key.as_str())];
    let before = credits(&app, &key).await;

    let r = app
        .post(
            "/v1/trading/bankr/prompt",
            json!({"prompt": "Buy $10 of ETH on Base", "threadId": "thr_7"}),
            &h,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"success": true, "jobId": "job_1", "threadId": "thr_7", "status": "pending",
               "message": "Job created successfully"})
    );
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.05");

    let r = app.get("/v1/trading/bankr/jobs/job_1", &h).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["status"].as_str(), r.body["cancellable"].as_bool()),
        (Some("pending"), Some(true))
    );
    let r = app.get("/v1/trading/bankr/job?jobId=job_1", &h).await;
    assert_eq!(r.body["status"], "processing", "{}", r.text);
    assert_eq!(r.body["statusUpdates"][0]["message"], "Working");
    let r = app
        .post("/v1/trading/bankr/jobs/job_1/cancel", json!({}), &h)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "cancelled");
    assert!(r.body["cancelledAt"].is_string());
    let spent = 50_000 + 2 * 1_000 + 2_000;
    assert_eq!(credits(&app, &key).await, before - spent);

    // Bankr's refusals: 502 with its status and body, and nothing charged.
    let r = app
        .post("/v1/trading/bankr/jobs/job_1/cancel", json!({}), &h)
        .await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(r.body["code"], "UPSTREAM_ERROR");
    assert_eq!(r.body["status"], 400);
    assert_eq!(r.body["upstream"]["error"], "Job cannot be cancelled");
    // A job Bankr does not know is the caller's 404, with Bankr's answer beside it.
    let r = app.get("/v1/trading/bankr/jobs/job_404", &h).await;
    assert_eq!(
        (r.status, r.body["code"].clone(), r.body["status"].clone()),
        (404, json!("NOT_FOUND"), json!(404)),
        "{}",
        r.text
    );
    assert_eq!(r.body["upstream"]["error"], "Job not found");
    let r = app
        .post("/v1/trading/bankr/prompt", json!({"prompt": "fail"}), &h)
        .await;
    assert_eq!(
        (r.status, r.body["status"].clone()),
        (502, json!(500)),
        "{}",
        r.text
    );
    assert_eq!(credits(&app, &key).await, before - spent);

    // Checked before Bankr sees anything.
    let seen = mock.seen().len();
    for (body, field) in [
        (json!({"prompt": ""}), "prompt"),
        (json!({"prompt": "x".repeat(10_001)}), "prompt"),
        (json!({"threadId": "t"}), ""),
    ] {
        let r = app.post("/v1/trading/bankr/prompt", body, &h).await;
        assert_eq!(r.status, 400, "{field}: {}", r.text);
    }
    let r = app.get("/v1/trading/bankr/job", &h).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("INVALID_INPUT")),
        "{}",
        r.text
    );
    let r = app.get("/v1/trading/bankr/job?jobId=a/b", &h).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(mock.seen().len(), seen);
    let r = app
        .post(
            "/v1/trading/bankr/prompt",
            json!({"prompt": "x".repeat(10_000)}),
            &h,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);

    // On the agent's own key the routes are free.
    store_own(&app, &key, OWN).await;
    let now = credits(&app, &key).await;
    let r = app
        .post("/v1/trading/bankr/prompt", json!({"prompt": "hello"}), &h)
        .await;
    assert_eq!(
        (r.status, r.headers["x-aibank-cost-usd"].to_str().unwrap()),
        (202, "0.0")
    );
    assert_eq!(credits(&app, &key).await, now);
    assert_eq!(mock.seen().last().unwrap().1.as_deref(), Some(OWN));

    let r = app.get("/v1/usage", &h).await;
    let models: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["model"].as_str().unwrap())
        .collect();
    assert!(models.contains(&"POST /agent/prompt") && models.contains(&"GET /agent/job/{jobId}"));
    assert!(assert_books_balance(&app.pool) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bankrs_429_comes_back_as_rate_limited_with_its_fields() {
    let prices = BankrPrices {
        prompt: Usd::from_micros(50_000),
        ..BankrPrices::default()
    };
    let (app, _mock) = setup(Some(PLATFORM), prices).await;
    let Agent { key, .. } = app.agent().await;
    let before = credits(&app, &key).await;
    let r = app
        .post(
            "/v1/trading/bankr/prompt",
            json!({"prompt": "rate-limit"}),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.body["code"], "RATE_LIMITED");
    assert_eq!(r.body["resetAt"], RESET_AT_MS);
    assert_eq!(
        (r.body["limit"].clone(), r.body["used"].clone()),
        (json!(100), json!(100))
    );
    assert!(r.body["error"]
        .as_str()
        .unwrap()
        .contains("daily API limit"));
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(
        credits(&app, &key).await,
        before,
        "a refused call costs nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_keys_read_balances_and_jobs_but_neither_prompt_nor_cancel() {
    let (app, mock) = setup(Some(PLATFORM), BankrPrices::default()).await;
    let Agent { key: owner, .. } = app.agent().await;
    let h = [("X-API-Key", owner.as_str())];
    let r = app
        .post("/v1/trading/bankr/prompt", json!({"prompt": "hi"}), &h)
        .await;
    assert_eq!(r.status, 202, "{}", r.text);

    let r = app.post("/v1/keys/create", json!({"name": "ro"}), &h).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (ro_id, ro) = (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["apiKey"].as_str().unwrap().to_owned(),
    );
    let r = app
        .patch(&format!("/v1/keys/{ro_id}"), json!({"readOnly": true}), &h)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let ro_h = [("X-API-Key", ro.as_str())];
    assert_eq!(
        app.get("/v1/trading/bankr/balances", &ro_h).await.status,
        200
    );
    assert_eq!(
        app.get("/v1/trading/bankr/jobs/job_1", &ro_h).await.status,
        200
    );
    let seen = mock.seen().len();
    let r = app
        .post("/v1/trading/bankr/prompt", json!({"prompt": "hi"}), &ro_h)
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "{}",
        r.text
    );
    let r = app
        .post("/v1/trading/bankr/jobs/job_1/cancel", json!({}), &ro_h)
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(mock.seen().len(), seen);

    // Without tradingEnabled nothing is served.
    let r = app
        .patch(
            &format!("/v1/keys/{ro_id}"),
            json!({"tradingEnabled": false}),
            &h,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app.get("/v1/trading/bankr/balances", &ro_h).await;
    assert_eq!(
        (r.status, r.body["flag"].as_str()),
        (403, Some("tradingEnabled")),
        "{}",
        r.text
    );
    let r = app.get("/v1/trading/bankr/balances", &[]).await;
    assert_eq!(r.status, 401);

    // Bankr is reached only through these routes, not the gateway's.
    let r = app.get("/v1/gateway/bankr/agent/balances", &h).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = app
        .post(
            "/v1/gateway/bankr/agent/prompt",
            json!({"prompt": "hi"}),
            &h,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(mock.seen().len(), seen);
}
