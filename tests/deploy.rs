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
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open("deploy/kubernetes/sidecar.yaml")) if d]
kinds = sorted(d["kind"] for d in docs)
assert kinds == ["ConfigMap", "Deployment", "Secret"], kinds
pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
containers = {c["name"]: c for c in pod["spec"]["containers"]}
lg, app = containers["leasegate"], containers["app"]
assert lg["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert lg["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
mounts = lambda c: {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
# The app holds no secret: no Secret reaches it, by env or by volume.
assert all("valueFrom" not in e for e in app.get("env", [])), app["env"]
assert all("secret" not in volumes[n] for n in mounts(app)), mounts(app)
token = [s["serviceAccountToken"] for n in mounts(app) for s in volumes[n].get("projected", {}).get("sources", [])]
json.dump({
    "toml": next(d for d in docs if d["kind"] == "ConfigMap")["data"]["leasegate.toml"],
    "replicas": next(d for d in docs if d["kind"] == "Deployment")["spec"]["replicas"],
    "app_uid": app["securityContext"]["runAsUser"],
    "app_url": next(e["value"] for e in app["env"] if e["name"] == "DATABASE_URL"),
    "shared_socket_dir": [mounts(app).get(n) for n in mounts(lg) if n in mounts(app)],
    "token_audiences": [t["audience"] for t in token],
}, sys.stdout)
"#;
    let facts: serde_json::Value = serde_json::from_str(&ok(Command::new("python3").args(["-c", script]))).unwrap();
    let config = leasegate::config::Config::from_toml_str(facts["toml"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("the sidecar's config does not parse: {e}"));
    // No client proves itself with a stored password.
    assert!(config.clients.iter().all(|c| c.password.is_none()), "a password client in the sidecar example");
    // The app container's uid is the peer client's, on a socket in a volume both containers mount.
    let uid = facts["app_uid"].as_u64().unwrap() as u32;
    let peer = config.clients.iter().find_map(|c| c.peer.as_ref()).expect("a peer client");
    assert_eq!(peer.uid, Some(uid), "the peer client is not the app container's uid");
    let url = facts["app_url"].as_str().unwrap();
    assert!(url.starts_with("postgresql:///") && !url.contains("password"), "{url}");
    let dir = url.split("host=").nth(1).and_then(|r| r.split('&').next()).unwrap();
    assert!(facts["shared_socket_dir"].as_array().unwrap().iter().any(|d| d == dir), "{facts}");
    let db = &config.databases[0];
    assert!(db.listen.0.iter().any(|a| a.to_string() == format!("unix:{dir}/.s.PGSQL.6432")), "{:?}", db.listen);
    // The projected token is minted for the audience the issuer accepts.
    let audiences = &config.jwt_issuers[0].audiences;
    assert!(facts["token_audiences"].as_array().unwrap().iter().all(|a| audiences.iter().any(|x| a == x.as_str())), "{facts}");
    assert!(!facts["token_audiences"].as_array().unwrap().is_empty());
    // Replicas share lease state, so no replica's sweep can take another's users.
    if facts["replicas"].as_u64().unwrap() > 1 {
        assert!(matches!(config.journal_store(), leasegate::config::JournalStore::Postgres(_)), "replicas with a journal each");
    }
    assert!(config.sweep_hazards().is_empty(), "{:?}", config.sweep_hazards());
}

/// No config that ships can sweep (or fence) another instance: each either keeps an instance id
/// per journal or shares one store, and none names an id that replicas would copy.
#[test]
fn no_shipped_config_can_sweep_another_instances_users() {
    let example = include_str!("../config/leasegate.example.toml");
    let config = leasegate::config::Config::from_toml_str(example).unwrap();
    assert!(config.sweep_hazards().is_empty(), "{:?}", config.sweep_hazards());
    // The hazard the check looks for is real: a named instance with a journal each and the sweep on.
    let copied = example
        .replace("path = \"leasegate.db\"", "path = \"leasegate.db\"\ninstance = \"pod-abc\"")
        .replace("sweep_orphans = false", "sweep_orphans = true");
    let hazards = leasegate::config::Config::from_toml_str(&copied).unwrap().sweep_hazards();
    assert_eq!(hazards.len(), 1, "{copied}");
    assert!(hazards[0].1.contains("would drop the other's"), "{hazards:?}");
}

#[test]
fn the_dockerfile_builds_the_binary_and_runs_as_non_root() {
    let text = std::fs::read_to_string("deploy/Dockerfile").unwrap();
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("USER 65532"));
    assert_eq!(text.matches("FROM ").count(), 2, "multi-stage");
}

/// The issuer example and the application pod whose sidecar asks it: the sidecar's pod mounts no
/// Secret and its config holds no admin credential, the issuers are replicas over one store, and
/// what the sidecar proves and asks for is what the issuer's rules allow.
#[test]
fn the_issuer_and_sidecar_manifests_hold_the_admin_secret_only_at_the_issuer() {
    let script = r#"
import json, sys, yaml
def docs(path):
    return [d for d in yaml.safe_load_all(open(path)) if d]
issuer, app = docs("deploy/kubernetes/issuer.yaml"), docs("deploy/kubernetes/app-with-sidecar.yaml")
pod = next(d for d in app if d["kind"] == "Deployment")["spec"]["template"]["spec"]
# No container of the application's pod sees a Secret, by volume or by env.
assert all("secret" not in v for v in pod["volumes"]), pod["volumes"]
for c in pod["containers"]:
    for e in c.get("env", []):
        assert "valueFrom" not in e, e
token = [s["serviceAccountToken"] for v in pod["volumes"] for s in v.get("projected", {}).get("sources", [])]
json.dump({
    "issuer_toml": next(d for d in issuer if d["kind"] == "ConfigMap")["data"]["leasegate.toml"],
    "issuer_replicas": next(d for d in issuer if d["kind"] == "Deployment")["spec"]["replicas"],
    "sidecar_toml": next(d for d in app if d["kind"] == "ConfigMap")["data"]["leasegate.toml"],
    "audiences": [t["audience"] for t in token],
    "service_account": pod["serviceAccountName"],
    "namespace": next(d for d in app if d["kind"] == "Deployment")["metadata"]["namespace"],
}, sys.stdout)
"#;
    let facts: serde_json::Value = serde_json::from_str(&ok(Command::new("python3").args(["-c", script]))).unwrap();
    let parse = |key: &str| {
        leasegate::config::Config::from_toml_str(facts[key].as_str().unwrap()).unwrap_or_else(|e| panic!("{key} does not parse: {e}"))
    };
    let (issuer, sidecar) = (parse("issuer_toml"), parse("sidecar_toml"));
    let text = facts["sidecar_toml"].as_str().unwrap();
    assert!(!text.contains("admin_user") && !text.contains("admin_password"), "the sidecar holds no admin credential");
    assert!(sidecar.databases.iter().all(|d| d.issuer.is_some() && d.admin_password.is_none()));
    assert!(issuer.issuer.is_some() && facts["issuer_replicas"].as_u64().unwrap() >= 2);
    assert!(matches!(issuer.journal_store(), leasegate::config::JournalStore::Postgres(_)), "issuer replicas share a store");
    assert!(issuer.sweep_hazards().is_empty() && sidecar.sweep_hazards().is_empty());
    // The pod's token is for the issuer's audience, and its subject is what the sidecar rule names.
    let audiences = &issuer.jwt_issuers[0].audiences;
    assert!(facts["audiences"].as_array().unwrap().iter().all(|a| audiences.iter().any(|x| a == x.as_str())), "{facts}");
    let subject = format!("system:serviceaccount:{}:{}", facts["namespace"].as_str().unwrap(), facts["service_account"].as_str().unwrap());
    let rule = issuer.sidecars.iter().find(|s| s.jwt.as_ref().and_then(|j| j.subject.as_deref()) == Some(subject.as_str()));
    let rule = rule.unwrap_or_else(|| panic!("no [[sidecar]] rule for {subject}"));
    for client in &sidecar.clients {
        assert!(rule.clients.contains(&client.name), "the issuer does not let this sidecar act for {}", client.name);
        let at_issuer = issuer.client(&client.name).expect("the issuer knows the client");
        assert!(client.roles.iter().all(|r| at_issuer.roles.contains(r)), "{:?} vs {:?}", client.roles, at_issuer.roles);
    }
    for db in &sidecar.databases {
        let theirs = issuer.databases.iter().find(|d| d.name == db.name).expect("the issuer mints for this database");
        assert_eq!(db.name_prefix, theirs.name_prefix, "the issuer checks the sidecar's names against its prefix");
    }
}
