//! SCRAM-SHA-256 (RFC 5802/7677) as Postgres speaks it, server side, without I/O.
//!
//! [`ServerExchange`] checks a client's proof against a stored [`ScramVerifier`], including the
//! `tls-server-end-point` channel binding of SCRAM-SHA-256-PLUS. [`verifier`] computes the
//! verifier put into `CREATE ROLE … PASSWORD` for minted users. The client side (upstream leg)
//! is postgres-protocol's `ScramSha256`.

use crate::credential::ScramVerifier;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message does not follow the SCRAM grammar (SQLSTATE 08P01).
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// Channel binding was required, refused, or does not match (SQLSTATE 28000).
    #[error("SCRAM channel binding check failed: {0}")]
    ChannelBinding(&'static str),
    /// The mechanism is not one we offered.
    #[error("unsupported SASL mechanism")]
    Mechanism,
    /// The proof is wrong: a wrong password (SQLSTATE 28P01).
    #[error("password authentication failed")]
    Proof,
}

type HmacSha256 = Hmac<Sha256>;

#[allow(clippy::expect_used)] // HMAC is defined for keys of every length; the error cannot occur.
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block, SCRAM's `Hi()`.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut u = hmac(password, &[salt, &1u32.to_be_bytes()]);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &[&u]);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

/// The verifier for `password` (no SASLprep: callers pass ASCII they generated).
pub fn verifier(password: &[u8], salt: &[u8], iterations: u32) -> ScramVerifier {
    let salted = hi(password, salt, iterations);
    let client_key = hmac(&salted, &[b"Client Key"]);
    ScramVerifier {
        iterations,
        salt: salt.to_vec(),
        stored_key: Sha256::digest(client_key).into(),
        server_key: hmac(&salted, &[b"Server Key"]),
    }
}

/// What the TLS layer lets the exchange bind to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Binding {
    /// Plain TCP: only SCRAM-SHA-256 is offered.
    None,
    /// TLS: SCRAM-SHA-256-PLUS is offered with this `tls-server-end-point` hash.
    TlsServerEndPoint(Vec<u8>),
}

impl Binding {
    /// Mechanisms to list in AuthenticationSASL, most preferred first.
    pub fn mechanisms(&self) -> &'static [&'static str] {
        match self {
            Binding::None => &[SCRAM_SHA_256],
            Binding::TlsServerEndPoint(_) => &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256],
        }
    }
}

/// One server-side SCRAM exchange: `client_first` → `client_final`.
pub struct ServerExchange<'a> {
    verifier: &'a ScramVerifier,
    binding: Binding,
    /// When false the exchange runs to the end but never succeeds (unknown user).
    genuine: bool,
    state: State,
}

enum State {
    Start,
    First { cbind_input: Vec<u8>, nonce: String, client_first_bare: String, server_first: String },
    Done,
}

impl<'a> ServerExchange<'a> {
    pub fn new(verifier: &'a ScramVerifier, binding: Binding) -> Self {
        ServerExchange { verifier, binding, genuine: true, state: State::Start }
    }

    /// An exchange that always fails at the proof, for a user that does not exist, so that
    /// the client cannot tell "unknown user" from "wrong password".
    pub fn mock(verifier: &'a ScramVerifier, binding: Binding) -> Self {
        ServerExchange { verifier, binding, genuine: false, state: State::Start }
    }

    /// Handles SASLInitialResponse; returns the server-first-message.
    pub fn client_first(&mut self, mechanism: &str, message: &[u8]) -> Result<String, ScramError> {
        let message = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let plus = match mechanism {
            SCRAM_SHA_256 => false,
            SCRAM_SHA_256_PLUS if matches!(self.binding, Binding::TlsServerEndPoint(_)) => true,
            _ => return Err(ScramError::Mechanism),
        };
        let (cbind_flag, rest) = message.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
        let (authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed("authorization identities are not supported"));
        }
        let cbind_data: &[u8] = match (cbind_flag, plus, &self.binding) {
            ("p=tls-server-end-point", true, Binding::TlsServerEndPoint(hash)) => hash,
            (flag, true, _) if flag.starts_with("p=") => return Err(ScramError::ChannelBinding("unsupported channel binding type")),
            (_, true, _) => return Err(ScramError::ChannelBinding("SCRAM-SHA-256-PLUS requires channel binding data")),
            ("n", false, _) => &[],
            // The client could bind but thinks we cannot: someone stripped -PLUS from our offer.
            ("y", false, Binding::TlsServerEndPoint(_)) => {
                return Err(ScramError::ChannelBinding("client supports channel binding, but the server offered it"));
            }
            ("y", false, Binding::None) => &[],
            (flag, false, _) if flag.starts_with("p=") => {
                return Err(ScramError::ChannelBinding("channel binding requested with SCRAM-SHA-256"));
            }
            _ => return Err(ScramError::Malformed("invalid channel binding flag")),
        };
        let client_nonce = bare
            .split(',')
            .find_map(|attr| attr.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("missing or invalid nonce"))?;
        if bare.starts_with("m=") {
            return Err(ScramError::Malformed("mandatory extensions are not supported"));
        }
        let nonce = format!("{client_nonce}{}", server_nonce());
        let server_first = format!("r={nonce},s={},i={}", B64.encode(&self.verifier.salt), self.verifier.iterations);
        let mut cbind_input = format!("{cbind_flag},,").into_bytes();
        cbind_input.extend_from_slice(cbind_data);
        self.state = State::First { cbind_input, nonce, client_first_bare: bare.to_string(), server_first: server_first.clone() };
        Ok(server_first)
    }

    /// Handles SASLResponse; returns the server-final-message on success.
    pub fn client_final(&mut self, message: &[u8]) -> Result<String, ScramError> {
        let State::First { cbind_input, nonce, client_first_bare, server_first } = std::mem::replace(&mut self.state, State::Done) else {
            return Err(ScramError::Malformed("unexpected SCRAM message"));
        };
        let message = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = message.rsplit_once(",p=").ok_or(ScramError::Malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs.next().and_then(|a| a.strip_prefix("c=")).ok_or(ScramError::Malformed("missing channel binding"))?;
        let their_nonce = attrs.next().and_then(|a| a.strip_prefix("r=")).ok_or(ScramError::Malformed("missing nonce"))?;
        let cbind = B64.decode(cbind).map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        if cbind != cbind_input {
            return Err(ScramError::ChannelBinding("channel binding data does not match"));
        }
        if their_nonce != nonce {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64.decode(proof).map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let proof: [u8; 32] = proof.as_slice().try_into().map_err(|_| ScramError::Malformed("proof has the wrong length"))?;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&self.verifier.stored_key, &[auth_message.as_bytes()]);
        let mut client_key = proof;
        for (k, s) in client_key.iter_mut().zip(client_signature.iter()) {
            *k ^= s;
        }
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        let matches: bool = stored.ct_eq(&self.verifier.stored_key).into();
        if !(matches && self.genuine) {
            return Err(ScramError::Proof);
        }
        let server_signature = hmac(&self.verifier.server_key, &[auth_message.as_bytes()]);
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

fn server_nonce() -> String {
    let bytes: [u8; 18] = rand::random();
    B64.encode(bytes)
}

/// How unknown logins are mocked on every Postgres listener: the key their salts derive from,
/// and the iteration count and salt length real clients' verifiers have. Derived from the
/// configured verifiers (secret material a prober never sees), so an unknown name gets the
/// same salt on every listener and after every restart, as a real client does.
#[derive(Clone)]
pub struct MockSalts {
    key: [u8; 32],
    iterations: u32,
    salt_len: usize,
}

impl MockSalts {
    pub fn from_clients<'a>(verifiers: impl Iterator<Item = (&'a str, &'a ScramVerifier)>) -> MockSalts {
        let mut key = Sha256::new();
        key.update(b"leasegate mock SCRAM salts v1");
        let (mut iterations, mut salt_lens) = (Vec::new(), Vec::new());
        for (name, v) in verifiers {
            for part in [name.as_bytes(), &v.salt, &v.stored_key, &v.server_key] {
                key.update((part.len() as u64).to_be_bytes());
                key.update(part);
            }
            iterations.push(v.iterations);
            salt_lens.push(v.salt.len());
        }
        MockSalts {
            key: key.finalize().into(),
            iterations: most_common(iterations).unwrap_or(4096),
            salt_len: most_common(salt_lens).unwrap_or(16),
        }
    }

    /// A verifier for a login name that does not exist: a stable salt per name (so probing
    /// twice looks like a real user) and keys that match no password.
    pub fn verifier(&self, user: &str) -> ScramVerifier {
        let salt = hmac(&self.key, &[b"salt", user.as_bytes()]);
        ScramVerifier {
            iterations: self.iterations,
            salt: salt[..self.salt_len.clamp(1, salt.len())].to_vec(),
            stored_key: hmac(&self.key, &[b"stored", user.as_bytes()]),
            server_key: hmac(&self.key, &[b"server", user.as_bytes()]),
        }
    }
}

fn most_common<T: Ord + Copy>(mut values: Vec<T>) -> Option<T> {
    values.sort_unstable();
    values.chunk_by(|a, b| a == b).max_by_key(|run| run.len()).map(|run| run[0])
}

#[cfg(test)]
mod tests;
