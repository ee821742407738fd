//! How clients prove who they are.
//!
//! A client logs in with the user name `<client>` or `<client>/<role>` (DESIGN.md §2) and the
//! password whose verifier is in its `[[client]]` entry. This module resolves the name to an
//! [`Identity`] and holds the stored credential; the wire exchange itself (SCRAM for Postgres)
//! lives with each protocol.

pub mod hash;
pub mod verifier;

use crate::config::Config;
use verifier::ScramVerifier;

/// Who is connecting and which role they asked for. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub client: String,
    pub role: String,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.client, self.role)
    }
}

/// The outcome of looking a login name up: a real identity with its verifier, or nothing.
/// Callers run the same exchange either way so the answer never says which part was wrong.
pub enum Lookup<'a> {
    Known { identity: Identity, verifier: &'a ScramVerifier },
    Unknown,
}

/// Resolves `<client>[/<role>]` for the database `database`.
pub fn lookup<'a>(config: &'a Config, database: &str, user: &str) -> Lookup<'a> {
    let (client_name, role_name) = match user.split_once('/') {
        Some((c, r)) => (c, Some(r)),
        None => (user, None),
    };
    let Some(client) = config.client(client_name) else {
        return Lookup::Unknown;
    };
    let role = match role_name {
        Some(r) if client.roles.iter().any(|allowed| allowed == r) => r,
        Some(_) => return Lookup::Unknown,
        None => match client.roles.first() {
            Some(r) => r.as_str(),
            None => return Lookup::Unknown,
        },
    };
    // A role belongs to one database: a client reaching another database's listener is refused.
    match config.role(role) {
        Some(r) if r.database == database => {}
        _ => return Lookup::Unknown,
    }
    Lookup::Known { identity: Identity { client: client.name.clone(), role: role.to_string() }, verifier: &client.password.scram }
}
