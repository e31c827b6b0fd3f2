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

use aibank_core::SystemClock;
use aibank_server::Application;
use aibank_testkit::{
    aibank_command, spawn_app_on, spawn_app_with, test_config, ServerProcess, TestDb,
};

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
