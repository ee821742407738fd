//! The process-wide sections: `[admin]`, `[journal]`, `[audit]`, `[service]`.
//!
//! `[journal]` locates the lease journal; `[admin]` and `[audit]` are part of the contract and
//! parsed so a complete config file is accepted, for the admin HTTP server and audit log that
//! the operations issue builds.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: SocketAddr,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    /// The embedded SQLite journal (one instance per file). Default `leasegate.db` when no
    /// `url_file`/`url_env` is given.
    pub path: Option<PathBuf>,
    /// A file holding a `postgres://` URL: lease state shared by every instance (DESIGN §2b).
    pub url_file: Option<PathBuf>,
    /// An environment variable holding that URL.
    pub url_env: Option<String>,
    /// This instance's stable id, marked on every user it mints so that its orphan sweep only
    /// ever drops users it can prove it made. Default: generated once and kept in the SQLite
    /// journal; with a shared store, generated at each start (hostname and a random suffix).
    pub instance: Option<String>,
    /// Shared store: an instance whose heartbeat is older than this (on the store's clock) is
    /// dead, and a live one takes over and revokes its leases.
    #[serde(default = "default_takeover_after", with = "humantime_serde")]
    pub takeover_after: std::time::Duration,
    /// Ended leases are deleted from the journal this long after they ended.
    #[serde(default = "default_retain_ended", with = "humantime_serde")]
    pub retain_ended: std::time::Duration,
}

/// `[journal].instance`: what may appear in a role comment and a log line unquoted.
pub fn valid_instance(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn default_takeover_after() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

/// The shortest and longest `takeover_after`: heartbeats go at a fifth of it, and a store
/// round trip must fit in that with room to spare.
pub const TAKEOVER_AFTER_RANGE: (std::time::Duration, std::time::Duration) =
    (std::time::Duration::from_secs(2), std::time::Duration::from_secs(3600));

fn default_retain_ended() -> std::time::Duration {
    std::time::Duration::from_secs(7 * 24 * 3600)
}

/// Where lease state is kept (`[journal]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalStore {
    /// The embedded SQLite journal: one instance per file.
    Sqlite(PathBuf),
    /// A shared Postgres store; the source holds its `postgres://` URL (a secret: it may carry
    /// a password).
    Postgres(super::SecretSource),
}

impl JournalSection {
    pub(super) fn validate(&self, problems: &mut Vec<super::Problem>) {
        use super::Problem;
        let sources = [self.path.is_some(), self.url_file.is_some(), self.url_env.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            problems.push(Problem::new("journal", "give one of path (SQLite), url_file and url_env (a shared Postgres store)"));
        }
        let (min, max) = TAKEOVER_AFTER_RANGE;
        if !(min..=max).contains(&self.takeover_after) {
            problems.push(Problem::new(
                "journal.takeover_after",
                format!("between {} and {}", humantime::format_duration(min), humantime::format_duration(max)),
            ));
        }
        if let Some(instance) = &self.instance
            && !valid_instance(instance)
        {
            problems.push(Problem::new("journal.instance", "1 to 64 letters, digits, '.', '_' or '-'"));
        }
    }

    /// The journal used when the config has no `[journal]` table.
    pub fn default_path() -> PathBuf {
        PathBuf::from("leasegate.db")
    }

    pub fn default_retention() -> std::time::Duration {
        default_retain_ended()
    }

    pub fn default_takeover() -> std::time::Duration {
        default_takeover_after()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    pub path: PathBuf,
}

/// `[service]`: process-wide behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// On SIGTERM/SIGINT, how long sessions may go on before their leases are revoked.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: std::time::Duration,
}

impl Default for ServiceSection {
    fn default() -> Self {
        ServiceSection { shutdown_grace: default_shutdown_grace() }
    }
}

fn default_shutdown_grace() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}
