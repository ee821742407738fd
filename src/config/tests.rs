use super::*;

const VERIFIER: &str =
    "SCRAM-SHA-256$4096:DKVTcV5s8hmRrSqjjJWA7g==$4HfhFV48avpfwjIbmNWH2bLOpQx1UKX+TORTafJ63hw=:/tQM0M+1LTKV62iQT03QS1MHJExw0scfFH0VRRz8obk=";

fn minimal() -> String {
    format!(
        r#"
[[database]]
name = "main"
kind = "postgres"
listen = "127.0.0.1:6432"
upstream = "127.0.0.1:5432"
admin_user = "admin"
admin_password_env = "PG_ADMIN"
name_prefix = "lg_"

[[role]]
name = "app_ro"
database = "main"
default_ttl = "1h"
max_ttl = "24h"

[[client]]
name = "billing"
password = "{VERIFIER}"
roles = ["app_ro"]
"#
    )
}

#[test]
fn parses_a_minimal_config_with_defaults() {
    let c = Config::from_toml_str(&minimal()).unwrap();
    let db = &c.databases[0];
    assert_eq!(db.admin_database, "postgres");
    assert_eq!(db.handshake_timeout, std::time::Duration::from_secs(10));
    assert_eq!(db.admin_password, Some(SecretSource::Env("PG_ADMIN".into())));
    assert_eq!(c.roles[0].scope, Scope::Connection);
    assert_eq!(c.roles[0].idle_grace, std::time::Duration::from_secs(30));
}

#[test]
fn the_example_config_parses() {
    let text = include_str!("../../config/leasegate.example.toml");
    let c = Config::from_toml_str(text).unwrap();
    assert!(!c.databases.is_empty());
}

#[test]
fn unknown_keys_are_errors() {
    let text = minimal().replace("name_prefix = \"lg_\"", "name_prefix = \"lg_\"\nname_prefx = 1");
    let e = Config::from_toml_str(&text).unwrap_err().to_string();
    assert!(e.contains("name_prefx"), "{e}");
}

#[test]
fn reports_every_problem_with_its_path() {
    let text = minimal()
        .replace("max_ttl = \"24h\"", "max_ttl = \"1m\"")
        .replace("roles = [\"app_ro\"]", "roles = [\"nope\"]")
        .replace("name_prefix = \"lg_\"", "name_prefix = \"LG\"");
    let Err(ConfigError::Invalid(problems)) = Config::from_toml_str(&text) else { panic!() };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"role[0].max_ttl"), "{paths:?}");
    assert!(paths.contains(&"client[0].roles[0]"), "{paths:?}");
    assert!(paths.contains(&"database[0].name_prefix"), "{paths:?}");
}

#[test]
fn a_cleartext_client_password_is_refused() {
    let text = minimal().replace(VERIFIER, "hunter2");
    let e = Config::from_toml_str(&text).unwrap_err().to_string();
    assert!(e.contains("not a password value as `leasegate hash-password` prints it"), "{e}");
    assert!(!e.contains("hunter2"), "the error must not echo the secret: {e}");
}

#[test]
fn secret_keys_are_exclusive() {
    let text = minimal().replace("admin_password_env = \"PG_ADMIN\"", "admin_password_env = \"X\"\nadmin_password_file = \"f\"");
    assert!(Config::from_toml_str(&text).is_err());
}

#[test]
fn mysql_listeners_take_vaults_password_template_and_refuse_unknown_plugins() {
    let mysql = minimal().replace("kind = \"postgres\"", "kind = \"mysql\"");
    let c = Config::from_toml_str(&mysql).unwrap();
    assert_eq!(c.databases[0].admin_database, "mysql");
    let bad = mysql
        .replace(
            "max_ttl = \"24h\"",
            "max_ttl = \"24h\"\ncreation_statements = [\"CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'\"]",
        )
        .replace("name_prefix = \"lg_\"", "name_prefix = \"lg_\"\nclient_auth_plugin = \"sha256_password\"");
    let Err(ConfigError::Invalid(problems)) = Config::from_toml_str(&bad) else { panic!() };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    // Vault's IDENTIFIED BY '{{password}}' is rewritten at mint (mysql/vault.rs), not refused.
    assert_eq!(paths, ["database[0].client_auth_plugin"]);
    let hashed = mysql.replace(
        "max_ttl = \"24h\"",
        "max_ttl = \"24h\"\ncreation_statements = [\"CREATE USER '{{name}}'@'%' IDENTIFIED BY PASSWORD '{{password}}'\"]",
    );
    assert!(Config::from_toml_str(&hashed).is_ok());
    let pg_plugin = minimal().replace("name_prefix = \"lg_\"", "name_prefix = \"lg_\"\nclient_auth_plugin = \"mysql_native_password\"");
    assert!(Config::from_toml_str(&pg_plugin).is_err(), "client_auth_plugin is for MySQL listeners");
}

/// `check-config` (load_files) and `serve` (admin_token) refuse the same short token.
#[test]
fn a_short_admin_token_is_refused_by_check_config_too() {
    let dir = std::env::temp_dir().join(format!("leasegate-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("admin.token");
    let text = format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n{}", token.display(), minimal());
    let config = Config::from_toml_str(&text).unwrap();
    std::fs::write(&token, "short-token\n").unwrap();
    assert!(
        config.load_files().iter().any(|p| p.path == "admin.token_file" && p.message.contains("at least 16")),
        "{:?}",
        config.load_files()
    );
    assert!(config.admin_token().is_err());
    std::fs::write(&token, "a-long-enough-admin-token\n").unwrap();
    assert!(!config.load_files().iter().any(|p| p.path == "admin.token_file"));
    assert_eq!(config.admin_token().unwrap().unwrap().expose(), "a-long-enough-admin-token");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A TTL no clock can add is refused by the config, not found by a panic at the first grant.
#[test]
fn an_absurd_ttl_is_a_config_problem() {
    let text = minimal().replace("max_ttl = \"24h\"", "max_ttl = \"300000000000y\"");
    let Err(ConfigError::Invalid(problems)) = Config::from_toml_str(&text) else { panic!("accepted") };
    assert!(problems.iter().any(|p| p.path == "role[0].max_ttl" && p.message.contains("100 years")), "{problems:?}");
}

#[test]
fn the_journal_instance_is_a_plain_name() {
    let with = |instance: &str| format!("[journal]\npath = \"j.db\"\ninstance = \"{instance}\"\n{}", minimal());
    assert_eq!(Config::from_toml_str(&with("pod-abc_1.x")).unwrap().journal_instance(), Some("pod-abc_1.x"));
    for bad in ["", "has space", "quote'd", &"x".repeat(65)] {
        let Err(ConfigError::Invalid(problems)) = Config::from_toml_str(&with(bad)) else { panic!("{bad:?} accepted") };
        assert!(problems.iter().any(|p| p.path == "journal.instance"), "{bad:?}: {problems:?}");
    }
}

#[test]
fn the_journal_is_a_file_or_a_shared_store_never_both() {
    let with = |keys: &str| format!("[journal]\n{keys}\n{}", minimal());
    let store = |keys: &str| Config::from_toml_str(&with(keys)).unwrap().journal_store();
    assert_eq!(Config::from_toml_str(&minimal()).unwrap().journal_store(), JournalStore::Sqlite("leasegate.db".into()));
    assert_eq!(store("path = \"j.db\""), JournalStore::Sqlite("j.db".into()));
    assert_eq!(store("url_file = \"u\""), JournalStore::Postgres(SecretSource::File("u".into())));
    assert_eq!(store("url_env = \"LG_STORE\""), JournalStore::Postgres(SecretSource::Env("LG_STORE".into())));
    let parsed = Config::from_toml_str(&with("url_env = \"X\"\ntakeover_after = \"10s\"")).unwrap();
    assert_eq!(parsed.journal_takeover_after(), std::time::Duration::from_secs(10));
    for bad in ["path = \"j.db\"\nurl_file = \"u\"", "url_file = \"u\"\nurl_env = \"X\""] {
        let Err(ConfigError::Invalid(problems)) = Config::from_toml_str(&with(bad)) else { panic!("{bad:?} accepted") };
        assert!(problems.iter().any(|p| p.path == "journal"), "{bad:?}: {problems:?}");
    }
    for bad in ["1s", "2h"] {
        let text = with(&format!("url_env = \"X\"\ntakeover_after = \"{bad}\""));
        let Err(ConfigError::Invalid(problems)) = Config::from_toml_str(&text) else { panic!("{bad:?} accepted") };
        assert!(problems.iter().any(|p| p.path == "journal.takeover_after"), "{bad:?}: {problems:?}");
    }
}

#[test]
fn a_store_url_that_is_not_postgres_is_a_file_problem() {
    let text = format!("[journal]\nurl_env = \"LG_TEST_STORE_URL_NOT_PG\"\n{}", minimal());
    let config = Config::from_toml_str(&text).unwrap();
    // SAFETY (test): no other test reads or writes this variable.
    unsafe { std::env::set_var("LG_TEST_STORE_URL_NOT_PG", "mysql://x@y/z") };
    let problems = config.load_files();
    assert!(problems.iter().any(|p| p.path == "journal.url_env" && p.message.contains("postgres://")), "{problems:?}");
    // SAFETY (test): as above.
    unsafe { std::env::remove_var("LG_TEST_STORE_URL_NOT_PG") };
}

#[test]
fn an_instance_id_that_replicas_would_copy_is_a_sweep_hazard() {
    let sweeping = minimal().replace("name_prefix = \"lg_\"", "name_prefix = \"lg_\"\nsweep_orphans = true");
    let hazards = |journal: &str, db: &str| Config::from_toml_str(&format!("[journal]\n{journal}\n{db}")).unwrap().sweep_hazards();
    assert!(hazards("path = \"j.db\"", &sweeping).is_empty(), "a generated id per journal is safe");
    assert!(hazards("path = \"j.db\"\ninstance = \"a\"", &minimal()).is_empty(), "no sweep, nothing to drop");
    assert_eq!(hazards("path = \"j.db\"\ninstance = \"a\"", &sweeping).len(), 1);
    assert!(hazards("url_env = \"X\"", &sweeping).is_empty(), "a generated id per start is safe");
    assert_eq!(hazards("url_env = \"X\"\ninstance = \"a\"", &minimal()).len(), 1, "a named instance fences its twin");
}
