//! TLS for both legs, with one crypto provider (ring) passed explicitly everywhere so no
//! process-wide default is needed and two providers can never meet.
//!
//! Client leg: a rustls `ServerConfig` from PEM files, and the `tls-server-end-point` hash of
//! our certificate for SCRAM-SHA-256-PLUS. Upstream leg: a rustls `ClientConfig` per libpq
//! sslmode, judged as `server_cert` says.

use super::der;
use super::server_cert::{Unverified, Verified};
use crate::config::UpstreamTlsMode;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256, Sha384, Sha512};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read PEM from {path}: {source}")]
    Pem { path: String, source: rustls_pki_types::pem::Error },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trust anchors: every certificate in the PEM bundle `ca` (an error when it holds none), or
/// the web PKI roots when there is no `ca`.
pub fn load_roots(ca: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let pem_err = |source| TlsError::Pem { path: path.display().to_string(), source };
            for cert in CertificateDer::pem_file_iter(path).map_err(pem_err)? {
                roots.add(cert.map_err(pem_err)?)?;
            }
            if roots.is_empty() {
                return Err(TlsError::NoCertificate { path: path.display().to_string() });
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// What the client leg needs to offer TLS.
#[derive(Clone)]
pub struct ServerTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// `tls-server-end-point` channel binding data for our certificate.
    pub end_point_hash: Vec<u8>,
}

/// The client leg's TLS from PEM files. With `client_ca`, clients may present a certificate,
/// which rustls verifies (chain to one of those CAs, client-auth usage, validity); clients
/// without one are still served (password and token clients), and the session decides.
pub fn server_tls(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<ServerTls, TlsError> {
    server_tls_with(cert, key, None, alpn)
}

pub fn server_tls_with(cert: &Path, key: &Path, client_ca: Option<&Path>, alpn: &[&[u8]]) -> Result<ServerTls, TlsError> {
    let pem_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| TlsError::Pem { path, source }
    };
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(cert).map_err(pem_err(cert))?.collect::<Result<_, _>>().map_err(pem_err(cert))?;
    let first = certs.first().ok_or_else(|| TlsError::NoCertificate { path: cert.display().to_string() })?;
    let end_point_hash = tls_server_end_point(first.as_ref());
    let key = PrivateKeyDer::from_pem_file(key).map_err(pem_err(key))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(Some(ca))?), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(ServerTls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), end_point_hash })
}

/// A connector for the upstream leg, or `None` for `disable`.
pub fn client_tls(mode: UpstreamTlsMode, ca: Option<&Path>) -> Result<Option<tokio_rustls::TlsConnector>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let config = match mode {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::Prefer | UpstreamTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider.signature_verification_algorithms)))
            .with_no_client_auth(),
        UpstreamTlsMode::VerifyCa | UpstreamTlsMode::VerifyFull => {
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider)
                .build()
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            let verifier = Arc::new(Verified { webpki, check_name: mode == UpstreamTlsMode::VerifyFull });
            builder.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth()
        }
    };
    Ok(Some(tokio_rustls::TlsConnector::from(Arc::new(config))))
}

pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))
}

/// RFC 5929 `tls-server-end-point`: the certificate hashed with its signature's hash function,
/// SHA-256 when that is MD5, SHA-1 or not a plain hash (as OpenSSL-based servers do).
pub fn tls_server_end_point(cert_der: &[u8]) -> Vec<u8> {
    const SHA384: [&[u8]; 2] = [&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c], &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03]];
    const SHA512: [&[u8]; 2] = [&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d], &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04]];
    match der::signature_algorithm_oid(cert_der) {
        Some(oid) if SHA384.contains(&oid) => Sha384::digest(cert_der).to_vec(),
        Some(oid) if SHA512.contains(&oid) => Sha512::digest(cert_der).to_vec(),
        _ => Sha256::digest(cert_der).to_vec(),
    }
}

/// A self-signed certificate and key (PEM) for `names`, for dev mode and tests.
pub fn self_signed(names: &[&str]) -> Result<(String, String), rcgen::Error> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(names)?.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        let (pem, _) = self_signed(&["localhost"]).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        // rcgen signs with ECDSA P-256 / SHA-256.
        assert_eq!(der::signature_algorithm_oid(&der), Some(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02][..]));
        assert_eq!(tls_server_end_point(&der), Sha256::digest(&der).to_vec());
    }
}
