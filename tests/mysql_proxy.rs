//! MySQL/MariaDB through leasegate, end to end: a private MariaDB that checks passwords, the
//! real mariadb client and PyMySQL, minted users checked in mysql.user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use std::time::Duration;
use support::my::{MyLg, MySetup, PREFIX, out};
use support::wait_until;

#[test]
fn the_mariadb_client_gets_a_minted_user_that_is_dropped_on_disconnect() {
    let lg = MyLg::start(MySetup::default());
    let o = lg.mariadb("ci", &lg.client_password, &["appdb"], "SELECT CURRENT_USER(); SELECT COUNT(*) FROM items");
    assert!(o.status.success(), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with(&format!("{PREFIX}ci_app_")), "{text}");
    assert_eq!(lines.next(), Some("100"), "multi-statement results");
    // Gone from mysql.user within a second of the disconnect.
    assert!(wait_until(Duration::from_secs(1), || lg.minted_users().is_empty()).is_some(), "{:?}", lg.minted_users());
}

#[test]
fn a_wrong_password_gets_1045_like_a_server_says_it() {
    let lg = MyLg::start(MySetup::default());
    for login in ["ci", "nobody", "ci/nosuchrole"] {
        let o = lg.mariadb(login, "wrong", &[], "SELECT 1");
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ERROR 1045 (28000): Access denied for user"), "{login}: {err}");
    }
    assert!(lg.minted_users().is_empty());
}
