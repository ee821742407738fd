//! The configuration file (DESIGN.md §2, a contract): parsed from text by a pure function,
//! then checked as a whole so that `check-config` can report every problem at once, each with
//! its TOML path. Reading secret and certificate files is a separate step ([`Config::load_files`])
//! because it touches the disk.

mod client;
mod database;
mod error;
mod issuer;
pub mod jwt_issuer;
mod listen;
mod role;
mod secret_source;
mod sections;
mod sweep;

pub use client::{CertRule, ClientConfig, PeerRule, Proof};
pub use database::{
    ClientAuthPlugin, ClientTls, ClientTlsMode, DatabaseConfig, DbKind, HostPort, SweepOrphans, UpstreamTls, UpstreamTlsMode,
};
pub use error::{ConfigError, Problem};
pub use issuer::{IssuerRef, IssuerSection, IssuerTls, SidecarConfig};
pub use jwt_issuer::{JwtIssuerConfig, JwtRule};
pub use listen::{Listen, ListenAddr, UnixSocket};
pub use role::{RoleConfig, Scope};
pub use secret_source::SecretSource;
pub use sections::{AdminSection, AuditSection, JournalSection, JournalStore, ServiceSection};

use serde::Deserialize;
use std::collections::HashSet;

/// The shortest admin API token accepted: a bearer token guessable in fewer tries is refused.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub admin: Option<AdminSection>,
    #[serde(default)]
    pub journal: Option<JournalSection>,
    #[serde(default)]
    pub audit: Option<AuditSection>,
    #[serde(default)]
    pub service: ServiceSection,
    #[serde(default, rename = "database")]
    pub databases: Vec<DatabaseConfig>,
    #[serde(default, rename = "role")]
    pub roles: Vec<RoleConfig>,
    #[serde(default, rename = "client")]
    pub clients: Vec<ClientConfig>,
    /// Who may sign the tokens `jwt` clients log in with (DESIGN.md §2a).
    #[serde(default, rename = "jwt_issuer")]
    pub jwt_issuers: Vec<JwtIssuerConfig>,
    /// This instance mints for remote sidecars (DESIGN.md §2b).
    #[serde(default)]
    pub issuer: Option<IssuerSection>,
    /// Who may ask this issuer for leases, and for which clients.
    #[serde(default, rename = "sidecar")]
    pub sidecars: Vec<SidecarConfig>,
}

impl Config {
    /// Parses and validates. Pure: no file is read.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { message: e.message().to_string(), path: e.span().map(|s| line_of(text, s.start)) })?;
        let problems = config.validate();
        if problems.is_empty() { Ok(config) } else { Err(ConfigError::Invalid(problems)) }
    }

    /// Reads a file and parses it; the file's I/O error is reported like any other problem.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Config::from_toml_str(&text)
    }

    /// Every cross-field problem, each with its TOML path.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut seen_db = HashSet::new();
        let mut seen_listen = HashSet::new();
        for (i, db) in self.databases.iter().enumerate() {
            let at = format!("database[{i}]");
            if !seen_db.insert(db.name.as_str()) {
                problems.push(Problem::new(format!("{at}.name"), format!("duplicate database name {:?}", db.name)));
            }
            for addr in &db.listen.0 {
                if !seen_listen.insert(addr.clone()) {
                    problems.push(Problem::new(format!("{at}.listen"), format!("{addr} is used by another database")));
                }
            }
            db.validate(&at, &mut problems);
        }
        let mut seen_role = HashSet::new();
        for (i, role) in self.roles.iter().enumerate() {
            let at = format!("role[{i}]");
            if !seen_role.insert(role.name.as_str()) {
                problems.push(Problem::new(format!("{at}.name"), format!("duplicate role name {:?}", role.name)));
            }
            if self.database(&role.database).is_none() {
                problems.push(Problem::new(format!("{at}.database"), format!("no [[database]] is named {:?}", role.database)));
            }
            role.validate(&at, &mut problems);
        }
        let mut seen_issuer = HashSet::new();
        for (i, issuer) in self.jwt_issuers.iter().enumerate() {
            let at = format!("jwt_issuer[{i}]");
            if !seen_issuer.insert(issuer.name.as_str()) {
                problems.push(Problem::new(format!("{at}.name"), format!("duplicate jwt_issuer name {:?}", issuer.name)));
            }
            issuer.validate(&at, &mut problems);
        }
        let mut seen_client = HashSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            let at = format!("client[{i}]");
            if !seen_client.insert(client.name.as_str()) {
                problems.push(Problem::new(format!("{at}.name"), format!("duplicate client name {:?}", client.name)));
            }
            for (j, role) in client.roles.iter().enumerate() {
                if self.role(role).is_none() {
                    problems.push(Problem::new(format!("{at}.roles[{j}]"), format!("no [[role]] is named {role:?}")));
                }
            }
            // A client that only sidecars serve proves itself to them, not here.
            let via_sidecar = self.sidecars.iter().any(|sc| sc.clients.contains(&client.name));
            client.validate(&at, via_sidecar, &mut problems);
            if let Some(rule) = &client.jwt {
                rule.validate(&format!("{at}.jwt"), &self.jwt_issuers, &mut problems);
            }
        }
        // The orphan sweep drops users by prefix: on one server, no prefix may cover another's.
        for (i, a) in self.databases.iter().enumerate() {
            for b in self.databases.iter().skip(i + 1) {
                if a.upstream == b.upstream && (a.name_prefix.starts_with(&b.name_prefix) || b.name_prefix.starts_with(&a.name_prefix)) {
                    problems.push(Problem::new(
                        format!("database[{i}].name_prefix"),
                        format!(
                            "{:?} and {:?} overlap on the same upstream {}: the orphan sweep could drop the other's users",
                            a.name_prefix, b.name_prefix, a.upstream
                        ),
                    ));
                }
            }
        }
        if let Some(j) = &self.journal {
            j.validate(&mut problems);
        }
        let mut seen_sidecar = HashSet::new();
        for (i, sidecar) in self.sidecars.iter().enumerate() {
            let at = format!("sidecar[{i}]");
            if !seen_sidecar.insert(sidecar.name.as_str()) {
                problems.push(Problem::new(format!("{at}.name"), format!("duplicate sidecar name {:?}", sidecar.name)));
            }
            sidecar.validate(&at, self, &mut problems);
        }
        // A sidecar's roles live at its issuer: what a minted user may do is decided there.
        for (i, role) in self.roles.iter().enumerate() {
            if self.database(&role.database).is_some_and(|d| d.issuer.is_some()) && role.has_statements() {
                problems.push(Problem::new(
                    format!("role[{i}]"),
                    "a role on a database with an issuer names no statements or member_of: the issuer's role decides",
                ));
            }
        }
        if self.databases.is_empty() {
            problems.push(Problem::new("database", "at least one [[database]] is required"));
        }
        problems
    }

    /// Reads every secret and certificate file the config names; returns the problems found.
    pub fn load_files(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Err(p) = self.admin_token() {
            problems.push(p);
        }
        if let JournalStore::Postgres(source) = self.journal_store() {
            let key = if matches!(source, SecretSource::File(_)) { "journal.url_file" } else { "journal.url_env" };
            match source.load() {
                Err(e) => problems.push(Problem::new(key, e.to_string())),
                Ok(url) if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) => {
                    problems.push(Problem::new(key, "the store's URL must start with postgres:// or postgresql://"))
                }
                Ok(_) => {}
            }
        }
        for (i, db) in self.databases.iter().enumerate() {
            let at = format!("database[{i}]");
            if let Some(source) = &db.admin_password
                && let Err(e) = source.load()
            {
                let key = match source {
                    SecretSource::File(_) => "admin_password_file",
                    SecretSource::Env(_) => "admin_password_env",
                    SecretSource::Inline(_) => "admin_password",
                };
                problems.push(Problem::new(format!("{at}.{key}"), e.to_string()));
            }
            if let Some(issuer) = &db.issuer {
                if let Err(e) = SecretSource::File(issuer.token_file.clone()).load() {
                    problems.push(Problem::new(format!("{at}.issuer.token_file"), e.to_string()));
                }
                if let Some(ca) = &issuer.ca
                    && let Err(e) = std::fs::metadata(ca)
                {
                    problems.push(Problem::new(format!("{at}.issuer.ca"), format!("{}: {e}", ca.display())));
                }
            }
            if let Some(tls) = &db.client_tls {
                for (key, path) in [("cert", &tls.cert), ("key", &tls.key)] {
                    if let Some(path) = path
                        && let Err(e) = std::fs::metadata(path)
                    {
                        problems.push(Problem::new(format!("{at}.client_tls.{key}"), format!("{}: {e}", path.display())));
                    }
                }
            }
            if let Some(ca) = db.upstream_tls.as_ref().and_then(|t| t.ca.as_ref())
                && let Err(e) = std::fs::metadata(ca)
            {
                problems.push(Problem::new(format!("{at}.upstream_tls.ca"), format!("{}: {e}", ca.display())));
            }
        }
        problems
    }

    /// The operator's admin API token from `[admin].token_file` (`None` when there is none),
    /// read like every other secret file (trailing newline dropped, empty refused). `serve` and
    /// `check-config` both go through here, so they refuse the same tokens.
    pub fn admin_token(&self) -> Result<Option<crate::secret::Secret>, Problem> {
        let Some(path) = self.admin.as_ref().and_then(|a| a.token_file.as_ref()) else { return Ok(None) };
        let token = SecretSource::File(path.clone()).load().map_err(|e| Problem::new("admin.token_file", e.to_string()))?;
        if token.expose().chars().count() < MIN_ADMIN_TOKEN_CHARS {
            return Err(Problem::new("admin.token_file", format!("the token must be at least {MIN_ADMIN_TOKEN_CHARS} characters")));
        }
        Ok(Some(token))
    }

    pub fn database(&self, name: &str) -> Option<&DatabaseConfig> {
        self.databases.iter().find(|d| d.name == name)
    }

    pub fn role(&self, name: &str) -> Option<&RoleConfig> {
        self.roles.iter().find(|r| r.name == name)
    }

    pub fn journal_retention(&self) -> std::time::Duration {
        self.journal.as_ref().map_or_else(JournalSection::default_retention, |j| j.retain_ended)
    }

    /// `[journal].instance`, when the config sets it.
    pub fn journal_instance(&self) -> Option<&str> {
        self.journal.as_ref().and_then(|j| j.instance.as_deref())
    }

    /// Where lease state lives: the SQLite file, or a shared Postgres store.
    pub fn journal_store(&self) -> JournalStore {
        let Some(j) = &self.journal else { return JournalStore::Sqlite(JournalSection::default_path()) };
        match (&j.url_file, &j.url_env) {
            (Some(f), _) => JournalStore::Postgres(SecretSource::File(f.clone())),
            (None, Some(e)) => JournalStore::Postgres(SecretSource::Env(e.clone())),
            (None, None) => JournalStore::Sqlite(j.path.clone().unwrap_or_else(JournalSection::default_path)),
        }
    }

    /// `[journal].takeover_after` (shared store only).
    pub fn journal_takeover_after(&self) -> std::time::Duration {
        self.journal.as_ref().map_or_else(JournalSection::default_takeover, |j| j.takeover_after)
    }

    pub fn client(&self, name: &str) -> Option<&ClientConfig> {
        self.clients.iter().find(|c| c.name == name)
    }
}

fn line_of(text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("line {line}")
}

#[cfg(test)]
mod tests;
