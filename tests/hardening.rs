//! Bad input and hostile clients: silent connections that would hold every file descriptor
//! (on a database listener and on the admin port) while legitimate clients keep being served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits (bounded) until the peer closes `socket`; true when it did.
async fn closed_by_peer(socket: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 64];
    matches!(tokio::time::timeout(within, socket.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

/// With `max_handshakes = 4`, silent connections beyond the bound are closed (turned away, or
/// pushing out an older one that has waited more than a second: on a loaded machine the eight
/// may take that long to arrive), and a real client still logs in.
#[test]
fn silent_connections_never_keep_a_real_client_out() {
    // A long handshake timeout: the silent ones must stay until pushed out, not time out.
    let lg = Lg::start(Setup { database_extra: "max_handshakes = 4".into(), handshake_timeout: "60s", ..Setup::default() });
    let mut silent = lg.block_on(async {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(TcpStream::connect(lg.addr).await.unwrap());
        }
        v
    });
    // Waits for all at once (each up to 3 s); the sockets come back for the next count.
    let closed = |silent: &mut Vec<TcpStream>| {
        lg.block_on(async {
            let tasks: Vec<_> = silent
                .drain(..)
                .map(|mut s| {
                    tokio::spawn(async move {
                        let c = closed_by_peer(&mut s, Duration::from_secs(3)).await;
                        (s, c)
                    })
                })
                .collect();
            let mut n = 0;
            for t in tasks {
                let (s, c) = t.await.unwrap();
                n += usize::from(c);
                silent.push(s);
            }
            n
        })
    };
    assert_eq!(closed(&mut silent), 4, "four of eight silent connections are closed, four hold their places");
    std::thread::sleep(Duration::from_millis(1200));
    let out = lg.psql(&lg.url("ci", "sslmode=disable"), "SELECT 1");
    assert!(out.status.success(), "a real client got in: {}", stderr(&out));
    assert_eq!(closed(&mut silent), 5, "the real client pushed out the oldest silent one");
}

/// The admin port cuts off a client that never finishes its request headers, and keeps
/// answering others meanwhile.
#[test]
fn the_admin_port_cuts_off_a_slowloris() {
    let lg = Lg::start(Setup { admin_api: true, ..Setup::default() });
    let admin = lg.admin_addr.unwrap();
    lg.block_on(async {
        let mut slow = TcpStream::connect(admin).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: leasegate\r\nX-Slow: ").await.unwrap();
        let started = Instant::now();
        let mut fine = TcpStream::connect(admin).await.unwrap();
        fine.write_all(b"GET /healthz HTTP/1.1\r\nHost: leasegate\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        fine.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer}");
        assert!(closed_by_peer(&mut slow, Duration::from_secs(15)).await, "the slow client was never cut off");
        assert!(started.elapsed() < Duration::from_secs(12), "cut off after {:?}", started.elapsed());
    });
}

/// pg_hba.conf for the private server: minted users (members of app_group) connecting over
/// TLS are asked `method`; everyone else SCRAM.
fn hba(method: &str) -> Option<String> {
    Some(format!("local all all trust\nhostssl all +app_group all {method}\nhost all all all scram-sha-256\n"))
}

fn setup(method: &str, upstream_tls: &str, database_extra: &str) -> Setup {
    Setup {
        pg: leasegate::devdb::postgres::PgOptions { tls: true, hba: hba(method), ..Default::default() },
        upstream_tls: upstream_tls.into(),
        database_extra: database_extra.into(),
        ..Setup::default()
    }
}

const REQUIRE: &str = "{ mode = \"require\" }";
const VERIFY_FULL: &str = "{ mode = \"verify-full\", ca = \"{ca}\", server_name = \"localhost\" }";

/// A server asking for the minted password in cleartext gets it only inside TLS that verified
/// the server: with `require` (encrypted, anyone could be at the other end) it is refused.
#[test]
fn a_cleartext_password_goes_only_to_a_verified_server() {
    let lg = Lg::start(setup("password", REQUIRE, ""));
    let out = lg.psql(&lg.url("ci", "sslmode=disable"), "SELECT 1");
    assert!(!out.status.success(), "logged in with a cleartext password over unverified TLS");
    assert!(stderr(&out).contains("verify-full"), "{}", stderr(&out));
    drop(lg);
    let lg = Lg::start(setup("password", VERIFY_FULL, ""));
    let out = lg.psql(&lg.url("ci", "sslmode=disable"), "SELECT current_user");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with(PREFIX), "{}", stdout(&out));
}

/// A server that asks minted users for nothing (trust) checks nobody: refused unless the
/// config says so.
#[test]
fn a_server_that_asks_no_password_is_refused_unless_allowed() {
    let lg = Lg::start(setup("trust", VERIFY_FULL, ""));
    let out = lg.psql(&lg.url("ci", "sslmode=disable"), "SELECT 1");
    assert!(!out.status.success(), "accepted a trust server");
    assert!(stderr(&out).contains("allow_upstream_trust"), "{}", stderr(&out));
    drop(lg);
    let lg = Lg::start(setup("trust", VERIFY_FULL, "allow_upstream_trust = true"));
    let out = lg.psql(&lg.url("ci", "sslmode=disable"), "SELECT 1");
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Credentials handed out through the API, used straight against the server in another
/// database to create objects: revocation finds that database (pg_shdepend) and drops the user.
#[test]
fn revoking_api_credentials_cleans_every_database_the_user_wrote_to() {
    let lg = Lg::start(Setup {
        admin_api: true,
        prepare: vec!["CREATE DATABASE appdb".into(), "GRANT CREATE, TEMPORARY ON DATABASE appdb TO app_group".into()],
        ..Setup::default()
    });
    let client = leasegate::admin::client::Client { addr: lg.admin_addr.unwrap().to_string(), token: lg.admin_token.clone() };
    let creds: serde_json::Value = serde_json::from_str(&client.call("POST", "/v1/creds/app", None).unwrap()).unwrap();
    let (user, password) = (creds["user"].as_str().unwrap(), creds["password"].as_str().unwrap());
    let url = format!("postgres://{user}:{password}@{}:{}/appdb?sslmode=disable", creds["host"].as_str().unwrap(), creds["port"]);
    let sql = "CREATE SCHEMA mine; CREATE TABLE mine.t(x int); SELECT lo_create(0)";
    let out = psql_cmd(&url).args(["-Atc", sql]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = creds["lease_id"].as_str().unwrap();
    let revoked = client.call("POST", &format!("/v1/leases/{id}/revoke"), None);
    assert!(revoked.is_ok(), "{revoked:?}");
    assert!(lg.minted_roles().is_empty(), "the user is gone: {:?}", lg.minted_roles());
}

/// A `member_of` group dropped under a lease makes REASSIGN OWNED fail with 42704 ("role does
/// not exist"): that is not "the user is gone". The lease stays revoke_failed and the user is
/// still there to be dealt with, never silently left behind as "ended".
#[test]
fn a_missing_group_is_not_a_missing_user() {
    let lg = Lg::start(Setup { admin_api: true, ..Setup::default() });
    let client = leasegate::admin::client::Client { addr: lg.admin_addr.unwrap().to_string(), token: lg.admin_token.clone() };
    let creds: serde_json::Value = serde_json::from_str(&client.call("POST", "/v1/creds/app", None).unwrap()).unwrap();
    lg.admin("DROP OWNED BY app_group; DROP ROLE app_group");
    let id = creds["lease_id"].as_str().unwrap();
    let revoked = client.call("POST", &format!("/v1/leases/{id}/revoke"), None);
    assert!(revoked.is_err(), "reported revoked: {revoked:?}");
    assert_eq!(lg.minted_roles(), vec![creds["user"].as_str().unwrap().to_string()], "the user is still there");
    let lease: serde_json::Value = serde_json::from_str(&client.call("GET", &format!("/v1/leases/{id}"), None).unwrap()).unwrap();
    assert_eq!(lease["state"], "revoke_failed", "{lease}");
    // With the group back, the retried revocation goes through.
    lg.admin(&format!("CREATE ROLE app_group NOLOGIN; GRANT app_group TO {PG_ADMIN} WITH ADMIN OPTION"));
    assert!(wait_until(Duration::from_secs(20), || lg.minted_roles().is_empty()).is_some(), "retried to the end");
}

/// The orphan sweep trusts the prefix, but never touches a superuser, the admin or a
/// `member_of` group that happen to carry it; a real orphan is still dropped.
#[test]
fn the_orphan_sweep_spares_superusers_and_groups_that_carry_the_prefix() {
    let group_role = (
        "grouped".to_string(),
        format!(
            "\n[[role]]\nname = \"grouped\"\ndatabase = \"main\"\ndefault_ttl = \"1h\"\nmax_ttl = \"2h\"\nmember_of = [\"{PREFIX}group\"]\n"
        ),
    );
    let lg = Lg::start(Setup {
        database_extra: "sweep_orphans = true".into(),
        extra_roles: vec![group_role],
        prepare: vec![
            format!("CREATE ROLE {PREFIX}super SUPERUSER LOGIN"),
            format!("CREATE ROLE {PREFIX}group NOLOGIN"),
            format!("CREATE ROLE {PREFIX}orphan LOGIN"),
            marked_as_ours(&format!("{PREFIX}super")),
            marked_as_ours(&format!("{PREFIX}group")),
            marked_as_ours(&format!("{PREFIX}orphan")),
            // Carrying the prefix, but minted by another instance, or by no leasegate at all.
            format!("CREATE ROLE {PREFIX}sibling LOGIN"),
            format!("COMMENT ON ROLE {PREFIX}sibling IS '{}'", leasegate::provision::mark("another-instance", "app")),
            format!("CREATE ROLE {PREFIX}stranger LOGIN"),
        ],
        ..Setup::default()
    });
    assert!(
        wait_until(Duration::from_secs(10), || !lg.minted_roles().contains(&format!("{PREFIX}orphan"))).is_some(),
        "the orphan was dropped: {:?}",
        lg.minted_roles()
    );
    let left = lg.minted_roles();
    for spared in ["super", "group", "sibling", "stranger"] {
        assert!(left.contains(&format!("{PREFIX}{spared}")), "{spared}: {left:?}");
    }
}

/// A server certificate made by `openssl x509 -req` (X.509 v1, the MySQL manual's recipe):
/// `prefer` and `require` encrypt without judging it, as libpq and the mysql client do, on the
/// admin connections and on every session; `verify-ca` says why it cannot check it.
#[test]
fn an_x509_v1_server_certificate_serves_prefer_and_require() {
    let (cert, ca) = openssl_v1_cert();
    for mode in ["prefer", "require"] {
        let mut setup = setup("scram-sha-256", &format!("{{ mode = \"{mode}\" }}"), "");
        setup.pg.cert = Some(cert.clone());
        let lg = Lg::start(setup);
        let out = lg.psql(&lg.url("ci", "sslmode=disable"), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        assert_eq!(stdout(&out), "t", "{mode}: the upstream session is encrypted");
    }
    let dir = leasegate::devdb::TempDir::new("leasegate-v1ca").unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    let mut setup = setup("scram-sha-256", &format!("{{ mode = \"verify-ca\", ca = \"{}/ca.pem\" }}", dir.path().display()), "");
    setup.pg.cert = Some(cert);
    let lg = Lg::start(setup);
    let out = lg.psql(&lg.url("ci", "sslmode=disable"), "SELECT 1");
    assert!(!out.status.success(), "verify-ca accepted a certificate it cannot check");
    assert!(captured_logs().contains("X.509 v1"), "the log says why");
}

#[test]
fn an_x509_v1_server_certificate_serves_mysql_logins() {
    let lg = my::MyLg::start(my::MySetup {
        upstream_tls: Some("{ mode = \"require\" }".into()),
        upstream_cert: Some(openssl_v1_cert().0),
        ..Default::default()
    });
    let o = lg.mariadb("ci", &lg.client_password, &[], "SHOW SESSION STATUS LIKE 'Ssl_cipher'");
    assert!(o.status.success(), "{}", my::out(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(!text.split_whitespace().nth(1).unwrap_or_default().is_empty(), "the upstream session is encrypted: {text}");
}

/// Two leasegates with the same config and their own journals (two replicas before the shared
/// store), the orphan sweep on: starting the second leaves the first's live user and its
/// session alone (it used to drop the user and kill the session: 57P01).
#[test]
fn a_second_instance_with_its_own_journal_never_sweeps_the_firsts_users() {
    let lg = Lg::start(Setup { database_extra: "sweep_orphans = true".into(), ..Setup::default() });
    let session = psql_cmd(&lg.url("ci", ""))
        .args(["-Atc", "SELECT pg_sleep(6)", "-c", "SELECT 'survived'"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().len() == 1).is_some(), "the session's user exists");
    let user = &lg.minted_roles()[0];
    let mark = lg.admin(&format!("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = '{user}'"));
    assert_eq!(mark, leasegate::provision::mark(INSTANCE, "app"), "the mint marked the user with its instance and role");
    let text = std::fs::read_to_string(lg.dir.path().join("leasegate.toml"))
        .unwrap()
        .replace("journal.db", "second-journal.db")
        .replace(&format!("instance = \"{INSTANCE}\""), "instance = \"second-instance\"");
    let mut second = InProcess::start(&text);
    let looked = wait_until(Duration::from_secs(15), || {
        captured_logs().lines().any(|l| l.contains("orphan sweep done") && l.contains("instance=second-instance"))
    });
    assert!(looked.is_some(), "the second instance's sweep ran");
    assert_eq!(lg.minted_roles().len(), 1, "the first instance's user is still there");
    let out = session.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).ends_with("survived"), "{}", stdout(&out));
    second.shutdown();
}

/// Once the listener has seen the server's greeting, a MySQL client is greeted from it: a
/// connection that never logs in holds no server connection (it used to hold one each until
/// its handshake timed out), and its connection id is one of leasegate's own.
#[test]
fn silent_mysql_clients_hold_no_server_connection() {
    use std::io::Read;
    let lg = my::MyLg::start(my::MySetup { database_extra: "handshake_timeout = \"30s\"".into(), ..Default::default() });
    let o = lg.mariadb("ci", &lg.client_password, &[], "SELECT 1");
    assert!(o.status.success(), "{}", my::out(&o));
    let unauthenticated = || {
        let sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'unauthenticated user'";
        lg.db.root_sql(sql).unwrap().trim().parse::<u32>().unwrap()
    };
    let mut silent: Vec<std::net::TcpStream> = (0..20).map(|_| std::net::TcpStream::connect(lg.addr).unwrap()).collect();
    for s in &mut silent {
        // The greeting: length, sequence id, protocol 10, version, NUL, then the connection id.
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).unwrap();
        let version_end = buf[5..n].iter().position(|&b| b == 0).unwrap() + 5;
        let id = u32::from_le_bytes(buf[version_end + 1..version_end + 5].try_into().unwrap());
        assert!(id >= 1 << 31, "greeted with a virtual connection id, not the server's ({id})");
    }
    assert_eq!(unauthenticated(), 0, "silent clients hold server connections");
    // Logins still work; inside the session the thread id is the server's own.
    let o = lg.mariadb("ci", &lg.client_password, &[], "SELECT CONNECTION_ID() < 2147483648");
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "1", "{}", my::out(&o));
    drop(silent);
}
