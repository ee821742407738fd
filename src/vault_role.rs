//! `leasegate import-vault-role`: the JSON that `vault read -format=json database/roles/NAME`
//! prints, turned into a `[[role]]` table, so moving a role from Vault is one command. Pure:
//! text in, TOML out; `main.rs` reads the file or stdin.
//!
//! The statements are copied as they are: they are Vault templates already (`{{name}}`,
//! `{{username}}`, `{{password}}`, `{{expiration}}`), and a MySQL `IDENTIFIED BY
//! '{{password}}'` is rewritten at mint time by `mysql/vault.rs`. What leasegate cannot take
//! (a credential type other than a password, a role with nothing to run) is an error here,
//! not a table that `check-config` refuses later.

use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::fmt::Write as _;
use std::time::Duration;

/// What Vault falls back to for a TTL of 0: the mount's default, which is the system default
/// of 768h (32 days) unless tuned. leasegate needs a number, so the import writes that one.
const VAULT_SYSTEM_TTL: Duration = Duration::from_secs(768 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input is not JSON of the expected shape.
    #[error("not the JSON of `vault read -format=json database/roles/NAME`: {0}")]
    Json(#[from] serde_json::Error),
    /// The role runs no creation statement: Vault would refuse it too.
    #[error("the Vault role has no creation_statements")]
    NoCreation,
    /// `credential_type` is one leasegate does not mint (it mints passwords).
    #[error("credential_type {0:?}: leasegate mints password users only")]
    CredentialType(String),
    /// The `--name` or database given cannot name a leasegate role.
    #[error("{what} {value:?}: must be non-empty and contain no '/'")]
    BadName { what: &'static str, value: String },
    /// Neither `data.db_name` nor `--database` says which `[[database]]` the role is for.
    #[error("the JSON has no data.db_name: pass --database")]
    NoDatabase,
}

/// `vault read -format=json` wraps the role in `data`; the bare object (`.data` piped through
/// jq) is taken too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Wrapped { data: VaultRole },
    Bare(VaultRole),
}

#[derive(Deserialize)]
struct VaultRole {
    db_name: Option<String>,
    #[serde(default, deserialize_with = "statements")]
    creation_statements: Vec<String>,
    #[serde(default, deserialize_with = "statements")]
    revocation_statements: Vec<String>,
    #[serde(default, deserialize_with = "statements")]
    rollback_statements: Vec<String>,
    #[serde(default, deserialize_with = "statements")]
    renew_statements: Vec<String>,
    #[serde(default, deserialize_with = "ttl")]
    default_ttl: Duration,
    #[serde(default, deserialize_with = "ttl")]
    max_ttl: Duration,
    credential_type: Option<String>,
}

/// The `[[role]]` table for the Vault role `name`, for `database` (default: its `db_name`).
pub fn import(json: &str, name: &str, database: Option<&str>) -> Result<String, ImportError> {
    let role = match serde_json::from_str::<Input>(json)? {
        Input::Wrapped { data } | Input::Bare(data) => data,
    };
    if let Some(kind) = role.credential_type.as_deref().filter(|k| *k != "password") {
        return Err(ImportError::CredentialType(kind.to_string()));
    }
    if role.creation_statements.iter().all(|s| s.trim().is_empty()) {
        return Err(ImportError::NoCreation);
    }
    let database = database.map(str::to_string).or(role.db_name.clone()).ok_or(ImportError::NoDatabase)?;
    for (what, value) in [("--name", name), ("database", database.as_str())] {
        if value.is_empty() || value.contains('/') {
            return Err(ImportError::BadName { what, value: value.to_string() });
        }
    }
    let (default_ttl, max_ttl, note) = ttls(role.default_ttl, role.max_ttl);
    let mut out = format!("# Imported from the Vault role {name:?} (vault read -format=json database/roles/{name}).\n");
    out.push_str(&note);
    out.push_str("[[role]]\n");
    let _ = writeln!(out, "name = {}", quote(name));
    let _ = writeln!(out, "database = {}", quote(&database));
    let _ = writeln!(out, "default_ttl = \"{}\"", go_duration(default_ttl));
    let _ = writeln!(out, "max_ttl = \"{}\"", go_duration(max_ttl));
    for (key, list) in [
        ("creation_statements", &role.creation_statements),
        ("revocation_statements", &role.revocation_statements),
        ("rollback_statements", &role.rollback_statements),
        ("renew_statements", &role.renew_statements),
    ] {
        if !list.is_empty() {
            let _ = writeln!(out, "{key} = [");
            for s in list {
                let _ = writeln!(out, "  {},", quote(s));
            }
            out.push_str("]\n");
        }
    }
    Ok(out)
}

/// Vault's 0 means "the mount's default": write the system default, and say so.
fn ttls(default_ttl: Duration, max_ttl: Duration) -> (Duration, Duration, String) {
    let max = if max_ttl.is_zero() { VAULT_SYSTEM_TTL.max(default_ttl) } else { max_ttl };
    let default = if default_ttl.is_zero() { max.min(VAULT_SYSTEM_TTL) } else { default_ttl };
    let note = if default_ttl.is_zero() || max_ttl.is_zero() {
        "# Vault's TTL 0 means the mount's default (768h unless tuned); check these two.\n".to_string()
    } else {
        String::new()
    };
    (default, max, note)
}

/// Whole hours, minutes or seconds, as Vault writes TTLs ("768h", "10m", "90s"); humantime
/// would print 768h as "1month 1day 13h 26m 24s".
fn go_duration(d: Duration) -> String {
    match d.as_secs() {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A TOML basic string: JSON's escapes (`\"`, `\\`, `\n`, `\uXXXX`, …) are TOML's too.
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// A list of statements, or one string (as Vault accepts on write).
fn statements<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
        Null(()),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) if s.is_empty() => vec![],
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
        OneOrMany::Null(()) => vec![],
    })
}

/// Seconds, as Vault prints them, or a duration string ("1h"), as Vault accepts on write.
fn ttl<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(n) => Ok(Duration::from_secs(n)),
        Raw::Text(t) => match t.trim().parse::<u64>() {
            Ok(n) => Ok(Duration::from_secs(n)),
            Err(_) => humantime::parse_duration(t.trim()).map_err(de::Error::custom),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// Vault's API docs, "Read Role" sample response (developer.hashicorp.com/vault/api-docs/secret/databases),
    /// wrapped the way `vault read -format=json` prints it.
    const READ_ROLE: &str = r#"{
  "request_id": "5e4a9a2c-1f5b-4ad9-8f3b-5f0e2c3e0c11",
  "lease_id": "",
  "lease_duration": 0,
  "renewable": false,
  "data": {
    "creation_statements": [
      "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
      "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";"
    ],
    "credential_type": "password",
    "db_name": "mysql",
    "default_ttl": 3600,
    "max_ttl": 86400,
    "renew_statements": [],
    "revocation_statements": [],
    "rollback_statements": []
  },
  "warnings": null
}"#;

    fn config_with(role: &str, kind: &str, db: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_toml_str(&format!(
            "[[database]]\nname = \"{db}\"\nkind = \"{kind}\"\nlisten = \"127.0.0.1:6432\"\nupstream = \"127.0.0.1:5432\"\n\
             admin_user = \"a\"\nadmin_password_env = \"X\"\nname_prefix = \"lg_\"\n\n{role}"
        ))
    }

    #[test]
    fn the_read_role_sample_becomes_a_role_check_config_accepts() {
        let toml = import(READ_ROLE, "my-role", None).unwrap();
        assert!(toml.contains("default_ttl = \"1h\"\nmax_ttl = \"24h\""), "{toml}");
        assert!(toml.contains(r#""CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';","#), "{toml}");
        assert!(!toml.contains("revocation_statements"), "empty lists are left to the defaults: {toml}");
        let config = config_with(&toml, "postgres", "mysql").unwrap();
        let role = config.role("my-role").unwrap();
        assert_eq!(role.database, "mysql");
        assert_eq!((role.default_ttl, role.max_ttl), (Duration::from_secs(3600), Duration::from_secs(86400)));
        assert_eq!(role.creation_statements[1], "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";");
    }

    #[test]
    fn a_mysql_role_keeps_vaults_statements_and_every_list() {
        let json = r#"{"data": {"db_name": "shop", "creation_statements": "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';GRANT SELECT ON `fooapp\\_%`.* TO '{{name}}'@'%';",
            "revocation_statements": ["DROP USER '{{name}}'@'%';"], "rollback_statements": ["DROP USER IF EXISTS '{{name}}'@'%'"],
            "renew_statements": null, "default_ttl": "90s", "max_ttl": "2h"}}"#;
        let toml = import(json, "ro", Some("main")).unwrap();
        let config = config_with(&toml, "mysql", "main").unwrap();
        let role = config.role("ro").unwrap();
        assert_eq!(
            role.creation_statements,
            ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';GRANT SELECT ON `fooapp\\_%`.* TO '{{name}}'@'%';"]
        );
        assert_eq!(role.revocation_statements, ["DROP USER '{{name}}'@'%';"]);
        assert_eq!(role.rollback_statements.len(), 1);
        assert!(role.renew_statements.is_empty());
        assert_eq!((role.default_ttl, role.max_ttl), (Duration::from_secs(90), Duration::from_secs(7200)));
    }

    #[test]
    fn zero_ttls_become_vaults_system_default_with_a_note() {
        let toml = import(r#"{"db_name": "d", "creation_statements": ["CREATE ROLE \"{{name}}\""]}"#, "r", None).unwrap();
        assert!(toml.contains("default_ttl = \"768h\"\nmax_ttl = \"768h\""), "{toml}");
        assert!(config_with(&toml, "postgres", "d").is_ok());
        let toml =
            import(r#"{"db_name": "d", "creation_statements": ["x {{name}}"], "default_ttl": 0, "max_ttl": 600}"#, "r", None).unwrap();
        assert!(toml.contains("default_ttl = \"10m\"\nmax_ttl = \"10m\""), "{toml}");
    }

    #[test]
    fn what_leasegate_cannot_take_is_refused_with_the_reason() {
        assert!(matches!(import("{", "r", None), Err(ImportError::Json(_))));
        assert!(matches!(import(r#"{"data": {"db_name": "d"}}"#, "r", None), Err(ImportError::NoCreation)));
        let rsa = r#"{"data": {"db_name": "d", "creation_statements": ["x"], "credential_type": "rsa_private_key"}}"#;
        assert!(matches!(import(rsa, "r", None), Err(ImportError::CredentialType(_))));
        assert!(matches!(import(r#"{"creation_statements": ["x"]}"#, "r", None), Err(ImportError::NoDatabase)));
        assert!(matches!(import(READ_ROLE, "a/b", None), Err(ImportError::BadName { .. })));
        assert!(matches!(
            import(r#"{"db_name": "d", "creation_statements": ["x"], "default_ttl": "soon"}"#, "r", None),
            Err(ImportError::Json(_))
        ));
    }
}
