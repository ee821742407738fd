//! How clients prove who they are.
//!
//! A client logs in with the user name `<client>` or `<client>/<role>` (DESIGN.md §2) and the
//! password whose verifier is in its `[[client]]` entry. This module resolves the name to an
//! [`Identity`] and holds the stored credential; the wire exchange itself (SCRAM for Postgres)
//! lives with each protocol.

pub mod hash;

use crate::config::Config;
use crate::credential::StoredCredential;

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

/// The outcome of looking a login name up. Callers run the same exchange in every case, with
/// the salt a probe would expect, so the answer never says which part was wrong.
pub enum Lookup<'a> {
    Known {
        identity: Identity,
        credential: &'a StoredCredential,
    },
    /// A real client asking for a role it may not use: its own salt, then a refusal, so the
    /// salt does not reveal which roles it has.
    Refused {
        credential: &'a StoredCredential,
    },
    /// No such client: the caller mocks a verifier from `client` (the part before any `/`),
    /// so `x` and `x/role` look alike.
    Unknown {
        client: &'a str,
    },
}

impl Lookup<'_> {
    /// Who is logging in, when the name resolved to a client and a role it may use.
    pub fn identity(&self) -> Option<Identity> {
        match self {
            Lookup::Known { identity, .. } => Some(identity.clone()),
            _ => None,
        }
    }
}

/// Resolves `<client>[/<role>]` for the database `database`.
pub fn lookup<'a>(config: &'a Config, database: &str, user: &'a str) -> Lookup<'a> {
    let (client_name, role_name) = match user.split_once('/') {
        Some((c, r)) => (c, Some(r)),
        None => (user, None),
    };
    let Some(client) = config.client(client_name) else {
        return Lookup::Unknown { client: client_name };
    };
    let refused = Lookup::Refused { credential: &client.password };
    let role = match role_name {
        Some(r) if client.roles.iter().any(|allowed| allowed == r) => r,
        Some(_) => return refused,
        None => match client.roles.first() {
            Some(r) => r.as_str(),
            None => return refused,
        },
    };
    // A role belongs to one database: a client reaching another database's listener is refused.
    match config.role(role) {
        Some(r) if r.database == database => {}
        _ => return refused,
    }
    Lookup::Known { identity: Identity { client: client.name.clone(), role: role.to_string() }, credential: &client.password }
}
