//! The `aibank` binary: serve, migrate, master-keys create, bootstrap keys and the refusal
//! of database URLs it does not understand.
// JSON money literals are written as clients write them; scenario tests run long.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unreadable_literal,
    clippy::too_many_lines
)]

use std::process::Command;
use std::sync::Arc;

use crate::support::{
    aibank_command, spawn_app_on, spawn_app_with, test_config, ServerProcess, TestDb,
};
use aibank_core::SystemClock;
use aibank_server::Application;

const BIN: &str = env!("CARGO_BIN_EXE_aibank");

fn aibank(cwd: &std::path::Path) -> Command {
    aibank_command(BIN, cwd)
}

#[tokio::test]
async fn master_keys_create_prints_the_key_last_and_it_works() {
    let db = Arc::new(tokio::task::spawn_blocking(TestDb::fresh).await.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let out = aibank(dir.path())
        .args([
            "master-keys",
            "create",
            "--name",
            "Acme",
            "--email",
            "ops@acme.test",
        ])
        .env("AIBANK_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("mk_"), "{stdout}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&key),
        "the key goes to stdout only"
    );

    let app = spawn_app_on(db, |_| {}, Arc::new(SystemClock)).await;
    let r = app
        .get("/v1/platform/agents", &[("X-Master-Key", &key)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let bad = aibank(dir.path())
        .args(["master-keys", "create", "--name", "X", "--email", "nope"])
        .env("AIBANK_DATABASE_URL", &app.db.url)
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn migrate_runs_and_refuses_unknown_schemes_without_creating_files() {
    let dir = tempfile::tempdir().unwrap();
    let ok = aibank(dir.path())
        .arg("migrate")
        .env(
            "AIBANK_DATABASE_URL",
            format!("sqlite://{}/m.db", dir.path().display()),
        )
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(dir.path().join("m.db").exists());

    for url in [
        "postgress://u@localhost/db",
        "sqlite3://x.db",
        "data/aibank.db",
        "sqlite:///no/such/dir/a.db",
    ] {
        let out = aibank(dir.path())
            .arg("migrate")
            .env("AIBANK_DATABASE_URL", url)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("sqlite://") || err.contains("does not exist"),
            "{url}: {err}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter().all(|n| n.to_string_lossy().starts_with("m.db")),
        "nothing but the migrated database may exist: {left:?}"
    );
}

#[test]
fn bad_configuration_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = aibank(dir.path())
        .arg("serve")
        .env("AIBANK_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AIBANK_LISTEN"));

    std::fs::write(
        dir.path().join("c.toml"),
        "listen = \"127.0.0.1:0\"\nlisten_port = 3\n",
    )
    .unwrap();
    let out = aibank(dir.path())
        .arg("serve")
        .env("AIBANK_CONFIG", dir.path().join("c.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_port"));
}

/// `aibank serve` with nothing configured: embedded SQLite at ./data/aibank.db, migrations
/// applied, a working API, and a clean exit on SIGTERM.
#[test]
fn serve_with_defaults_uses_embedded_sqlite_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(BIN, dir.path(), &[]);
    assert!(dir.path().join("data/aibank.db").exists());
    let port = server.port;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let h: serde_json::Value = c
            .get(format!("http://127.0.0.1:{port}/v1/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(h["backend"], "sqlite");
        let r = c
            .post(format!("http://127.0.0.1:{port}/v1/agents/register"))
            .json(&serde_json::json!({"name": "cli"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    });

    let status = server.signal_and_wait("TERM");
    assert!(
        status.is_some_and(|s| s.success()),
        "graceful exit on SIGTERM: {status:?}"
    );
}

#[tokio::test]
async fn operator_chosen_bootstrap_key_survives_restarts() {
    let chosen = "mk_operator-chosen-bootstrap-key-for-compose".to_owned();
    let k = chosen.clone();
    let app = spawn_app_with(move |c| c.bootstrap_master_key = Some(k.into())).await;
    let r = app
        .post(
            "/v1/platform/agents",
            serde_json::json!({"name": "a"}),
            &[("X-Master-Key", &chosen)],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // Restart on the same database: same key, same platform, same fleet.
    let db = app.db.clone();
    drop(app);
    let k = chosen.clone();
    let again = spawn_app_on(
        db,
        move |c| c.bootstrap_master_key = Some(k.into()),
        Arc::new(SystemClock),
    )
    .await;
    let list = again
        .get("/v1/platform/agents", &[("X-Master-Key", &chosen)])
        .await;
    assert_eq!(
        list.body["data"].as_array().unwrap().len(),
        1,
        "{}",
        list.text
    );
}

#[tokio::test]
async fn weak_or_malformed_bootstrap_keys_refuse_to_start() {
    for bad in [
        "mk_short",
        "ak_this-is-an-agent-key-not-a-master-key",
        "mk_has space in it 0123456789abcdef",
    ] {
        let db = tokio::task::spawn_blocking(TestDb::fresh).await.unwrap();
        let mut config = test_config(&db, bad);
        config.workers = Some(1);
        let res = Application::build(config, Arc::new(SystemClock)).await;
        let err = res
            .err()
            .unwrap_or_else(|| panic!("{bad} must be refused"))
            .to_string();
        assert!(err.contains("AIBANK_BOOTSTRAP_MASTER_KEY"), "{err}");
        assert!(!err.contains(bad), "the key is not echoed: {err}");
    }
}

#[tokio::test]
async fn a_revoked_bootstrap_key_stays_revoked_after_restart() {
    let app = spawn_app_with(|_| {}).await;
    let boot = app.master_key.clone();
    let r = app
        .post(
            "/v1/platform/master-keys",
            serde_json::json!({"name": "successor", "owner_email": "a@b.co"}),
            &[("X-Master-Key", &boot)],
        )
        .await;
    let successor = r.body["key"].as_str().unwrap().to_owned();
    let boot_id = aibank_auth::keys::parse(&boot).unwrap().id;
    let r = app
        .delete(
            &format!("/v1/platform/master-keys/{boot_id}"),
            &[("X-Master-Key", &successor)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let db = app.db.clone();
    drop(app);
    let b = boot.clone();
    let again = spawn_app_on(
        db,
        move |c| c.bootstrap_master_key = Some(b.into()),
        Arc::new(SystemClock),
    )
    .await;
    let r = again
        .get("/v1/platform/agents", &[("X-Master-Key", &boot)])
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
}

/// `AIBANK_PRICES_FILE`: read at start and again on `SIGHUP`, without a restart. A call is
/// billed at the prices in force and its usage row names their version; a file that does
/// not load changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prices_file_is_reloaded_on_sighup_and_usage_rows_name_the_version() {
    use crate::support::mock_upstream::MockUpstream;
    use crate::support::{random_master_key, MOCK_ANTHROPIC_KEY, TEST_SECRET_KEY};
    use serde_json::{json, Value};

    let mock = MockUpstream::start().await;
    let db = tokio::task::spawn_blocking(TestDb::fresh).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prices.json");
    let write_prices = |input: u32, output: u32| {
        let prices = json!({"anthropic": {"claude-test": {"input": input, "output": output}}});
        std::fs::write(&file, prices.to_string()).unwrap();
    };
    write_prices(1, 2);
    let mk = random_master_key();
    let env = [
        ("AIBANK_DATABASE_URL", db.url.clone()),
        ("AIBANK_BOOTSTRAP_MASTER_KEY", mk.clone()),
        ("AIBANK_SECRET_KEY", TEST_SECRET_KEY.to_owned()),
        ("AIBANK_PRICES_FILE", file.display().to_string()),
        ("ANTHROPIC_BASE_URL", mock.base.clone()),
        ("ANTHROPIC_API_KEY", MOCK_ANTHROPIC_KEY.to_owned()),
    ];
    let cwd = dir.path().to_owned();
    let server = tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        ServerProcess::start(BIN, &cwd, &env)
    })
    .await
    .unwrap();
    let server = Arc::new(server);
    let c = reqwest::Client::new();
    let agent: Value = c
        .post(format!("{}/v1/platform/agents", server.base))
        .header("X-Master-Key", &mk)
        .json(&json!({"name": "prices", "credits_usd": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = agent["apiKey"].as_str().unwrap().to_owned();
    let version = || async {
        let p: Value = c
            .get(format!("{}/v1/providers", server.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let claude = p["providers"][0]["models"]["claude-test"].clone();
        (p["price_version"].as_str().unwrap().to_owned(), claude)
    };
    // 1,000 prompt and 500 output tokens: the cost and the version on the call's row.
    let call = || async {
        let r = c
            .post(format!("{}/v1/gateway/anthropic/v1/messages", server.base))
            .header("X-API-Key", &key)
            .header("x-mock-usage", "1000,500")
            .json(&json!({"model": "claude-test", "max_tokens": 500,
                          "messages": [{"role": "user", "content": "Hello"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let usage: Value = c
            .get(format!("{}/v1/usage", server.base))
            .header("X-API-Key", &key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let row = &usage["data"][0];
        (
            row["cost_usd"].clone(),
            row["price_version"].as_str().unwrap().to_owned(),
        )
    };

    let (first, claude) = version().await;
    assert_eq!(claude, json!({"input": 1, "output": 2}), "read at start");
    // 1,000 × $1 + 500 × $2 per million.
    assert_eq!(call().await, (json!(0.002), first.clone()));

    write_prices(3, 4);
    let hup = |n: usize, message: &'static str| {
        let server = server.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                server.signal("HUP");
                server.wait_for_log(message, n)
            })
            .await
            .unwrap()
        }
    };
    let reloaded = hup(1, "prices reloaded").await;
    let (second, claude) = version().await;
    assert_ne!(second, first);
    assert_eq!(reloaded["fields"]["price_version"], second.as_str());
    assert_eq!(claude, json!({"input": 3, "output": 4}), "no restart");
    // 1,000 × $3 + 500 × $4 per million, at the new version; the old row keeps its own.
    assert_eq!(call().await, (json!(0.005), second.clone()));

    // Not JSON, then an unknown provider: logged, and the prices in force stay.
    std::fs::write(&file, "{ not json").unwrap();
    let refused = hup(1, "prices not reloaded; the prices in force stay").await;
    assert!(
        refused["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("prices.json"),
        "{refused}"
    );
    std::fs::write(&file, r#"{"nobody": {"m": {"input": 1, "output": 1}}}"#).unwrap();
    let refused = hup(2, "prices not reloaded; the prices in force stay").await;
    assert!(
        refused["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("unknown provider `nobody`"),
        "{refused}"
    );
    assert_eq!(version().await.0, second);
    assert_eq!(call().await, (json!(0.005), second.clone()));

    // The same prices as before give the same version again.
    write_prices(1, 2);
    hup(2, "prices reloaded").await;
    assert_eq!(version().await.0, first);
    assert_eq!(server.count_logs("prices reloaded"), 2);
}

/// A prices file that does not load stops the start with a clear error.
#[test]
fn a_prices_file_that_does_not_load_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    for (contents, expected) in [
        (None, "cannot read"),
        (Some("[1, 2]"), "provider -> model -> price"),
        (
            Some(r#"{"anthropic": {"m": {"input": 1}}}"#),
            "missing field `output`",
        ),
    ] {
        let file = dir.path().join("prices.json");
        let _ = std::fs::remove_file(&file);
        if let Some(c) = contents {
            std::fs::write(&file, c).unwrap();
        }
        let out = aibank(dir.path())
            .arg("serve")
            .env("AIBANK_PRICES_FILE", &file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("AIBANK_PRICES_FILE") && err.contains(expected),
            "{contents:?}: {err}"
        );
    }
}
