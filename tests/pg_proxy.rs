//! End to end through leasegate with real clients (psql, pgbench) against a private
//! scram-sha-256 PostgreSQL: minting, dropping, TLS, cancel, COPY, TTL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

#[test]
fn psql_gets_a_fresh_role_that_is_dropped_after_disconnect() {
    let lg = Lg::start(Setup::default());
    let child =
        psql_cmd(&lg.url("ci", "")).args(["-Atc", "SELECT current_user; SELECT pg_sleep(1.5)"]).stdout(Stdio::piped()).spawn().unwrap();
    // While the session is open its role exists and is the session's current_user.
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().len() == 1).is_some(), "a role is minted");
    let role = lg.minted_roles().remove(0);
    assert!(role.starts_with(PREFIX), "{role}");
    let in_session = lg.admin(&format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'"));
    assert_eq!(in_session, "1");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let finished = Instant::now();
    assert_eq!(stdout(&out).lines().next(), Some(role.as_str()), "current_user is the minted role");
    let gone = wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty());
    assert!(gone.is_some(), "role still exists: {:?}", lg.minted_roles());
    assert!(finished.elapsed() <= Duration::from_secs(1), "role dropped after {:?}", finished.elapsed());
}

#[test]
fn queries_run_and_the_role_name_is_explicit_or_default() {
    let lg = Lg::start(Setup::default());
    for login in ["ci", "ci/app"] {
        let out = lg.psql(&lg.url(login, ""), "SELECT count(*) FROM items");
        assert!(out.status.success(), "{login}: {}", stderr(&out));
        assert_eq!(stdout(&out), "100");
    }
}

#[test]
fn ten_concurrent_connections_get_ten_distinct_roles() {
    let lg = Lg::start(Setup::default());
    let users = concurrent_users(&lg.url("ci", ""), 10);
    assert_eq!(users.len(), 10, "{users:?}");
    assert!(users.iter().all(|u| u.starts_with(PREFIX)));
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some());
}

#[test]
fn wrong_password_unknown_client_and_foreign_role_fail_alike() {
    let lg = Lg::start(Setup::default());
    let wrong = lg.url("ci", "").replace(&lg.client_password, "not-the-password");
    for url in [wrong, lg.url("nobody", ""), lg.url("ci/not_a_role", ""), lg.url("other/app2", "")] {
        let out = lg.psql(&url, "SELECT 1");
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(err.contains("FATAL:  password authentication failed for user"), "{url}: {err}");
    }
    assert!(lg.minted_roles().is_empty(), "no role is minted for a failed login");
}

#[test]
fn tls_modes_and_channel_binding() {
    let lg = Lg::start(Setup::default());
    let cases = [("sslmode=require", true), ("sslmode=disable", false), ("sslmode=require&channel_binding=require", true)];
    for (params, tls) in cases {
        let out = psql_cmd(&lg.url("ci", params)).args(["-At", "-c", "SELECT current_user", "-c", "\\conninfo"]).output().unwrap();
        assert!(out.status.success(), "{params}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(text.starts_with(PREFIX), "{params}: {text}");
        assert_eq!(text.contains("SSL connection (protocol: TLSv1.3"), tls, "{params}: {text}");
    }
    // channel_binding=require cannot be met without TLS.
    let out = lg.psql(&lg.url("ci", "sslmode=disable&channel_binding=require"), "SELECT 1");
    assert!(!out.status.success());
}

#[test]
fn a_listener_that_requires_tls_refuses_plain_clients() {
    let lg = Lg::start(Setup { client_tls_mode: "required", ..Setup::default() });
    let out = lg.psql(&lg.url("ci", "sslmode=disable"), "SELECT 1");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("requires TLS"), "{}", stderr(&out));
    let out = lg.psql(&lg.url("ci", "sslmode=require"), "SELECT 1");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn cancel_request_stops_a_running_query() {
    let lg = Lg::start(Setup::default());
    for params in ["sslmode=disable", "sslmode=require"] {
        let mut child = psql_cmd(&lg.url("ci", params)).args(["-Atc", "SELECT pg_sleep(30)"]).stderr(Stdio::piped()).spawn().unwrap();
        // Wait until the query really runs on the server.
        let running = wait_until(Duration::from_secs(10), || {
            lg.admin("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'") == "1"
        });
        assert!(running.is_some(), "the query never started");
        // As a person or a timeout would, not within MIN_REQUEST_AGE (10 ms) of the statement:
        // a cancel that close is taken for one meant for the next statement and not forwarded.
        std::thread::sleep(Duration::from_millis(50));
        let sent = Instant::now();
        // psql turns SIGINT into a CancelRequest on a new connection.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait().unwrap();
        let took = sent.elapsed();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(!status.success());
        assert!(err.contains("canceling statement due to user request"), "{params}: {err}\n{}", captured_logs());
        assert!(took < Duration::from_secs(2), "cancel took {took:?}");
    }
}

#[test]
fn a_forged_cancel_request_is_not_relayed() {
    use tokio::io::AsyncWriteExt;
    let lg = Lg::start(Setup::default());
    let child = psql_cmd(&lg.url("ci", "")).args(["-Atc", "SELECT pg_sleep(3)"]).stdout(Stdio::piped()).spawn().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || lg.admin("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3)'") == "1")
            .is_some()
    );
    let pid: u32 = lg.admin("SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3)'").parse().unwrap();
    // The right pid with a guessed secret: leasegate must drop it.
    lg.block_on(async {
        let mut s = tokio::net::TcpStream::connect(lg.addr).await.unwrap();
        let mut pkt = bytes::BytesMut::new();
        leasegate::pg::message::encode_cancel_request(&leasegate::pg::message::CancelKey { pid, secret: vec![0, 0, 0, 1] }, &mut pkt);
        s.write_all(&pkt).await.unwrap();
        let mut buf = [0u8; 1];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
    });
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the query was cancelled by a forged key: {}", stderr(&out));
    // Refused by leasegate itself, not by the server.
    assert!(captured_logs().contains(&format!("cancel request for no live session ignored pid={pid}")), "not refused by leasegate");
}

#[test]
fn pgbench_select_only_simple_and_prepared() {
    let lg = Lg::start(Setup { prepare: vec![], ..Setup::default() });
    let init = std::process::Command::new(lg.pg.bindir().join("pgbench"))
        .args(["-i", "-q", "-s", "1"])
        .arg(lg.pg.url("postgres"))
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    lg.admin("GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_group");
    for mode in ["simple", "prepared"] {
        let out = std::process::Command::new(lg.pg.bindir().join("pgbench"))
            .args(["-S", "-M", mode, "-c", "4", "-j", "2", "-T", "3", "-n"])
            .arg(lg.url("ci", "sslmode=disable"))
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(out.status.success(), "{mode}: {text} {}", stderr(&out));
        assert!(text.contains("number of failed transactions: 0 "), "{mode}: {text}");
        let tx: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split('/').next()?.trim().parse().ok())
            .unwrap();
        assert!(tx > 100, "{mode}: only {tx} transactions");
    }
}

#[test]
fn copy_100k_rows_each_way() {
    let lg = Lg::start(Setup::default());
    let data = lg.dir.path().join("in.csv");
    let mut text = String::new();
    for i in 0..100_000 {
        text.push_str(&format!("{i},row {i} {}\n", "x".repeat(i % 50)));
    }
    std::fs::write(&data, &text).unwrap();
    let out_file = lg.dir.path().join("out.csv");
    let script = format!(
        "CREATE TABLE copied(id int, name text);\n\\copy copied FROM '{}' WITH (FORMAT csv)\n\\copy (SELECT * FROM copied ORDER BY id) TO '{}' WITH (FORMAT csv)\nSELECT count(*) FROM copied;",
        data.display(),
        out_file.display()
    );
    let script_file = lg.dir.path().join("copy.sql");
    std::fs::write(&script_file, &script).unwrap();
    let out = psql_cmd(&lg.url("ci", "sslmode=require")).args(["-v", "ON_ERROR_STOP=1", "-At", "-f"]).arg(&script_file).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).ends_with("100000"), "{}", stdout(&out));
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), text, "COPY TO returns exactly what COPY FROM sent");
    // The table the lease created survives its user (reassigned to the admin user).
    assert_eq!(lg.admin("SELECT count(*) FROM copied"), "100000");
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some());
}

#[test]
fn a_role_that_owns_a_table_and_a_temp_table_is_still_dropped() {
    let lg = Lg::start(Setup::default());
    let out = lg.psql(
        &lg.url("ci", ""),
        "CREATE TABLE owned_by_lease(x int); CREATE TEMP TABLE scratch(y int); INSERT INTO scratch VALUES (1); GRANT SELECT ON owned_by_lease TO app_group; SELECT current_user",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let user = stdout(&out).lines().last().unwrap().to_string();
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some(), "{:?}", lg.minted_roles());
    // What it created goes to its group (never to the admin user, where a SECURITY DEFINER
    // function would run with admin rights).
    assert_eq!(lg.admin("SELECT tableowner FROM pg_tables WHERE tablename = 'owned_by_lease'"), "app_group");
    assert!(!user.is_empty());
}

#[test]
fn a_lease_at_max_ttl_closes_its_session_and_drops_its_role() {
    // hard_close_grace = 0: no waiting for an idle point (the lease-engine tests cover that).
    let lg = Lg::start(Setup { ttl: ("2s", "2s"), role_extra: "hard_close_grace = \"0s\"".into(), ..Setup::default() });
    let start = Instant::now();
    let out = lg.psql(&lg.url("ci", ""), "SELECT pg_sleep(20)");
    let closed = start.elapsed();
    assert!(!out.status.success());
    assert!(closed < Duration::from_secs(3), "session closed after {closed:?}");
    assert!(stderr(&out).contains("terminating connection"), "{}", stderr(&out));
    assert!(wait_until(Duration::from_secs(10) - closed.min(Duration::from_secs(3)), || lg.minted_roles().is_empty()).is_some());
    assert!(start.elapsed() <= Duration::from_secs(3), "role dropped after {:?}", start.elapsed());
}

#[test]
fn the_minted_password_reaches_no_log() {
    let mut setup = Setup::default();
    setup.pg.settings = vec![("log_statement".into(), "all".into()), ("log_connections".into(), "on".into())];
    let lg = Lg::start(setup);
    let child = psql_cmd(&lg.url("ci", "")).args(["-Atc", "SELECT pg_sleep(1)"]).spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || !lg.app.leases.list().is_empty()).is_some());
    let passwords: Vec<String> = lg.app.leases.list().iter().map(|l| l.password.expose().to_string()).collect();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some());
    let server_log = lg.pg.log();
    assert!(server_log.contains("CREATE ROLE"), "log_statement=all records the mint");
    let ours = captured_logs();
    assert!(ours.contains("lease granted"));
    for pw in &passwords {
        assert_eq!(pw.len(), 40);
        assert!(!ours.contains(pw.as_str()), "leasegate logged a minted password");
        assert!(!server_log.contains(pw.as_str()), "the server logged a minted password");
    }
    assert!(!ours.contains(&lg.client_password), "leasegate logged the client password");
}

/// The minted session's own TLS state, seen by the server.
fn upstream_ssl(lg: &Lg, params: &str) -> Result<String, String> {
    let out = lg.psql(&lg.url("ci", params), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    if out.status.success() { Ok(stdout(&out)) } else { Err(stderr(&out)) }
}

#[test]
fn upstream_tls_modes_follow_libpq() {
    for (mode, want) in [
        ("{ mode = \"disable\" }", Ok("f")),
        ("{ mode = \"prefer\" }", Ok("t")),
        ("{ mode = \"require\" }", Ok("t")),
        ("{ mode = \"verify-ca\", ca = \"{ca}\", server_name = \"not-the-name\" }", Ok("t")),
        ("{ mode = \"verify-full\", ca = \"{ca}\" }", Ok("t")),
        ("{ mode = \"verify-full\", ca = \"{ca}\", server_name = \"not-the-name\" }", Err("08006")),
    ] {
        let mut setup = Setup { upstream_tls: mode.to_string(), ..Setup::default() };
        setup.pg.tls = true;
        let lg = Lg::start(setup);
        match (upstream_ssl(&lg, ""), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{mode}"),
            (Err(err), Err(_)) => assert!(err.contains("TLS") || err.contains("could not"), "{mode}: {err}"),
            (got, want) => panic!("{mode}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn upstream_require_fails_against_a_server_without_tls() {
    let lg = Lg::start(Setup { upstream_tls: "{ mode = \"require\" }".into(), ..Setup::default() });
    let err = upstream_ssl(&lg, "").unwrap_err();
    assert!(err.contains("does not support TLS") || err.contains("could not"), "{err}");
}

#[test]
fn shutdown_closes_sessions_and_drops_every_role() {
    let mut lg = Lg::start(Setup::default());
    let children: Vec<_> =
        (0..3).map(|_| psql_cmd(&lg.url("ci", "")).args(["-Atc", "SELECT pg_sleep(30)"]).stderr(Stdio::piped()).spawn().unwrap()).collect();
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().len() == 3).is_some());
    let start = Instant::now();
    lg.shutdown();
    assert!(start.elapsed() < Duration::from_secs(10), "shutdown took {:?}", start.elapsed());
    assert!(lg.minted_roles().is_empty(), "{:?}", lg.minted_roles());
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(!out.status.success());
    }
}

#[test]
fn a_createrole_admin_that_is_not_superuser_mints_and_drops() {
    let lg = Lg::start(Setup {
        prepare: vec![
            "CREATE ROLE lg_admin LOGIN CREATEROLE PASSWORD 'createrole-only-pw'".into(),
            "GRANT app_group TO lg_admin WITH ADMIN OPTION".into(),
        ],
        admin: Some(("lg_admin".into(), "createrole-only-pw".into())),
        ..Setup::default()
    });
    assert_eq!(lg.admin("SELECT rolsuper FROM pg_roles WHERE rolname = 'lg_admin'"), "f");
    let out = lg.psql(&lg.url("ci", ""), "CREATE TABLE made_by_lease(x int); CREATE TEMP TABLE t(y int); SELECT current_user");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some(), "{:?}", lg.minted_roles());
    assert_eq!(lg.admin("SELECT tableowner FROM pg_tables WHERE tablename = 'made_by_lease'"), "app_group");
}

#[test]
fn vault_style_creation_statements_with_a_createrole_admin_are_still_revoked() {
    let vault_role = "\n[[role]]\nname = \"vaulty\"\ndatabase = \"main\"\ndefault_ttl = \"1h\"\nmax_ttl = \"2h\"\ncreation_statements = [\n  \"CREATE ROLE \\\"{{name}}\\\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'\",\n  \"GRANT SELECT ON items TO \\\"{{name}}\\\"\",\n]\n";
    let lg = Lg::start(Setup {
        prepare: vec![
            "CREATE ROLE lg_admin LOGIN CREATEROLE PASSWORD 'createrole-only-pw'".into(),
            "GRANT SELECT ON items TO lg_admin WITH GRANT OPTION".into(),
        ],
        admin: Some(("lg_admin".into(), "createrole-only-pw".into())),
        extra_roles: vec![("vaulty".into(), vault_role.into())],
        ..Setup::default()
    });
    let out = lg.psql(&lg.url("ci/vaulty", ""), "SELECT count(*) FROM items");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "100");
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some(), "{:?}", lg.minted_roles());
    assert!(!captured_logs().lines().any(|l| l.contains("revocation failed") && l.contains("lgt_ci_vaulty")));
}
