//! The official Anthropic, OpenAI and Google Gen AI Python SDKs work against the gateway
//! unchanged. Needs `pip install anthropic openai google-genai` (CI installs pinned versions and sets
//! `AIBANK_TEST_SDKS=1`, which makes the SDKs required); skipped, loudly, without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use crate::support::mock_upstream::MockUpstream;
use crate::support::spawn_app_with;
use crate::support::Agent;
use aibank_gateway::Registry;

fn sdks_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import anthropic, openai, google.genai"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_work_unchanged() {
    let required = std::env::var("AIBANK_TEST_SDKS").is_ok_and(|v| v == "1");
    if !sdks_available() {
        assert!(
            !required,
            "AIBANK_TEST_SDKS=1 but the anthropic/openai/google-genai Python SDKs are not installed"
        );
        eprintln!("SKIPPED: pip install anthropic openai google-genai to run the SDK drop-in test");
        return;
    }
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let app = spawn_app_with(move |c| {
        c.providers = Registry::build(
            (base.clone(), Some("sk-up".to_owned().into())),
            (base.clone(), Some("sk-up".to_owned().into())),
            (base.clone(), Some("sk-up".to_owned().into())),
            Vec::new(),
            BTreeMap::new(),
            std::collections::BTreeMap::new(),
            |_| None,
        )
        .unwrap();
    })
    .await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk_dropin.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .env("AIBANK_GATEWAY", &app.base)
        .env("AIBANK_KEY", &key)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("sdk drop-in ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Messages: 3 × (11 × $3 + 7 × $15)/M = 3 × 138 µ$, plus 2 web searches × $10/1,000;
    // chat completions and responses: 4 × (11 × $0.15 + 7 × $0.6)/M, each rounded up to
    // 6 µ$; one embedding: 11 × $0.02/M, rounded up to 1 µ$; Gemini 2.5 Flash: 2 × (11 ×
    // $0.30 + 7 × $2.50)/M, each rounded up to 21 µ$. 20,481 µ$ in all.
    let mut settled = false;
    for _ in 0..100 {
        if app.ledger_state(&agent).await == (9_979_519, 9_979_519) {
            settled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(settled, "{:?}", app.ledger_state(&agent).await);
}
