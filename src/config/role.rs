//! `[[role]]`: what a minted user may do, how long its lease lives, and the SQL that creates
//! and removes it (Vault-compatible templates).

use super::Problem;
use serde::Deserialize;
use std::time::Duration;

/// The longest TTL a role may have.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One user per client connection, dropped when the connection closes.
    #[default]
    Connection,
    /// One user per (client identity, role), shared by that identity's connections.
    Identity,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: String,
    pub database: String,
    #[serde(with = "humantime_serde")]
    pub default_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default = "default_idle_grace", with = "humantime_serde")]
    pub idle_grace: Duration,
    /// After max TTL, sessions close at their next idle point, or at most this much later.
    #[serde(default = "default_hard_close_grace", with = "humantime_serde")]
    pub hard_close_grace: Duration,
    /// Leases of this role alive at once; more logins get 53300 (too many connections).
    pub max_leases: Option<usize>,
    /// Templates run in one transaction to create the user. Empty: the safe default.
    #[serde(default)]
    pub creation_statements: Vec<String>,
    /// Templates that replace the default clean-up and DROP. Empty: the safe default.
    #[serde(default)]
    pub revocation_statements: Vec<String>,
    /// Templates run when a failed mint is rolled back. Empty: the default drop.
    #[serde(default)]
    pub rollback_statements: Vec<String>,
    /// Templates run at each renewal. Empty: `ALTER ROLE … VALID UNTIL`.
    #[serde(default)]
    pub renew_statements: Vec<String>,
    /// Existing group roles the minted user joins when the default creation statement is used.
    #[serde(default)]
    pub member_of: Vec<String>,
}

fn default_idle_grace() -> Duration {
    Duration::from_secs(30)
}

fn default_hard_close_grace() -> Duration {
    Duration::from_secs(30)
}

impl RoleConfig {
    /// Whether the role says what a minted user may do (statements or groups): a sidecar's
    /// roles must not, since the issuer's role decides.
    pub fn has_statements(&self) -> bool {
        !(self.creation_statements.is_empty()
            && self.revocation_statements.is_empty()
            && self.renew_statements.is_empty()
            && self.member_of.is_empty())
    }

    /// Defaults only: used to revoke a user whose role is no longer configured (recovery,
    /// orphans), so the default revocation statements apply.
    pub fn fallback(database: &str) -> RoleConfig {
        RoleConfig {
            name: String::new(),
            database: database.to_string(),
            default_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(60),
            scope: Scope::Connection,
            idle_grace: default_idle_grace(),
            hard_close_grace: default_hard_close_grace(),
            max_leases: None,
            creation_statements: vec![],
            revocation_statements: vec![],
            rollback_statements: vec![],
            renew_statements: vec![],
            member_of: vec![],
        }
    }

    pub(super) fn validate(&self, at: &str, problems: &mut Vec<Problem>) {
        if self.default_ttl.is_zero() {
            problems.push(Problem::new(format!("{at}.default_ttl"), "must be greater than 0"));
        }
        if self.max_ttl < self.default_ttl {
            problems.push(Problem::new(format!("{at}.max_ttl"), "must be at least default_ttl"));
        }
        // Deadlines are computed as now + TTL: a TTL no clock can add is refused here, not
        // found at the first grant.
        if self.max_ttl > MAX_TTL {
            problems.push(Problem::new(format!("{at}.max_ttl"), "must be at most 100 years"));
        }
        if self.name.is_empty() || self.name.contains('/') {
            problems.push(Problem::new(format!("{at}.name"), "must be non-empty and contain no '/'"));
        }
        if self.max_leases == Some(0) {
            problems.push(Problem::new(format!("{at}.max_leases"), "must be at least 1 (omit it for no limit)"));
        }
        if !self.creation_statements.is_empty() && !self.member_of.is_empty() {
            problems.push(Problem::new(
                format!("{at}.member_of"),
                "applies to the default creation statement only; put GRANTs in creation_statements instead",
            ));
        }
        for (i, s) in self.creation_statements.iter().enumerate() {
            if !s.contains("{{name}}") && !s.contains("{{username}}") {
                problems.push(Problem::new(format!("{at}.creation_statements[{i}]"), "does not mention {{name}} or {{username}}"));
            }
        }
    }
}
