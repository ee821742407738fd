//! How the upstream leg judges the server's certificate, per libpq sslmode: `prefer`/`require`
//! encrypt without judging it, `verify-ca` checks the chain, `verify-full` the chain and name.
//!
//! The handshake signature (proof that the server holds the certificate's key) is checked in
//! every mode. For `prefer`/`require` it is checked against the certificate's public key read
//! directly ([`der::subject_public_key`]) rather than through webpki, which refuses X.509 v1
//! certificates outright (`UnsupportedCertVersion`): libpq and the mysql client accept them,
//! and `openssl x509 -req` without extensions makes them. The verify modes need webpki's path
//! building, which only knows v3; for a v1 certificate they fail with a message saying so.

use super::der;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{CertificateError, DigitallySignedStruct, PeerMisbehaved, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

/// `prefer`/`require`: any certificate, as long as the server proves it holds its key.
#[derive(Debug)]
pub struct Unverified(pub WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        handshake_signature(m, c, d, &self.0, false)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        handshake_signature(m, c, d, &self.0, true)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca` (`check_name: false`) and `verify-full`: webpki's chain check, the name too
/// for `verify-full`.
#[derive(Debug)]
pub struct Verified {
    pub webpki: Arc<WebPkiServerVerifier>,
    pub check_name: bool,
}

impl ServerCertVerifier for Verified {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if der::is_v1(end_entity) {
            return Err(rustls::Error::General(
                "the server's certificate is X.509 v1, which verify-ca and verify-full cannot check: \
                 reissue it as v3 (openssl x509 -req with -extfile giving subjectAltName) or use mode = \"require\""
                    .into(),
            ));
        }
        match self.webpki.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }))
                if !self.check_name =>
            {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// Checks `signature` over `message` with the certificate's public key, trying the algorithms
/// the scheme maps to whose key type matches (TLS 1.2), or only the first one (TLS 1.3, where
/// the scheme names the curve), as rustls's own `verify_tls1{2,3}_signature` do.
fn handshake_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    supported: &WebPkiSupportedAlgorithms,
    tls13: bool,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    // TLS 1.3 forbids PKCS#1 v1.5 and SHA-1 handshake signatures (RFC 8446 §4.2.3).
    const NOT_IN_TLS13: [SignatureScheme; 5] = [
        SignatureScheme::RSA_PKCS1_SHA1,
        SignatureScheme::ECDSA_SHA1_Legacy,
        SignatureScheme::RSA_PKCS1_SHA256,
        SignatureScheme::RSA_PKCS1_SHA384,
        SignatureScheme::RSA_PKCS1_SHA512,
    ];
    if tls13 && NOT_IN_TLS13.contains(&dss.scheme) {
        return Err(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
    }
    let candidates = supported
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == dss.scheme)
        .map(|(_, algs)| *algs)
        .ok_or(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
    let candidates = if tls13 { &candidates[..candidates.len().min(1)] } else { candidates };
    let (key_algorithm, key) = der::subject_public_key(cert).ok_or(CertificateError::BadEncoding)?;
    let alg = candidates
        .iter()
        .find(|alg| alg.public_key_alg_id().as_ref() == key_algorithm)
        .ok_or_else(|| rustls::Error::General("the handshake signature's scheme does not fit the certificate's key".into()))?;
    alg.verify_signature(key, message, dss.signature())
        .map(|_| HandshakeSignatureValid::assertion())
        .map_err(|_| CertificateError::BadSignature.into())
}
