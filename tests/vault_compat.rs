//! Vault database roles paste in unchanged: the example statements of Vault's PostgreSQL and
//! MySQL/MariaDB plugin docs, verbatim, mint users that work against a private server (which
//! checks passwords) and are revoked; MariaDB's general log never sees a minted password; and
//! `import-vault-role` turns `vault read -format=json` output into a role that serves logins.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;
use support::my::{MyLg, MySetup, out};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_leasegate");

// developer.hashicorp.com/vault/docs/secrets/databases/postgresql, "Setup" step 3: the value of
// `creation_statements="…; \ <newline> GRANT …;"` once the shell has read it (the backslash-newline
// goes, the next line's indentation stays).
const VAULT_PG: &str = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';             GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";";
// developer.hashicorp.com/vault/docs/secrets/databases/mysql-maria (one page for MySQL and
// MariaDB): "Setup" step 3, and "Using wildcards in grant statements".
const VAULT_MYSQL: &str = "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';GRANT SELECT ON *.* TO '{{name}}'@'%';";
const VAULT_MYSQL_WILDCARD: &str =
    "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON `fooapp\\_%`.* TO '{{name}}'@'%';";
// developer.hashicorp.com/vault/api-docs/secret/databases, "Read Role" sample response, as
// `vault read -format=json database/roles/my-role` prints it (request metadata around `data`).
const VAULT_READ_ROLE: &str = r#"{
  "request_id": "0b4a3f1e-6c4d-2a51-87c4-8d1f3b2e9a10",
  "lease_id": "",
  "lease_duration": 0,
  "renewable": false,
  "data": {
    "creation_statements": [
      "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
      "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";"
    ],
    "db_name": "mysql",
    "default_ttl": 3600,
    "max_ttl": 86400,
    "renew_statements": [],
    "revocation_statements": [],
    "rollback_statements": []
  },
  "warnings": null
}"#;

// The revocation Vault's MySQL backend ran by default (builtin/logical/mysql, defaultRevocationSQL),
// as a list whose statements each end with `;`, the way Vault roles are often written.
const VAULT_MYSQL_REVOCATION: [&str; 2] = ["REVOKE ALL PRIVILEGES, GRANT OPTION FROM '{{name}}'@'%';", "DROP USER '{{name}}'@'%';"];

/// A `[[role]]` on database "main" running `creation` (and `revocation` when not empty), as
/// TOML multi-line literal strings, so the text is exactly the constants'.
fn role_with(name: &str, creation: &[&str], revocation: &[&str]) -> (String, String) {
    let list = |statements: &[&str]| statements.iter().map(|s| format!("'''{s}'''")).collect::<Vec<_>>().join(", ");
    let mut toml = format!(
        "\n[[role]]\nname = \"{name}\"\ndatabase = \"main\"\ndefault_ttl = \"1h\"\nmax_ttl = \"24h\"\ncreation_statements = [{}]\n",
        list(creation)
    );
    if !revocation.is_empty() {
        toml.push_str(&format!("revocation_statements = [{}]\n", list(revocation)));
    }
    (name.to_string(), toml)
}

fn role(name: &str, creation: &[&str]) -> (String, String) {
    role_with(name, creation, &[])
}

fn import(json: &str, args: &[&str]) -> std::process::Output {
    leasegate_with_stdin(&[&["import-vault-role"], args].concat(), json)
}

#[test]
fn vaults_postgres_example_and_an_imported_role_mint_working_users_that_are_revoked() {
    let imported = import(VAULT_READ_ROLE, &["--name", "vault_imported", "--database", "main"]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let lg = Lg::start(Setup {
        extra_roles: vec![role("vault_pg", &[VAULT_PG]), ("vault_imported".into(), format!("\n{}", stdout(&imported)))],
        // What Vault's statements grant, the admin holds WITH GRANT OPTION (docs/privileges.md).
        prepare: vec![format!("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {PG_ADMIN} WITH GRANT OPTION")],
        ..Setup::default()
    });
    for role in ["vault_pg", "vault_imported"] {
        let out = lg.psql(&lg.url(&format!("ci/{role}"), ""), "SELECT current_user, count(*) FROM items");
        assert!(out.status.success(), "{role}: {}", stderr(&out));
        let (user, rows) = stdout(&out).split_once('|').map(|(u, r)| (u.to_string(), r.to_string())).unwrap();
        assert!(user.starts_with(&format!("{PREFIX}ci_{role}_")), "{user}");
        assert_eq!(rows, "100", "the GRANT SELECT ON ALL TABLES of Vault's statement ran");
        assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some(), "{role}: revoked at close");
    }
}

#[test]
fn vaults_mysql_and_mariadb_examples_mint_working_users_with_no_password_in_the_general_log() {
    let lg = MyLg::start(MySetup {
        prepare: vec![
            "CREATE DATABASE fooapp_one; CREATE TABLE fooapp_one.t(x INT); INSERT INTO fooapp_one.t VALUES (42)".into(),
            // What Vault's statements grant, the admin holds WITH GRANT OPTION (docs/privileges.md).
            "GRANT SELECT ON *.* TO 'leasegate_admin'@'%' WITH GRANT OPTION".into(),
        ],
        extra_roles: vec![
            role_with("vault_mysql", &[VAULT_MYSQL], &VAULT_MYSQL_REVOCATION),
            role("vault_wildcard", &[VAULT_MYSQL_WILDCARD]),
        ],
        ..MySetup::default()
    });
    let general = lg.dir.path().join("general.log");
    std::fs::write(&general, "").unwrap();
    let uid = String::from_utf8(Command::new("id").args(["-u", "mysql"]).output().unwrap().stdout).unwrap();
    if let Ok(uid) = uid.trim().parse() {
        std::os::unix::fs::chown(&general, Some(uid), None).unwrap();
    }
    lg.db.root_sql(&format!("SET GLOBAL general_log_file = '{}'; SET GLOBAL general_log = 1", general.display())).unwrap();

    let mut passwords = Vec::new();
    for (role, allowed, denied) in [
        ("vault_mysql", "SELECT COUNT(*) FROM appdb.items", None),
        ("vault_wildcard", "SELECT x FROM fooapp_one.t", Some("SELECT COUNT(*) FROM appdb.items")),
    ] {
        // Hold the session open long enough to read the lease's password.
        let login = format!("ci/{role}");
        let child = Command::new("mariadb")
            .arg("--no-defaults")
            .args(["-h", "127.0.0.1", "-P", &lg.addr.port().to_string(), "-u", &login, "-N", "-B"])
            .args(["-e", &format!("SELECT CURRENT_USER(); {allowed}; SELECT SLEEP(1)")])
            .env("MYSQL_PWD", &lg.client_password)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let found = wait_until(Duration::from_secs(10), || lg.app.leases.list().iter().any(|l| l.identity.role == role));
        assert!(found.is_some(), "{role}: no lease");
        passwords.extend(lg.app.leases.list().iter().filter(|l| l.identity.role == role).map(|l| l.password.expose().to_string()));
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{role}: {}", out(&o));
        let lines: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
        assert!(lines[0].starts_with(&format!("{PREFIX}ci_{role}_")), "{role}: {lines:?}");
        assert!(lines[1] == "100" || lines[1] == "42", "{role}: {lines:?}");
        if let Some(sql) = denied {
            let o = lg.mariadb(&login, &lg.client_password, &[], sql);
            assert!(!o.status.success() && out(&o).contains("denied"), "{role} may read only fooapp\\_%: {}", out(&o));
        }
        assert!(wait_until(Duration::from_secs(10), || lg.minted_users().is_empty()).is_some(), "{role}: revoked at close");
    }
    lg.db.root_sql("SET GLOBAL general_log = 0").unwrap();
    let log = std::fs::read_to_string(&general).unwrap();
    assert!(log.contains("IDENTIFIED BY PASSWORD '*"), "Vault's statement reached the server hashed: {log}");
    assert!(!log.contains("IDENTIFIED BY '"), "no IDENTIFIED BY '<value>' in the general log: {log}");
    passwords.sort();
    passwords.dedup();
    assert_eq!(passwords.len(), 2, "one lease per held session");
    for p in &passwords {
        assert!(!log.contains(p.as_str()), "a minted password is in the general log");
        assert!(!captured_logs().contains(p.as_str()), "a minted password is in leasegate's log");
    }
}

#[test]
fn check_config_accepts_vaults_mysql_statement_and_says_what_it_rewrote() {
    let dir = leasegate::devdb::TempDir::new("leasegate-vault").unwrap();
    let config = loadable_example_config(dir.path())
        .replace("\"CREATE USER '{{name}}'@'%' IDENTIFIED BY PASSWORD '{{password}}'\"", &format!("'''{VAULT_MYSQL}'''"));
    assert!(config.contains(VAULT_MYSQL));
    let path = dir.path().join("vault.toml");
    std::fs::write(&path, config).unwrap();
    let o = Command::new(BIN).arg("check-config").arg(&path).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("role[2].creation_statements[0]: rewrote IDENTIFIED BY '{{password}}'"), "{text}");
    assert!(text.ends_with(": ok"), "{text}");
}
