//! `[[client]]`: an application identity, its password verifier and the roles it may use.

use super::Problem;
use crate::credential::StoredCredential;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    /// The value `leasegate hash-password` prints; never a cleartext password.
    pub password: StoredCredential,
    /// Roles this client may use; the first is its default.
    pub roles: Vec<String>,
}

impl ClientConfig {
    pub(super) fn validate(&self, at: &str, problems: &mut Vec<Problem>) {
        if self.name.is_empty() || self.name.contains('/') {
            problems.push(Problem::new(format!("{at}.name"), "must be non-empty and contain no '/'"));
        }
        if self.roles.is_empty() {
            problems.push(Problem::new(format!("{at}.roles"), "at least one role is required"));
        }
    }
}
