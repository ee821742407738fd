//! The compact JWS form (RFC 7515 §7.1): splitting, base64url, the header and claims as JSON,
//! and checking the signature with ring. Pure: no keys are looked up and no clock is read here.

use super::failure::JwtFailure;
use super::jwks::{Alg, Curve, KeyMaterial, PublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaParameters, UnparsedPublicKey, VerificationAlgorithm};
use serde::Deserialize;
use serde_json::{Map, Value};

/// A token split and decoded, its signature not yet checked.
pub struct Parsed<'a> {
    pub alg: Alg,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `header.payload` as sent: what the signature covers.
    pub signing_input: &'a [u8],
    pub signature: Vec<u8>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    crit: Option<Value>,
}

const fn malformed(what: &'static str) -> JwtFailure {
    JwtFailure::Malformed { what }
}

pub fn parse(token: &str) -> Result<Parsed<'_>, JwtFailure> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("not three dot-separated parts"));
    };
    let header: Header = decode_json(header).ok_or(malformed("the header is not a base64url JSON object"))?;
    let alg = algorithm(&header.alg)?;
    // RFC 7515 §4.1.11: an extension we do not understand must not be ignored.
    if header.crit.is_some() {
        return Err(malformed("the header has crit extensions"));
    }
    let claims: Map<String, Value> = decode_json(payload).ok_or(malformed("the claims are not a base64url JSON object"))?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed("the signature is not base64url"))?;
    let signing_input = &token.as_bytes()[..header_len(token, payload)];
    Ok(Parsed { alg, kid: header.kid, claims, signing_input, signature })
}

/// The length of `header.payload`, the prefix of the token before the second dot.
fn header_len(token: &str, payload: &str) -> usize {
    token.find('.').map_or(0, |dot| dot + 1 + payload.len())
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

/// `none` and HS* get their own failure: a token asking for them is an attack or a
/// misconfigured issuer, and either is worth telling apart from an unknown algorithm.
fn algorithm(name: &str) -> Result<Alg, JwtFailure> {
    if let Some(alg) = Alg::from_name(name) {
        return Ok(alg);
    }
    let refused = match name.to_ascii_uppercase().as_str() {
        "NONE" => "none",
        "HS256" => "HS256",
        "HS384" => "HS384",
        "HS512" => "HS512",
        other if other.starts_with("HS") => "HS*",
        _ => return Err(JwtFailure::UnsupportedAlgorithm),
    };
    Err(JwtFailure::SymmetricOrNone { alg: refused })
}

/// Whether `signature` over `message` verifies with `key` under `alg`. The caller has
/// checked [`PublicKey::fits`]; a mismatch here simply fails.
pub fn verify_signature(alg: Alg, key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    match &key.material {
        KeyMaterial::Rsa { n, e } => {
            let Some(params) = rsa_params(alg) else { return false };
            signature::RsaPublicKeyComponents { n, e }.verify(params, message, signature).is_ok()
        }
        KeyMaterial::Ec { curve, point } => {
            let algorithm: &dyn VerificationAlgorithm = match (curve, alg) {
                (Curve::P256, Alg::Es256) => &signature::ECDSA_P256_SHA256_FIXED,
                (Curve::P384, Alg::Es384) => &signature::ECDSA_P384_SHA384_FIXED,
                _ => return false,
            };
            UnparsedPublicKey::new(algorithm, point).verify(message, signature).is_ok()
        }
        KeyMaterial::Ed25519 { x } => {
            alg == Alg::EdDsa && UnparsedPublicKey::new(&signature::ED25519, x).verify(message, signature).is_ok()
        }
    }
}

fn rsa_params(alg: Alg) -> Option<&'static RsaParameters> {
    Some(match alg {
        Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
        Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
        Alg::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
        Alg::Es256 | Alg::Es384 | Alg::EdDsa => return None,
    })
}
