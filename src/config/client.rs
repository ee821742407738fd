//! `[[client]]`: an application identity, how it proves who it is, and the roles it may use.
//! A client proves its name in exactly one way (DESIGN.md §2a): a password verifier (legacy),
//! or an identity the platform gives it — the Unix user of the process on a Unix socket
//! (`peer`), or a signed token from the platform's issuer (`jwt`: a Kubernetes service-account
//! token, a CI job's OIDC token). Client certificates are still to come.

use super::{JwtRule, Problem};
use crate::credential::StoredCredential;
use crate::peer::PeerCred;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub name: String,
    /// The value `leasegate hash-password` prints; never a cleartext password.
    pub password: Option<StoredCredential>,
    /// The OS identity of a process on a Unix-socket listener.
    pub peer: Option<PeerRule>,
    /// A token (sent as the password) from a `[[jwt_issuer]]`, with what it must say.
    pub jwt: Option<JwtRule>,
    /// A TLS client certificate from `client_tls.client_ca`, naming this SPIFFE ID or CN.
    pub cert: Option<CertRule>,
    /// Roles this client may use; the first is its default.
    pub roles: Vec<String>,
}

/// How a client proves who it is.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    Password(&'a StoredCredential),
    Peer(&'a PeerRule),
    Jwt(&'a JwtRule),
    Cert(&'a CertRule),
}

impl Proof<'_> {
    /// The `auth_method` of audit events and metrics.
    pub fn method(&self) -> &'static str {
        match self {
            Proof::Password(_) => "password",
            Proof::Peer(_) => "peer",
            Proof::Jwt(_) => "jwt",
            Proof::Cert(_) => "cert",
        }
    }
}

/// `peer = { uid = 1001 }`, `{ gid = … }` or `{ user = "name" }`: one of them, matched against
/// the connecting process's credentials (`SO_PEERCRED`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerRule {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// A user name, resolved to its uid at each login (so a renumbered user still matches).
    pub user: Option<String>,
}

impl PeerRule {
    pub fn matches(&self, cred: &PeerCred) -> bool {
        match (self.uid, self.gid, &self.user) {
            (Some(uid), None, None) => cred.uid == uid,
            (None, Some(gid), None) => cred.gid == gid,
            (None, None, Some(user)) => crate::peer::uid_of(user) == Some(cred.uid),
            // `validate` refuses any other shape.
            _ => false,
        }
    }

    fn validate(&self, at: &str, problems: &mut Vec<Problem>) {
        let set = [self.uid.is_some(), self.gid.is_some(), self.user.is_some()].iter().filter(|s| **s).count();
        if set != 1 {
            problems.push(Problem::new(format!("{at}.peer"), "exactly one of uid, gid or user"));
        }
    }
}

/// `cert = { spiffe_id = "spiffe://…" }` or `{ subject_cn = "…" }`: what a client certificate
/// (verified against `client_tls.client_ca`) must name.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CertRule {
    pub spiffe_id: Option<String>,
    pub subject_cn: Option<String>,
}

impl CertRule {
    /// `spiffe_id`: the certificate's one SPIFFE ID (none when it has several or is a CA).
    pub fn matches(&self, spiffe_id: Option<&str>, subject_cn: Option<&str>) -> bool {
        match (&self.spiffe_id, &self.subject_cn) {
            (Some(want), None) => spiffe_id == Some(want.as_str()),
            (None, Some(want)) => subject_cn == Some(want.as_str()),
            _ => false,
        }
    }
}

impl ClientConfig {
    /// The client's one way of proving who it is (`validate` checks there is exactly one).
    pub fn proof(&self) -> Option<Proof<'_>> {
        match (&self.password, &self.peer, &self.jwt, &self.cert) {
            (Some(p), None, None, None) => Some(Proof::Password(p)),
            (None, Some(p), None, None) => Some(Proof::Peer(p)),
            (None, None, Some(j), None) => Some(Proof::Jwt(j)),
            (None, None, None, Some(c)) => Some(Proof::Cert(c)),
            _ => None,
        }
    }

    /// `via_sidecar`: a `[[sidecar]]` names this client, so it may have no proof here.
    pub(super) fn validate(&self, at: &str, via_sidecar: bool, problems: &mut Vec<Problem>) {
        if self.name.is_empty() || self.name.contains('/') {
            problems.push(Problem::new(format!("{at}.name"), "must be non-empty and contain no '/'"));
        }
        if self.roles.is_empty() {
            problems.push(Problem::new(format!("{at}.roles"), "at least one role is required"));
        }
        let methods =
            [self.password.is_some(), self.peer.is_some(), self.jwt.is_some(), self.cert.is_some()].iter().filter(|s| **s).count();
        if methods > 1 || (methods == 0 && !via_sidecar) {
            problems.push(Problem::new(at.to_string(), "a client proves who it is in exactly one way: password, peer, jwt or cert"));
        }
        if let Some(cert) = &self.cert
            && cert.spiffe_id.is_some() == cert.subject_cn.is_some()
        {
            problems.push(Problem::new(format!("{at}.cert"), "exactly one of spiffe_id or subject_cn"));
        }
        if let Some(peer) = &self.peer {
            peer.validate(at, problems);
        }
    }
}
