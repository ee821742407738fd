//! Why a token was refused ([`JwtFailure`]), why the verifiers could not be built
//! ([`JwtSetupError`]) and why a key set could not be loaded ([`KeysError`]).
//!
//! No variant carries any part of the token (not its text, its signature, its `kid` or its `iss`):
//! a token is a bearer credential and failures end up in logs and audit events. What a variant
//! carries comes from our own config.

use super::jwks::Alg;

/// A token refused by [`super::Verifiers::verify`]. [`JwtFailure::reason`] is the
/// low-cardinality label for metrics and audit.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwtFailure {
    /// Longer than the 16 KiB the wire protocols accept (DESIGN.md §2a).
    #[error("token is {len} bytes, more than the {max} allowed")]
    TooLong { len: usize, max: usize },
    /// Not a compact JWS, or its header or claims are not what a JWT must be.
    #[error("malformed token: {what}")]
    Malformed { what: &'static str },
    /// `none` or an HMAC algorithm: refused outright, as there is no shared secret to check
    /// them with (and accepting them would let a public key act as one).
    #[error("algorithm {alg} is refused: only asymmetric signatures are accepted")]
    SymmetricOrNone { alg: &'static str },
    /// An `alg` this verifier does not implement.
    #[error("unsupported signature algorithm")]
    UnsupportedAlgorithm,
    /// The key named by `kid` is of another type, or its JWK `alg` differs from the token's.
    #[error("{alg} does not fit the key of issuer {issuer}")]
    KeyMismatch { issuer: String, alg: Alg },
    /// No configured `[[jwt_issuer]]` has this `iss` (or the token has no `iss`).
    #[error("the token's issuer is not configured")]
    Issuer,
    /// No key of the issuer has the token's `kid` (or fits its `alg`), even after a refetch.
    #[error("no key of issuer {issuer} matches the token")]
    UnknownKey { issuer: String },
    /// The signature does not verify with the issuer's key.
    #[error("bad signature for issuer {issuer}")]
    Signature { issuer: String },
    /// `aud` names none of the issuer's `audiences`.
    #[error("the token is not for this audience (issuer {issuer})")]
    Audience { issuer: String },
    /// `exp` plus the leeway is in the past.
    #[error("the token has expired (issuer {issuer})")]
    Expired { issuer: String },
    /// `nbf` (or `iat`) minus the leeway is in the future.
    #[error("the token is not valid yet (issuer {issuer})")]
    NotYetValid { issuer: String },
    /// `iat` is older than `max_token_age` plus the leeway.
    #[error("the token was issued too long ago (issuer {issuer})")]
    TooOld { issuer: String },
}

impl JwtFailure {
    /// The label for metrics and audit; one of a fixed set.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtFailure::TooLong { .. } => "too_long",
            JwtFailure::Malformed { .. } => "malformed",
            JwtFailure::SymmetricOrNone { .. } | JwtFailure::UnsupportedAlgorithm | JwtFailure::KeyMismatch { .. } => "algorithm",
            JwtFailure::Issuer => "issuer",
            JwtFailure::UnknownKey { .. } => "unknown_key",
            JwtFailure::Signature { .. } => "signature",
            JwtFailure::Audience { .. } => "audience",
            JwtFailure::Expired { .. } => "expired",
            JwtFailure::NotYetValid { .. } => "not_yet_valid",
            JwtFailure::TooOld { .. } => "too_old",
        }
    }
}

/// [`super::Verifiers::new`] failed: a `jwks_file` cannot be used or a `ca` cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwtSetupError {
    #[error("jwt_issuer {issuer:?}: {source}")]
    Keys { issuer: String, source: KeysError },
    #[error("jwt_issuer {issuer:?}: ca: {source}")]
    Ca { issuer: String, source: crate::net::tls::TlsError },
    #[error("jwt_issuer {issuer:?}: {url:?} is not an https:// URL with a host")]
    Url { issuer: String, url: String },
}

/// Loading a key set (file, JWKS URL or discovery) failed; the previous keys stay in use.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{origin}: not a JWK set: {message}")]
    NotJwks { origin: String, message: String },
    #[error("{url}: {source}")]
    Fetch { url: String, source: FetchError },
    #[error("{url}: not an OIDC discovery document: {message}")]
    Discovery { url: String, message: String },
    /// The discovery document names another issuer: its keys are not this issuer's.
    #[error("{url}: discovery names issuer {found:?}, not the configured {expected:?}")]
    DiscoveryIssuer { url: String, expected: String, found: String },
    #[error("{url}: jwks_uri {jwks_uri:?} is not an https:// URL with a host")]
    JwksUri { url: String, jwks_uri: String },
}

/// One HTTPS GET failed.
pub use crate::net::https::FetchError;
