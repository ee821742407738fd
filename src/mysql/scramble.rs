//! Checking a MySQL client's password proof without its password (pure functions).
//!
//! `mysql_native_password`: the client sends SHA1(pw) XOR SHA1(nonce || SHA1(SHA1(pw))).
//! `caching_sha2_password` fast path: SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) || nonce).
//! Knowing the stored double hash, the server unmasks SHA(pw) and hashes it once more; the
//! proof is bound to this connection's nonce, so a captured one cannot be replayed.

use subtle::ConstantTimeEq;

/// The 20-byte nonce a greeting or AuthSwitchRequest carries.
pub const NONCE_LEN: usize = 20;

/// A fresh nonce: printable ASCII without NUL or quotes, like the server's (some clients treat
/// it as a C string).
pub fn nonce() -> [u8; NONCE_LEN] {
    std::array::from_fn(|_| rand::random_range(b'0'..=b'z'))
}

pub fn verify_native(nonce: &[u8], response: &[u8], stored: &[u8; 20]) -> bool {
    use sha1::{Digest, Sha1};
    let Ok(response) = <[u8; 20]>::try_from(response) else { return false };
    let mask: [u8; 20] = Sha1::new().chain_update(nonce).chain_update(stored).finalize().into();
    let candidate: Vec<u8> = response.iter().zip(mask).map(|(a, b)| a ^ b).collect();
    let rehashed: [u8; 20] = Sha1::digest(&candidate).into();
    bool::from(rehashed.ct_eq(stored))
}

pub fn verify_sha2(nonce: &[u8], response: &[u8], stored: &[u8; 32]) -> bool {
    use sha2::{Digest, Sha256};
    let Ok(response) = <[u8; 32]>::try_from(response) else { return false };
    let mask: [u8; 32] = Sha256::new().chain_update(stored).chain_update(nonce).finalize().into();
    let candidate: Vec<u8> = response.iter().zip(mask).map(|(a, b)| a ^ b).collect();
    let rehashed: [u8; 32] = Sha256::digest(&candidate).into();
    bool::from(rehashed.ct_eq(stored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::MysqlHashes;
    use mysql_common::auth::plugins::caching_sha2_password::scramble_sha256;
    use mysql_common::auth::plugins::mysql_native_password::scramble_native;

    #[test]
    fn accepts_what_mysql_clients_compute_and_nothing_else() {
        let n = nonce();
        assert!(n.iter().all(|b| b.is_ascii_graphic()));
        let stored = MysqlHashes::of(b"s3cret");
        let native = scramble_native(&n, b"s3cret").unwrap();
        assert!(verify_native(&n, &native, &stored.native));
        assert!(!verify_native(&n, &scramble_native(&n, b"s3creT").unwrap(), &stored.native));
        assert!(!verify_native(&nonce(), &native, &stored.native));
        assert!(!verify_native(&n, &native[..19], &stored.native));

        let sha = scramble_sha256(&n, b"s3cret").unwrap();
        assert!(verify_sha2(&n, &sha, &stored.sha2));
        assert!(!verify_sha2(&n, &scramble_sha256(&n, b"other").unwrap(), &stored.sha2));
        assert!(!verify_sha2(&n, b"", &stored.sha2));
    }
}
