//! deploy/: what can be checked on this machine is checked (no Docker engine here).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

use std::process::Command;

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn the_systemd_unit_verifies() {
    let dir = leasegate::devdb::TempDir::new("leasegate-unit").unwrap();
    // verify checks that ExecStart's binary exists: point it at the one just built.
    let unit = std::fs::read_to_string("deploy/systemd/leasegate.service")
        .unwrap()
        .replace("/usr/local/bin/leasegate", env!("CARGO_BIN_EXE_leasegate"));
    let path = dir.path().join("leasegate.service");
    std::fs::write(&path, unit).unwrap();
    let text = ok(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(!text.contains("Unknown key"), "{text}");
}

#[test]
fn prometheus_config_and_alert_rules_check_and_pass_their_tests() {
    ok(Command::new("promtool").args(["check", "config", "deploy/prometheus/scrape.yml"]));
    let text = ok(Command::new("promtool").args(["check", "rules", "deploy/prometheus/alerts.yml"]));
    assert!(text.contains("4 rules found"), "{text}");
    ok(Command::new("promtool").args(["test", "rules", "deploy/prometheus/alerts.test.yml"]));
}

#[test]
fn the_kubernetes_manifests_parse_and_carry_a_valid_config() {
    let script = r#"
import sys, yaml
docs = [d for d in yaml.safe_load_all(open("deploy/kubernetes/sidecar.yaml")) if d]
kinds = sorted(d["kind"] for d in docs)
assert kinds == ["ConfigMap", "Deployment", "Secret", "Secret"], kinds
pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
lg = next(c for c in pod["spec"]["containers"] if c["name"] == "leasegate")
assert lg["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert lg["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
sys.stdout.write(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["leasegate.toml"])
"#;
    let toml = ok(Command::new("python3").args(["-c", script]));
    leasegate::config::Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("the sidecar's config does not parse: {e}"));
}

#[test]
fn the_dockerfile_builds_the_binary_and_runs_as_non_root() {
    let text = std::fs::read_to_string("deploy/Dockerfile").unwrap();
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("USER 65532"));
    assert_eq!(text.matches("FROM ").count(), 2, "multi-stage");
}
