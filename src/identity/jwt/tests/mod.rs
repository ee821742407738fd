//! Test fixtures: keys generated with ring (RSA from a fixed test key, ring cannot generate RSA),
//! tokens signed with them, and verifiers over a JWK set written to a private temp file.

mod https;
mod refetch;
mod verify;

use super::Verifiers;
use super::jwks::Alg;
use crate::config::JwtIssuerConfig;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A 2048-bit RSA key made with `openssl genpkey` for these tests only (PKCS#8 DER).
const RSA_PKCS8: &[u8] = include_bytes!("../testdata/rsa2048.pk8.der");

pub const ISS: &str = "https://issuer.test";
pub const AUD: &str = "leasegate";

/// The "current time" of every test: fixed, so validity windows are exact.
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
    Ed(Ed25519KeyPair),
}

impl Signer {
    pub fn rsa() -> Signer {
        Signer::Rsa(RsaKeyPair::from_pkcs8(RSA_PKCS8).unwrap())
    }

    pub fn p256() -> Signer {
        Signer::ec(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")
    }

    pub fn p384() -> Signer {
        Signer::ec(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")
    }

    fn ec(alg: &'static signature::EcdsaSigningAlgorithm, crv: &'static str) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Signer::Ec(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap(), crv)
    }

    pub fn ed25519() -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Signer::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    /// The public JWK, as an issuer would publish it.
    pub fn jwk(&self, kid: &str) -> Value {
        match self {
            Signer::Rsa(kp) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public());
                json!({"kty": "RSA", "kid": kid, "use": "sig", "n": b64(&c.n), "e": b64(&c.e)})
            }
            Signer::Ec(kp, crv) => {
                let point = kp.public_key().as_ref();
                let half = (point.len() - 1) / 2;
                json!({"kty": "EC", "kid": kid, "crv": crv, "x": b64(&point[1..1 + half]), "y": b64(&point[1 + half..])})
            }
            Signer::Ed(kp) => json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(kp.public_key().as_ref())}),
        }
    }

    /// The raw signature `alg` makes over `message` (the caller picks an alg that fits).
    pub fn signature(&self, alg: Alg, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Rsa(kp) => {
                let padding: &'static dyn signature::RsaEncoding = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_SHA256,
                    Alg::Rs384 => &signature::RSA_PKCS1_SHA384,
                    Alg::Rs512 => &signature::RSA_PKCS1_SHA512,
                    Alg::Ps256 => &signature::RSA_PSS_SHA256,
                    Alg::Ps384 => &signature::RSA_PSS_SHA384,
                    Alg::Ps512 => &signature::RSA_PSS_SHA512,
                    other => panic!("{other} is not an RSA algorithm"),
                };
                let mut out = vec![0; kp.public().modulus_len()];
                kp.sign(padding, &rng, message, &mut out).unwrap();
                out
            }
            Signer::Ec(kp, _) => kp.sign(&rng, message).unwrap().as_ref().to_vec(),
            Signer::Ed(kp) => kp.sign(message).as_ref().to_vec(),
        }
    }

    /// A compact JWS with header `{"alg", "kid"}` over `claims`.
    pub fn token(&self, alg: Alg, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": alg.name(), "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let signature = self.signature(alg, input.as_bytes());
        format!("{input}.{}", b64(&signature))
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Claims that pass every check at [`now`].
pub fn claims() -> Value {
    json!({
        "iss": ISS,
        "sub": "system:serviceaccount:shop:billing-api",
        "aud": [AUD, "other"],
        "exp": secs(now()) + 600,
        "iat": secs(now()) - 10,
        "jti": "token-1",
    })
}

/// A private directory removed on drop; one per test, so tests run in parallel.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("leasegate-jwt-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn config(jwks_file: PathBuf) -> JwtIssuerConfig {
    JwtIssuerConfig {
        name: "k8s".into(),
        issuer: ISS.into(),
        jwks_file: Some(jwks_file),
        jwks_url: None,
        discovery_url: None,
        ca: None,
        audiences: vec![AUD.into()],
        leeway: Duration::from_secs(60),
        max_token_age: None,
        refresh: Duration::from_secs(300),
    }
}

pub fn write_jwks(path: &std::path::Path, keys: &[Value]) {
    std::fs::write(path, json!({ "keys": keys }).to_string()).unwrap();
}

/// Verifiers for one issuer whose JWK set holds `keys`; the dir keeps the file alive.
pub fn verifiers(keys: &[Value], tweak: impl FnOnce(&mut JwtIssuerConfig)) -> (Verifiers, TempDir) {
    let dir = TempDir::new();
    let path = dir.0.join("jwks.json");
    write_jwks(&path, keys);
    let mut config = config(path);
    tweak(&mut config);
    (Verifiers::new(&[config]).unwrap(), dir)
}
