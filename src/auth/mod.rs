//! How clients prove who they are.
//!
//! A client logs in with the user name `<client>` or `<client>/<role>` (DESIGN.md §2) and
//! proves that name the one way its `[[client]]` entry says ([`Proof`]). This module resolves
//! the name to an [`Identity`] and its proof; the session pipeline checks identities the
//! platform gives (a Unix peer), and each protocol runs its own password exchange (SCRAM for
//! Postgres).

pub mod hash;

use crate::config::{Config, Proof};
use crate::credential::StoredCredential;
use crate::peer::Peer;

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

/// Who caused a grant and how they proved it, for the lease's audit events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub peer: Option<Peer>,
    /// `Proof::method`, or "admin_token" for the operator's API credentials.
    pub auth_method: &'static str,
    /// What the proof named (a peer's uid, a token's iss and sub); `None` for a password.
    pub subject: Option<String>,
    /// The JWT the client proved itself with, until its lease is minted (a sidecar forwards it
    /// to its issuer); the lease keeps its origin without it.
    pub token: Option<crate::secret::Secret>,
}

/// The outcome of looking a login name up. Callers run the same exchange in every case, with
/// the salt a probe would expect, so the answer never says which part was wrong.
pub enum Lookup<'a> {
    Known {
        identity: Identity,
        proof: Proof<'a>,
    },
    /// A real client asking for a role it may not use: its own exchange (a password client's
    /// own salt), then a refusal, so the exchange does not reveal which roles it has.
    Refused {
        proof: Proof<'a>,
    },
    /// No such client: the caller mocks a verifier from `client` (the part before any `/`),
    /// so `x` and `x/role` look alike.
    Unknown {
        client: &'a str,
    },
}

impl<'a> Lookup<'a> {
    /// The proof the login name asks for; an unknown client is asked for a password.
    pub fn proof(&self) -> Option<Proof<'a>> {
        match self {
            Lookup::Known { proof, .. } | Lookup::Refused { proof } => Some(*proof),
            Lookup::Unknown { .. } => None,
        }
    }

    /// The password exchange for this login: genuine, refused whatever the client sends, or
    /// mocked for a client that does not exist (`None`: the client proves itself otherwise).
    pub fn password(&self) -> Option<PasswordCheck<'a>> {
        match self {
            Lookup::Known { proof: Proof::Password(c), .. } => Some(PasswordCheck::Genuine(c)),
            Lookup::Refused { proof: Proof::Password(c) } => Some(PasswordCheck::Refused(c)),
            Lookup::Unknown { client } => Some(PasswordCheck::Mock(client)),
            _ => None,
        }
    }

    /// Who is logging in, when the name resolved to a client and a role it may use.
    pub fn identity(&self) -> Option<Identity> {
        match self {
            Lookup::Known { identity, .. } => Some(identity.clone()),
            _ => None,
        }
    }
}

/// What a protocol's password exchange runs against.
#[derive(Debug, Clone, Copy)]
pub enum PasswordCheck<'a> {
    /// The client and role are real: the right password lets it in.
    Genuine(&'a StoredCredential),
    /// A real client asking for a role it may not use: its own exchange, then a refusal.
    Refused(&'a StoredCredential),
    /// No such client: an exchange mocked from its name, refused.
    Mock(&'a str),
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
    // `validate` guarantees every client has exactly one proof.
    let Some(proof) = client.proof() else {
        return Lookup::Unknown { client: client_name };
    };
    let refused = Lookup::Refused { proof };
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
    Lookup::Known { identity: Identity { client: client.name.clone(), role: role.to_string() }, proof }
}
