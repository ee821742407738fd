//! The private MariaDB the MySQL work (issue 4) will test against: it starts, checks
//! passwords over TCP, and goes away. No leasegate yet.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

use leasegate::devdb::mariadb::PrivateMariaDb;
use std::process::Command;

fn tcp_query(db: &PrivateMariaDb, password: &str, sql: &str) -> std::process::Output {
    Command::new("mariadb")
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &db.port().to_string(), "-u", &db.admin_user, "-N", "-B", "-e", sql])
        .env("MYSQL_PWD", password)
        .output()
        .unwrap()
}

#[test]
fn a_private_mariadb_checks_passwords_over_tcp() {
    let mut db = PrivateMariaDb::start().unwrap();
    let out = tcp_query(&db, db.admin_password.expose(), "SELECT CURRENT_USER()");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "leasegate_admin@%");
    let wrong = tcp_query(&db, "not-the-password", "SELECT 1");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("1045"), "{}", String::from_utf8_lossy(&wrong.stderr));
    let port = db.port();
    db.stop();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "stopped");
}
