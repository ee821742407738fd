//! The single-instance sections: `[admin]`, `[journal]`, `[audit]`.
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
    pub path: PathBuf,
    /// This instance's stable id, marked on every user it mints so that its orphan sweep only
    /// ever drops users it can prove it made. Default: generated once and kept in the journal.
    pub instance: Option<String>,
    /// Ended leases are deleted from the journal this long after they ended.
    #[serde(default = "default_retain_ended", with = "humantime_serde")]
    pub retain_ended: std::time::Duration,
}

/// `[journal].instance`: what may appear in a role comment and a log line unquoted.
pub fn valid_instance(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn default_retain_ended() -> std::time::Duration {
    std::time::Duration::from_secs(7 * 24 * 3600)
}

impl JournalSection {
    /// The journal used when the config has no `[journal]` table.
    pub fn default_path() -> PathBuf {
        PathBuf::from("leasegate.db")
    }

    pub fn default_retention() -> std::time::Duration {
        default_retain_ended()
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
