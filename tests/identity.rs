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
