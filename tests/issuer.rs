//! Issuers and sidecars (DESIGN §2b): an issuer process holds the admin credential and mints
//! for sidecar processes, which hold none. A private Postgres upstream; the sidecars prove
//! themselves to the issuer with a JWT signed by the test's own key (tests/clients/jwt_tokens.py).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use leasegate::devdb::postgres::PrivatePostgres;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::process::{Instance, Store};
use support::*;

const JWT_ISSUER: &str = "https://issuer.test.invalid";
const SIDECAR_SUB: &str = "system:serviceaccount:shop:leasegate-sidecar";
const OTHER_SUB: &str = "system:serviceaccount:shop:other-sidecar";

fn jwt_tool(args: &[&str]) -> String {
    let out = Command::new("python3").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/jwt_tokens.py")).args(args).output().unwrap();
    assert!(out.status.success(), "jwt_tokens.py {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// In `d`: the test's signing key (`keys/`), the sidecar's token signed with it, and the
/// issuers' self-signed certificate (`issuer.crt`, `issuer.key`). Returns the keys' directory.
fn credentials(d: &std::path::Path) -> std::path::PathBuf {
    let keys = d.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    jwt_tool(&["keys", keys.to_str().unwrap(), "k1"]);
    let claims = format!(r#"{{"iss": "{JWT_ISSUER}", "sub": "{SIDECAR_SUB}", "aud": ["leasegate"], "exp_in": 600, "iat_in": -5}}"#);
    std::fs::write(d.join("sidecar.token"), jwt_tool(&["sign", keys.to_str().unwrap(), "k1", &claims])).unwrap();
    let (cert, key) = leasegate::net::tls::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(d.join("issuer.crt"), cert).unwrap();
    std::fs::write(d.join("issuer.key"), key).unwrap();
    keys
}

/// An issuer's own part of its config: its API on `port`, the key that signs sidecar tokens,
/// and the one sidecar rule, acting for `clients`.
fn issuer_section(d: &std::path::Path, keys: &std::path::Path, port: u16, clients: &[&str]) -> String {
    let clients = clients.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[issuer]
listen = "127.0.0.1:{port}"
tls = {{ cert = "{d}/issuer.crt", key = "{d}/issuer.key" }}

[[jwt_issuer]]
name = "k8s"
issuer = "{JWT_ISSUER}"
jwks_file = "{keys}/jwks.json"
audiences = ["leasegate"]

[[sidecar]]
name = "shop-pods"
jwt = {{ issuer = "k8s", subject = "{SIDECAR_SUB}" }}
clients = [{clients}]
"#,
        d = d.display(),
        keys = keys.display(),
    )
}

/// Issuers in front of a private Postgres and one sidecar asking them, each its own process.
struct Pair {
    sidecar: Instance,
    issuers: Vec<Instance>,
    issuer_ports: Vec<u16>,
    /// Where the test's signing key is (tokens for applications too).
    keys: std::path::PathBuf,
    store: Option<Store>,
    client_password: String,
    _dir: leasegate::devdb::TempDir,
    pg: PrivatePostgres,
}

impl Pair {
    /// One issuer with its own journal; `ttl`: the role's default and max TTL at the issuer
    /// and the sidecar.
    fn start(ttl: (&'static str, &'static str)) -> Pair {
        Pair::start_with(ttl, 1)
    }

    /// `issuers` issuer replicas; more than one share a store (takeover after 3 s).
    fn start_with(ttl: (&'static str, &'static str), issuers: usize) -> Pair {
        let setup = Setup { admin_api: true, ttl, ..Setup::default() };
        let Prepared { pg, dir, client_password, text } = prepare(&setup, "LISTEN_ADDR");
        let d = dir.path().to_path_buf();
        let keys = credentials(&d);
        let ports: Vec<u16> = (0..issuers).map(|_| leasegate::devdb::free_port().unwrap()).collect();
        let verifier = text.split("password = \"").nth(1).unwrap().split('"').next().unwrap().to_string();
        let store = (issuers > 1).then(Store::start);
        if let Some(store) = &store {
            std::fs::write(d.join("store.url"), &store.url).unwrap();
        }
        let journal = format!("[journal]\npath = \"{}/journal.db\"\ninstance = \"{INSTANCE}\"\n", d.display());

        // The issuer: the ordinary config (admin credential, roles with member_of) plus the
        // issuer API, the key that signs sidecar tokens, and which sidecar may act for whom.
        let issuer_config = |i: usize, issuer_port: u16| {
            let name = format!("issuer-{i}");
            let shared = format!("[journal]\nurl_file = \"{}/store.url\"\ninstance = \"{name}\"\ntakeover_after = \"3s\"\n", d.display());
            let text = if store.is_some() { text.replace(&journal, &shared) } else { text.clone() };
            Instance::configure(&d, &name, |addr, admin, dir| {
                let base = text
                    .replace("LISTEN_ADDR", &addr.to_string())
                    .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{admin}\""))
                    .replace(&format!("{}/audit.jsonl", d.display()), &dir.join("audit.jsonl").display().to_string());
                let own = issuer_section(&d, &keys, issuer_port, &["billing", "tokenapp", "strict"]);
                format!(
                    r#"{own}
# A second kind of sidecar, which may act for "strict" only.
[[sidecar]]
name = "other-pods"
jwt = {{ issuer = "k8s", subject = "{OTHER_SUB}" }}
clients = ["strict"]

# Served only through sidecars: it proves itself to them, not here.
[[client]]
name = "billing"
roles = ["app"]

# Proves itself to the sidecar with its token, which the sidecar forwards: checked here too.
[[client]]
name = "tokenapp"
roles = ["app"]
jwt = {{ issuer = "k8s", subject = "system:serviceaccount:shop:tokenapp" }}

# The sidecar accepts any shop token for it; this issuer wants one subject only.
[[client]]
name = "strict"
roles = ["app"]
jwt = {{ issuer = "k8s", subject = "system:serviceaccount:shop:strict" }}
{base}"#,
                )
            })
        };
        let mut issuers: Vec<Instance> = ports.iter().enumerate().map(|(i, port)| issuer_config(i, *port)).collect();
        let urls = ports.iter().map(|p| format!("\"https://127.0.0.1:{p}\"")).collect::<Vec<_>>().join(", ");
        // The sidecar: no admin credential, no statements; the app proves itself here.
        let mut sidecar = Instance::configure(&d, "sidecar", |addr, admin, dir| {
            format!(
                r#"
[admin]
listen = "{admin}"
token_file = "{d}/admin.token"

[journal]
path = "{dir}/journal.db"

[service]
shutdown_grace = "0s"

[[database]]
name = "main"
kind = "postgres"
listen = "{addr}"
upstream = "{upstream}"
name_prefix = "{PREFIX}"
issuer = {{ urls = [{urls}], ca = "{d}/issuer.crt", token_file = "{d}/sidecar.token" }}
upstream_tls = {{ mode = "prefer" }}
client_tls = {{ cert = "{d}/issuer.crt", key = "{d}/issuer.key", mode = "optional" }}
connect_timeout = "3s"

[[role]]
name = "app"
database = "main"
default_ttl = "{ttl}"
max_ttl = "{max_ttl}"

[[jwt_issuer]]
name = "k8s"
issuer = "{JWT_ISSUER}"
jwks_file = "{keys}/jwks.json"
audiences = ["leasegate"]

[[client]]
name = "billing"
password = "{verifier}"
roles = ["app"]

[[client]]
name = "tokenapp"
roles = ["app"]
jwt = {{ issuer = "k8s", subject = "system:serviceaccount:shop:tokenapp" }}

[[client]]
name = "strict"
roles = ["app"]
jwt = {{ issuer = "k8s", claims = {{ sub = "system:serviceaccount:shop:*" }} }}

# Known to the sidecar, but the issuer does not let this sidecar act for it.
[[client]]
name = "intruder"
password = "{verifier}"
roles = ["app"]
"#,
                d = d.display(),
                dir = dir.display(),
                keys = keys.display(),
                upstream = pg.addr(),
                ttl = ttl.0,
                max_ttl = ttl.1,
            )
        });
        for (issuer, port) in issuers.iter_mut().zip(&ports) {
            issuer.spawn();
            issuer.wait_up();
            let issuing = wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok());
            assert!(issuing.is_some(), "{}", issuer.log());
        }
        sidecar.spawn();
        sidecar.wait_up();
        Pair { sidecar, issuers, issuer_ports: ports, store, client_password, keys, _dir: dir, pg }
    }

    fn audit(&self, i: usize) -> String {
        std::fs::read_to_string(self.issuers[i].dir.join("audit.jsonl")).unwrap_or_default()
    }

    fn url(&self, login: &str) -> String {
        leasegate_url(self.sidecar.addr, &self.client_password, login, "")
    }

    fn session(&self, login: &str, sql: &str) -> Child {
        psql_cmd(&self.url(login)).args(["-Atc", sql]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }

    fn minted(&self) -> Vec<String> {
        minted_roles(&self.pg)
    }

    fn logs(&self) -> String {
        let issuers: String = self.issuers.iter().map(|i| format!("--- {}\n{}\n", i.name, i.log())).collect();
        format!("{issuers}--- sidecar\n{}", self.sidecar.log())
    }
}

#[test]
fn a_sidecar_without_admin_credentials_gets_users_from_its_issuer_for_its_clients_only() {
    let p = Pair::start(("1h", "24h"));
    let config = std::fs::read_to_string(&p.sidecar.config).unwrap();
    assert!(!config.contains("admin_user") && !config.contains("admin_password"), "the sidecar holds no admin credential");
    let out = psql_cmd(&p.url("billing")).args(["-Atc", "SELECT current_user"]).output().unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), p.logs());
    assert!(stdout(&out).starts_with(&format!("{PREFIX}billing_app_")), "{}", stdout(&out));
    // The issuer journaled it as its lease, with the sidecar named in its audit log.
    let audit = p.audit(0);
    assert!(audit.contains("sidecar shop-pods"), "{audit}");
    // Closing the session released the lease at the issuer, which dropped the user.
    assert!(wait_until(Duration::from_secs(10), || p.minted().is_empty()).is_some(), "{:?}\n{}", p.minted(), p.logs());
    // A client the sidecar is not bound to at the issuer gets nothing.
    let refused = psql_cmd(&p.url("intruder")).args(["-Atc", "SELECT 1"]).output().unwrap();
    assert!(!refused.status.success());
    assert!(p.issuers[0].log().contains("may not act for this client"), "{}", p.logs());
    assert!(p.minted().is_empty());
    // Both sides' metrics name the sidecar and the client.
    let issuer = p.issuers[0].api().call("GET", "/metrics", None).unwrap();
    for series in [
        r#"leasegate_issuer_requests_total{sidecar="shop-pods",client="billing",call="grant",outcome="ok"} 1"#,
        // (libpq's sslmode=prefer tries again without TLS after a refusal: one or two.)
        r#"leasegate_issuer_requests_total{sidecar="shop-pods",client="intruder",call="grant",outcome="refused"} "#,
    ] {
        assert!(issuer.contains(series), "{series} missing:\n{issuer}");
    }
    let sidecar = p.sidecar.api().call("GET", "/metrics", None).unwrap();
    assert!(sidecar.contains(r#"leasegate_issuer_calls_total{database="main",call="grant",outcome="ok"} 1"#), "{sidecar}");
}

#[test]
fn revoking_at_the_issuer_ends_the_session_behind_the_sidecar_within_two_seconds() {
    let p = Pair::start(("1h", "24h"));
    let session = p.session("billing", "SELECT pg_sleep(60)");
    assert!(wait_until(Duration::from_secs(10), || p.minted().len() == 1).is_some(), "{}", p.logs());
    let api = p.issuers[0].api();
    let leases: Vec<serde_json::Value> = serde_json::from_str(&api.call("GET", "/v1/leases", None).unwrap()).unwrap();
    let id = leases[0]["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    api.call("POST", &format!("/v1/leases/{id}/revoke"), Some("{}")).unwrap();
    let mut session = session;
    let ended = wait_until(Duration::from_secs(2), || session.try_wait().unwrap().is_some());
    assert!(ended.is_some(), "the session still runs {:?} after the revocation\n{}", started.elapsed(), p.logs());
    assert!(!session.wait().unwrap().success());
    assert!(p.minted().is_empty());
    // The sidecar's own lease for it ended too (its session closed, or the watcher saw it).
    let none_left = wait_until(Duration::from_secs(5), || p.sidecar.api().call("GET", "/v1/leases", None).unwrap() == "[]");
    assert!(none_left.is_some(), "{}", p.sidecar.log());
}

#[test]
fn the_sidecar_renews_through_the_issuer_and_a_dead_sidecars_lease_expires_there() {
    let mut p = Pair::start(("4s", "1m"));
    // A session longer than the TTL lives on: the sidecar renews at the issuer.
    let long = p.session("billing", "SELECT pg_sleep(7); SELECT current_user");
    let out = long.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), p.logs());
    let audit = p.audit(0);
    assert!(audit.contains("\"event\":\"renewed\""), "the issuer renewed it: {audit}\n{}", p.logs());
    assert!(wait_until(Duration::from_secs(10), || p.minted().is_empty()).is_some());
    // A sidecar killed with its session: the issuer ends the lease at its TTL.
    let orphaned = p.session("billing", "SELECT pg_sleep(60)");
    assert!(wait_until(Duration::from_secs(10), || p.minted().len() == 1).is_some());
    p.sidecar.kill9();
    let gone = wait_until(Duration::from_secs(15), || p.minted().is_empty());
    assert!(gone.is_some(), "{:?} left after the sidecar died\n{}", p.minted(), p.logs());
    assert!(!finished(orphaned), "its client saw the sidecar go");
}

fn finished(child: Child) -> bool {
    child.wait_with_output().unwrap().status.success()
}

#[test]
fn killing_the_issuer_that_granted_moves_its_leases_to_another_and_the_session_goes_on() {
    let mut p = Pair::start_with(("9s", "2m"), 2);
    // Longer than the TTL: it lives only if the surviving issuer renews it.
    let session = p.session("billing", "SELECT pg_sleep(14); SELECT current_user");
    assert!(wait_until(Duration::from_secs(10), || p.minted().len() == 1).is_some(), "{}", p.logs());
    assert!(p.issuers[0].log().contains("issued a lease to a sidecar"), "the sidecar asks its first issuer first: {}", p.logs());
    p.issuers[0].kill9();
    let out = session.wait_with_output().unwrap();
    assert!(out.status.success(), "the session went on: {}\n{}", stderr(&out), p.logs());
    assert!(p.issuers[1].log().contains("took over a dead issuer's live lease"), "{}", p.logs());
    assert!(p.audit(1).contains("\"event\":\"renewed\""), "the survivor renewed it: {}", p.logs());
    // Released at close to the survivor, which dropped the user.
    assert!(wait_until(Duration::from_secs(10), || p.minted().is_empty()).is_some(), "{:?}\n{}", p.minted(), p.logs());
    let store = p.store.as_ref().unwrap();
    assert_eq!(store.sql("SELECT ended_by, taken_from FROM leasegate.leases WHERE state = 'ended'"), "issuer-1|issuer-0");
}

/// A sidecar's call straight to issuer `i` (what a load balancer in front of the issuers does).
fn call_issuer(p: &Pair, i: usize, path: &str, body: &str) -> (u16, String) {
    let d = p.sidecar.dir.parent().unwrap();
    let token = std::fs::read_to_string(d.join("sidecar.token")).unwrap();
    let port = p.issuer_ports[i];
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "40", "-o", "-", "-w", "\n%{http_code}", "--cacert"])
        .arg(d.join("issuer.crt"))
        .args(["-H", &format!("Authorization: Bearer {}", token.trim()), "-H", "Content-Type: application/json", "-d", body])
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.parse().unwrap_or(0), body.to_string())
}

#[test]
fn any_issuer_renews_and_releases_a_lease_another_issuer_granted() {
    let p = Pair::start_with(("1h", "24h"), 2);
    let session = p.session("billing", "SELECT pg_sleep(60)");
    assert!(wait_until(Duration::from_secs(10), || p.minted().len() == 1).is_some(), "{}", p.logs());
    let user = p.minted()[0].clone();
    assert!(p.issuers[0].log().contains("issued a lease to a sidecar"));
    // Renewed at the issuer that did not grant it: the server's expiry and the store move.
    let until = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(7200)).to_string();
    let (code, body) = call_issuer(&p, 1, "/v1/issuer/renew", &format!(r#"{{"user": "{user}", "until": "{until}"}}"#));
    assert_eq!(code, 200, "{body}\n{}", p.logs());
    let valid = admin_psql(&p.pg, &format!("SELECT rolvaliduntil > now() + interval '100 minutes' FROM pg_roles WHERE rolname = '{user}'"));
    assert_eq!(valid, "t", "the server-side expiry moved");
    assert!(p.issuers[1].log().contains("renewed a lease another instance owns"), "{}", p.logs());
    // Released there too: the owner revokes it, the session behind the sidecar ends.
    let (code, body) = call_issuer(&p, 1, "/v1/issuer/release", &format!(r#"{{"user": "{user}"}}"#));
    assert_eq!(code, 200, "{body}\n{}", p.logs());
    assert!(p.minted().is_empty());
    assert!(!session.wait_with_output().unwrap().status.success());
    // A user that no issuer holds is 404 at either.
    let (code, _) = call_issuer(&p, 1, "/v1/issuer/renew", &format!(r#"{{"user": "{user}"}}"#));
    assert_eq!(code, 404);
}

#[test]
fn a_mariadb_client_through_a_sidecar_gets_a_user_its_issuer_minted() {
    let db = leasegate::devdb::mariadb::PrivateMariaDb::start().expect("private mariadb starts");
    db.root_sql("CREATE DATABASE appdb; CREATE ROLE app_group; GRANT ALL ON appdb.* TO app_group; GRANT app_group TO leasegate_admin WITH ADMIN OPTION;")
        .unwrap();
    let dir = leasegate::devdb::TempDir::new("leasegate-issuer-my").unwrap();
    let d = dir.path().to_path_buf();
    let keys = credentials(&d);
    std::fs::write(d.join("admin.secret"), db.admin_password.expose()).unwrap();
    let password = format!("pw-{}", leasegate::name::password().expose());
    let value = leasegate::auth::hash::client_password_value(&leasegate::secret::Secret::new(password.clone()));
    let port = leasegate::devdb::free_port().unwrap();
    let role = "[[role]]\nname = \"app\"\ndatabase = \"main\"\ndefault_ttl = \"1h\"\nmax_ttl = \"24h\"\n";
    let own = issuer_section(&d, &keys, port, &["billing"]);
    let mut issuer = Instance::configure(&d, "issuer", |addr, admin, dir| {
        format!(
            r#"
[admin]
listen = "{admin}"
[journal]
path = "{dir}/journal.db"
{own}
[[database]]
name = "main"
kind = "mysql"
listen = "{addr}"
upstream = "{upstream}"
admin_user = "{admin_user}"
admin_password_file = "{d}/admin.secret"
name_prefix = "{PREFIX}"
upstream_tls = {{ mode = "disable" }}
{role}member_of = ["app_group"]
[[client]]
name = "billing"
roles = ["app"]
"#,
            d = d.display(),
            dir = dir.display(),
            upstream = db.addr(),
            admin_user = db.admin_user,
        )
    });
    let mut sidecar = Instance::configure(&d, "sidecar", |addr, admin, dir| {
        format!(
            r#"
[admin]
listen = "{admin}"
[journal]
path = "{dir}/journal.db"
[[database]]
name = "main"
kind = "mysql"
listen = "{addr}"
upstream = "{upstream}"
name_prefix = "{PREFIX}"
issuer = {{ url = "https://127.0.0.1:{port}", ca = "{d}/issuer.crt", token_file = "{d}/sidecar.token" }}
upstream_tls = {{ mode = "disable" }}
{role}
[[client]]
name = "billing"
password = "{value}"
roles = ["app"]
"#,
            d = d.display(),
            dir = dir.display(),
            upstream = db.addr(),
        )
    });
    issuer.spawn();
    issuer.wait_up();
    sidecar.spawn();
    sidecar.wait_up();
    let out = Command::new("mariadb")
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &sidecar.addr.port().to_string(), "-u", "billing", "-N", "-B", "-e", "SELECT CURRENT_USER()"])
        .env("MYSQL_PWD", &password)
        .output()
        .unwrap();
    let logs = || format!("--- issuer\n{}\n--- sidecar\n{}", issuer.log(), sidecar.log());
    assert!(out.status.success(), "{}\n{}", stderr(&out), logs());
    assert!(stdout(&out).starts_with(&format!("{PREFIX}billing_app_")), "{}", stdout(&out));
    let minted = || db.root_sql(&format!("SELECT User FROM mysql.user WHERE LEFT(User, {}) = '{PREFIX}'", PREFIX.len())).unwrap();
    assert!(wait_until(Duration::from_secs(10), || minted().trim().is_empty()).is_some(), "released and dropped: {}\n{}", minted(), logs());
}

#[test]
fn an_applications_token_goes_through_the_sidecar_to_the_issuer_which_checks_it_too() {
    let p = Pair::start(("1h", "24h"));
    let token = |sub: &str| {
        let claims = format!(r#"{{"iss": "{JWT_ISSUER}", "sub": "{sub}", "aud": ["leasegate"], "exp_in": 300, "iat_in": -5}}"#);
        jwt_tool(&["sign", p.keys.to_str().unwrap(), "k1", &claims])
    };
    let login = |client: &str, sub: &str| {
        let url = format!("postgres://{client}@127.0.0.1:{}/postgres?sslmode=require", p.sidecar.addr.port());
        psql_cmd(&url).env("PGPASSWORD", token(sub)).args(["-Atc", "SELECT current_user"]).output().unwrap()
    };
    let ok = login("tokenapp", "system:serviceaccount:shop:tokenapp");
    assert!(ok.status.success(), "{}\n{}", stderr(&ok), p.logs());
    assert!(stdout(&ok).starts_with(&format!("{PREFIX}tokenapp_app_")), "{}", stdout(&ok));
    // The sidecar's rule takes any shop token for "strict"; the issuer's takes one subject only.
    let refused = login("strict", "system:serviceaccount:shop:someone-else");
    assert!(!refused.status.success(), "the issuer refused what the sidecar accepted");
    assert!(p.issuers[0].log().contains("the application's token does not prove this client"), "{}", p.logs());
    let allowed = login("strict", "system:serviceaccount:shop:strict");
    assert!(allowed.status.success(), "{}\n{}", stderr(&allowed), p.logs());
    assert!(wait_until(Duration::from_secs(10), || p.minted().is_empty()).is_some());
}

#[test]
fn killing_an_issuer_during_churn_costs_at_most_a_retried_login() {
    let mut p = Pair::start_with(("1h", "24h"), 2);
    let url = p.url("billing");
    // Logins one after another through the sidecar while the first issuer dies.
    let churn = std::thread::spawn(move || {
        (0..40)
            .map(|_| {
                let ok = psql_cmd(&url).args(["-Atc", "SELECT 1"]).output().unwrap().status.success();
                std::thread::sleep(Duration::from_millis(50));
                ok
            })
            .collect::<Vec<bool>>()
    });
    std::thread::sleep(Duration::from_millis(1500));
    p.issuers[0].kill9();
    let outcomes = churn.join().unwrap();
    let failed = outcomes.iter().filter(|ok| !**ok).count();
    assert!(failed <= 2, "{failed} of {} logins failed:\n{}", outcomes.len(), p.logs());
    assert!(outcomes.iter().rev().take(10).all(|ok| *ok), "logins work again after the failover: {outcomes:?}");
    // Releases the dead issuer owed are made once the survivor has taken its leases over.
    let gone = wait_until(Duration::from_secs(45), || p.minted().is_empty());
    assert!(gone.is_some(), "{:?} left\n{}", p.minted(), p.logs());
}

#[test]
fn two_sidecars_each_get_users_only_for_the_clients_their_rule_names() {
    let p = Pair::start_with(("1h", "24h"), 2);
    // A second sidecar process, proving itself with another token: the other-pods rule.
    let d = p.sidecar.dir.parent().unwrap().to_path_buf();
    let claims = format!(r#"{{"iss": "{JWT_ISSUER}", "sub": "{OTHER_SUB}", "aud": ["leasegate"], "exp_in": 600, "iat_in": -5}}"#);
    std::fs::write(d.join("other.token"), jwt_tool(&["sign", p.keys.to_str().unwrap(), "k1", &claims])).unwrap();
    let first = std::fs::read_to_string(&p.sidecar.config).unwrap();
    let mut other = Instance::configure(&d, "other-sidecar", |addr, admin, dir| {
        let (token, journal) = (d.join("sidecar.token"), p.sidecar.dir.join("journal.db"));
        first
            .replace(&token.display().to_string(), &d.join("other.token").display().to_string())
            .replace(&journal.display().to_string(), &dir.join("journal.db").display().to_string())
            .replace(&p.sidecar.addr.to_string(), &addr.to_string())
            .replace(&p.sidecar.admin.to_string(), &admin.to_string())
    });
    other.spawn();
    other.wait_up();
    let token_login = |sidecar: &Instance, client: &str, sub: &str| {
        let claims = format!(r#"{{"iss": "{JWT_ISSUER}", "sub": "{sub}", "aud": ["leasegate"], "exp_in": 300, "iat_in": -5}}"#);
        let url = format!("postgres://{client}@127.0.0.1:{}/postgres?sslmode=require", sidecar.addr.port());
        psql_cmd(&url)
            .env("PGPASSWORD", jwt_tool(&["sign", p.keys.to_str().unwrap(), "k1", &claims]))
            .args(["-Atc", "SELECT current_user"])
            .output()
            .unwrap()
    };
    // Each sidecar gets users for its own clients...
    let billing = psql_cmd(&p.url("billing")).args(["-Atc", "SELECT current_user"]).output().unwrap();
    assert!(billing.status.success(), "{}\n{}", stderr(&billing), p.logs());
    let strict = token_login(&other, "strict", "system:serviceaccount:shop:strict");
    assert!(strict.status.success(), "{}\n{}\n{}", stderr(&strict), p.logs(), other.log());
    assert!(stdout(&strict).starts_with(&format!("{PREFIX}strict_app_")), "{}", stdout(&strict));
    // ...and nothing for another sidecar's: the issuer refuses the other-pods sidecar "billing".
    let url = leasegate_url(other.addr, &p.client_password, "billing", "");
    let refused = psql_cmd(&url).args(["-Atc", "SELECT 1"]).output().unwrap();
    assert!(!refused.status.success());
    let issuers: String = p.issuers.iter().map(|i| i.log()).collect();
    assert!(issuers.contains("sidecar=other-pods client=billing") && issuers.contains("may not act for this client"), "{issuers}");
    assert!(wait_until(Duration::from_secs(10), || p.minted().is_empty()).is_some(), "{:?}", p.minted());
}
