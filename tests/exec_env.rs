//! `leasegate exec` and `creds` set what each ecosystem's tools read: the mariadb client runs
//! with no flags at all and is its minted user (MYSQL_* plus a private option file, removed when
//! the command exits); psql runs from `DATABASE_URL` alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use support::my::{MyLg, MySetup, out};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_leasegate");

fn api_env(addr: std::net::SocketAddr) -> [(&'static str, String); 2] {
    [("LEASEGATE_ADDR", addr.to_string()), ("LEASEGATE_TOKEN", ADMIN_TOKEN.to_string())]
}

/// `leasegate exec --role app -- <command…>` with nothing of the caller's MySQL settings.
fn exec(addr: std::net::SocketAddr, command: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(["exec", "--role", "app", "--"])
        .args(command)
        .envs(api_env(addr))
        .env_remove("MYSQL_PWD")
        .env_remove("MYSQL_HOST")
        .env_remove("MARIADB_HOME")
        .env_remove("MYSQL_HOME")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_mariadb_client_runs_under_exec_with_no_flags_and_is_its_minted_user() {
    let lg = MyLg::start(MySetup { admin_api: true, ..MySetup::default() });
    let admin = lg.admin_addr.unwrap();
    // No -u, -h, -P, -p: everything comes from the environment exec sets.
    let o = exec(admin, &["mariadb"], "SELECT CURRENT_USER(), COUNT(*) FROM appdb.items;\n");
    assert!(o.status.success(), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let row = text.lines().nth(1).unwrap_or_default();
    assert!(row.starts_with(PREFIX) && row.ends_with("\t100"), "the minted user, with its member_of grants: {text}");
    assert!(lg.minted_users().is_empty(), "revoked when the command exited: {:?}", lg.minted_users());

    // The option file is private while the command runs and gone afterwards.
    let o = exec(admin, &["sh", "-c", "stat -c %a \"$MARIADB_HOME/my.cnf\"; echo \"$MARIADB_HOME\"; echo \"$DATABASE_URL\""], "");
    assert!(o.status.success(), "{}", out(&o));
    let lines: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines[0], "600", "{lines:?}");
    assert!(!std::path::Path::new(&lines[1]).exists(), "the option file's directory is removed at exit");
    assert!(lines[2].starts_with(&format!("mysql://{PREFIX}")) && lines[2].ends_with(&format!("@{}", lg.db.addr())), "{lines:?}");

    // creds prints the same variables for a shell.
    let o = Command::new(BIN).args(["creds", "app"]).envs(api_env(admin)).output().unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for var in ["MYSQL_HOST=", "MYSQL_TCP_PORT=", "MYSQL_PWD=", "DATABASE_URL=mysql://"] {
        assert!(text.contains(&format!("export {var}")), "{var}: {text}");
    }
    let id = text.lines().find_map(|l| l.strip_prefix("export LEASEGATE_LEASE_ID=")).unwrap();
    assert!(Command::new(BIN).args(["leases", "revoke", id]).envs(api_env(admin)).status().unwrap().success());
    assert!(lg.minted_users().is_empty());
}

#[test]
fn psql_connects_from_database_url_alone_under_exec() {
    let lg = Lg::start(Setup { admin_api: true, ..Setup::default() });
    let script = "env -u PGHOST -u PGPORT -u PGUSER -u PGPASSWORD -u PGDATABASE psql \"$DATABASE_URL\" -Atc 'SELECT current_user'";
    let o = Command::new(BIN)
        .args(["exec", "--role", "app", "--", "sh", "-c", script])
        .envs(api_env(lg.admin_addr.unwrap()))
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).starts_with(PREFIX), "{}", stdout(&o));
    assert!(lg.minted_roles().is_empty());
}
