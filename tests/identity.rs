//! Workload identity end to end: clients that prove who they are with what their platform
//! gives them instead of a stored password. Real psql, real OS users (`runuser -u nobody`),
//! a private Postgres that checks the minted passwords (scram-sha-256).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use support::*;

/// A directory every OS user can reach, for the socket file (the test's own is private).
fn socket_dir() -> leasegate::devdb::TempDir {
    let dir = leasegate::devdb::TempDir::new("lg-sock").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn psql_as(os_user: Option<&str>, conninfo: &str, sql: &str) -> std::process::Output {
    let mut cmd = match os_user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "psql"]);
            c
        }
        None => Command::new("psql"),
    };
    cmd.args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql, conninfo]).current_dir("/").output().unwrap()
}

fn audit_lines(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn unix_peers_log_in_as_their_own_clients_and_others_are_refused() {
    assert_eq!(unsafe { libc::getuid() }, 0, "this test switches OS users with runuser, which needs root");
    let sock = socket_dir();
    let sock_path = sock.path().to_path_buf();
    let setup = Setup { admin_api: true, ..Default::default() };
    let mut port = 0;
    let lg = LgProcess::start_edited(setup, |text, _| {
        let line = text.lines().find(|l| l.starts_with("listen = \"127.0.0.1:") && !l.ends_with(":0\"")).unwrap().to_string();
        port = line.trim_start_matches("listen = \"127.0.0.1:").trim_end_matches('"').parse().unwrap();
        let listen = format!("listen = [\"127.0.0.1:{port}\", \"unix:{}/.s.PGSQL.{port}\"]", sock_path.display());
        text.replace(&line, &listen)
            + "\n[[client]]\nname = \"rootapp\"\nroles = [\"app\"]\npeer = { uid = 0 }\n"
            + "\n[[client]]\nname = \"nobodyapp\"\nroles = [\"app\"]\npeer = { user = \"nobody\" }\n"
    });
    let socket = sock_path.join(format!(".s.PGSQL.{port}"));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "the socket file gets the default mode");
    let conninfo = |user: &str| format!("host={} port={port} user={user} dbname=postgres", sock_path.display());

    // libpq's host=/dir port=N, no password anywhere: each OS user is its own client.
    let root = psql_as(None, &conninfo("rootapp"), "SELECT current_user");
    assert!(root.status.success(), "root over the socket: {}", stderr(&root));
    assert!(stdout(&root).starts_with("lgt_rootapp_"), "{}", stdout(&root));
    let nobody = psql_as(Some("nobody"), &conninfo("nobodyapp"), "SELECT current_user");
    assert!(nobody.status.success(), "nobody over the socket: {}", stderr(&nobody));
    assert!(stdout(&nobody).starts_with("lgt_nobodyapp_"), "{}", stdout(&nobody));

    // The wrong OS user for a client, and a peer client over TCP, are refused as Postgres does.
    let wrong = psql_as(Some("nobody"), &conninfo("rootapp"), "SELECT 1");
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("Peer authentication failed for user \"rootapp\""), "{}", stderr(&wrong));
    let tcp = psql_as(None, &format!("host=127.0.0.1 port={port} user=rootapp dbname=postgres sslmode=disable"), "SELECT 1");
    assert!(!tcp.status.success());
    assert!(stderr(&tcp).contains("Unix-socket connection only"), "{}", stderr(&tcp));
    // A password client still logs in over the socket.
    let pw = psql_as(None, &format!("{} password={}", conninfo("ci"), lg.client_password), "SELECT current_user");
    assert!(pw.status.success(), "password client over the socket: {}", stderr(&pw));

    // The audit says how each lease's client proved itself, and why the refusals failed.
    let audit = audit_lines(lg.dir.path());
    let granted = |client: &str| {
        audit
            .iter()
            .find(|e| e["event"] == "granted" && e["client"] == client)
            .unwrap_or_else(|| panic!("no grant for {client}: {audit:?}"))
            .clone()
    };
    assert_eq!(granted("nobodyapp")["auth_method"], "peer");
    assert_eq!(granted("nobodyapp")["subject"], "uid=65534");
    assert!(granted("nobodyapp")["peer"].as_str().unwrap().starts_with("unix:uid=65534,gid=65534"));
    assert_eq!(granted("rootapp")["subject"], "uid=0");
    assert_eq!(granted("ci")["auth_method"], "password");
    let refusals: Vec<_> =
        audit.iter().filter(|e| e["event"] == "auth_failed").map(|e| e["reason"].as_str().unwrap().to_string()).collect();
    assert_eq!(refusals, ["no_match", "no_match"], "{audit:?}");

    // Every user is gone once its connection closed.
    assert!(wait_until(std::time::Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some(), "{:?}", lg.minted_roles());
    drop(lg);
    assert!(!socket.exists(), "the socket file is removed at shutdown");
}

/// The mariadb client as `os_user` (None: this process's user) over a Unix socket, no password.
fn mariadb_socket_as(os_user: Option<&str>, socket: &std::path::Path, login: &str, sql: &str) -> std::process::Output {
    let mut cmd = match os_user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--", "mariadb"]);
            c
        }
        None => Command::new("mariadb"),
    };
    cmd.arg("--no-defaults").arg(format!("--socket={}", socket.display())).args(["-u", login, "-N", "-B", "-e", sql]);
    cmd.current_dir("/").output().unwrap()
}

#[test]
fn mysql_clients_on_the_socket_log_in_as_their_os_user() {
    assert_eq!(unsafe { libc::getuid() }, 0, "this test switches OS users with runuser, which needs root");
    let sock = socket_dir();
    let socket = sock.path().join("mysqld.sock");
    let lg = support::my::MyLg::start(support::my::MySetup {
        socket: Some(socket.clone()),
        extra_clients: "\n[[client]]\nname = \"nobodyapp\"\nroles = [\"app\"]\npeer = { uid = 65534 }\n".into(),
        ..Default::default()
    });
    let me = mariadb_socket_as(Some("nobody"), &socket, "nobodyapp", "SELECT CURRENT_USER()");
    assert!(me.status.success(), "nobody over the socket: {}", stderr(&me));
    assert!(stdout(&me).starts_with("lgt_nobodyapp_"), "{}", stdout(&me));
    // root is not uid 65534: refused as a MySQL server refuses a login.
    let wrong = mariadb_socket_as(None, &socket, "nobodyapp", "SELECT 1");
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("ERROR 1045"), "{}", stderr(&wrong));
    // Over TCP the peer client cannot prove itself.
    let tcp = lg.mariadb("nobodyapp", "", &[], "SELECT 1");
    assert!(!tcp.status.success());
    assert!(stderr(&tcp).contains("ERROR 1045"), "{}", stderr(&tcp));
    assert!(wait_until(std::time::Duration::from_secs(10), || lg.minted_users().is_empty()).is_some(), "{:?}", lg.minted_users());
}

const ISSUER: &str = "https://issuer.test.invalid";

fn tokens(args: &[&str]) -> String {
    let out = Command::new("python3").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/jwt_tokens.py")).args(args).output().unwrap();
    assert!(out.status.success(), "jwt_tokens.py {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Claims of a token for `sub` from the test issuer, with `extra` keys (JSON object body).
fn claims(sub: &str, extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { ", " };
    format!(r#"{{"iss": "{ISSUER}", "sub": "{sub}", "aud": ["leasegate"], "exp_in": 300, "iat_in": -5, "jti": "j-{sub}"{sep}{extra}}}"#)
}

/// The issuer and two jwt clients, appended to a test config; the keys from `DIR/jwks.json`.
fn jwt_config(keys: &std::path::Path) -> String {
    jwt_config_with(&format!("jwks_file = \"{}\"", keys.join("jwks.json").display()))
}

/// The issuer and two jwt clients, with `keys` saying where the issuer's keys come from.
fn jwt_config_with(keys: &str) -> String {
    format!(
        r#"
[[jwt_issuer]]
name = "test"
issuer = "{ISSUER}"
{keys}
audiences = ["leasegate"]
leeway = "5s"
max_token_age = "10m"

[[client]]
name = "billing"
roles = ["app"]
jwt = {{ issuer = "test", subject = "system:serviceaccount:shop:billing" }}

[[client]]
name = "ci-job"
roles = ["app"]
jwt = {{ issuer = "test", claims = {{ repository = "acme/*", ref = "refs/heads/main" }} }}
"#
    )
}

/// The test issuer's OIDC discovery document and JWKS over HTTPS on 127.0.0.1
/// (tests/clients/jwks_server.py), with a certificate from a CA the test makes. It serves
/// `DIR/jwks.json` as it is at each request: rewriting the file switches the keys it serves.
struct JwksServer {
    child: std::process::Child,
    port: u16,
    ca: std::path::PathBuf,
    requests: std::path::PathBuf,
}

impl JwksServer {
    fn start(dir: &std::path::Path) -> JwksServer {
        use std::io::BufRead;
        let ca = TestCa::new("jwks ca");
        let (cert, key) = ca.server_cert("localhost", dir, "jwks-server");
        let ca_file = dir.join("jwks-ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        let mut child = Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/jwks_server.py"))
            .args([dir.to_str().unwrap(), &cert, &key, ISSUER])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("jwks_server.py printed {line:?}"));
        JwksServer { child, port, ca: ca_file, requests: dir.join("requests.log") }
    }

    fn discovery_line(&self) -> String {
        format!("discovery_url = \"https://localhost:{}/.well-known/openid-configuration\"\nca = \"{}\"", self.port, self.ca.display())
    }

    fn jwks_url_line(&self) -> String {
        format!("jwks_url = \"https://localhost:{}/jwks\"\nca = \"{}\"", self.port, self.ca.display())
    }

    /// How many times the key set was fetched.
    fn jwks_fetches(&self) -> usize {
        std::fs::read_to_string(&self.requests).unwrap_or_default().lines().filter(|l| *l == "/jwks").count()
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn postgres_clients_log_in_with_a_jwt_and_every_bad_token_is_refused() {
    let keys = leasegate::devdb::TempDir::new("lg-jwt").unwrap();
    let k = keys.path().to_str().unwrap().to_string();
    tokens(&["keys", &k, "k1"]);
    // Keys found as a real OIDC issuer publishes them: discovery document, then JWKS, over HTTPS.
    let jwks = JwksServer::start(keys.path());
    let lg =
        LgProcess::start_edited(Setup { admin_api: true, ..Default::default() }, |text, _| text + &jwt_config_with(&jwks.discovery_line()));
    let fetched = wait_until(std::time::Duration::from_secs(10), || jwks.jwks_fetches() == 1);
    assert!(fetched.is_some(), "the key set is fetched at start: {}", lg.log());
    let port = lg.addr.port();
    let cert = lg.dir.path().join("tls.crt");
    let psql = |login: &str, token: &str, ssl: &str| {
        Command::new("psql")
            .args(["-X", "-At", "-c", "SELECT current_user"])
            .arg(format!("host=localhost port={port} user={login} dbname=postgres {ssl}"))
            .env("PGPASSWORD", token)
            .output()
            .unwrap()
    };
    let good = tokens(&["sign", &k, "k1", &claims("system:serviceaccount:shop:billing", "")]);
    for ssl in ["sslmode=require".to_string(), format!("sslmode=verify-full sslrootcert={}", cert.display())] {
        let out = psql("billing", &good, &ssl);
        assert!(out.status.success(), "{ssl}: {}", stderr(&out));
        assert!(stdout(&out).starts_with("lgt_billing_"), "{}", stdout(&out));
    }
    // Claims with globs: the CI job's repository and branch.
    let ci = tokens(&[
        "sign",
        &k,
        "k1",
        &claims("repo:acme/shop:ref:refs/heads/main", r#""repository": "acme/shop", "ref": "refs/heads/main""#),
    ]);
    let out = psql("ci-job", &ci, "sslmode=require");
    assert!(out.status.success(), "{}", stderr(&out));
    // asyncpg, a driver with its own protocol code, over TLS with the token as its password.
    let script = format!(
        "import asyncio, asyncpg, ssl\nasync def main():\n    ctx = ssl.create_default_context(cafile='{cert}')\n    c = await asyncpg.connect(host='localhost', port={port}, user='billing', password='{good}', database='postgres', ssl=ctx)\n    print(await c.fetchval('SELECT current_user'))\n    await c.close()\nasyncio.run(main())",
        cert = cert.display()
    );
    let out = Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(out.status.success() && stdout(&out).starts_with("lgt_billing_"), "asyncpg: {}{}", stdout(&out), stderr(&out));
    // pgJDBC over TLS (sslmode=require), the token as its password.
    let out = Command::new("java")
        .args(["-cp", "/usr/share/java/postgresql.jar", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/PgJdbcLogin.java")])
        .arg(format!("jdbc:postgresql://localhost:{port}/postgres?sslmode=require"))
        .arg("billing")
        .env("LG_PASSWORD", &good)
        .output()
        .unwrap();
    assert!(out.status.success() && stdout(&out).starts_with("lgt_billing_"), "pgJDBC: {}{}", stdout(&out), stderr(&out));

    // Over plain TCP the token is never asked for.
    let plain = psql("billing", &good, "sslmode=disable");
    assert!(!plain.status.success());
    assert!(stderr(&plain).contains("never sent over plain TCP"), "{}", stderr(&plain));

    let sub = "system:serviceaccount:shop:billing";
    // One character inside the signature changed: the last one also carries padding bits, and
    // a change there can make the base64url itself invalid ("malformed", not "signature").
    let at = good.len() - 10;
    let mut tampered = good.clone();
    tampered.replace_range(at..at + 1, if &good[at..at + 1] == "A" { "B" } else { "A" });
    let bad = [
        ("expired", tokens(&["sign", &k, "k1", &claims(sub, "").replace(r#""exp_in": 300"#, r#""exp_in": -60"#)])),
        ("not_yet_valid", tokens(&["sign", &k, "k1", &claims(sub, r#""nbf_in": 120"#)])),
        ("too_old", tokens(&["sign", &k, "k1", &claims(sub, "").replace(r#""iat_in": -5"#, r#""iat_in": -3600"#)])),
        ("audience", tokens(&["sign", &k, "k1", &claims(sub, "").replace(r#"["leasegate"]"#, r#"["someone-else"]"#)])),
        ("issuer", tokens(&["sign", &k, "k1", &claims(sub, "").replace(ISSUER, "https://evil.test.invalid")])),
        ("signature", tampered),
        ("algorithm", tokens(&["none", &claims(sub, "")])),
        ("algorithm", tokens(&["hs256", &k, "k1", &claims(sub, "")])),
        ("no_match", tokens(&["sign", &k, "k1", &claims("system:serviceaccount:shop:other", "")])),
        ("no_match", tokens(&["sign", &k, "k1", &claims("x", r#""repository": "evil/shop", "ref": "refs/heads/main""#)])),
    ];
    for (i, (reason, token)) in bad.iter().enumerate() {
        let login = if i == bad.len() - 1 { "ci-job" } else { "billing" };
        let out = psql(login, token, "sslmode=require");
        assert!(!out.status.success(), "{reason}: logged in");
        assert!(stderr(&out).contains("password authentication failed"), "{reason}: {}", stderr(&out));
    }

    // Key rotation: the issuer's server now serves k2 only. A k2 token makes leasegate fetch
    // the key set again; a token of the removed k1 is then refused.
    tokens(&["keys", &k, "k2"]);
    let rotated = tokens(&["sign", &k, "k2", &claims(sub, "")]);
    let out = psql("billing", &rotated, "sslmode=require");
    assert!(out.status.success(), "new kid after rotation: {}", stderr(&out));
    assert_eq!(jwks.jwks_fetches(), 2, "an unknown kid fetches the key set once more");
    let out = psql("billing", &good, "sslmode=require");
    assert!(!out.status.success(), "a removed key still works");
    // A kid no key set ever had: one refetch (rate-limited), then refused.
    tokens(&["keys", &k, "k2", "k3"]);
    tokens(&["keys", &k, "k2"]);
    let unknown = tokens(&["sign", &k, "k3", &claims(sub, "")]);
    let out = psql("billing", &unknown, "sslmode=require");
    assert!(!out.status.success());

    let audit = audit_lines(lg.dir.path());
    let reasons: Vec<String> =
        audit.iter().filter(|e| e["event"] == "auth_failed").map(|e| e["reason"].as_str().unwrap().to_string()).collect();
    let mut expected = vec!["plaintext_refused".to_string()];
    expected.extend(bad.iter().map(|(r, _)| r.to_string()));
    expected.extend(["unknown_key".to_string(), "unknown_key".to_string()]);
    assert_eq!(reasons, expected, "{audit:?}");
    assert!(audit.iter().filter(|e| e["event"] == "auth_failed").all(|e| e["auth_method"] == "jwt"));
    let grant = audit.iter().find(|e| e["event"] == "granted" && e["client"] == "billing").unwrap();
    assert_eq!(grant["auth_method"], "jwt");
    assert_eq!(grant["subject"], format!("iss={ISSUER} sub={sub} jti=j-{sub}"));
    // No token text anywhere: audit, log.
    let all = std::fs::read_to_string(lg.dir.path().join("audit.jsonl")).unwrap() + &lg.log();
    for (_, token) in bad.iter().chain([("good", good.clone())].iter()) {
        let signature = token.rsplit('.').next().unwrap();
        assert!(signature.is_empty() || !all.contains(signature), "a token reached the audit or the log");
    }
    assert!(wait_until(std::time::Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some(), "{:?}", lg.minted_roles());
}

#[test]
fn mysql_clients_log_in_with_a_jwt_over_tls() {
    let keys = leasegate::devdb::TempDir::new("lg-jwt").unwrap();
    let k = keys.path().to_str().unwrap().to_string();
    tokens(&["keys", &k, "k1"]);
    // The key set from a JWKS URL (HTTPS, the test's own CA).
    let jwks = JwksServer::start(keys.path());
    let lg = support::my::MyLg::start(support::my::MySetup { extra_clients: jwt_config_with(&jwks.jwks_url_line()), ..Default::default() });
    let good = tokens(&["sign", &k, "k1", &claims("system:serviceaccount:shop:billing", "")]);
    // PyMySQL: caching_sha2_password full authentication inside TLS.
    let script = format!(
        "import os, pymysql\nc = pymysql.connect(host=os.environ['HOST'], port=int(os.environ['PORT']), user='billing', password='{good}', ssl={{'check_hostname': False, 'verify_mode': 0}})\ncur = c.cursor(); cur.execute('SELECT CURRENT_USER()'); print(cur.fetchone()[0])"
    );
    let out = lg.python(&script);
    assert!(out.status.success() && stdout(&out).starts_with("lgt_billing_"), "PyMySQL: {}{}", stdout(&out), stderr(&out));
    // The mariadb client over TLS.
    let out = lg.mariadb("billing", &good, &["--ssl", "--ssl-verify-server-cert=0"], "SELECT CURRENT_USER()");
    assert!(out.status.success() && stdout(&out).starts_with("lgt_billing_"), "mariadb: {}{}", stdout(&out), stderr(&out));
    // A client that picks mysql_clear_password itself (as LDAP/PAM setups configure it).
    let out = lg.mariadb(
        "billing",
        &good,
        &["--ssl", "--ssl-verify-server-cert=0", "--default-auth=mysql_clear_password"],
        "SELECT CURRENT_USER()",
    );
    assert!(out.status.success() && stdout(&out).starts_with("lgt_billing_"), "mysql_clear_password: {}{}", stdout(&out), stderr(&out));
    // Without TLS the token is refused as a server refuses a login.
    let out = lg.mariadb("billing", &good, &["--skip-ssl"], "SELECT 1");
    assert!(!out.status.success() && stderr(&out).contains("ERROR 1045"), "{}", stderr(&out));
    let expired =
        tokens(&["sign", &k, "k1", &claims("system:serviceaccount:shop:billing", "").replace(r#""exp_in": 300"#, r#""exp_in": -60"#)]);
    let out = lg.mariadb("billing", &expired, &["--ssl", "--ssl-verify-server-cert=0"], "SELECT 1");
    assert!(!out.status.success() && stderr(&out).contains("ERROR 1045"), "{}", stderr(&out));
    assert!(wait_until(std::time::Duration::from_secs(10), || lg.minted_users().is_empty()).is_some(), "{:?}", lg.minted_users());
}

#[test]
fn a_ci_job_runs_exec_with_its_oidc_token_file_and_no_stored_secret() {
    let keys = leasegate::devdb::TempDir::new("lg-jwt").unwrap();
    let k = keys.path().to_str().unwrap().to_string();
    tokens(&["keys", &k, "k1"]);
    let migrator =
        "\n[[role]]\nname = \"migrator\"\ndatabase = \"main\"\ndefault_ttl = \"10m\"\nmax_ttl = \"1h\"\nmember_of = [\"app_group\"]\n";
    let setup = Setup { admin_api: true, extra_roles: vec![("migrator".into(), migrator.into())], ..Default::default() };
    let lg = Lg::start_edited(setup, |text| {
        text + &jwt_config(keys.path())
            .replace("roles = [\"app\"]\njwt = { issuer = \"test\", claims", "roles = [\"migrator\"]\njwt = { issuer = \"test\", claims")
    });
    let token_file = keys.path().join("oidc-token");
    let ci_claims = claims("repo:acme/shop:ref:refs/heads/main", r#""repository": "acme/shop", "ref": "refs/heads/main""#);
    std::fs::write(&token_file, tokens(&["sign", &k, "k1", &ci_claims])).unwrap();
    let exec = |role: &str, sql: &str| {
        Command::new(env!("CARGO_BIN_EXE_leasegate"))
            .args(["exec", "--token-file"])
            .arg(&token_file)
            .args(["--role", role, "--", "psql", "-X", "-At", "-c", sql])
            .env("LEASEGATE_ADDR", lg.admin_addr.unwrap().to_string())
            .env_remove("LEASEGATE_TOKEN")
            .output()
            .unwrap()
    };
    // The pipeline step: a migration as a user of the job's own, revoked when it exits.
    let out = exec("migrator", "CREATE TABLE migrated(x int); SELECT current_user");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\nlgt_ci_job_migrator_"), "{}", stdout(&out));
    assert!(lg.minted_roles().is_empty(), "exec revokes at exit: {:?}", lg.minted_roles());
    // A role the token's client may not use: 403, nothing minted.
    let out = exec("app", "SELECT 1");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("may not use role"), "{}", stderr(&out));
    // The job's token sees its own leases only; the operator's token sees all.
    let listed = |token: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_leasegate"))
            .args(["leases", "list", "--json"])
            .env("LEASEGATE_ADDR", lg.admin_addr.unwrap().to_string())
            .env("LEASEGATE_TOKEN", token)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    };
    let ci_user = Command::new("psql").arg(lg.url("ci", "")).args(["-X", "-At", "-c", "SELECT pg_sleep(3)"]).spawn().unwrap();
    assert!(wait_until(std::time::Duration::from_secs(10), || lg.minted_roles().len() == 1).is_some());
    let job_token = std::fs::read_to_string(&token_file).unwrap();
    assert!(listed(&job_token).is_empty(), "the job sees another client's lease");
    assert_eq!(listed(ADMIN_TOKEN).len(), 1);
    // A token from nobody's issuer is no admin token.
    let forged = tokens(&["sign", &k, "k1", &ci_claims.replace(ISSUER, "https://evil.test.invalid")]);
    let out = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(["leases", "list"])
        .env("LEASEGATE_ADDR", lg.admin_addr.unwrap().to_string())
        .env("LEASEGATE_TOKEN", forged)
        .output()
        .unwrap();
    assert!(!out.status.success() && stderr(&out).contains("401"), "{}", stderr(&out));
    let _ = ci_user.wait_with_output();
}

/// A CA the test makes, and leaf certificates it signs for clients.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        TestCa { issuer: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A TLS server's certificate for `dns`; written as `<dir>/<file>.crt|.key`.
    fn server_cert(&self, dns: &str, dir: &std::path::Path, file: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![dns.to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, dns);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, dir, file)
    }

    /// An X.509 SVID: one spiffe:// URI SAN, client-auth usage; written as `<dir>/<file>.crt|.key`.
    fn svid(&self, spiffe_id: &str, dir: &std::path::Path, file: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, file);
        params.subject_alt_names = vec![rcgen::SanType::URI(rcgen::string::Ia5String::try_from(spiffe_id).unwrap())];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, dir, file)
    }

    fn sign(&self, params: rcgen::CertificateParams, dir: &std::path::Path, file: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (crt, k) = (dir.join(format!("{file}.crt")), dir.join(format!("{file}.key")));
        std::fs::write(&crt, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        (crt.display().to_string(), k.display().to_string())
    }
}

#[test]
fn spiffe_svids_log_in_and_a_replaced_ca_bundle_takes_effect_without_a_restart() {
    let certs = leasegate::devdb::TempDir::new("lg-svid").unwrap();
    let (ca1, ca2) = (TestCa::new("ca one"), TestCa::new("ca two"));
    let bundle = certs.path().join("client-ca.pem");
    std::fs::write(&bundle, ca1.pem()).unwrap();
    let id = "spiffe://test.example/ns/shop/sa/billing";
    let good = ca1.svid(id, certs.path(), "billing");
    let wrong = ca1.svid("spiffe://test.example/ns/shop/sa/other", certs.path(), "other");
    let foreign = ca2.svid(id, certs.path(), "foreign");
    let lg = LgProcess::start_edited(Setup { admin_api: true, ..Default::default() }, |text, _| {
        text.replace("mode = \"optional\" }", &format!("mode = \"optional\", client_ca = \"{}\" }}", bundle.display()))
            + &format!("\n[[client]]\nname = \"billing\"\nroles = [\"app\"]\ncert = {{ spiffe_id = \"{id}\" }}\n")
    });
    let port = lg.addr.port();
    let psql = |login: &str, (crt, key): &(String, String)| {
        Command::new("psql")
            .args(["-X", "-At", "-c", "SELECT current_user"])
            .arg(format!("host=localhost port={port} user={login} dbname=postgres sslmode=require sslcert={crt} sslkey={key}"))
            .env_remove("PGPASSWORD")
            .output()
            .unwrap()
    };
    let out = psql("billing", &good);
    assert!(out.status.success(), "the SVID logs in: {}", stderr(&out));
    assert!(stdout(&out).starts_with("lgt_billing_"), "{}", stdout(&out));
    let out = psql("billing", &wrong);
    assert!(!out.status.success() && stderr(&out).contains("certificate authentication failed"), "{}", stderr(&out));
    let out = psql("billing", &foreign);
    assert!(!out.status.success(), "a certificate of another CA logged in");
    // Without a certificate: told what is needed. A password client still needs none.
    let out = Command::new("psql")
        .args(["-X", "-At", "-c", "SELECT 1"])
        .arg(format!("host=localhost port={port} user=billing dbname=postgres sslmode=require"))
        .output()
        .unwrap();
    assert!(!out.status.success() && stderr(&out).contains("requires a valid client certificate"), "{}", stderr(&out));
    let out = psql_as(None, &lg.url("ci", "sslmode=require"), "SELECT 1");
    assert!(out.status.success(), "password client over TLS: {}", stderr(&out));

    // The CA rotates: the bundle file now holds only the second CA. No restart.
    std::fs::write(&bundle, ca2.pem()).unwrap();
    let switched = wait_until(std::time::Duration::from_secs(15), || psql("billing", &foreign).status.success());
    assert!(switched.is_some(), "the new CA bundle did not take effect: {}", lg.log());
    assert!(!psql("billing", &good).status.success(), "the removed CA still admits its certificates");

    let audit = audit_lines(lg.dir.path());
    let grant = audit.iter().find(|e| e["event"] == "granted" && e["client"] == "billing").unwrap();
    assert_eq!((grant["auth_method"].as_str(), grant["subject"].as_str()), (Some("cert"), Some(id)));
    assert!(wait_until(std::time::Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some(), "{:?}", lg.minted_roles());
}

#[test]
fn mysql_clients_log_in_with_a_spiffe_svid() {
    let certs = leasegate::devdb::TempDir::new("lg-svid").unwrap();
    let ca = TestCa::new("mysql ca");
    let bundle = certs.path().join("client-ca.pem");
    std::fs::write(&bundle, ca.pem()).unwrap();
    let id = "spiffe://test.example/ns/shop/sa/billing";
    let (crt, key) = ca.svid(id, certs.path(), "billing");
    let (wrong_crt, wrong_key) = ca.svid("spiffe://test.example/ns/shop/sa/other", certs.path(), "other");
    let lg = support::my::MyLg::start(support::my::MySetup {
        client_ca: Some(bundle),
        extra_clients: format!("\n[[client]]\nname = \"billing\"\nroles = [\"app\"]\ncert = {{ spiffe_id = \"{id}\" }}\n"),
        ..Default::default()
    });
    // The mariadb client with its certificate and no password.
    let out =
        lg.mariadb("billing", "", &["--ssl", "--ssl-verify-server-cert=0", "--ssl-cert", &crt, "--ssl-key", &key], "SELECT CURRENT_USER()");
    assert!(out.status.success() && stdout(&out).starts_with("lgt_billing_"), "mariadb: {}{}", stdout(&out), stderr(&out));
    // PyMySQL, the same certificate.
    let script = format!(
        "import os, pymysql\nc = pymysql.connect(host=os.environ['HOST'], port=int(os.environ['PORT']), user='billing', ssl={{'check_hostname': False, 'verify_mode': 0, 'cert': '{crt}', 'key': '{key}'}})\ncur = c.cursor(); cur.execute('SELECT CURRENT_USER()'); print(cur.fetchone()[0])"
    );
    let out = lg.python(&script);
    assert!(out.status.success() && stdout(&out).starts_with("lgt_billing_"), "PyMySQL: {}{}", stdout(&out), stderr(&out));
    // Another workload's SVID, and no certificate at all, are refused as a server refuses a login.
    let out =
        lg.mariadb("billing", "", &["--ssl", "--ssl-verify-server-cert=0", "--ssl-cert", &wrong_crt, "--ssl-key", &wrong_key], "SELECT 1");
    assert!(!out.status.success() && stderr(&out).contains("ERROR 1045"), "{}", stderr(&out));
    let out = lg.mariadb("billing", "", &["--ssl", "--ssl-verify-server-cert=0"], "SELECT 1");
    assert!(!out.status.success() && stderr(&out).contains("ERROR 1045"), "{}", stderr(&out));
    assert!(wait_until(std::time::Duration::from_secs(10), || lg.minted_users().is_empty()).is_some(), "{:?}", lg.minted_users());
}
