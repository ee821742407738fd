//! Stored client credentials: what `[[client]].password` holds.
//!
//! The value is a SCRAM-SHA-256 verifier in the `pg_authid` format
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`), which lets leasegate check a
//! client's proof without ever knowing its password, optionally followed by a space and the two
//! hashes MySQL clients are checked against (`MYSQL$*<SHA1(SHA1(pw)) hex>$<SHA256(SHA256(pw)) hex>`):
//! what a MySQL server itself keeps for `mysql_native_password` and in its
//! `caching_sha2_password` fast-auth cache. Both are unsalted, so they are weaker than the SCRAM
//! verifier against an offline guess: they are what the MySQL protocols need.

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
        "not a password value as `leasegate hash-password` prints it (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, optionally followed by MYSQL$*<hex>$<hex>)"
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

/// What MySQL clients' scrambles are checked against.
#[derive(Clone, PartialEq, Eq)]
pub struct MysqlHashes {
    /// SHA1(SHA1(password)): `mysql_native_password`.
    pub native: [u8; 20],
    /// SHA256(SHA256(password)): the `caching_sha2_password` fast path.
    pub sha2: [u8; 32],
}

impl MysqlHashes {
    const PREFIX: &str = "MYSQL$*";

    pub fn of(password: &[u8]) -> Self {
        use sha1::Digest as _;
        let native = sha1::Sha1::digest(sha1::Sha1::digest(password)).into();
        let sha2 = sha2::Sha256::digest(sha2::Sha256::digest(password)).into();
        MysqlHashes { native, sha2 }
    }

    pub fn parse(text: &str) -> Result<Self, VerifierError> {
        let rest = text.strip_prefix(Self::PREFIX).ok_or(VerifierError::Format)?;
        let (native, sha2) = rest.split_once('$').ok_or(VerifierError::Format)?;
        Ok(MysqlHashes { native: from_hex(native, "MySQL native hash")?, sha2: from_hex(sha2, "MySQL SHA-256 hash")? })
    }
}

// Unsalted hashes: keep them out of logs.
impl fmt::Debug for MysqlHashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MysqlHashes([redacted])")
    }
}

impl fmt::Display for MysqlHashes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}${}", Self::PREFIX, hex(&self.native).to_uppercase(), hex(&self.sha2))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex<const N: usize>(text: &str, what: &'static str) -> Result<[u8; N], VerifierError> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return Err(VerifierError::Encoding(what));
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| VerifierError::Encoding(what))?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| VerifierError::Encoding(what))?;
    }
    Ok(out)
}

/// The value of `[[client]].password`: one value for both protocols.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StoredCredential {
    pub scram: ScramVerifier,
    /// Absent in values printed before MySQL support: such a client can log in to MySQL
    /// listeners only with caching_sha2_password's full authentication over TLS.
    pub mysql: Option<MysqlHashes>,
}

impl fmt::Display for StoredCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.scram)?;
        if let Some(m) = &self.mysql {
            write!(f, " {m}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for StoredCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredCredential([redacted])")
    }
}

impl TryFrom<String> for StoredCredential {
    type Error = VerifierError;

    fn try_from(text: String) -> Result<Self, VerifierError> {
        let mut parts = text.split_whitespace();
        let scram = ScramVerifier::parse(parts.next().unwrap_or_default())?;
        let mysql = parts.next().map(MysqlHashes::parse).transpose()?;
        if parts.next().is_some() {
            return Err(VerifierError::Format);
        }
        Ok(StoredCredential { scram, mysql })
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

    #[test]
    fn mysql_hashes_match_what_mariadb_stores() {
        // MariaDB: SELECT PASSWORD('x') = *B69027D44F6E5EDC07F1AEAD1477967B16F28227
        let h = MysqlHashes::of(b"x");
        assert!(h.to_string().starts_with("MYSQL$*B69027D44F6E5EDC07F1AEAD1477967B16F28227$"));
        assert_eq!(MysqlHashes::parse(&h.to_string()).unwrap(), h);
        let both = StoredCredential::try_from(format!("{PG} {h}")).unwrap();
        assert_eq!(both.mysql, Some(h));
        assert_eq!(both.to_string(), format!("{PG} {}", both.mysql.as_ref().unwrap()));
        assert_eq!(StoredCredential::try_from(PG.to_string()).unwrap().mysql, None);
        assert!(StoredCredential::try_from(format!("{PG} MYSQL$*00$11")).is_err());
        assert!(StoredCredential::try_from(format!("{PG} x y")).is_err());
    }
}
