//! Where an issuer's keys come from: a file, a JWKS URL, or an OIDC discovery document that
//! names the JWKS URL. Each load returns the whole key set; the cache decides when to load.

use super::failure::KeysError;
use super::jwks::{PublicKey, parse_jwks};
use crate::net::https::{MAX_BODY, TIMEOUT, https_get, parse_https};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;
use url::Url;

pub enum Source {
    File(PathBuf),
    Jwks {
        url: Url,
        tls: Arc<rustls::ClientConfig>,
    },
    /// `expected_issuer` is the configured `issuer`; the document must name the same one.
    Discovery {
        url: Url,
        tls: Arc<rustls::ClientConfig>,
        expected_issuer: String,
    },
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

impl Source {
    pub fn is_remote(&self) -> bool {
        !matches!(self, Source::File(_))
    }

    /// Reads a `jwks_file` synchronously, for start-up where a bad file is fatal.
    pub fn read_file_now(path: &std::path::Path) -> Result<Vec<PublicKey>, KeysError> {
        let bytes = std::fs::read(path).map_err(|source| KeysError::Read { path: path.display().to_string(), source })?;
        keys(&bytes, &path.display().to_string())
    }

    pub async fn load(&self) -> Result<Vec<PublicKey>, KeysError> {
        match self {
            Source::File(path) => {
                let bytes = tokio::fs::read(path).await.map_err(|source| KeysError::Read { path: path.display().to_string(), source })?;
                keys(&bytes, &path.display().to_string())
            }
            Source::Jwks { url, tls } => fetch_jwks(url, tls).await,
            Source::Discovery { url, tls, expected_issuer } => {
                let bytes = get(url, tls).await?;
                let doc: DiscoveryDocument =
                    serde_json::from_slice(&bytes).map_err(|e| KeysError::Discovery { url: url.to_string(), message: e.to_string() })?;
                // OIDC Discovery §4.3: keys published for another issuer are not this issuer's.
                if &doc.issuer != expected_issuer {
                    return Err(KeysError::DiscoveryIssuer { url: url.to_string(), expected: expected_issuer.clone(), found: doc.issuer });
                }
                let jwks_url =
                    parse_https(&doc.jwks_uri).ok_or(KeysError::JwksUri { url: url.to_string(), jwks_uri: doc.jwks_uri.clone() })?;
                fetch_jwks(&jwks_url, tls).await
            }
        }
    }
}

async fn fetch_jwks(url: &Url, tls: &Arc<rustls::ClientConfig>) -> Result<Vec<PublicKey>, KeysError> {
    keys(&get(url, tls).await?, url.as_str())
}

async fn get(url: &Url, tls: &Arc<rustls::ClientConfig>) -> Result<Vec<u8>, KeysError> {
    https_get(url, tls.clone(), TIMEOUT, MAX_BODY).await.map_err(|source| KeysError::Fetch { url: url.to_string(), source })
}

fn keys(bytes: &[u8], origin: &str) -> Result<Vec<PublicKey>, KeysError> {
    let (keys, skipped) = parse_jwks(bytes).map_err(|message| KeysError::NotJwks { origin: origin.to_string(), message })?;
    if skipped > 0 {
        tracing::debug!(origin, skipped, "JWK set has keys that are not usable signature keys; skipped");
    }
    Ok(keys)
}
