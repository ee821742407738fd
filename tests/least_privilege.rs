//! The admin with exactly the privileges docs/privileges.md lists (every end-to-end test runs
//! with such an admin: tests/support), and `leasegate doctor`, which checks them and prints
//! what to grant.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use std::process::{Command, Output};
use std::time::Duration;
use support::my::{MyLg, MySetup};
use support::*;

fn doctor(config: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leasegate")).args(["doctor", "--config"]).arg(config).output().unwrap()
}

/// The statements doctor printed under "missing:", without their `-- database` note.
fn printed_grants(out: &Output) -> Vec<String> {
    let text = stdout(out);
    let Some((_, missing)) = text.split_once("missing:") else { return vec![] };
    missing.lines().skip(1).filter_map(|l| l.trim().rsplit_once("  -- ").map(|(sql, _)| sql.to_string())).collect()
}

#[test]
fn the_document_lists_the_grants_the_tests_give() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/privileges.md")).unwrap();
    for grant in PG_ADMIN_GRANTS {
        let documented = format!("{};", grant.replace(PG_ADMIN, "leasegate_admin"));
        assert!(doc.contains(&documented), "docs/privileges.md lacks {documented}");
    }
    for grant in leasegate::devdb::mariadb::ADMIN_GRANTS {
        let documented = format!("{};", grant.replace("{admin}", "'leasegate_admin'@'%'"));
        assert!(doc.contains(&documented), "docs/privileges.md lacks {documented}");
    }
}

#[test]
fn postgres_doctor_passes_the_documented_admin_and_repairs_a_bare_one() {
    let lg = Lg::start(Setup::default());
    assert_eq!(lg.admin(&format!("SELECT rolsuper FROM pg_roles WHERE rolname = '{PG_ADMIN}'")), "f");
    let out = doctor(&lg.dir.path().join("leasegate.toml"));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("all privileges held"), "{}", stdout(&out));
    drop(lg);

    // An admin that can only log in: doctor names each missing privilege, and what it prints
    // is enough.
    let lg = Lg::start(Setup {
        prepare: vec!["CREATE ROLE bare LOGIN PASSWORD 'bare-admin-pw'".into()],
        admin: Some(("bare".into(), "bare-admin-pw".into())),
        ..Setup::default()
    });
    let config = lg.dir.path().join("leasegate.toml");
    let out = doctor(&config);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let grants = printed_grants(&out);
    for want in
        ["ALTER ROLE \"bare\" CREATEROLE;", "GRANT pg_signal_backend TO \"bare\";", "GRANT \"app_group\" TO \"bare\" WITH ADMIN OPTION;"]
    {
        assert!(grants.iter().any(|g| g == want), "{want} not in {grants:?}");
    }
    for grant in &grants {
        lg.admin(grant);
    }
    let out = doctor(&config);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn mysql_doctor_passes_the_documented_admin() {
    let lg = MyLg::start(MySetup::default());
    let out = doctor(&lg.dir.path().join("leasegate.toml"));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    for line in ["ok       CREATE USER", "ok       PROCESS", "ok       CONNECTION ADMIN", "ok       app_group WITH ADMIN OPTION"] {
        assert!(stdout(&out).contains(line), "{line}: {}", stdout(&out));
    }
}

/// Without PROCESS the processlist shows no one else's sessions, so a revoked user's sessions
/// would live on: leasegate mints nothing until the admin holds it, and doctor says what to grant.
#[test]
fn mysql_without_process_mints_nothing_until_granted() {
    let lg = MyLg::start(MySetup { prepare: vec!["REVOKE PROCESS ON *.* FROM 'leasegate_admin'@'%'".into()], ..Default::default() });
    let o = lg.mariadb("ci", &lg.client_password, &[], "SELECT 1");
    assert!(!o.status.success(), "a user was minted without PROCESS");
    assert!(lg.minted_users().is_empty(), "{:?}", lg.minted_users());
    assert!(captured_logs().contains("lacks PROCESS"), "the log says why");
    let config = lg.dir.path().join("leasegate.toml");
    let out = doctor(&config);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let grants = printed_grants(&out);
    assert_eq!(grants, vec!["GRANT PROCESS ON *.* TO 'leasegate_admin'@'%';".to_string()]);
    lg.db.root_sql(&grants[0]).unwrap();
    let o = lg.mariadb("ci", &lg.client_password, &[], "SELECT 1");
    assert!(o.status.success(), "{}", my::out(&o));
}

/// A minted user that is the DEFINER of a view and a procedure it made is still dropped
/// (MariaDB leaves such objects behind; MySQL ≥ 8.0.22 needs the privilege doctor names).
#[test]
fn a_definer_of_views_and_routines_is_still_dropped() {
    let lg = MyLg::start(MySetup::default());
    let sql = "CREATE VIEW appdb.made_by_lease AS SELECT 1 AS one; \
               CREATE PROCEDURE appdb.proc_by_lease() SELECT 1; SELECT CURRENT_USER()";
    let o = lg.mariadb("ci", &lg.client_password, &[], sql);
    assert!(o.status.success(), "{}", my::out(&o));
    let definer = lg.db.root_sql("SELECT DEFINER FROM information_schema.VIEWS WHERE TABLE_NAME = 'made_by_lease'").unwrap();
    assert!(definer.contains(my::PREFIX), "the view's definer is the minted user: {definer}");
    assert!(wait_until(Duration::from_secs(10), || lg.minted_users().is_empty()).is_some(), "{:?}", lg.minted_users());
}
