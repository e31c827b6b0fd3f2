//! The WebDriver harness of the browser tests: Debian's Chromium, headless, driven through
//! chromedriver against the real server, and the helpers the tests share.
//!
//! With `AIBANK_TEST_BROWSER=1` (as in CI) a browser test must run, and fails when Chromium
//! or chromedriver is missing. Otherwise it is skipped, with a note, where
//! `/usr/bin/chromedriver` is absent (`apt-get install chromium chromium-driver`).

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tempfile::TempDir;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const REQUIRE_ENV: &str = "AIBANK_TEST_BROWSER";
pub const WAIT: Duration = Duration::from_secs(30);

/// chromedriver in its own process group, with the Chromium it starts; dropping it kills
/// the whole group, so nothing outlives the test, failed or not.
pub struct Driver {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Driver {
    pub fn start() -> Driver {
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
    pub async fn ready(&mut self) {
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
    pub async fn session(&self) -> Client {
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
pub fn should_run() -> bool {
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
        "note: skipping a browser test: {CHROMEDRIVER} is not installed \
         (apt-get install chromium chromium-driver; {REQUIRE_ENV}=1 makes it required)"
    );
    false
}

pub async fn text_of(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id)).await.unwrap().text().await.unwrap()
}

/// The text of the element `id` once the page that has it is loaded.
pub async fn text_once_shown(c: &Client, id: &str) -> String {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id(id))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Where a test leaves files for people to look at (screenshots): `$AIBANK_TEST_ARTIFACTS`,
/// else `target/test-artifacts` of the workspace. Created if missing.
pub fn artifact_dir() -> PathBuf {
    let dir = std::env::var_os("AIBANK_TEST_ARTIFACTS").map_or_else(
        || {
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(
                    || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
                    PathBuf::from,
                )
                .join("test-artifacts")
        },
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Saves a PNG of what the browser shows as `name` in the [`artifact_dir`], and says where.
pub async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let path = artifact_dir().join(name);
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot saved: {}", path.display());
    path
}
