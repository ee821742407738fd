//! `leasegate hash-password`: turns a cleartext password into the `[[client]].password` value.

use crate::secret::Secret;

/// The stored form of `password`: a SCRAM-SHA-256 verifier with 4096 iterations, computed the
/// way libpq and the server do it (SASLprep, random 16-byte salt).
pub fn client_password_value(password: &Secret) -> String {
    postgres_protocol::password::scram_sha_256(password.expose().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::verifier::ScramVerifier;

    #[test]
    fn prints_a_verifier_that_parses() {
        let v = client_password_value(&Secret::new("s3cret"));
        let parsed = ScramVerifier::parse(&v).unwrap();
        assert_eq!(parsed.iterations, 4096);
        assert!(!v.contains("s3cret"));
    }
}
