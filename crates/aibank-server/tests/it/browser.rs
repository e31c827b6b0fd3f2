//! A real browser claims an agent on the `/device` page (the harness, and when the test
//! runs: `support::browser`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use crate::support::browser::{should_run, text_of, text_once_shown, Driver};
use crate::support::spawn_app;
use fantoccini::{Client, Locator};
use serde_json::json;

async fn status_of(c: &Client) -> String {
    c.find(Locator::Id("status"))
        .await
        .unwrap()
        .attr("data-status")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Presses the claim form's button.
async fn submit_claim(c: &Client) {
    c.find(Locator::Id("claim-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_claims_an_agent_in_a_real_browser() {
    if !should_run() {
        return;
    }
    let app = spawn_app().await;
    let r = app
        .post("/v1/agents/register", json!({"name": "browser-bot"}), &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let reg = r.body;
    let uri = reg["verificationUri"].as_str().unwrap().to_owned();
    let agent_id = reg["agentId"].as_str().unwrap().to_owned();

    let mut driver = Driver::start();
    driver.ready().await;
    let c = driver.session().await;

    // The page the agent handed over: its name, its addresses, unclaimed, a form.
    c.goto(&uri).await.unwrap();
    assert_eq!(text_of(&c, "agent-name").await, "browser-bot");
    for chain in ["ethereum", "base", "solana"] {
        assert_eq!(
            text_of(&c, &format!("address-{chain}")).await,
            reg["wallet"]["addresses"][chain].as_str().unwrap(),
            "{chain}"
        );
    }
    assert_eq!(status_of(&c).await, "unclaimed");
    let main_window = c.window().await.unwrap();

    // A second tab opens the same page before the claim.
    let second = c.new_window(true).await.unwrap().handle;
    c.switch_to_window(second.clone()).await.unwrap();
    c.goto(&uri).await.unwrap();
    c.find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys("latecomer@example.com")
        .await
        .unwrap();

    // The first tab claims it: the new platform's master key, once.
    c.switch_to_window(main_window).await.unwrap();
    c.find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys("human@example.com")
        .await
        .unwrap();
    submit_claim(&c).await;
    let key = text_once_shown(&c, "master-key").await;
    assert!(key.starts_with("mk_"), "{key}");
    assert_eq!(status_of(&c).await, "claimed");
    assert!(c
        .source()
        .await
        .unwrap()
        .contains("Copy it now, it will not be shown again."));
    let fleet = app
        .get("/v1/platform/agents", &[("X-Master-Key", &key)])
        .await;
    assert_eq!(fleet.status, 200, "{}", fleet.text);
    assert_eq!(fleet.body["data"][0]["agentId"], agent_id);

    // Opening the page again shows the claim, never the key, and no form.
    c.goto(&uri).await.unwrap();
    assert_eq!(status_of(&c).await, "claimed");
    assert!(c.find(Locator::Id("master-key")).await.is_err());
    assert!(c.find(Locator::Id("claim-form")).await.is_err());
    assert!(!c.source().await.unwrap().contains(&key));

    // The second tab's claim is refused.
    c.switch_to_window(second).await.unwrap();
    submit_claim(&c).await;
    let refusal = text_once_shown(&c, "error").await;
    assert_eq!(refusal, "This agent has already been claimed");
    assert_eq!(status_of(&c).await, "claimed");
    assert!(c.find(Locator::Id("master-key")).await.is_err());
    assert!(!c.source().await.unwrap().contains(&key));

    c.close().await.unwrap();
}
