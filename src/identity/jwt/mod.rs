//! JWT workload identity (DESIGN.md §2a): verifying a token against the configured
//! `[[jwt_issuer]]`s and handing back its claims as a [`VerifiedToken`].
//!
//! Owns the issuers' key sets (loading, background refresh, the refetch an unknown `kid`
//! triggers) and every check a token must pass: size, form, algorithm, issuer, key, signature,
//! audience, validity times. Deciding which client a verified token proves is
//! [`crate::config::JwtRule::matches`]; taking the token off the wire is the protocols' job.
//!
//! Only asymmetric algorithms exist here (RS*, PS*, ES256/384, EdDSA, all on ring): there is no
//! code path that uses key bytes as an HMAC secret, so algorithm confusion cannot happen.

mod checks;
mod failure;
use crate::net::https;
pub(crate) mod jwks;
mod keys;
mod source;
pub(crate) mod token;

pub use failure::{FetchError, JwtFailure, JwtSetupError, KeysError};
pub use jwks::Alg;

use crate::config::JwtIssuerConfig;
use jwks::PublicKey;
use keys::{KeyCache, KeySet};
use serde_json::{Map, Value};
use source::Source;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The longest token accepted (DESIGN.md §2a); checked before anything is decoded.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A token that passed every check. Its `Debug` shows who it names, never the other claims.
#[derive(Clone)]
pub struct VerifiedToken {
    /// The `[[jwt_issuer]]` name that verified it.
    pub issuer_name: String,
    pub iss: String,
    pub sub: Option<String>,
    pub jti: Option<String>,
    pub expires_at: SystemTime,
    pub claims: Map<String, Value>,
}

impl VerifiedToken {
    /// Whether this token proves the client whose `jwt = {…}` rule is `rule`.
    pub fn satisfies(&self, rule: &crate::config::JwtRule) -> bool {
        rule.matches(&self.issuer_name, self.sub.as_deref(), &self.claims)
    }

    /// What the audit names as the proof: `iss`, `sub` and (when present) `jti`.
    pub fn subject(&self) -> String {
        let mut out = format!("iss={} sub={}", self.iss, self.sub.as_deref().unwrap_or("-"));
        if let Some(jti) = &self.jti {
            out.push_str(" jti=");
            out.push_str(jti);
        }
        out
    }
}

impl fmt::Debug for VerifiedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("issuer_name", &self.issuer_name)
            .field("iss", &self.iss)
            .field("sub", &self.sub)
            .field("jti", &self.jti)
            .field("expires_at", &self.expires_at)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Every configured issuer with its keys; cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Verifiers {
    issuers: Arc<Vec<Arc<Issuer>>>,
}

struct Issuer {
    config: JwtIssuerConfig,
    source: Source,
    keys: KeyCache,
}

impl Verifiers {
    /// Reads every `jwks_file` and loads every `ca` now; remote key sets start empty until
    /// [`Verifiers::start`] (or the first token, through the unknown-key refetch) loads them.
    pub fn new(issuers: &[JwtIssuerConfig]) -> Result<Verifiers, JwtSetupError> {
        let built = issuers.iter().map(Issuer::new).collect::<Result<Vec<_>, _>>()?;
        Ok(Verifiers { issuers: Arc::new(built.into_iter().map(Arc::new).collect()) })
    }

    /// The first fetch of every URL and discovery issuer, concurrently. Failures are logged,
    /// not fatal: one unreachable issuer must not keep the others' clients out.
    pub async fn start(&self) {
        let mut loads = tokio::task::JoinSet::new();
        for issuer in self.issuers.iter().filter(|i| i.source.is_remote()).cloned() {
            loads.spawn(async move { issuer.keys.reload(&issuer.source, &issuer.config.name).await });
        }
        while loads.join_next().await.is_some() {}
    }

    /// One task per issuer reloading its keys every `refresh` (files are re-read, so a rotated
    /// `jwks_file` takes effect) until `shutdown` is cancelled.
    pub fn spawn_refresh(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let spawn = |issuer: Arc<Issuer>| {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(issuer.config.refresh) => {}
                    }
                    issuer.keys.reload(&issuer.source, &issuer.config.name).await;
                }
            })
        };
        self.issuers.iter().cloned().map(spawn).collect()
    }

    /// Verifies `token` at the wall-clock time (`exp`/`nbf`/`iat` are wall-clock by definition).
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, JwtFailure> {
        self.verify_at(token, SystemTime::now()).await
    }

    pub(crate) async fn verify_at(&self, token: &str, now: SystemTime) -> Result<VerifiedToken, JwtFailure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtFailure::TooLong { len: token.len(), max: MAX_TOKEN_BYTES });
        }
        let parsed = token::parse(token)?;
        // Unverified until the signature is checked, but only used to pick whose keys check it.
        let iss = parsed.claims.get("iss").and_then(Value::as_str).ok_or(JwtFailure::Issuer)?;
        let issuer = self.issuers.iter().find(|i| i.config.issuer == iss).ok_or(JwtFailure::Issuer)?;
        issuer.check_signature(&parsed).await?;
        let expires_at = checks::check(&parsed.claims, &issuer.config, now)?;
        let text = |name: &str| match parsed.claims.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(JwtFailure::Malformed { what: "sub or jti is not a string" }),
        };
        Ok(VerifiedToken {
            issuer_name: issuer.config.name.clone(),
            iss: iss.to_string(),
            sub: text("sub")?,
            jti: text("jti")?,
            expires_at,
            claims: parsed.claims.clone(),
        })
    }

    #[cfg(test)]
    fn key_generation(&self, issuer: usize) -> u64 {
        self.issuers[issuer].keys.current().generation
    }
}

impl Issuer {
    fn new(config: &JwtIssuerConfig) -> Result<Issuer, JwtSetupError> {
        let name = || config.name.clone();
        let remote = |text: &str| {
            let url = https::parse_https(text).ok_or_else(|| JwtSetupError::Url { issuer: name(), url: text.to_string() })?;
            let tls = https::client_config(config.ca.as_deref()).map_err(|source| JwtSetupError::Ca { issuer: name(), source })?;
            Ok((url, tls))
        };
        let (source, keys) = match (&config.jwks_file, &config.jwks_url, &config.discovery_url) {
            (Some(path), _, _) => {
                let keys = Source::read_file_now(path).map_err(|source| JwtSetupError::Keys { issuer: name(), source })?;
                (Source::File(path.clone()), keys)
            }
            (None, Some(url), _) => {
                let (url, tls) = remote(url)?;
                (Source::Jwks { url, tls }, Vec::new())
            }
            (None, None, Some(url)) => {
                let (url, tls) = remote(url)?;
                (Source::Discovery { url, tls, expected_issuer: config.issuer.clone() }, Vec::new())
            }
            // Config validation refuses this; without a source there are no keys to trust.
            (None, None, None) => (Source::File(Default::default()), Vec::new()),
        };
        Ok(Issuer { config: config.clone(), source, keys: KeyCache::new(keys) })
    }

    /// Finds the key and checks the signature, refetching once when no key fits.
    async fn check_signature(&self, parsed: &token::Parsed<'_>) -> Result<(), JwtFailure> {
        let keys = self.keys.current();
        match self.try_keys(&keys, parsed) {
            Err(JwtFailure::UnknownKey { .. }) => {
                let fresh = self.keys.refetch(&self.source, &self.config.name, &keys).await;
                if fresh.generation == keys.generation {
                    return Err(JwtFailure::UnknownKey { issuer: self.config.name.clone() });
                }
                self.try_keys(&fresh, parsed)
            }
            other => other,
        }
    }

    /// With a `kid`, only that key is a candidate; without one, every key of the right type.
    fn try_keys(&self, keys: &KeySet, parsed: &token::Parsed<'_>) -> Result<(), JwtFailure> {
        let issuer = || self.config.name.clone();
        let named: Vec<&PublicKey> = match &parsed.kid {
            Some(kid) => keys.keys.iter().filter(|k| k.kid.as_ref() == Some(kid)).collect(),
            None => keys.keys.iter().collect(),
        };
        let fitting: Vec<&PublicKey> = named.iter().copied().filter(|k| k.fits(parsed.alg)).collect();
        if fitting.is_empty() {
            return Err(if parsed.kid.is_some() && !named.is_empty() {
                JwtFailure::KeyMismatch { issuer: issuer(), alg: parsed.alg }
            } else {
                JwtFailure::UnknownKey { issuer: issuer() }
            });
        }
        if fitting.iter().any(|key| token::verify_signature(parsed.alg, key, parsed.signing_input, &parsed.signature)) {
            Ok(())
        } else {
            Err(JwtFailure::Signature { issuer: issuer() })
        }
    }
}

#[cfg(test)]
mod tests;
