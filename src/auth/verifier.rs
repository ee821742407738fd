//! Stored client credentials: what `[[client]].password` holds.
//!
//! The value is a SCRAM-SHA-256 verifier in the `pg_authid` format
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), which lets leasegate check a
//! client's proof without ever knowing its password.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use std::fmt;

/// A parsed SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

// The verifier allows an offline guessing attack: keep it out of logs.
impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScramVerifier(iterations={}, [redacted])", self.iterations)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifierError {
    #[error(
        "not a SCRAM-SHA-256 verifier (expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, as `leasegate hash-password` prints)"
    )]
    Format,
    #[error("the iteration count must be a positive integer")]
    Iterations,
    #[error("the {0} is not valid base64 of the right length")]
    Encoding(&'static str),
}

impl ScramVerifier {
    pub fn parse(text: &str) -> Result<Self, VerifierError> {
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or(VerifierError::Format)?;
        let (params, keys) = rest.split_once('$').ok_or(VerifierError::Format)?;
        let (iterations, salt) = params.split_once(':').ok_or(VerifierError::Format)?;
        let (stored, server) = keys.split_once(':').ok_or(VerifierError::Format)?;
        let iterations: u32 = iterations.parse().map_err(|_| VerifierError::Iterations)?;
        if iterations == 0 {
            return Err(VerifierError::Iterations);
        }
        let salt = B64.decode(salt).map_err(|_| VerifierError::Encoding("salt"))?;
        if salt.is_empty() {
            return Err(VerifierError::Encoding("salt"));
        }
        Ok(ScramVerifier { iterations, salt, stored_key: decode_key(stored, "StoredKey")?, server_key: decode_key(server, "ServerKey")? })
    }
}

impl fmt::Display for ScramVerifier {
    /// The `pg_authid` text form, accepted by `CREATE ROLE … PASSWORD '…'`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

fn decode_key(text: &str, what: &'static str) -> Result<[u8; 32], VerifierError> {
    B64.decode(text).ok().and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok()).ok_or(VerifierError::Encoding(what))
}

/// The value of `[[client]].password`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StoredCredential {
    pub scram: ScramVerifier,
}

impl fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredCredential([redacted])")
    }
}

impl TryFrom<String> for StoredCredential {
    type Error = VerifierError;

    fn try_from(text: String) -> Result<Self, VerifierError> {
        Ok(StoredCredential { scram: ScramVerifier::parse(text.trim())? })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // A verifier Postgres 15 stored for the password "secret".
    pub(crate) const PG: &str = "SCRAM-SHA-256$4096:DKVTcV5s8hmRrSqjjJWA7g==$4HfhFV48avpfwjIbmNWH2bLOpQx1UKX+TORTafJ63hw=:/tQM0M+1LTKV62iQT03QS1MHJExw0scfFH0VRRz8obk=";

    #[test]
    fn parses_and_prints_the_pg_authid_form() {
        let v = ScramVerifier::parse(PG).unwrap();
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.salt.len(), 16);
        assert_eq!(v.to_string(), PG);
    }

    #[test]
    fn rejects_malformed_values() {
        assert_eq!(ScramVerifier::parse("secret"), Err(VerifierError::Format));
        assert_eq!(ScramVerifier::parse("SCRAM-SHA-256$0:AAAA$a:b"), Err(VerifierError::Iterations));
        assert_eq!(ScramVerifier::parse("SCRAM-SHA-256$4096:!!$a:b"), Err(VerifierError::Encoding("salt")));
        assert!(!format!("{:?}", ScramVerifier::parse(PG).unwrap()).contains("4Hfh"));
    }
}
