//! deploy/grafana/leasegate.json: every panel's PromQL, run the way Grafana runs it (a range
//! query over the last minutes) against a real Prometheus scraping a live leasegate after
//! traffic that touches every family, returns data.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use leasegate::admin::client::Client;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::*;

/// A role whose revocation fails three times (a sequence moves outside the failed transaction),
/// then succeeds: revoke failures and a lease in `revoke_failed`, for a few seconds.
const GATED_ROLE: &str = r#"
[[role]]
name = "gated"
database = "main"
default_ttl = "1h"
max_ttl = "24h"
member_of = ["app_group"]
revocation_statements = ["SELECT 1 / (CASE WHEN nextval('revoke_gate') < 4 THEN 0 ELSE 1 END)", "DROP ROLE \"{{name}}\""]
"#;

/// A role whose leases reach max TTL within a session: leasegate closes it at its next idle point.
const SHORT_ROLE: &str = r#"
[[role]]
name = "short"
database = "main"
default_ttl = "1s"
max_ttl = "1s"
member_of = ["app_group"]
"#;

struct Panel {
    title: String,
    expr: String,
}

/// Every target of every panel, with the dashboard's variables as Grafana fills them for "All".
fn panels() -> Vec<Panel> {
    let text = std::fs::read_to_string("deploy/grafana/leasegate.json").unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dash["uid"], "leasegate");
    assert_eq!(dash["__inputs"][0]["pluginId"], "prometheus", "importable with a Prometheus data source");
    let mut ids = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id {}", p["id"]);
        assert!(p["gridPos"]["w"].as_u64().unwrap() > 0);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().unwrap().replace("$__rate_interval", "1m").replace("$database", ".*");
            assert!(!expr.contains('$'), "an unknown variable in {expr}");
            out.push(Panel { title: format!("{} ({})", p["title"].as_str().unwrap(), t["refId"].as_str().unwrap()), expr });
        }
    }
    out
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The range query Grafana sends for a panel over the last five minutes: true when some series
/// has a finite value.
fn has_data(prom: &Client, expr: &str) -> bool {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let path = format!("/api/v1/query_range?query={}&start={}&end={now}&step=1", encode(expr), now - 300);
    let Ok(body) = prom.call("GET", &path, None) else { return false };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{expr}: {body}");
    v["data"]["result"].as_array().unwrap().iter().any(|series| {
        series["values"].as_array().unwrap().iter().any(|p| p[1].as_str().and_then(|s| s.parse::<f64>().ok()).is_some_and(f64::is_finite))
    })
}

fn start_prometheus(dir: &std::path::Path, target: std::net::SocketAddr) -> (std::process::Child, Client) {
    let port = leasegate::devdb::free_port().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: leasegate\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, Client { addr: format!("127.0.0.1:{port}"), token: String::new() })
}

#[test]
fn every_grafana_panel_returns_data_from_a_real_prometheus_scraping_leasegate() {
    let panels = panels();
    assert!(panels.len() >= 12, "{} queries", panels.len());
    let lg = Lg::start(Setup {
        admin_api: true,
        prepare: vec![format!("CREATE SEQUENCE revoke_gate; GRANT USAGE ON SEQUENCE revoke_gate TO {PG_ADMIN}")],
        extra_roles: vec![("gated".into(), GATED_ROLE.into()), ("short".into(), SHORT_ROLE.into())],
        ..Setup::default()
    });
    let dir = leasegate::devdb::TempDir::new("leasegate-grafana").unwrap();
    let (mut prom, prom_api) = start_prometheus(dir.path(), lg.admin_addr.unwrap());
    let api = Client { addr: lg.admin_addr.unwrap().to_string(), token: lg.admin_token.clone() };
    // Traffic before the first scrape would be in the series' first samples, where rate() and
    // increase() cannot see it.
    let scraping = wait_until(Duration::from_secs(30), || has_data(&prom_api, "up{job=\"leasegate\"} == 1"));
    assert!(scraping.is_some(), "Prometheus never scraped leasegate");

    // Traffic: sessions that mint, forward and close; a failed login; a session whose lease is
    // revoked under it; one closed at max TTL; a lease whose revocation fails before it
    // succeeds; a lease left alive.
    for _ in 0..3 {
        let out = lg.psql(&lg.url("ci", ""), "SELECT count(*) FROM items");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(!lg.psql(&lg.url("ci", "").replace(&lg.client_password, "wrong"), "SELECT 1").status.success());
    // The sleeper's own lease is the one with a live session. An earlier psql's session is
    // counted until leasegate has seen its client leave, so first wait for those to end: a
    // loaded machine once revoked an earlier lease here and left the sleeper running.
    let live_lease = || {
        let leases: Vec<serde_json::Value> = serde_json::from_str(&api.call("GET", "/v1/leases", None).unwrap()).unwrap();
        leases.into_iter().find(|l| l["sessions"] == 1).and_then(|l| l["id"].as_str().map(String::from))
    };
    assert!(wait_until(Duration::from_secs(10), || live_lease().is_none()).is_some(), "earlier sessions still counted");
    let sleeper = psql_cmd(&lg.url("ci", "")).args(["-Atc", "SELECT pg_sleep(30)"]).stderr(Stdio::null()).spawn().unwrap();
    // The sleeper's lease is the one whose user the server shows running its statement (a
    // lease counts its session from the mint on, so "one session" alone could name another).
    let running = "SELECT usename FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'";
    let mut user = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            user = lg.admin(running);
            !user.is_empty()
        })
        .is_some(),
        "the sleeper never ran"
    );
    let leases: Vec<serde_json::Value> = serde_json::from_str(&api.call("GET", "/v1/leases", None).unwrap()).unwrap();
    let sleeping = leases.iter().find(|l| l["db_user"] == user.as_str()).and_then(|l| l["id"].as_str()).expect("the sleeper's lease");
    assert!(live_lease().is_some(), "the sleeper's session is counted");
    api.call("POST", &format!("/v1/leases/{sleeping}/revoke"), None).unwrap();
    assert!(!sleeper.wait_with_output().unwrap().status.success(), "the revoked session was closed");
    let script = lg.dir.path().join("past-max-ttl.sql");
    std::fs::write(&script, "SELECT pg_sleep(2);\nSELECT 1;\n").unwrap();
    let out = psql_cmd(&lg.url("ci/short", "")).args(["-At", "-f"]).arg(&script).output().unwrap();
    assert!(stderr(&out).contains("terminating connection"), "closed after its first statement: {}", stderr(&out));
    assert!(lg.psql(&lg.url("ci/gated", ""), "SELECT 1").status.success());
    api.call("POST", "/v1/creds/app", None).unwrap();

    let started = Instant::now();
    let mut missing: Vec<&Panel> = panels.iter().collect();
    while !missing.is_empty() && started.elapsed() < Duration::from_secs(60) {
        missing.retain(|p| !has_data(&prom_api, &p.expr));
        std::thread::sleep(Duration::from_millis(250));
    }
    let labels = prom_api.call("GET", "/api/v1/label/database/values?match[]=leasegate_client_connections_total", None);
    let _ = prom.kill();
    let _ = prom.wait();
    let missing: Vec<String> = missing.iter().map(|p| format!("{}: {}", p.title, p.expr)).collect();
    assert!(missing.is_empty(), "panels without data:\n{}", missing.join("\n"));
    assert!(labels.unwrap().contains("\"main\""), "the $database variable's query lists the database");
    // The gated revocation went through on its fourth attempt.
    assert!(wait_until(Duration::from_secs(20), || lg.minted_roles().len() == 1).is_some(), "{:?}", lg.minted_roles());
}
