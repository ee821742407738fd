//! Operations end to end: metrics checked by promtool and scraped by a real Prometheus, the
//! audit log, the admin API and CLI, graceful shutdown, connection limits, deploy/ files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use leasegate::admin::client::{Client, ClientError};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn admin_setup() -> Setup {
    Setup { admin_api: true, ..Setup::default() }
}

fn api(lg: &Lg) -> Client {
    Client { addr: lg.admin_addr.unwrap().to_string(), token: lg.admin_token.clone() }
}

fn get(lg: &Lg, path: &str) -> Result<String, ClientError> {
    api(lg).call("GET", path, None)
}

fn sleeping_session(lg: &Lg, login: &str, seconds: u32) -> std::process::Child {
    psql_cmd(&lg.url(login, ""))
        .args(["-Atc", &format!("SELECT pg_sleep({seconds})")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    let lg = Lg::start(admin_setup());
    let sessions: Vec<_> = (0..2).map(|_| sleeping_session(&lg, "ci", 20)).collect();
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().len() == 2).is_some());
    // A failed login, so auth failure counters exist too.
    assert!(!lg.psql(&lg.url("ci", "").replace(&lg.client_password, "wrong"), "SELECT 1").status.success());

    let text = get(&lg, "/metrics").unwrap();
    for family in [
        "leasegate_leases_active{",
        "leasegate_leases_granted_total{",
        "leasegate_mint_duration_seconds_bucket{",
        "leasegate_client_connections_active{",
        "leasegate_auth_failures_total{",
        "leasegate_lease_remaining_seconds_bucket{",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    assert!(!text.contains(PREFIX), "no user names in labels");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(out.status.success(), "promtool: {}{}", stdout(&out), stderr(&out));

    // A real Prometheus scraping leasegate, answering PromQL.
    let dir = leasegate::devdb::TempDir::new("leasegate-prom").unwrap();
    let port = leasegate::devdb::free_port().unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: leasegate\n    static_configs:\n      - targets: ['{}']\n",
            lg.admin_addr.unwrap()
        ),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let prom_api = Client { addr: format!("127.0.0.1:{port}"), token: String::new() };
    let query = "/api/v1/query?query=sum(leasegate_leases_active%7Bstate%3D%22active%22%7D)";
    let answered = wait_until(Duration::from_secs(30), || {
        prom_api
            .call("GET", query, None)
            .ok()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|v| v["data"]["result"][0]["value"][1].as_str().map(str::to_string))
            .is_some_and(|v| v == "2")
    });
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(answered.is_some(), "Prometheus never reported 2 active leases");
    for mut s in sessions {
        let _ = s.kill();
        let _ = s.wait();
    }
}

#[test]
fn every_audit_line_is_json_and_no_password_is_in_it() {
    let lg = Lg::start(admin_setup());
    let out = lg.psql(&lg.url("ci", ""), "SELECT 1");
    assert!(out.status.success());
    // A minted password leasegate hands out (creds) must reach neither the audit log nor metrics.
    let creds: serde_json::Value = serde_json::from_str(&api(&lg).call("POST", "/v1/creds/app", None).unwrap()).unwrap();
    let minted = creds["password"].as_str().unwrap().to_string();
    api(&lg).call("POST", &format!("/v1/leases/{}/revoke", creds["lease_id"].as_str().unwrap()), None).unwrap();
    assert!(!get(&lg, "/metrics").unwrap().contains(&minted));
    assert!(!lg.psql(&lg.url("nobody", ""), "SELECT 1").status.success());
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some());
    let path = lg.dir.path().join("audit.jsonl");
    let ok = wait_until(Duration::from_secs(10), || std::fs::read_to_string(&path).unwrap_or_default().contains("\"ended\""));
    assert!(ok.is_some());
    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}"))).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"granted") && kinds.contains(&"ended") && kinds.contains(&"auth_failed"), "{kinds:?}");
    let ended = events
        .iter()
        .find(|e| e["event"] == "ended" && e["reason"] == "closed")
        .expect("the psql session's lease ended with reason closed");
    assert_eq!(ended["reason"], "closed");
    for key in ["time", "lease_id", "client", "role", "database", "db_user", "peer"] {
        assert!(!ended[key].is_null(), "{key} missing in {ended}");
    }
    assert!(humantime::parse_rfc3339(ended["time"].as_str().unwrap()).is_ok());
    assert!(!text.contains(&lg.client_password));
    assert!(!text.contains(&minted), "a minted password in the audit log");
    assert!(!captured_logs().contains(&minted), "a minted password in leasegate's log");
    for e in &events {
        assert!(e.as_object().unwrap().keys().all(|k| !k.contains("password")), "no password field: {e}");
    }
}

#[test]
fn admin_api_lists_renews_and_revokes_leases() {
    let lg = Lg::start(admin_setup());
    let unauth = Client { addr: lg.admin_addr.unwrap().to_string(), token: "wrong-token-wrong-token".into() };
    assert!(matches!(unauth.call("GET", "/v1/leases", None), Err(ClientError::Api { status: 401, .. })));
    assert!(get(&lg, "/healthz").is_ok());
    assert!(wait_until(Duration::from_secs(10), || get(&lg, "/readyz").is_ok()).is_some(), "ready after recovery and sweep");

    let session = sleeping_session(&lg, "ci", 30);
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().len() == 1).is_some());
    let leases: Vec<serde_json::Value> = serde_json::from_str(&get(&lg, "/v1/leases?role=app").unwrap()).unwrap();
    assert_eq!(leases.len(), 1);
    let id = leases[0]["id"].as_str().unwrap().to_string();
    assert_eq!(leases[0]["state"], "active");
    assert!(serde_json::from_str::<Vec<serde_json::Value>>(&get(&lg, "/v1/leases?state=revoke_failed").unwrap()).unwrap().is_empty());

    let before = leases[0]["expires_at"].as_str().unwrap().to_string();
    let renewed: serde_json::Value =
        serde_json::from_str(&api(&lg).call("POST", &format!("/v1/leases/{id}/renew"), Some(r#"{"increment":"2h"}"#)).unwrap()).unwrap();
    assert!(renewed["expires_at"].as_str().unwrap() > before.as_str(), "{renewed}");

    assert!(matches!(
        api(&lg).call("POST", &format!("/v1/leases/{id}/renew"), Some("{not json")),
        Err(ClientError::Api { status: 400, .. })
    ));
    let zero = api(&lg).call("POST", &format!("/v1/leases/{id}/renew"), Some(r#"{"increment":"0s"}"#));
    assert!(matches!(zero, Err(ClientError::Api { status: 400, .. })), "{zero:?}");
    // Past what a clock can add: a 400, not a panic (and the API keeps answering).
    let absurd = api(&lg).call("POST", &format!("/v1/leases/{id}/renew"), Some(r#"{"increment":"300000000000y"}"#));
    assert!(matches!(absurd, Err(ClientError::Api { status: 400, .. })), "{absurd:?}");
    let huge = format!("{{\"increment\":\"{}\"}}", "9".repeat(100_000));
    let answer = api(&lg).call("POST", &format!("/v1/leases/{id}/renew"), Some(&huge));
    assert!(matches!(answer, Err(ClientError::Api { status: 413, .. })), "{answer:?}");
    assert!(matches!(get(&lg, "/v1/leases/nope"), Err(ClientError::Api { status: 404, .. })));

    let started = Instant::now();
    api(&lg).call("POST", &format!("/v1/leases/{id}/revoke"), None).unwrap();
    // Answered only once the user is gone.
    assert!(lg.minted_roles().is_empty(), "{:?}", lg.minted_roles());
    assert!(started.elapsed() < Duration::from_secs(5));
    let out = session.wait_with_output().unwrap();
    assert!(!out.status.success(), "the session was closed");
    let bogus = get(&lg, "/v1/leases?state=bogus");
    assert!(matches!(bogus, Err(ClientError::Api { status: 400, .. })), "{bogus:?}");
    let shown: serde_json::Value = serde_json::from_str(&get(&lg, &format!("/v1/leases/{id}")).unwrap()).unwrap();
    assert_eq!(
        (shown["state"].as_str(), shown["db_user"].as_str()),
        (Some("ended"), leases[0]["db_user"].as_str()),
        "an ended lease is shown from the journal"
    );
    // An ended lease is known (409, wrong state), not missing.
    let answer = api(&lg).call("POST", &format!("/v1/leases/{id}/renew"), Some(r#"{"increment":"1h"}"#));
    assert!(matches!(answer, Err(ClientError::Api { status: 409, .. })), "{answer:?}");
}

#[test]
fn creds_connect_straight_to_the_database_and_revoke_prefix_ends_them() {
    let lg = Lg::start(admin_setup());
    let creds: serde_json::Value = serde_json::from_str(&api(&lg).call("POST", "/v1/creds/app", None).unwrap()).unwrap();
    let url = format!(
        "postgres://{}:{}@{}:{}/{}",
        creds["user"].as_str().unwrap(),
        creds["password"].as_str().unwrap(),
        creds["host"].as_str().unwrap(),
        creds["port"],
        creds["dbname"].as_str().unwrap()
    );
    let out = psql_cmd(&url).args(["-Atc", "SELECT current_user"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), creds["user"].as_str().unwrap());
    // Still there after the direct session closed: it lives until its TTL or a revoke.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lg.minted_roles().len(), 1);
    let done: Vec<serde_json::Value> =
        serde_json::from_str(&api(&lg).call("POST", "/v1/leases/revoke-prefix", Some(r#"{"prefix":"ap"}"#)).unwrap()).unwrap();
    assert_eq!(done.len(), 1);
    assert!(lg.minted_roles().is_empty());
    assert!(matches!(api(&lg).call("POST", "/v1/creds/no_such_role", None), Err(ClientError::Api { status: 404, .. })));
}

#[test]
fn cli_lists_leases_and_exec_runs_a_command_with_a_credential() {
    let lg = Lg::start(admin_setup());
    let bin = env!("CARGO_BIN_EXE_leasegate");
    let env = [("LEASEGATE_ADDR", lg.admin_addr.unwrap().to_string()), ("LEASEGATE_TOKEN", lg.admin_token.clone())];
    let session = sleeping_session(&lg, "ci", 10);
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().len() == 1).is_some());
    let out = Command::new(bin).args(["leases", "list"]).envs(env.clone()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.starts_with("ID") && table.contains(&lg.minted_roles()[0]), "{table}");
    let out = Command::new(bin).args(["leases", "list", "--json"]).envs(env.clone()).output().unwrap();
    let id = serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()[0]["id"].as_str().unwrap().to_string();
    let out = Command::new(bin).args(["leases", "revoke", &id]).envs(env.clone()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let _ = session.wait_with_output();

    // exec: the command sees PG* variables, its exit code comes back, the lease is revoked.
    let out = Command::new(bin)
        .args(["exec", "--role", "app", "--", "sh", "-c", "psql -Atc 'SELECT current_user' && exit 7"])
        .envs(env.clone())
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stdout(&out).starts_with(PREFIX), "{}", stdout(&out));
    assert!(lg.minted_roles().is_empty(), "revoked when the command exited: {:?}", lg.minted_roles());
    let out = Command::new(bin).args(["exec", "--role", "app", "--", "/no/such/program"]).envs(env.clone()).output().unwrap();
    assert_eq!(out.status.code(), Some(127), "a missing command exits 127 like a shell");

    let out = Command::new(bin)
        .args(["leases", "list"])
        .env("LEASEGATE_ADDR", format!("http://{}/", lg.admin_addr.unwrap()))
        .env("LEASEGATE_TOKEN", "bad-token-bad-token")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
}

#[test]
fn shutdown_lets_a_transaction_finish_then_revokes_and_readyz_turns_unready_at_once() {
    let mut lg = Lg::start(Setup { shutdown_grace: "10s", ..admin_setup() });
    let script = lg.dir.path().join("tx.sql");
    std::fs::write(
        &script,
        "BEGIN;\nSELECT pg_sleep(2);\nINSERT INTO items VALUES (2000, 'committed during shutdown');\nCOMMIT;\nSELECT pg_sleep(1);\n",
    )
    .unwrap();
    let child = psql_cmd(&lg.url("ci", "")).args(["-At", "-f"]).arg(&script).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().len() == 1).is_some());
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    lg.signals.begin.cancel();
    assert!(wait_until(Duration::from_secs(1), || get(&lg, "/readyz").is_err()).is_some(), "unready at once");
    let out = child.wait_with_output().unwrap();
    assert_eq!(lg.admin("SELECT name FROM items WHERE id = 2000"), "committed during shutdown", "{}", stderr(&out));
    assert!(stderr(&out).contains("terminating connection because leasegate is shutting down"), "{}", stderr(&out));
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some());
    assert!(started.elapsed() < Duration::from_secs(8), "did not wait the full grace: {:?}", started.elapsed());
    lg.shutdown();
}

#[test]
fn max_client_connections_answers_53300_at_once() {
    let lg = Lg::start(Setup { database_extra: "max_client_connections = 1".into(), ..Setup::default() });
    let held = sleeping_session(&lg, "ci", 3);
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().len() == 1).is_some());
    let started = Instant::now();
    let out = lg.psql(&lg.url("ci", "sslmode=disable"), "SELECT 1");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("sorry, too many clients already"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(2));
    held.wait_with_output().unwrap();
    assert!(lg.psql(&lg.url("ci", ""), "SELECT 1").status.success());
}
