//! The lease engine end to end: crash recovery, orphan sweep, revocation retries, identity
//! scope, max-TTL rollover without cutting transactions, renewal, backpressure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

fn role(name: &str, body: &str) -> (String, String) {
    (name.to_string(), format!("\n[[role]]\nname = \"{name}\"\ndatabase = \"main\"\nmember_of = [\"app_group\"]\n{body}\n"))
}

fn journal_rows(path: &std::path::Path) -> Vec<(String, String, Option<String>)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", path.display())).await.unwrap();
        sqlx::query_as("SELECT db_user, state, end_reason FROM leases").fetch_all(&mut conn).await.unwrap()
    })
}

#[test]
fn kill_9_with_50_sessions_then_restart_revokes_every_user() {
    let mut lg = LgProcess::start(Setup::default());
    let children: Vec<_> = (0..50)
        .map(|_| psql_cmd(&lg.url("ci", "sslmode=disable")).args(["-Atc", "SELECT pg_sleep(60)"]).stderr(Stdio::null()).spawn().unwrap())
        .collect();
    assert!(wait_until(Duration::from_secs(30), || lg.minted_roles().len() == 50).is_some(), "{} roles", lg.minted_roles().len());
    let users = lg.minted_roles();
    lg.kill9();
    // The backends of the killed proxy's sessions live on until their clients go; the users too.
    assert_eq!(lg.minted_roles().len(), 50, "kill -9 ran no clean-up");
    let restarted = Instant::now();
    lg.spawn();
    let gone = wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty());
    assert!(gone.is_some(), "still there after 10 s: {:?}\n{}", lg.minted_roles(), lg.log());
    assert!(restarted.elapsed() < Duration::from_secs(10));
    // The journal records the end just after DROP ROLE commits.
    let journal = lg.dir.path().join("journal.db");
    let all_ended = || journal_rows(&journal).iter().filter(|(u, s, _)| users.contains(u) && s == "ended").count() == users.len();
    assert!(wait_until(Duration::from_secs(10), all_ended).is_some());
    let rows = journal_rows(&journal);
    for user in &users {
        let row = rows.iter().find(|(u, _, _)| u == user).unwrap_or_else(|| panic!("{user} not in the journal"));
        assert_eq!((row.1.as_str(), row.2.as_deref()), ("ended", Some("recovered")), "{user}");
    }
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn orphans_with_the_prefix_are_dropped_and_others_never_touched() {
    let lg = Lg::start(Setup {
        prepare: vec![
            format!("CREATE ROLE {PREFIX}left_behind LOGIN"),
            marked_as_ours(&format!("{PREFIX}left_behind")),
            // What it made goes to its role's group (REASSIGN OWNED), as at any revocation.
            format!("CREATE TABLE made_by_orphan(x int); ALTER TABLE made_by_orphan OWNER TO {PREFIX}left_behind"),
            "CREATE ROLE keep_me LOGIN".into(),
        ],
        database_extra: "sweep_orphans = true".into(),
        ..Setup::default()
    });
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some(), "{:?}", lg.minted_roles());
    assert_eq!(lg.admin("SELECT count(*) FROM pg_roles WHERE rolname = 'keep_me'"), "1");
    assert_eq!(lg.admin("SELECT tableowner FROM pg_tables WHERE tablename = 'made_by_orphan'"), "app_group", "kept, not dropped");
    assert!(captured_logs().contains(&format!("dropping orphan user database=main user={PREFIX}left_behind")));
}

#[test]
fn dry_run_only_logs_orphans() {
    let lg = Lg::start(Setup {
        prepare: vec![format!("CREATE ROLE {PREFIX}dry_orphan LOGIN"), marked_as_ours(&format!("{PREFIX}dry_orphan"))],
        database_extra: "sweep_orphans = \"dry-run\"".into(),
        ..Setup::default()
    });
    let logged = wait_until(Duration::from_secs(10), || {
        captured_logs().contains(&format!("orphan user found (dry-run: not dropped) database=main user={PREFIX}dry_orphan"))
    });
    assert!(logged.is_some());
    assert_eq!(lg.minted_roles(), vec![format!("{PREFIX}dry_orphan")]);
}

#[test]
fn revocation_survives_the_server_going_away_and_coming_back() {
    let mut lg = Lg::start(Setup::default());
    let child = psql_cmd(&lg.url("ci", "")).args(["-Atc", "SELECT pg_sleep(60)"]).stderr(Stdio::null()).spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().len() == 1).is_some());
    let user = lg.minted_roles().remove(0);
    lg.pg.stop(); // the session dies with the server; its revocation now fails
    let _ = child.wait_with_output();
    let retried = wait_until(Duration::from_secs(10), || {
        captured_logs().lines().any(|l| l.contains("revocation failed; will retry") && l.contains(&user))
    });
    assert!(retried.is_some(), "no retry logged");
    let lease_id = lg.app.leases.list().iter().find(|l| l.user == user).map(|l| l.id.clone()).unwrap();
    assert_eq!(lg.app.leases.get(&lease_id).unwrap().state().as_str(), "revoke_failed");
    lg.pg.restart(&Default::default()).unwrap();
    let gone = wait_until(Duration::from_secs(20), || lg.minted_roles().is_empty());
    assert!(gone.is_some(), "{:?}", lg.minted_roles());
    assert!(wait_until(Duration::from_secs(10), || lg.app.leases.get(&lease_id).is_none()).is_some());
}

#[test]
fn identity_scope_shares_one_user_until_idle_grace_passes() {
    let lg = Lg::start(Setup {
        extra_roles: vec![role("shared", "default_ttl = \"1h\"\nmax_ttl = \"2h\"\nscope = \"identity\"\nidle_grace = \"2s\"")],
        ..Setup::default()
    });
    let users = concurrent_users(&lg.url("ci/shared", ""), 5);
    assert_eq!(users.len(), 1, "five connections, one user: {users:?}");
    let closed = Instant::now();
    let other = stdout(&lg.psql(&lg.url("other/shared", ""), "SELECT current_user"));
    assert!(!users.contains(&other) && other.starts_with(PREFIX), "another client gets another user: {other}");
    std::thread::sleep(Duration::from_millis(1000));
    assert!(lg.minted_roles().iter().any(|r| users.contains(r)), "kept during idle_grace");
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some(), "{:?}", lg.minted_roles());
    assert!(closed.elapsed() >= Duration::from_secs(2));
}

#[test]
fn max_ttl_waits_for_the_open_transaction_then_rolls_over() {
    let lg = Lg::start(Setup {
        extra_roles: vec![role("short", "default_ttl = \"2s\"\nmax_ttl = \"2s\"\nhard_close_grace = \"20s\"")],
        ..Setup::default()
    });
    let script = lg.dir.path().join("tx.sql");
    std::fs::write(
        &script,
        "BEGIN;\nSELECT current_user;\nSELECT pg_sleep(3);\nINSERT INTO items VALUES (1000, 'written after max TTL');\nCOMMIT;\nSELECT pg_sleep(0.5);\nSELECT 'still here';\n",
    )
    .unwrap();
    let start = Instant::now();
    let out = psql_cmd(&lg.url("ci/short", "")).args(["-At", "-f"]).arg(&script).output().unwrap();
    let first_user = stdout(&out).lines().find(|l| l.starts_with(PREFIX)).unwrap().to_string();
    // The transaction that spanned max TTL committed; the session then closed at its idle point.
    assert_eq!(lg.admin("SELECT name FROM items WHERE id = 1000"), "written after max TTL", "{}", stderr(&out));
    assert!(!stdout(&out).contains("still here"), "closed at the first idle point after max TTL");
    assert!(stderr(&out).contains("max TTL"), "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(10));
    let next = stdout(&lg.psql(&lg.url("ci/short", ""), "SELECT current_user"));
    assert!(next.starts_with(PREFIX) && next != first_user, "a new connection gets a new user");
    assert!(wait_until(Duration::from_secs(10), || !lg.minted_roles().contains(&first_user)).is_some(), "old user dropped");
}

#[test]
fn renewal_keeps_a_session_past_default_ttl_and_moves_valid_until() {
    let lg = Lg::start(Setup { extra_roles: vec![role("renewing", "default_ttl = \"3s\"\nmax_ttl = \"60s\"")], ..Setup::default() });
    let child = psql_cmd(&lg.url("ci/renewing", ""))
        .args(["-Atc", "SELECT pg_sleep(5.5)", "-c", "SELECT current_user"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().len() == 1).is_some());
    let user = lg.minted_roles().remove(0);
    let valid_until = || lg.admin(&format!("SELECT extract(epoch FROM rolvaliduntil)::bigint FROM pg_roles WHERE rolname = '{user}'"));
    let first: i64 = valid_until().parse().unwrap();
    std::thread::sleep(Duration::from_millis(2600)); // renewal at 2/3 of 3 s
    let second: i64 = valid_until().parse().unwrap();
    assert!(second > first, "VALID UNTIL moved: {first} -> {second}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the session outlived default_ttl: {}", stderr(&out));
    assert_eq!(stdout(&out).lines().last(), Some(user.as_str()));
    assert!(captured_logs().lines().any(|l| l.contains("lease renewed") && l.contains(&user)));
}

#[test]
fn max_leases_answers_too_many_connections() {
    let lg = Lg::start(Setup {
        extra_roles: vec![role("capped", "default_ttl = \"1h\"\nmax_ttl = \"2h\"\nmax_leases = 2")],
        ..Setup::default()
    });
    // The holders outlast a slow start on a loaded machine: the third login must meet them.
    let holders: Vec<_> = (0..2)
        .map(|_| psql_cmd(&lg.url("ci/capped", "")).args(["-Atc", "SELECT pg_sleep(8)"]).stdout(Stdio::null()).spawn().unwrap())
        .collect();
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().len() == 2).is_some());
    let started = Instant::now();
    let out = lg.psql(&lg.url("ci/capped", "sslmode=disable"), "SELECT 1");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("sorry, too many clients already"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(2), "answered at once, no hang");
    for h in holders {
        h.wait_with_output().unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some());
    assert!(lg.psql(&lg.url("ci/capped", ""), "SELECT 1").status.success(), "slots free again");
}

#[test]
fn an_identity_lease_that_was_idle_at_its_renewal_is_renewed_when_a_session_rejoins() {
    let lg = Lg::start(Setup {
        extra_roles: vec![role("pooled", "default_ttl = \"3s\"\nmax_ttl = \"60s\"\nscope = \"identity\"\nidle_grace = \"20s\"")],
        ..Setup::default()
    });
    let first = lg.psql(&lg.url("ci/pooled", ""), "SELECT current_user");
    assert!(first.status.success());
    let user = stdout(&first);
    // Idle through the renewal point (2 s) …
    std::thread::sleep(Duration::from_millis(2500));
    // … then a session that runs past the original expiry (3 s) must not be cut.
    let out = lg.psql(&lg.url("ci/pooled", ""), "SELECT current_user, pg_sleep(2)");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with(&user), "same user for the identity");
}
