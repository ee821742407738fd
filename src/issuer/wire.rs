//! What a sidecar and its issuer say to each other: JSON bodies of `/v1/issuer/*`, one type per
//! request and answer, shared by both sides so they cannot drift apart.

use serde::{Deserialize, Serialize};

/// `POST /v1/issuer/grant`: create `user` with `password` for `client` in `role`. The sidecar
/// picks the name (with the issuer's prefix) and the password, so the seam it mints through is
/// the one a local admin connection uses; the issuer checks both and journals the intent first.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub role: String,
    pub client: String,
    pub user: String,
    pub password: String,
    /// The application's own JWT, when it proved itself to the sidecar with one: the issuer
    /// verifies it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_token: Option<String>,
}

impl std::fmt::Debug for GrantRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantRequest")
            .field("role", &self.role)
            .field("client", &self.client)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Drop for GrantRequest {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
        if let Some(t) = &mut self.app_token {
            zeroize::Zeroize::zeroize(t);
        }
    }
}

/// The lease the issuer granted.
#[derive(Debug, Serialize, Deserialize)]
pub struct Granted {
    pub lease_id: String,
    pub expires_at: String,
    pub max_expires_at: String,
}

/// `POST /v1/issuer/renew` (`until`: RFC 3339, clamped to the lease's max TTL) and
/// `POST /v1/issuer/release` (`until` absent): one of the sidecar's users.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRequest {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// `POST /v1/issuer/status`: which of these users' leases have ended (revoked at the issuer,
/// expired, or never known): their sessions close at once.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    pub users: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub ended: Vec<String>,
}

/// Every error: the HTTP status says which kind, `error` says why.
#[derive(Debug, Serialize, Deserialize)]
pub struct Failure {
    pub error: String,
}

/// The most users one status request names.
pub const MAX_STATUS_USERS: usize = 10_000;
