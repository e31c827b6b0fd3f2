//! A real browser claims an agent on the `/device` page: Debian's Chromium, headless, driven
//! through chromedriver (WebDriver) against the real server.
//!
//! With `AIBANK_TEST_BROWSER=1` (as in CI) the test must run, and fails when Chromium or
//! chromedriver is missing. Otherwise it is skipped, with a note, where
//! `/usr/bin/chromedriver` is absent (`apt-get install chromium chromium-driver`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::spawn_app;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tempfile::TempDir;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const REQUIRE_ENV: &str = "AIBANK_TEST_BROWSER";
const WAIT: Duration = Duration::from_secs(30);

/// chromedriver in its own process group, with the Chromium it starts; dropping it kills
/// the whole group, so nothing outlives the test, failed or not.
struct Driver {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Driver {
    fn start() -> Driver {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                dir.path().join("chromedriver.log").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        Driver { child, port, dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits until chromedriver answers `/status` as ready.
    async fn ready(&mut self) {
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("chromedriver exited at start ({status}){}", self.log_tail());
            }
            if let Ok(r) = http.get(format!("{}/status", self.url())).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        return;
                    }
                }
            }
            assert!(
                start.elapsed() < WAIT,
                "chromedriver did not become ready{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A fresh headless Chromium session with its own, new profile.
    async fn session(&self) -> Client {
        let profile = self.dir.path().join("profile");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps)
            .connect(&self.url())
            .await
            .unwrap_or_else(|e| {
                panic!("cannot start Chromium ({CHROMIUM}): {e}{}", self.log_tail())
            })
    }

    fn log_tail(&self) -> String {
        let mut log = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("chromedriver.log")) {
            let _ = f.read_to_string(&mut log);
        }
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "\n--- chromedriver log (last lines) ---\n{}",
            tail.join("\n")
        )
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        // The group chromedriver leads: chromedriver and the browser it started. With
        // `-s` and `--`: procps-ng 4.0's kill reads `-KILL -<pgid>` as a different group.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the test runs: required with `AIBANK_TEST_BROWSER=1`, else only where the
/// driver is installed.
fn should_run() -> bool {
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        for bin in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(bin).exists(),
                "{REQUIRE_ENV}=1 but {bin} is missing (apt-get install chromium chromium-driver)"
            );
        }
        return true;
    }
    if Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    eprintln!(
        "note: skipping the browser test: {CHROMEDRIVER} is not installed \
         (apt-get install chromium chromium-driver; {REQUIRE_ENV}=1 makes it required)"
    );
    false
}

async fn text_of(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

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

/// The text of the element `id` once the page that has it is loaded.
async fn text_once_shown(c: &Client, id: &str) -> String {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id(id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
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
