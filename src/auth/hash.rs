//! `leasegate hash-password`: turns a cleartext password into the `[[client]].password` value.

use crate::credential::MysqlHashes;
use crate::secret::Secret;

/// The stored form of `password`: a SCRAM-SHA-256 verifier with 4096 iterations, computed the
/// way libpq and the server do it (SASLprep, random 16-byte salt), then the MySQL hashes, so
/// one `[[client]]` entry serves both protocols.
pub fn client_password_value(password: &Secret) -> String {
    let scram = postgres_protocol::password::scram_sha_256(password.expose().as_bytes());
    format!("{scram} {}", MysqlHashes::of(password.expose().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::StoredCredential;

    #[test]
    fn prints_a_verifier_that_parses() {
        let v = client_password_value(&Secret::new("s3cret"));
        let parsed = StoredCredential::try_from(v.clone()).unwrap();
        assert_eq!(parsed.scram.iterations, 4096);
        assert_eq!(parsed.mysql, Some(MysqlHashes::of(b"s3cret")));
        assert!(!v.contains("s3cret"));
    }
}
