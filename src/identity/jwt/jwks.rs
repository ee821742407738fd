//! JWK sets (RFC 7517) into verification keys, and which algorithm fits which key.
//!
//! Only public signature keys are kept: RSA, EC P-256/P-384 and Ed25519. Symmetric (`oct`)
//! keys, encryption keys (`use` other than `sig`) and anything unparseable are skipped, so one
//! odd key in an issuer's set does not cost the others.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use std::fmt;

/// A signature algorithm this verifier implements. `none` and HS* are not here on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Alg {
    pub fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

/// The public material of one key, already decoded and length-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// Big-endian modulus and exponent, leading zeros removed (ring wants them minimal).
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point `0x04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: Option<String>,
    /// The JWK's `alg`, when it pins one (an unknown one makes the key unusable, not skipped).
    pub alg: Option<String>,
    pub material: KeyMaterial,
}

impl PublicKey {
    /// Whether a token signed with `alg` may be checked with this key: the key type must fit,
    /// and a JWK that names its algorithm is used for that algorithm only.
    pub fn fits(&self, alg: Alg) -> bool {
        if self.alg.as_deref().is_some_and(|pinned| pinned != alg.name()) {
            return false;
        }
        matches!(
            (&self.material, alg),
            (KeyMaterial::Rsa { .. }, Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512)
                | (KeyMaterial::Ec { curve: Curve::P256, .. }, Alg::Es256)
                | (KeyMaterial::Ec { curve: Curve::P384, .. }, Alg::Es384)
                | (KeyMaterial::Ed25519 { .. }, Alg::EdDsa)
        )
    }
}

#[derive(Deserialize)]
struct JwkSet {
    keys: Vec<serde_json::Value>,
}

/// The fields of a JWK this module reads; all optional so a foreign key type is skipped, not fatal.
#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(rename = "use")]
    use_: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Parses a JWK set; `Err` only when the document itself is not one. Returns the usable keys
/// and how many were skipped.
pub fn parse_jwks(bytes: &[u8]) -> Result<(Vec<PublicKey>, usize), String> {
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let total = set.keys.len();
    let keys: Vec<PublicKey> =
        set.keys.into_iter().filter_map(|v| serde_json::from_value::<Jwk>(v).ok()).filter_map(|jwk| public_key(&jwk)).collect();
    let skipped = total - keys.len();
    Ok((keys, skipped))
}

fn public_key(jwk: &Jwk) -> Option<PublicKey> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let material = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
        ("RSA", _) => KeyMaterial::Rsa { n: minimal(b64(jwk.n.as_deref()?)?), e: minimal(b64(jwk.e.as_deref()?)?) },
        ("EC", Some(crv @ ("P-256" | "P-384"))) => {
            let (curve, len) = if crv == "P-256" { (Curve::P256, 32) } else { (Curve::P384, 48) };
            let (x, y) = (b64(jwk.x.as_deref()?)?, b64(jwk.y.as_deref()?)?);
            if x.len() != len || y.len() != len {
                return None;
            }
            KeyMaterial::Ec { curve, point: [&[0x04][..], &x, &y].concat() }
        }
        ("OKP", Some("Ed25519")) => {
            let x = b64(jwk.x.as_deref()?)?;
            if x.len() != 32 {
                return None;
            }
            KeyMaterial::Ed25519 { x }
        }
        _ => return None,
    };
    Some(PublicKey { kid: jwk.kid.clone(), alg: jwk.alg.clone(), material })
}

fn b64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok().filter(|v| !v.is_empty())
}

fn minimal(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}
