//! Vault's MySQL/MariaDB statements, run as they are written. Vault's documented role says
//! `CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'`: Vault fills in the cleartext, and
//! MariaDB's general log records that statement as sent. leasegate's `{{password}}` is the
//! `mysql_native_password` hash instead (`mysql/provision.rs`), so this module rewrites that one
//! clause to the form each server takes without the cleartext in its logs:
//!
//! - MariaDB: `IDENTIFIED BY PASSWORD '{{password}}'` (the hash; the cleartext never leaves
//!   leasegate).
//! - MySQL 8: `IDENTIFIED WITH caching_sha2_password BY '<cleartext>'`. MySQL has no hashed
//!   form for its default plugin that leasegate can compute and test here (Debian ships no
//!   MySQL 8), so it gets what leasegate's own default statement sends it: the cleartext, on the
//!   admin connection (use upstream TLS), which MySQL rewrites to `<secret>` in its general,
//!   slow and binary logs. A template that wants the hash on MySQL 8.0 can still say
//!   `IDENTIFIED WITH mysql_native_password AS '{{password}}'`, which is left alone.
//!
//! It also drops the trailing `;` Vault's examples end with (Vault splits on `;`; leasegate
//! joins templates with `;`, and `;;` is a syntax error to MariaDB), in every statement list
//! ([`tidy`]). Pure functions: the provisioner calls [`prepare`], [`fill_cleartext`] and
//! [`tidy`]; `check-config` prints [`notes`].

use crate::config::{Config, DbKind};
use crate::secret::Secret;

/// Which server the statements go to: the two spell a hashed password differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    MariaDb,
    Mysql,
}

/// Where a MySQL 8 rewrite puts the cleartext; [`fill_cleartext`] replaces it after the
/// templates are rendered (so `{{password}}` rendering, which means the hash, never touches it).
pub const CLEARTEXT: &str = "{{leasegate_cleartext_password}}";

/// The clause Vault's statements use, as `check-config` names it.
const VAULT_CLAUSE: &str = "IDENTIFIED BY '{{password}}'";

/// The templates to render for `flavour`: each with its Vault clause rewritten and its
/// trailing `;` dropped; templates left empty are dropped.
pub fn prepare(templates: &[String], flavour: Flavour) -> Vec<String> {
    templates.iter().map(|t| rewrite(t, flavour)).map(|t| tidy(&t).to_string()).filter(|t| !t.is_empty()).collect()
}

/// Puts the cleartext where a MySQL 8 rewrite asked for it. Generated passwords are
/// alphanumeric, so they need no quoting inside the `'…'` the rewrite wrote.
pub fn fill_cleartext(sql: String, password: &Secret) -> String {
    if sql.contains(CLEARTEXT) { sql.replace(CLEARTEXT, password.expose()) } else { sql }
}

/// `template` with every `IDENTIFIED BY '{{password}}'` (any case and spacing, outside quotes
/// and comments) rewritten for `flavour`. Everything else is kept byte for byte.
pub fn rewrite(template: &str, flavour: Flavour) -> String {
    let replacement = match flavour {
        Flavour::MariaDb => "IDENTIFIED BY PASSWORD '{{password}}'".to_string(),
        Flavour::Mysql => format!("IDENTIFIED WITH caching_sha2_password BY '{CLEARTEXT}'"),
    };
    let mut out = String::with_capacity(template.len() + 32);
    let mut copied = 0;
    for (start, end) in vault_clauses(template) {
        out.push_str(&template[copied..start]);
        out.push_str(&replacement);
        copied = end;
    }
    out.push_str(&template[copied..]);
    out
}

/// What `check-config` says for each MySQL creation statement that will be rewritten:
/// `(TOML path, message)`.
pub fn notes(config: &Config) -> Vec<(String, String)> {
    let mut notes = Vec::new();
    for (i, role) in config.roles.iter().enumerate() {
        if config.database(&role.database).is_none_or(|d| d.kind != DbKind::Mysql) {
            continue;
        }
        for (j, t) in role.creation_statements.iter().enumerate() {
            if !vault_clauses(t).is_empty() {
                notes.push((
                    format!("role[{i}].creation_statements[{j}]"),
                    format!(
                        "rewrote {VAULT_CLAUSE} (Vault's form) so no cleartext reaches the server's logs: on MariaDB \
                             IDENTIFIED BY PASSWORD '{{{{password}}}}' (the hash), on MySQL 8 IDENTIFIED WITH \
                             caching_sha2_password BY '<password>' (MySQL masks it in its logs)"
                    ),
                ));
            }
        }
    }
    for (i, db) in config.databases.iter().enumerate() {
        if db.kind == DbKind::Mysql && db.sweep_orphans != crate::config::SweepOrphans::Off {
            notes.push((
                format!("database[{i}].sweep_orphans"),
                "does nothing on MySQL/MariaDB: accounts carry no instance mark, so leasegate cannot prove a \
                 user with the prefix is its own rather than another instance's; it drops none"
                    .into(),
            ));
        }
    }
    notes
}

/// `template` without surrounding whitespace and trailing `;`: templates are joined with `;`,
/// and `;;` is a syntax error to MySQL and MariaDB (Vault's lists often end each one with `;`).
pub fn tidy(template: &str) -> &str {
    template.trim_end_matches(|c: char| c == ';' || c.is_whitespace()).trim_start()
}

/// Byte ranges of every `IDENTIFIED BY '{{password}}'` outside quotes and comments.
fn vault_clauses(sql: &str) -> Vec<(usize, usize)> {
    let bytes = sql.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"' | b'`') => i = skip_quoted(bytes, i, q),
            b'#' => i = skip_line(bytes, i),
            b'-' if bytes[i..].starts_with(b"-- ") => i = skip_line(bytes, i),
            b'/' if bytes[i..].starts_with(b"/*") => i = find(bytes, i + 2, b"*/").map_or(bytes.len(), |e| e + 2),
            c if c.is_ascii_alphabetic() && (i == 0 || !is_word(bytes[i - 1])) => {
                let end = word_end(bytes, i);
                if sql[i..end].eq_ignore_ascii_case("IDENTIFIED")
                    && let Some(clause_end) = by_password(sql, end)
                {
                    found.push((i, clause_end));
                    i = clause_end;
                } else {
                    i = end;
                }
            }
            _ => i += 1,
        }
    }
    found
}

/// After `IDENTIFIED` at `at`: the end of ` BY '{{password}}'`, when that is what follows.
fn by_password(sql: &str, at: usize) -> Option<usize> {
    let bytes = sql.as_bytes();
    let by = skip_space(bytes, at);
    if by == at || !sql[by..].get(..2).is_some_and(|w| w.eq_ignore_ascii_case("BY")) || bytes.get(by + 2).is_some_and(|b| is_word(*b)) {
        return None;
    }
    let literal = skip_space(bytes, by + 2);
    ["'{{password}}'", "\"{{password}}\""].iter().find(|l| sql[literal..].starts_with(**l)).map(|l| literal + l.len())
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

fn word_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..].iter().position(|b| !is_word(*b)).map_or(bytes.len(), |n| from + n)
}

fn skip_space(bytes: &[u8], from: usize) -> usize {
    bytes[from..].iter().position(|b| !b.is_ascii_whitespace()).map_or(bytes.len(), |n| from + n)
}

fn skip_line(bytes: &[u8], from: usize) -> usize {
    bytes[from..].iter().position(|b| *b == b'\n').map_or(bytes.len(), |n| from + n + 1)
}

fn find(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|n| from + n)
}

/// The index after the quoted text opened by `quote` at `open`: a doubled quote or (outside
/// backquotes) a backslash escape does not close it.
fn skip_quoted(bytes: &[u8], open: usize, quote: u8) -> usize {
    let mut i = open + 1;
    while i < bytes.len() {
        if bytes[i] == b'\\' && quote != b'`' {
            i += 2;
        } else if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vault's MySQL/MariaDB plugin docs (developer.hashicorp.com/vault/docs/secrets/databases/mysql-maria,
    // "Setup" and "Using wildcards in grant statements"), verbatim.
    const VAULT_SETUP: &str = "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';GRANT SELECT ON *.* TO '{{name}}'@'%';";
    const VAULT_WILDCARD: &str =
        "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON `fooapp\\_%`.* TO '{{name}}'@'%';";

    #[test]
    fn vaults_examples_become_the_hashed_form_on_mariadb() {
        assert_eq!(
            prepare(&[VAULT_SETUP.into()], Flavour::MariaDb),
            ["CREATE USER '{{name}}'@'%' IDENTIFIED BY PASSWORD '{{password}}';GRANT SELECT ON *.* TO '{{name}}'@'%'"]
        );
        assert_eq!(
            prepare(&[VAULT_WILDCARD.into()], Flavour::MariaDb),
            ["CREATE USER '{{name}}'@'%' IDENTIFIED BY PASSWORD '{{password}}'; GRANT SELECT ON `fooapp\\_%`.* TO '{{name}}'@'%'"]
        );
    }

    #[test]
    fn mysql_8_gets_its_default_plugin_with_the_cleartext_filled_in_last() {
        let t = prepare(&["create user '{{name}}'@'%'\n  identified   by\t'{{password}}'".into()], Flavour::Mysql);
        assert_eq!(t, [format!("create user '{{{{name}}}}'@'%'\n  IDENTIFIED WITH caching_sha2_password BY '{CLEARTEXT}'")]);
        let rendered = t[0].replace("{{name}}", "lg_a").replace("{{password}}", "*HASH");
        assert_eq!(
            fill_cleartext(rendered, &Secret::new("Abc123")),
            "create user 'lg_a'@'%'\n  IDENTIFIED WITH caching_sha2_password BY 'Abc123'"
        );
        assert_eq!(fill_cleartext("SELECT 1".into(), &Secret::new("x")), "SELECT 1");
    }

    #[test]
    fn forms_that_already_hash_and_text_in_quotes_or_comments_stay_as_they_are() {
        for kept in [
            "CREATE USER '{{name}}'@'%' IDENTIFIED BY PASSWORD '{{password}}'",
            "CREATE USER '{{name}}'@'%' IDENTIFIED WITH mysql_native_password AS '{{password}}'",
            "CREATE USER '{{name}}'@'%' IDENTIFIED BY 'fixed'",
            "SELECT 'IDENTIFIED BY ''{{password}}'''",
            "SELECT `IDENTIFIED BY '{{password}}'`",
            "/* IDENTIFIED BY '{{password}}' */ SELECT 1",
            "SELECT 1 -- IDENTIFIED BY '{{password}}'",
            "SELECT 1 # IDENTIFIED BY '{{password}}'",
            "SELECT NOTIDENTIFIED BY '{{password}}'",
            "SELECT x IDENTIFIEDBY '{{password}}'",
            "IDENTIFIED BYE '{{password}}'",
        ] {
            assert_eq!(rewrite(kept, Flavour::MariaDb), kept);
        }
        assert_eq!(
            rewrite("SELECT '\\'' ; ALTER USER u IDENTIFIED BY \"{{password}}\"", Flavour::MariaDb),
            "SELECT '\\'' ; ALTER USER u IDENTIFIED BY PASSWORD '{{password}}'"
        );
        assert_eq!(rewrite("IDENTIFIED BY '{{password}}' IDENTIFIED BY '{{password}}'", Flavour::MariaDb).matches("PASSWORD '").count(), 2);
        assert_eq!(rewrite("unterminated 'IDENTIFIED BY '{{password}}'", Flavour::MariaDb), "unterminated 'IDENTIFIED BY '{{password}}'");
    }

    #[test]
    fn trailing_semicolons_and_empty_templates_go() {
        assert_eq!(prepare(&["GRANT x TO y; ;\n".into(), " ; ".into(), "SELECT 1".into()], Flavour::MariaDb), ["GRANT x TO y", "SELECT 1"]);
    }

    #[test]
    fn check_config_names_each_rewritten_statement() {
        let text = include_str!("../../config/leasegate.example.toml")
            .replace("\"CREATE USER '{{name}}'@'%' IDENTIFIED BY PASSWORD '{{password}}'\"", &format!("{VAULT_SETUP:?}"));
        let config = Config::from_toml_str(&text).unwrap();
        let notes = notes(&config);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].0, "role[2].creation_statements[0]");
        assert!(notes[0].1.contains("IDENTIFIED BY PASSWORD"), "{}", notes[0].1);
    }

    #[test]
    fn check_config_notes_that_a_mysql_sweep_drops_nothing() {
        let text = "[[database]]\nname = \"m\"\nkind = \"mysql\"\nlisten = \"127.0.0.1:3307\"\nupstream = \"127.0.0.1:3306\"\n\
                    admin_user = \"a\"\nadmin_password_env = \"X\"\nname_prefix = \"lg_\"\nsweep_orphans = true\n";
        let notes = notes(&Config::from_toml_str(text).unwrap());
        assert!(notes.iter().any(|(at, note)| at == "database[0].sweep_orphans" && note.contains("drops none")), "{notes:?}");
    }
}
